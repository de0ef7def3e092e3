// Package faultload runs group fan-out traffic between in-process nodes on
// a real Redis and injects one fault: Redis restarted, a node stopped and
// started again, or Redis paused (SIGSTOP) and resumed. It accounts for
// every send: delivered to every member it was owed to, failed loudly (the
// sender got an error), lost with a gap counted by the receiving node, or
// lost silently; duplicates; and the time to full recovery. The fault test
// and cmd/loadgen's faults mode share it.
//
// Which members a message is owed to: every member of its group that had
// joined (JoinGroup completed) before the send started, except members on
// a stopped node for sends started from Margin before the stop until the
// node's new members have joined again (its old clients were disconnected
// by the stop; its new ones are owed what is sent after they joined).
package faultload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// Fault names one injected fault.
type Fault string

// The faults Run injects.
const (
	// RedisRestart kills Redis (SIGKILL) and starts it again on the same
	// port, without data.
	RedisRestart Fault = "redis-restart"
	// NodeRestart stops the last node (its clients are disconnected, its
	// backplane closed) and starts a new one with the same id; its members
	// connect and join again.
	NodeRestart Fault = "node-restart"
	// RedisPause stops Redis with SIGSTOP for Config.Pause, then SIGCONT.
	RedisPause Fault = "redis-pause"
)

// Faults are every Fault, in the order of the fault table.
var Faults = []Fault{RedisRestart, NodeRestart, RedisPause}

// Margin is how long before a node stop a send may still be in flight to
// that node's members: they are not owed sends started after stop-Margin.
const Margin = time.Second

// Redis is the Redis server under test. Its methods block until done.
type Redis interface {
	// Address is the server's "host:port"; it is the same after a restart.
	Address() string
	// Kill stops the server with SIGKILL; Start starts it again on the same
	// port and returns once it answers.
	Kill() error
	Start() error
	// Pause sends SIGSTOP, Resume SIGCONT.
	Pause() error
	Resume() error
}

