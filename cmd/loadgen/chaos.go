package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/internal/cliflag"
	"github.com/hubfabric/hubfabric/protocol"
)

// The chaos mode measures what misbehaving clients cost the others. The
// measuring clients run the fanout workload (groups, one open-loop
// publisher each, one rate) in phases that alternate baseline (measuring
// clients only) and chaos (measuring clients plus the chaos clients):
//
//   - non-readers join one "slow" group that a flooder fills with large
//     messages, and never read their socket again (their receive buffer is
//     made small so the node's queue fills in seconds); the node's
//     MaxOutboundBytes must close them. A non-reader notices the close when
//     a write of its own Pings fails (the node's socket is gone). It then
//     reads what reached its buffer and reports whether the node's Close
//     message was in it; a client that never reads cannot get it, since the
//     frame the node was writing when it gave up never completes.
//   - droppers join the measuring groups, read for a tenth of --drop-hold
//     to --drop-hold (seeded), close
//     their TCP connection without a WebSocket or SignalR Close, and
//     reconnect, over and over.
//
// Each phase reports the measuring clients' offered and delivered msgs/s,
// loss and latency, the nodes' peak RSS during the phase and RSS and
// goroutines once they settled afterwards. The run fails when the median
// delivered/s of the chaos phases is 5% or more below the baselines', when
// a measuring client lost a message, when a non-reader was not closed, or
// when the nodes' goroutines did not come back to their count before the
// first phase.

// chaosOptions are the chaos mode's flags.
type chaosOptions struct {
	nonReaders   int // -1: 10% of --clients
	droppers     int // -1: 10% of --clients
	rounds       int
	pprofAddrs   []string
	floodRate    float64
	floodBytes   int
	maxOutbound  int
	closeTimeout time.Duration
	settle       time.Duration
	dropHold     time.Duration

	// Set by tests only.
	goroutines func(ctx context.Context) ([]int, error) // replaces the pprof reads
	// closing, when set, returns a channel closed once the node started
	// closing connection id for being too slow (nil: not known); a
	// non-reader that gets one resumes reading then, within the node's
	// grace, and must find the Close message.
	closing func(connID string) <-chan struct{}
	// noThroughputBound leaves the 5% bound out of the verdict (a test on
	// a shared machine cannot hold it).
	noThroughputBound bool
}

// chaosFlags registers the chaos mode's flags on fs.
func chaosFlags(fs *flag.FlagSet, c *chaosOptions) {
	fs.IntVar(&c.nonReaders, "non-readers", -1, "chaos: clients that stop reading (default 10% of --clients)")
	fs.IntVar(&c.droppers, "droppers", -1, "chaos: clients that drop their TCP connection and reconnect, repeatedly (default 10% of --clients)")
	fs.IntVar(&c.rounds, "rounds", 3, "chaos: baseline/chaos phase pairs, alternated")
	fs.Var(&cliflag.List{Vals: &c.pprofAddrs}, "pprof", "chaos: the nodes' --pprof addresses (host:port, comma list) for their goroutine counts")
	fs.Float64Var(&c.floodRate, "flood-rate", 50, "chaos: messages/s sent to the non-readers' group")
	fs.IntVar(&c.floodBytes, "flood-bytes", 8192, "chaos: payload bytes of each of those messages")
	fs.IntVar(&c.maxOutbound, "max-outbound-bytes", 1<<20, "chaos: the nodes' --max-outbound-bytes, which their Close message must name")
	fs.DurationVar(&c.closeTimeout, "close-timeout", 60*time.Second, "chaos: longest wait for the node to close one non-reader")
	fs.DurationVar(&c.dropHold, "drop-hold", 2*time.Second, "chaos: a dropper stays connected a random time between a tenth of this and this, then drops")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "chaos: longest wait after a phase for the nodes' goroutines to return to their count before the first phase")
}