// Config sizes a run. Zero fields take the defaults in brackets.
type Config struct {
	Redis          Redis
	Nodes          int           // nodes, at least 2 [2]
	Groups         int           // groups [4]
	MembersPerNode int           // members of each group on each node [2]
	Rate           float64       // sends per second, spread over one publisher per node [200]
	Before         time.Duration // traffic before the fault [1 s]
	After          time.Duration // traffic after the repair [3 s]
	Pause          time.Duration // how long RedisPause pauses [5 s]
	Drain          time.Duration // longest wait for deliveries at the end [5 s]
	Seed           int64         // picks the groups of the sends
	Logger         *slog.Logger  // nodes' logs [discarded]
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Nodes, 2)
	def(&c.Groups, 4)
	def(&c.MembersPerNode, 2)
	if c.Rate <= 0 {
		c.Rate = 200
	}
	defd(&c.Before, time.Second)
	defd(&c.After, 3*time.Second)
	defd(&c.Pause, 5*time.Second)
	defd(&c.Drain, 5*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Result is the account of one run.
type Result struct {
	Fault        Fault
	Sent         int           // sends started
	FailedLoudly int           // sends whose sender got an error
	Delivered    int           // deliveries owed and made
	LostGap      int           // owed deliveries of successful sends missing, on a node that counted a gap after the send
	LostSilently int           // owed deliveries of successful sends missing, with no gap
	Duplicates   int           // deliveries beyond the first of one send to one member
	Gaps         uint64        // gaps the nodes counted (Node.Stats().Gaps)
	Outage       time.Duration // from the fault to its repair
	Recovery     time.Duration // from the repair to the first send that reached every member; -1 if none did
}

type member struct {
	node     int
	group    int
	joinedAt time.Time
	mu       sync.Mutex
	got      map[int64]int
}

type sendRec struct {
	group   int
	node    int // publisher's node
	started time.Time
	err     error
}

type node struct {
	n    *hub.Node
	srv  *http.Server
	done chan error
	url  string
	mu   sync.Mutex
	gaps []time.Time
}

type run struct {
	cfg      Config
	prefix   string
	progress chan struct{}

	mu        sync.Mutex
	nodes     []*node
	gapsTotal uint64
	members   []*member
	conns     []*client.Conn
	pubs      []*client.Conn // by node; nil while the node is down
	sends     []*sendRec
	// stopped: node index -> [from, to) of sends its members are not owed
	stopFrom, stopTo time.Time
	stoppedNode      int
}

// faultHub is the part of cmd/node's relay hub the traffic uses.
type faultHub struct{}

// JoinGroup adds the caller to group.
func (faultHub) JoinGroup(c *hub.Context, group string) error {
	return c.Groups.Add(c, c.ConnectionID, group)
}

// SendToGroup invokes target(args...) on the members of group.
func (faultHub) SendToGroup(c *hub.Context, group, target string, args ...any) error {
	return c.Clients.Group(group).Send(c, target, args...)
}

var runs atomic.Uint64

// Run runs traffic, injects fault, and accounts for every send. ctx bounds
// the whole run. Every node, server and client it made is stopped before
// it returns.
func Run(ctx context.Context, cfg Config, fault Fault) (res Result, err error) {
	cfg = cfg.withDefaults()
	if cfg.Redis == nil {
		return res, errors.New("faultload: no Redis")
	}
	r := &run{cfg: cfg, progress: make(chan struct{}, 1), stoppedNode: -1,
		prefix: fmt.Sprintf("fl%d-%d:", time.Now().UnixNano()%1e9, runs.Add(1))}
	defer func() { err = errors.Join(err, r.close()) }()
	for i := range cfg.Nodes {
		if err := r.startNode(ctx, i); err != nil {
			return res, err
		}
	}
	for i := range cfg.Nodes {
		if err := r.connectNode(ctx, i); err != nil {
			return res, err
		}
	}
	res.Fault = fault

	var sendWG sync.WaitGroup
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		r.traffic(trafficCtx, &sendWG)
	}()
	stopAll := func() {
		stopTraffic()
		<-trafficDone
		sendWG.Wait()
	}
	if err := sleep(ctx, cfg.Before); err != nil {
		stopAll()
		return res, err
	}
	start := time.Now()
	var repaired time.Time
	switch fault {
	case RedisRestart:
		if err = cfg.Redis.Kill(); err == nil {
			err = cfg.Redis.Start()
		}
		repaired = time.Now()
	case RedisPause:
		if err = cfg.Redis.Pause(); err == nil {
			err = sleep(ctx, cfg.Pause)
			err = errors.Join(err, cfg.Redis.Resume())
		}
		repaired = time.Now()
	case NodeRestart:
		last := cfg.Nodes - 1
		r.mu.Lock()
		r.stoppedNode, r.stopFrom, r.stopTo = last, start.Add(-Margin), time.Now().Add(time.Hour)
		r.mu.Unlock()
		err = r.stopNode(last)
		if err == nil {
			err = r.startNode(ctx, last)
		}
		if err == nil {
			err = r.connectNode(ctx, last)
		}
		repaired = time.Now()
		r.mu.Lock()
		r.stopTo = repaired
		r.mu.Unlock()
	default:
		err = fmt.Errorf("faultload: unknown fault %q", fault)
	}
	if err != nil {
		stopAll()
		return res, err
	}
	res.Outage = repaired.Sub(start)
	if err := sleep(ctx, cfg.After); err != nil {
		stopAll()
		return res, err
	}
	stopAll()
	r.drain(ctx)
	r.account(&res, repaired)
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *run) startNode(ctx context.Context, i int) error {
	bp, err := redisbp.NewFromString(r.cfg.Redis.Address()+",abortConnect=true,channelPrefix="+r.prefix, func(o *redisbp.Options) {
		o.Logger = r.cfg.Logger
	})
	if err != nil {
		return err
	}
	nd := &node{done: make(chan error, 1)}
	n, err := hub.New(hub.Config{
		NodeID: "n" + strconv.Itoa(i), Backplane: bp, TokenSecret: []byte("faultload"),
		Logger: r.cfg.Logger, GroupAckTimeout: 2 * time.Second,
		OnBackplaneEvent: func(ev backplane.Event) {
			if ev.Kind == backplane.EventGap {
				nd.mu.Lock()
				nd.gaps = append(nd.gaps, time.Now())
				nd.mu.Unlock()
			}
		},
	})
	if err != nil {
		_ = bp.Close()
		return err
	}
	if err := n.Register("fl", faultHub{}); err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Shutdown(context.Background())
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = n.Shutdown(context.Background())
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", n.Handler())
	nd.n, nd.srv = n, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	nd.url = "http://" + ln.Addr().String() + "/hubs/fl"
	go func() { nd.done <- nd.srv.Serve(ln) }()
	r.mu.Lock()
	for len(r.nodes) <= i {
		r.nodes = append(r.nodes, nil)
		r.pubs = append(r.pubs, nil)
	}
	r.nodes[i] = nd
	r.mu.Unlock()
	return nil
}

// stopNode shuts node i down (its clients get a Close), counting its gaps.
func (r *run) stopNode(i int) error {
	r.mu.Lock()
	nd := r.nodes[i]
	r.pubs[i] = nil
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := nd.n.Shutdown(ctx)
	err = errors.Join(err, nd.srv.Shutdown(ctx))
	if serr := <-nd.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	r.mu.Lock()
	r.gapsTotal += nd.n.Stats().Gaps
	r.mu.Unlock()
	return err
}

// connectNode connects node i's members (joining their groups) and its
// publisher.
func (r *run) connectNode(ctx context.Context, i int) error {
	r.mu.Lock()
	url := r.nodes[i].url
	r.mu.Unlock()
	dial := func(handlers map[string]any) (*client.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := client.Dial(dctx, url, &client.Options{Handlers: handlers})
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		return c, nil
	}
	for g := range r.cfg.Groups {
		for range r.cfg.MembersPerNode {
			m := &member{node: i, group: g, got: make(map[int64]int)}
			c, err := dial(map[string]any{"m": func(id int64) {
				m.mu.Lock()
				m.got[id]++
				m.mu.Unlock()
				select {
				case r.progress <- struct{}{}:
				default:
				}
			}})
			if err != nil {
				return err
			}
			jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = c.Invoke(jctx, "JoinGroup", groupName(g))
			cancel()
			if err != nil {
				return fmt.Errorf("join: %w", err)
			}
			m.joinedAt = time.Now()
			r.mu.Lock()
			r.members = append(r.members, m)
			r.mu.Unlock()
		}
	}
	pub, err := dial(nil)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.pubs[i] = pub
	r.mu.Unlock()
	return nil
}

func groupName(g int) string { return "g" + strconv.Itoa(g) }

// traffic starts sends at cfg.Rate, open loop, alternating publishers,
// until ctx ends; each send runs on a goroutine counted by wg.
func (r *run) traffic(ctx context.Context, wg *sync.WaitGroup) {
	rng := rand.New(rand.NewPCG(uint64(r.cfg.Seed), 1))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	begin, started := time.Now(), 0
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Open loop: start every send due by now, even if ticks were late.
		for due := int(time.Since(begin).Seconds() * r.cfg.Rate); started < due; started++ {
			r.startSend(rng, &next, wg)
		}
	}
}

// startSend starts one send from the next publisher that is up.
func (r *run) startSend(rng *rand.Rand, next *int, wg *sync.WaitGroup) {
	r.mu.Lock()
	var pub *client.Conn
	pi := 0
	for k := range len(r.pubs) {
		pi = (*next + k) % len(r.pubs)
		if pub = r.pubs[pi]; pub != nil {
			break
		}
	}
	*next++
	if pub == nil {
		r.mu.Unlock()
		return
	}
	rec := &sendRec{group: rng.IntN(r.cfg.Groups), node: pi, started: time.Now()}
	id := int64(len(r.sends))
	r.sends = append(r.sends, rec)
	r.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := pub.Invoke(sctx, "SendToGroup", groupName(rec.group), "m", id)
		r.mu.Lock()
		rec.err = err
		r.mu.Unlock()
	}()
}

// owed reports whether m is owed send s.
func (r *run) owed(m *member, s *sendRec) bool {
	if m.group != s.group || !m.joinedAt.Before(s.started) {
		return false
	}
	if m.node == r.stoppedNode && m.joinedAt.Before(r.stopFrom) && !s.started.Before(r.stopFrom) {
		return false // an old member of the stopped node
	}
	return true
}

// missing counts owed deliveries of successful sends not made yet.
func (r *run) missing() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.members {
		m.mu.Lock()
		for id, s := range r.sends {
			if s.err == nil && r.owed(m, s) && m.got[int64(id)] == 0 {
				n++
			}
		}
		m.mu.Unlock()
	}
	return n
}

// drain waits until every owed delivery of a successful send arrived, or
// cfg.Drain passed.
func (r *run) drain(ctx context.Context) {
	t := time.NewTimer(r.cfg.Drain)
	defer t.Stop()
	for r.missing() > 0 {
		select {
		case <-r.progress:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (r *run) account(res *Result, repaired time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res.Sent = len(r.sends)
	res.Recovery = -1
	res.Gaps = r.gapsTotal
	gapsOf := make(map[int][]time.Time)
	for i, nd := range r.nodes {
		res.Gaps += nd.n.Stats().Gaps
		nd.mu.Lock()
		gapsOf[i] = append(gapsOf[i], nd.gaps...)
		nd.mu.Unlock()
	}
	for _, m := range r.members {
		m.mu.Lock()
		for _, c := range m.got {
			if c > 1 {
				res.Duplicates += c - 1
			}
		}
		m.mu.Unlock()
	}
	for id, s := range r.sends {
		if s.err != nil {
			res.FailedLoudly++
			continue
		}
		full := true
		for _, m := range r.members {
			if !r.owed(m, s) {
				continue
			}
			m.mu.Lock()
			got := m.got[int64(id)] > 0
			m.mu.Unlock()
			if got {
				res.Delivered++
				continue
			}
			full = false
			covered := false
			for _, g := range gapsOf[m.node] {
				if g.After(s.started) {
					covered = true
				}
			}
			if covered {
				res.LostGap++
			} else {
				res.LostSilently++
			}
		}
		if full && res.Recovery < 0 && !s.started.Before(repaired) {
			res.Recovery = s.started.Sub(repaired)
		}
	}
}

func (r *run) close() error {
	r.mu.Lock()
	conns := r.conns
	nodes := r.nodes
	r.mu.Unlock()
	var errs []error
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = c.Close(ctx)
		cancel()
	}
	for i, nd := range nodes {
		if nd == nil {
			continue
		}
		if err := r.stopNode(i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Server adapts a redistest.Server to Redis.
func Server(s *redistest.Server) Redis { return server{s} }

type server struct{ s *redistest.Server }

func (v server) Address() string { return v.s.Addr }
func (v server) Kill() error     { v.s.Kill(); return nil }
func (v server) Start() error    { return v.s.Start() }
func (v server) Pause() error    { return v.s.Pause() }
func (v server) Resume() error   { return v.s.Resume() }