// resolve fills the defaults that depend on --clients and checks the
// values.
func (c *chaosOptions) resolve(o *options) error {
	if c.nonReaders < 0 {
		c.nonReaders = o.clients / 10
	}
	if c.droppers < 0 {
		c.droppers = o.clients / 10
	}
	measuring := o.clients - c.nonReaders - c.droppers
	switch {
	case measuring < 1:
		return fmt.Errorf("--non-readers (%d) and --droppers (%d) leave no measuring client of --clients %d", c.nonReaders, c.droppers, o.clients)
	case o.groups < 1 || o.groups > measuring:
		return fmt.Errorf("--groups must be between 1 and the %d measuring clients (got %d)", measuring, o.groups)
	case len(o.rates) != 1:
		return fmt.Errorf("--rates: the chaos mode runs one rate (got %d)", len(o.rates))
	case c.rounds < 1:
		return fmt.Errorf("--rounds must be at least 1 (got %d)", c.rounds)
	case c.floodRate <= 0 || c.floodBytes < 1 || c.maxOutbound < 1:
		return errors.New("--flood-rate, --flood-bytes and --max-outbound-bytes must be positive")
	case c.closeTimeout <= 0 || c.settle <= 0 || c.dropHold < 10:
		return errors.New("--close-timeout, --settle and --drop-hold must be positive")
	case o.duration <= 0:
		return fmt.Errorf("--duration must be positive (got %s)", o.duration)
	}
	for _, a := range c.pprofAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("--pprof %q: want host:port", a)
		}
	}
	return nil
}

// chaosPhase is one phase's measurement.
type chaosPhase struct {
	Name                string     `json:"phase"`
	Chaos               bool       `json:"chaos"`
	Fanout              stepResult `json:"fanout"`
	NodeRSSPeakBytes    []int64    `json:"node_rss_peak_bytes"`
	NodeRSSAfterBytes   []int64    `json:"node_rss_after_bytes"`
	NodeGoroutinesAfter []int      `json:"node_goroutines_after"`
	GoroutinesBack      bool       `json:"goroutines_back"`
	SettleS             float64    `json:"settle_s"`
	NonReadersClosed    int64      `json:"non_readers_closed"`
	CloseMessagesSeen   int64      `json:"close_messages_seen"`
	NonReadersNotClosed int64      `json:"non_readers_not_closed"`
	CloseP50S           float64    `json:"close_after_join_p50_s"`
	Drops               int64      `json:"drops"`
	ChaosErrors         int64      `json:"chaos_errors"`
	FirstChaosError     string     `json:"first_chaos_error,omitempty"`
}

// chaosResult is the chaos mode's measurement.
type chaosResult struct {
	MeasuringClients    int          `json:"measuring_clients"`
	NonReaders          int          `json:"non_readers"`
	Droppers            int          `json:"droppers"`
	BaselineGoroutines  []int        `json:"node_goroutines_before"`
	BaselineRSSBytes    []int64      `json:"node_rss_before_bytes"`
	Phases              []chaosPhase `json:"phases"`
	BaselineMedianPerS  float64      `json:"baseline_median_delivered_per_s"`
	ChaosMedianPerS     float64      `json:"chaos_median_delivered_per_s"`
	ThroughputDropRatio float64      `json:"throughput_drop_ratio"`
	Problems            []string     `json:"problems,omitempty"`
}

// errChaosFailed is returned by a chaos run that found a problem (listed
// in its report).
var errChaosFailed = errors.New("chaos check failed")

// maxThroughputDrop is the largest accepted drop of the median delivered/s.
const maxThroughputDrop = 0.05

func runChaos(ctx context.Context, o options, urls []string, progress, stderr io.Writer) (*chaosResult, error) {
	c := o.chaos
	measuring := o.clients - c.nonReaders - c.droppers
	phases := 2 * c.rounds
	fo := o
	fo.clients = measuring
	fo.rates = slices.Repeat(o.rates, phases)
	f := newFleet(fo, urls, 2*phases)
	defer f.close()
	if _, err := sampleProcs(o.pids); err != nil {
		return nil, fmt.Errorf("--pids: %w", err)
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	groupName := func(g int) string { return "lg-" + runID + "-" + strconv.Itoa(g) }
	cr, byID, err := f.connect(ctx, measuring, func(i int) slot { return fanoutPlace(i, o.groups, len(urls)) }, groupName, 2*phases, true, progress)
	if err != nil {
		return nil, err
	}
	if cr.firstErr != nil {
		return nil, fmt.Errorf("connecting %d clients: %d failed; first: %w", measuring, cr.errors, cr.firstErr)
	}
	fmt.Fprintf(stderr, "connected %d measuring clients to %d node(s) in %d groups in %.1fs\n", cr.connected, len(urls), o.groups, cr.seconds)
	fan := &fanout{
		o: fo, f: f, pubs: make([]*client, o.groups), sizes: make([]int64, o.groups), prefixes: make([][]byte, o.groups),
		seqs: make([]uint64, o.groups), clients: make([]*client, measuring), nodePIDs: o.pids,
	}
	for i := range measuring {
		cl := byID[i]
		fan.clients[i] = cl
		fan.sizes[cl.group]++
		if i < o.groups {
			fan.pubs[i] = cl
			fan.prefixes[i] = publishFramePrefix(groupName(i))
		}
	}
	goroutines := c.goroutines
	if goroutines == nil {
		goroutines = func(ctx context.Context) ([]int, error) { return pprofGoroutines(ctx, c.pprofAddrs) }
	}
	res := &chaosResult{MeasuringClients: measuring, NonReaders: c.nonReaders, Droppers: c.droppers}
	if err := sleepUntil(ctx, time.Now().Add(500*time.Millisecond)); err != nil { // let the joins' writers end
		return nil, err
	}
	if res.BaselineGoroutines, err = goroutines(ctx); err != nil {
		return nil, err
	}
	before, err := sampleProcs(o.pids)
	if err != nil {
		return nil, fmt.Errorf("--pids: %w", err)
	}
	res.BaselineRSSBytes = before.rss
	cs := newChaosState(o, urls, groupName, runID)
	defer cs.dialers()
	for k := range phases {
		isChaos := k%2 == 1
		p := chaosPhase{Name: fmt.Sprintf("baseline %d", k/2+1), Chaos: isChaos}
		if isChaos {
			p.Name = fmt.Sprintf("chaos %d", k/2+1)
		}
		peak := newRSSPeak(o.pids)
		stopChaos := func() {}
		if isChaos {
			stopChaos = cs.start(ctx)
		}
		r, err := fan.step(ctx, k, o.rates[0], progress)
		if isChaos {
			fmt.Fprintf(stderr, "%s: waiting for the non-readers still open to be closed\n", p.Name)
		}
		stopChaos()
		p.NodeRSSPeakBytes = peak.stop()
		if err != nil {
			return res, err
		}
		p.Fanout = r
		if isChaos {
			cs.collect(&p)
		}
		settleStart := time.Now()
		p.NodeGoroutinesAfter, p.GoroutinesBack, err = waitGoroutines(ctx, goroutines, res.BaselineGoroutines, c.settle)
		if err != nil {
			return res, err
		}
		p.SettleS = time.Since(settleStart).Seconds()
		after, err := sampleProcs(o.pids)
		if err != nil {
			return res, fmt.Errorf("--pids: %w", err)
		}
		p.NodeRSSAfterBytes = after.rss
		for i, v := range after.rss {
			p.NodeRSSPeakBytes[i] = max(p.NodeRSSPeakBytes[i], v)
		}
		res.Phases = append(res.Phases, p)
		fmt.Fprintf(stderr, "%s: %.0f offered/s, %.0f delivered/s, lost %d, p99 %.2f ms, non-readers closed %d, drops %d, goroutines %v (before %v)\n",
			p.Name, r.OfferedPerS, r.DeliveredPerS, r.LostDeliveries, r.LatencyP99Ms, p.NonReadersClosed, p.Drops, p.NodeGoroutinesAfter, res.BaselineGoroutines)
	}
	res.judge(o)
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("%w: %s", errChaosFailed, strings.Join(res.Problems, "; "))
	}
	return res, nil
}

// judge computes the medians and lists the problems.
func (res *chaosResult) judge(o options) {
	var base, chaos []float64
	for _, p := range res.Phases {
		s := p.Fanout
		if p.Chaos {
			chaos = append(chaos, s.DeliveredPerS)
		} else {
			base = append(base, s.DeliveredPerS)
		}
		bad := func(format string, args ...any) {
			res.Problems = append(res.Problems, p.Name+": "+fmt.Sprintf(format, args...))
		}
		if s.LostDeliveries != 0 || s.WarmupLostDeliveries != 0 {
			bad("measuring clients lost %d deliveries (%d in the warm-up)", s.LostDeliveries, s.WarmupLostDeliveries)
		}
		if s.Duplicates != 0 || s.Reorders != 0 || s.SendErrors != 0 {
			bad("duplicates %d, reorders %d, send errors %d", s.Duplicates, s.Reorders, s.SendErrors)
		}
		if s.DisconnectsSoFar != 0 {
			bad("%d measuring clients were disconnected; first: %s", s.DisconnectsSoFar, s.firstDisconnect)
		}
		if !p.GoroutinesBack {
			bad("node goroutines %v did not return to %v", p.NodeGoroutinesAfter, res.BaselineGoroutines)
		}
		if p.Chaos {
			if p.NonReadersNotClosed != 0 || (res.NonReaders > 0 && p.NonReadersClosed == 0) {
				bad("%d non-readers not closed by the node (%d closed)", p.NonReadersNotClosed, p.NonReadersClosed)
			}
			if p.ChaosErrors != 0 {
				bad("%d chaos client errors; first: %s", p.ChaosErrors, p.FirstChaosError)
			}
		}
	}
	res.BaselineMedianPerS, res.ChaosMedianPerS = median(base), median(chaos)
	if res.BaselineMedianPerS > 0 {
		res.ThroughputDropRatio = 1 - res.ChaosMedianPerS/res.BaselineMedianPerS
	}
	if res.ThroughputDropRatio >= maxThroughputDrop && !o.chaos.noThroughputBound {
		res.Problems = append(res.Problems, fmt.Sprintf("median delivered/s fell %.1f%% under chaos (%.0f -> %.0f); the bound is %.0f%%",
			100*res.ThroughputDropRatio, res.BaselineMedianPerS, res.ChaosMedianPerS, 100*maxThroughputDrop))
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// chaosMarkdown renders the phases as one Markdown table and a summary.
func chaosMarkdown(res *chaosResult) string {
	var b strings.Builder
	b.WriteString("| phase | offered/s | delivered/s | lost | p50 ms | p99 ms | node RSS peak MiB | node RSS after MiB | node goroutines after | non-readers closed | Close seen | drops | chaos errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	list := func(v []int64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf("%.0f", mib(x))
		}
		return orDash(strings.Join(s, " / "))
	}
	ints := func(v []int) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = strconv.Itoa(x)
		}
		return orDash(strings.Join(s, " / "))
	}
	for _, p := range res.Phases {
		s := p.Fanout
		chaosCell := func(v int64) string {
			if !p.Chaos {
				return "-"
			}
			return strconv.FormatInt(v, 10)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %d (%.3g%%) | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s |\n",
			p.Name, s.OfferedPerS, s.DeliveredPerS, s.LostDeliveries, 100*s.LossRatio, s.LatencyP50Ms, s.LatencyP99Ms,
			list(p.NodeRSSPeakBytes), list(p.NodeRSSAfterBytes), ints(p.NodeGoroutinesAfter),
			chaosCell(p.NonReadersClosed), chaosCell(p.CloseMessagesSeen), chaosCell(p.Drops), chaosCell(p.ChaosErrors))
	}
	fmt.Fprintf(&b, "\nmeasuring clients %d, non-readers %d, droppers %d; before the first phase: node RSS %s MiB, goroutines %s\n",
		res.MeasuringClients, res.NonReaders, res.Droppers, list(res.BaselineRSSBytes), ints(res.BaselineGoroutines))
	fmt.Fprintf(&b, "median delivered/s: baseline %.0f, chaos %.0f, change %+.2f%% (bound: -%.0f%%)\n",
		res.BaselineMedianPerS, res.ChaosMedianPerS, -100*res.ThroughputDropRatio, 100*maxThroughputDrop)
	b.WriteString("Close seen: non-readers that found the node's Close message in what reached them; one that never reads cannot, as the node's write in progress never completes.\n")
	for _, p := range res.Problems {
		b.WriteString("problem: " + p + "\n")
	}
	return b.String()
}

// chaosState runs the chaos clients of one chaos phase at a time.
type chaosState struct {
	o         options
	urls      []string
	groupName func(int) string
	slowGroup string
	slow      *dialer // small receive buffer
	normal    *dialer
	ping      []byte
	floodRec  []byte

	// Per phase; reset by start.
	closed, closeSeen, notClosed, drops, errs atomic.Int64
	errMu                                     sync.Mutex
	firstErr                                  string
	closeAfter                                []time.Duration
}

// chaosRcvBuf is the non-readers' SO_RCVBUF: small, so that the node's
// queue, not the client's kernel, holds what they do not read.
const chaosRcvBuf = 4096

func newChaosState(o options, urls []string, groupName func(int) string, runID string) *chaosState {
	cs := &chaosState{o: o, urls: urls, groupName: groupName, slowGroup: "lg-" + runID + "-slow"}
	cs.normal = newDialer(o.token, o.negotiate, o.localAddrs)
	cs.slow = newDialer(o.token, o.negotiate, o.localAddrs)
	addrs := o.localAddrs
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	for i, tr := range cs.slow.transports {
		nd := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, chaosRcvBuf)
			}); err != nil {
				return err
			}
			return serr
		}}
		if addrs[i] != "" {
			nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(addrs[i])}
		}
		tr.DialContext = nd.DialContext
	}
	cs.ping, _ = protocol.JSON.AppendMessage(nil, &protocol.Ping{})
	g, _ := json.Marshal(cs.slowGroup)
	cs.floodRec = append(append([]byte(`{"type":1,"target":"SendToGroup","arguments":[`), g...), `,"f","`...)
	cs.floodRec = append(append(cs.floodRec, strings.Repeat("x", o.chaos.floodBytes)...), publishFrameSuffix...)
	return cs
}

// dialers drops the chaos dialers' idle connections.
func (cs *chaosState) dialers() {
	cs.slow.close()
	cs.normal.close()
}

func (cs *chaosState) fail(err error) {
	cs.errs.Add(1)
	cs.errMu.Lock()
	if cs.firstErr == "" {
		cs.firstErr = err.Error()
	}
	cs.errMu.Unlock()
}

// start runs the chaos clients until the returned stop is called. stop
// ends the droppers at once, waits until every non-reader's current
// connection was closed by the node (each at most --close-timeout), then
// ends the flooder; it returns when every chaos goroutine has ended.
func (cs *chaosState) start(ctx context.Context) (stop func()) {
	cs.closed.Store(0)
	cs.closeSeen.Store(0)
	cs.notClosed.Store(0)
	cs.drops.Store(0)
	cs.errs.Store(0)
	cs.errMu.Lock()
	cs.firstErr, cs.closeAfter = "", nil
	cs.errMu.Unlock()
	stopping := make(chan struct{})
	fctx, cancelFlood := context.WithCancel(ctx)
	var readers, droppers, flood sync.WaitGroup
	flood.Add(1)
	go func() {
		defer flood.Done()
		cs.flood(fctx)
	}()
	c := cs.o.chaos
	for i := range c.nonReaders {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				cs.nonReaderCycle(ctx, i)
				select {
				case <-stopping:
					return
				case <-ctx.Done():
					return
				default:
				}
			}
		}()
	}
	for i := range c.droppers {
		droppers.Add(1)
		go func() {
			defer droppers.Done()
			rng := rand.New(rand.NewPCG(uint64(cs.o.seed), uint64(i)+1<<32))
			for {
				select {
				case <-stopping:
					return
				case <-ctx.Done():
					return
				default:
				}
				cs.dropperCycle(ctx, i, rng, stopping)
			}
		}()
	}
	return func() {
		close(stopping)
		droppers.Wait()
		readers.Wait()
		cancelFlood()
		flood.Wait()
	}
}

// collect copies the phase's chaos counts into p.
func (cs *chaosState) collect(p *chaosPhase) {
	p.NonReadersClosed = cs.closed.Load()
	p.CloseMessagesSeen = cs.closeSeen.Load()
	p.NonReadersNotClosed = cs.notClosed.Load()
	p.Drops = cs.drops.Load()
	p.ChaosErrors = cs.errs.Load()
	cs.errMu.Lock()
	p.FirstChaosError = cs.firstErr
	d := slices.Clone(cs.closeAfter)
	cs.errMu.Unlock()
	if len(d) > 0 {
		slices.Sort(d)
		p.CloseP50S = d[len(d)/2].Seconds()
	}
}

// flood sends the non-readers' group large messages at --flood-rate from
// its own connection until ctx ends.
func (cs *chaosState) flood(ctx context.Context) {
	ws, _, err := cs.normal.dial(ctx, cs.urls[0])
	if err != nil {
		if ctx.Err() == nil {
			cs.fail(fmt.Errorf("flooder: %w", err))
		}
		return
	}
	done := make(chan struct{})
	go func() { // discards what the node sends (Pings)
		defer close(done)
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	defer func() {
		_ = ws.CloseNow()
		<-done
	}()
	interval := time.Duration(float64(time.Second) / cs.o.chaos.floodRate)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ws.Write(context.Background(), websocket.MessageText, cs.floodRec); err != nil {
			if ctx.Err() == nil {
				cs.fail(fmt.Errorf("flooder: %w", err))
			}
			return
		}
	}
}

// chaosPingEvery is how often a non-reader writes a Ping: its way to learn
// that the node closed it.
const chaosPingEvery = 200 * time.Millisecond

// nonReaderCycle is one non-reader connection: connect, join the slow
// group, learn its connection id, stop reading, and wait for the node to
// close it.
func (cs *chaosState) nonReaderCycle(ctx context.Context, i int) {
	c := cs.o.chaos
	url := cs.urls[i%len(cs.urls)]
	jctx, cancel := context.WithTimeout(ctx, cs.o.joinTimeout)
	defer cancel()
	ws, first, err := cs.slow.dial(jctx, url)
	if err != nil {
		if ctx.Err() == nil {
			cs.fail(fmt.Errorf("non-reader %d: %w", i, err))
		}
		return
	}
	defer ws.CloseNow()
	connID, err := joinAndIdentify(jctx, ws, first, cs.slowGroup)
	if err != nil {
		if ctx.Err() == nil {
			cs.fail(fmt.Errorf("non-reader %d: %w", i, err))
		}
		return
	}
	joined := time.Now()
	var resume <-chan struct{}
	if c.closing != nil {
		resume = c.closing(connID)
	}
	deadline := time.NewTimer(c.closeTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(chaosPingEvery)
	defer tick.Stop()
	wantClose := fmt.Sprintf("more than %d bytes were waiting to be sent", c.maxOutbound)
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			cs.notClosed.Add(1)
			cs.fail(fmt.Errorf("non-reader %d (%s): not closed by the node %s after joining", i, connID, c.closeTimeout))
			return
		case <-resume:
			// The node is closing this connection: read it all, in time for
			// the write in progress to complete and the Close to follow.
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			cl, err := readUntilClose(rctx, ws)
			rcancel()
			cs.noteClosed(joined)
			switch {
			case err != nil:
				cs.fail(fmt.Errorf("non-reader %d (%s): no Close message: %w", i, connID, err))
			case !strings.Contains(cl.Error, wantClose) || !cl.AllowReconnect:
				cs.fail(fmt.Errorf("non-reader %d (%s): Close %+v does not say %q", i, connID, cl, wantClose))
			default:
				cs.closeSeen.Add(1)
			}
			return
		case <-tick.C:
		}
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		err := ws.Write(wctx, websocket.MessageText, cs.ping)
		wcancel()
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		// The node's socket is gone. Whatever reached this client's buffer
		// is still readable: look for the Close message in it.
		cs.noteClosed(joined)
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		if cl, err := readUntilClose(rctx, ws); err == nil && strings.Contains(cl.Error, wantClose) {
			cs.closeSeen.Add(1)
		}
		rcancel()
		return
	}
}

func (cs *chaosState) noteClosed(joined time.Time) {
	cs.closed.Add(1)
	cs.errMu.Lock()
	cs.closeAfter = append(cs.closeAfter, time.Since(joined))
	cs.errMu.Unlock()
}

// dropperCycle is one dropper connection: connect, join a measuring group,
// read for --drop-hold/10 to --drop-hold, then close the TCP connection
// without a Close.
func (cs *chaosState) dropperCycle(ctx context.Context, i int, rng *rand.Rand, stopping <-chan struct{}) {
	url := cs.urls[i%len(cs.urls)]
	jctx, cancel := context.WithTimeout(ctx, cs.o.joinTimeout)
	defer cancel()
	ws, first, err := cs.normal.dial(jctx, url)
	if err != nil {
		if ctx.Err() == nil {
			cs.fail(fmt.Errorf("dropper %d: %w", i, err))
		}
		return
	}
	if _, err := joinAndIdentify(jctx, ws, first, cs.groupName(i%cs.o.groups)); err != nil {
		_ = ws.CloseNow()
		if ctx.Err() == nil {
			cs.fail(fmt.Errorf("dropper %d: %w", i, err))
		}
		return
	}
	done := make(chan struct{})
	go func() { // reads (and drops) the group's messages until the drop
		defer close(done)
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	h := cs.o.chaos.dropHold
	hold := time.NewTimer(h/10 + time.Duration(rng.Int64N(int64(h-h/10))))
	select {
	case <-hold.C:
	case <-stopping:
	case <-ctx.Done():
	}
	hold.Stop()
	_ = ws.CloseNow() // closes the TCP connection: no WebSocket close frame, no SignalR Close
	<-done
	cs.drops.Add(1)
}

// Invocation ids of a chaos client's two calls.
const (
	chaosJoinID   = "1"
	chaosWhoAmIID = "2"
)

// joinAndIdentify calls JoinGroup(group) and WhoAmI() and reads until both
// complete; it returns the connection id. first holds what followed the
// handshake.
func joinAndIdentify(ctx context.Context, ws *websocket.Conn, first []byte, group string) (string, error) {
	var msg []byte
	msg, _ = protocol.JSON.AppendMessage(msg, &protocol.Invocation{InvocationID: chaosJoinID, Target: "JoinGroup", Arguments: []any{group}})
	msg, _ = protocol.JSON.AppendMessage(msg, &protocol.Invocation{InvocationID: chaosWhoAmIID, Target: "WhoAmI"})
	if err := ws.Write(ctx, websocket.MessageText, msg); err != nil {
		return "", fmt.Errorf("JoinGroup: %w", err)
	}
	var connID string
	joined := false
	buf := append([]byte(nil), first...)
	for !joined || connID == "" {
		for {
			i := strings.IndexByte(string(buf), protocol.RecordSeparator)
			if i < 0 {
				break
			}
			rec := buf[:i+1]
			buf = buf[i+1:]
			msgs, _, err := protocol.JSON.ParseMessages(rec, 0)
			if err != nil || len(msgs) != 1 {
				continue
			}
			m, ok := msgs[0].(*protocol.Completion)
			if !ok {
				continue
			}
			if m.Error != "" {
				return "", fmt.Errorf("invocation %s failed: %s", m.InvocationID, m.Error)
			}
			switch m.InvocationID {
			case chaosJoinID:
				joined = true
			case chaosWhoAmIID:
				raw, _ := m.Result.(protocol.RawValue)
				var id struct {
					ConnectionID string `json:"connectionId"`
				}
				if err := json.Unmarshal(raw, &id); err != nil || id.ConnectionID == "" {
					return "", fmt.Errorf("WhoAmI returned %s: the hub must offer WhoAmI() -> {connectionId} (cmd/node's relay does)", raw)
				}
				connID = id.ConnectionID
			}
		}
		if joined && connID != "" {
			break
		}
		_, data, err := ws.Read(ctx)
		if err != nil {
			return "", fmt.Errorf("JoinGroup/WhoAmI: no completion: %w", err)
		}
		buf = append(buf, data...)
	}
	return connID, nil
}

// readUntilClose reads records until a Close message, which it returns.
func readUntilClose(ctx context.Context, ws *websocket.Conn) (*protocol.Close, error) {
	var pend []byte
	for {
		_, rd, err := ws.Reader(ctx)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(rd)
		if err != nil {
			return nil, err
		}
		pend = append(pend, data...)
		for {
			i := strings.IndexByte(string(pend), protocol.RecordSeparator)
			if i < 0 {
				break
			}
			rec := pend[:i+1]
			pend = pend[i+1:]
			if !strings.Contains(string(rec), `"type":7`) {
				continue
			}
			msgs, _, err := protocol.JSON.ParseMessages(rec, 0)
			if err == nil && len(msgs) == 1 {
				if cl, ok := msgs[0].(*protocol.Close); ok {
					return cl, nil
				}
			}
		}
	}
}

// rssPeak samples the RSS of pids every 100 ms until stop, keeping the
// peak of each.
type rssPeak struct {
	pids  []int
	stopC chan struct{}
	done  chan struct{}
	peak  []int64
}

func newRSSPeak(pids []int) *rssPeak {
	p := &rssPeak{pids: pids, stopC: make(chan struct{}), done: make(chan struct{}), peak: make([]int64, len(pids))}
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for i, pid := range p.pids {
				if v, err := procRSSBytes(pid); err == nil {
					p.peak[i] = max(p.peak[i], v)
				}
			}
			select {
			case <-p.stopC:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// stop ends the sampler and returns the peaks.
func (p *rssPeak) stop() []int64 {
	close(p.stopC)
	<-p.done
	return p.peak
}

// waitGoroutines polls the nodes' goroutine counts (an external process:
// there is no event to wait on) until each is at most its baseline, for at
// most limit; it returns the last counts and whether they came back.
func waitGoroutines(ctx context.Context, count func(context.Context) ([]int, error), baseline []int, limit time.Duration) ([]int, bool, error) {
	deadline := time.Now().Add(limit)
	for {
		n, err := count(ctx)
		if err != nil {
			return nil, false, err
		}
		back := len(n) == len(baseline)
		for i := range n {
			back = back && n[i] <= baseline[i]
		}
		if back || !time.Now().Before(deadline) {
			return n, back, nil
		}
		if err := sleepUntil(ctx, time.Now().Add(100*time.Millisecond)); err != nil {
			return n, false, err
		}
	}
}

// pprofGoroutines reads "goroutine profile: total N" from each address's
// /debug/pprof/goroutine?debug=1.
func pprofGoroutines(ctx context.Context, addrs []string) ([]int, error) {
	out := make([]int, 0, len(addrs))
	for _, a := range addrs {
		n, err := pprofGoroutineCount(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("--pprof %s: %w", a, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// pprofClient keeps no idle connection: each count sees the same one
// request being served, and none outlives the run.
var pprofClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func pprofGoroutineCount(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := pprofClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	line, err := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the profile: %w", err)
	}
	return parseGoroutineTotal(line)
}

// parseGoroutineTotal reads the first line of a debug=1 goroutine profile.
func parseGoroutineTotal(line string) (int, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	n, err := strconv.Atoi(rest)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("not a goroutine profile: %q", line)
	}
	return n, nil
}
