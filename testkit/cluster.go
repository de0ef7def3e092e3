package testkit

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/seam"
)

var seedFlag = flag.Uint64("testkit.seed", 0, "testkit: run every simulation with this seed (replays a failure)")

// TB is the part of testing.TB the simulation uses (*testing.T fits).
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Cleanup(func())
}

type hubDef struct {
	name string
	impl any
}

type options struct {
	nodes    int
	seed     uint64
	hubs     []hubDef
	prefixes []string
	config   func(*hub.Config)
	verbose  bool
}

// Option configures NewCluster.
type Option func(*options)

// Nodes sets the number of nodes (default 2).
func Nodes(n int) Option { return func(o *options) { o.nodes = n } }

// Seed sets the seed (default 1); -testkit.seed overrides it.
func Seed(seed uint64) Option { return func(o *options) { o.seed = seed } }

// Hub registers a hub on every node, exactly as hub.Node.Register does. The
// same value serves every node. Without any Hub option the cluster serves
// Relay as "relay".
func Hub(name string, impl any) Option {
	return func(o *options) { o.hubs = append(o.hubs, hubDef{name, impl}) }
}

// Prefixes gives node i the channel prefix prefixes[i%len]: apps sharing
// one backplane, for the isolation invariant. Each is a name of letters,
// digits, '.', '_' and '-' (the testkit adds the ':' that ends a Redis
// channel prefix, so "a" here is "a:" with --real); NewCluster fails the
// test on any other. Default: one app, "hubfabric".
func Prefixes(p ...string) Option { return func(o *options) { o.prefixes = p } }

// checkApp reports why name cannot be an app's channel prefix: the rule is
// the Redis backplane's (redisbp.ValidChannelPrefix), without the ':'.
func checkApp(name string) error {
	if redisbp.ValidChannelPrefix(name+":") != nil {
		return fmt.Errorf("testkit: app %q: a channel prefix here is a name of letters, digits, '.', '_', '-' (the testkit adds the ':')", name)
	}
	return nil
}

// Configure adjusts every node's hub.Config (timeouts, limits). The
// testkit sets NodeID, Backplane (which carries the node's prefix),
// ActorSystem and Logger itself, and runs the node on its scheduler.
func Configure(f func(*hub.Config)) Option { return func(o *options) { o.config = f } }

// Verbose logs the whole trace at the end, even when the test passed.
func Verbose() Option { return func(o *options) { o.verbose = true } }

// Cluster is a simulated multi-node cluster: real hub, group, connection
// and bridge actors on N nodes, a simulated backplane, simulated clients,
// all driven by one seeded scheduler over a virtual clock.
type Cluster struct {
	t     TB
	opts  options
	Seed  uint64
	s     *Scheduler
	trace *Trace
	bus   *Bus

	nodes   []*Node
	clients []*Client
	byName  map[string]*Client

	chk *checker
}

// Node is one simulated node.
type Node struct {
	c           *Cluster
	name        string
	owner       string // scheduler owner: name plus incarnation
	incarnation int
	prefix      string
	node        *hub.Node
	bp          *SimBackplane
	alive       bool
}

// Name is the node id.
func (n *Node) Name() string { return n.name }

// Hub returns the hub.Node (for HubContext and Stats).
func (n *Node) Hub() *hub.Node { return n.node }

// Alive reports whether the node runs.
func (n *Node) Alive() bool { return n.alive }

// NewCluster starts a cluster inside the test. On failure the seed and the
// trace are logged; -testkit.seed=N replays the run.
func NewCluster(t TB, opts ...Option) *Cluster {
	t.Helper()
	o := options{nodes: 2, seed: 1}
	for _, f := range opts {
		f(&o)
	}
	if *seedFlag != 0 {
		o.seed = *seedFlag
	}
	if len(o.hubs) == 0 {
		o.hubs = []hubDef{{"relay", Relay{}}}
	}
	if len(o.prefixes) == 0 {
		o.prefixes = []string{"hubfabric"}
	}
	for _, p := range o.prefixes {
		if err := checkApp(p); err != nil {
			t.Fatalf("%v", err)
		}
	}
	tr := &Trace{}
	c := &Cluster{t: t, opts: o, Seed: o.seed, trace: tr, byName: map[string]*Client{}}
	c.s = newScheduler(o.seed, tr)
	c.s.fatal = func(msg string) { c.fail(msg) }
	c.bus = newBus(c.s, tr)
	c.chk = newChecker(c)
	tr.add(0, "sim", fmt.Sprintf("cluster seed=%d nodes=%d", o.seed, o.nodes))
	t.Cleanup(c.close)
	for i := 0; i < o.nodes; i++ {
		n := &Node{c: c, name: fmt.Sprintf("n%d", i+1), prefix: o.prefixes[i%len(o.prefixes)]}
		c.nodes = append(c.nodes, n)
		if err := n.start(); err != nil {
			c.fail(fmt.Sprintf("start %s: %v", n.name, err))
		}
	}
	c.Settle()
	return c
}

func (c *Cluster) fail(msg string) {
	c.t.Helper()
	c.t.Fatalf("testkit: %s\n%s", msg, c.report())
}

func (c *Cluster) report() string {
	return fmt.Sprintf("seed %d (replay: go test -run '<this test>' -testkit.seed=%d), %d steps, virtual time %s, trace %s\n--- trace (events) ---\n%s",
		c.Seed, c.Seed, c.s.Steps(), c.s.Now(), c.trace.Hash(), c.trace.Events())
}

func (c *Cluster) close() {
	if c.t.Failed() || c.opts.verbose {
		c.t.Logf("testkit: %s", c.report())
	}
	c.s.close()
}

func (n *Node) start() error {
	c := n.c
	n.incarnation++
	n.owner = n.name
	if n.incarnation > 1 {
		n.owner = fmt.Sprintf("%s.r%d", n.name, n.incarnation)
	}
	c.s.revive(n.owner)
	n.bp = c.bus.newBackplane(n.owner, n.prefix)
	logger := slog.New(slog.DiscardHandler)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	cfg := hub.Config{}
	if c.opts.config != nil {
		c.opts.config(&cfg)
	}
	cfg.NodeID = n.name
	cfg.Backplane = n.bp
	cfg.ActorSystem = sys
	fabric.Hooks.SetSeams(&cfg, seam.Seams{Props: c.s.propsFactory(n.owner), Runtime: &nodeRuntime{s: c.s, node: n.owner}})
	cfg.Logger = logger
	user := cfg.OnBackplaneEvent
	owner := n.owner
	cfg.OnBackplaneEvent = func(ev backplane.Event) {
		c.chk.backplaneEvent(owner, ev)
		if user != nil {
			user(ev)
		}
	}
	hn, err := hub.New(cfg)
	if err != nil {
		return err
	}
	for _, h := range c.opts.hubs {
		if err := hn.Register(h.name, h.impl); err != nil {
			return err
		}
	}
	n.node = hn
	c.trace.add(c.s.Now(), "node", fmt.Sprintf("%s start (%s, prefix %s)", n.name, n.owner, n.prefix))
	if err := hn.Start(context.Background()); err != nil {
		return err
	}
	n.alive = true
	return nil
}

// Kill stops the node abruptly: its actors stop running, its backplane
// connection drops, its clients lose their connections.
func (n *Node) Kill() {
	if !n.alive {
		return
	}
	c := n.c
	c.trace.add(c.s.Now(), "fault", fmt.Sprintf("%s killed", n.name))
	c.chk.fault()
	n.alive = false
	for _, cl := range c.clients {
		if cl.node == n && cl.stateful && cl.out != nil && cl.out.dropped {
			// A stateful connection waiting for its client: gone with the node.
			cl.Closes = append(cl.Closes, "node killed")
			c.onClosed(cl)
		}
		if cl.node == n && cl.Connected() {
			cl.out.closed = true
			cl.stopPingerOf(cl.out)
			cl.Closes = append(cl.Closes, "node killed")
			c.onClosed(cl)
		}
	}
	_ = n.bp.Close()
	c.s.kill(n.owner)
}

// Restart starts a killed node again under the same id (a new process).
func (n *Node) Restart() {
	if n.alive {
		n.Kill()
	}
	if err := n.start(); err != nil {
		n.c.fail(fmt.Sprintf("restart %s: %v", n.name, err))
	}
}

// Partition cuts the node from the backplane (true) or heals it (false).
func (n *Node) Partition(cut bool) {
	c := n.c
	c.trace.add(c.s.Now(), "fault", fmt.Sprintf("%s partitioned=%v", n.name, cut))
	c.chk.fault()
	c.bus.setHealth(func() { n.bp.partitioned = cut })
}

// Node returns node i (0-based).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Nodes returns every node.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Outage takes the whole backplane down (true) or brings it back (false).
func (c *Cluster) Outage(down bool) {
	c.trace.add(c.s.Now(), "fault", fmt.Sprintf("backplane outage=%v", down))
	c.chk.fault()
	c.bus.setHealth(func() { c.bus.down = down })
}

// Delay gives every backplane delivery an extra delay of up to max, chosen
// by the seed (reordering across channels and publishers; per publisher
// and channel order is kept, as Redis keeps it). 0 turns it off.
func (c *Cluster) Delay(max time.Duration) {
	c.trace.add(c.s.Now(), "fault", fmt.Sprintf("backplane delay up to %s", max))
	c.bus.mu.Lock()
	c.bus.maxDelay = max
	c.bus.mu.Unlock()
}

// Client creates a simulated client of the first hub as user (may be "")
// and connects it to node.
func (c *Cluster) Client(name, user string, node *Node) *Client {
	return c.ClientOf(c.opts.hubs[0].name, name, user, node)
}

// ClientOf is Client for another hub.
func (c *Cluster) ClientOf(hubName, name, user string, node *Node) *Client {
	c.t.Helper()
	if c.byName[name] != nil {
		c.fail(fmt.Sprintf("client %q exists", name))
	}
	cl := &Client{c: c, name: name, user: user, hub: hubName}
	c.clients = append(c.clients, cl)
	c.byName[name] = cl
	if err := cl.Connect(node); err != nil {
		c.fail(fmt.Sprintf("connect %s: %v", name, err))
	}
	return cl
}

// ClientNamed returns a client by name.
func (c *Cluster) ClientNamed(name string) *Client { return c.byName[name] }

// Clients returns every client.
func (c *Cluster) Clients() []*Client { return c.clients }

// Settle runs the simulation until nothing is pending (timers included:
// virtual time jumps to them).
func (c *Cluster) Settle() {
	c.t.Helper()
	for i := 0; c.s.Step(0); i++ {
		if i > 5_000_000 {
			c.fail("Settle: still busy after 5M steps")
		}
	}
	c.chk.settled()
}

// Advance runs the simulation until virtual time has moved by d.
func (c *Cluster) Advance(d time.Duration) {
	limit := c.s.Now() + d
	for c.s.Step(limit) {
	}
}

// Now is the virtual time since Epoch.
func (c *Cluster) Now() time.Duration { return c.s.Now() }

// Trace is the run's trace.
func (c *Cluster) Trace() *Trace { return c.trace }

// Note adds a line to the trace (scenario steps use it).
func (c *Cluster) Note(format string, args ...any) {
	c.trace.add(c.s.Now(), "note", fmt.Sprintf(format, args...))
}

// Check settles and runs every invariant checker; violations fail the test
// with the seed and the trace. It returns the violations.
func (c *Cluster) Check() []string {
	c.t.Helper()
	c.Settle()
	v := c.chk.check()
	if len(v) > 0 {
		sort.Strings(v)
		c.t.Errorf("testkit: %d invariant violation(s), seed %d:\n  %s", len(v), c.Seed, strings.Join(v, "\n  "))
	}
	return v
}

func (c *Cluster) violation(msg string) { c.chk.violations = append(c.chk.violations, msg) }

func (c *Cluster) onConnect(cl *Client)             { c.chk.connected(cl) }
func (c *Cluster) onClosed(cl *Client)              { c.chk.closed(cl) }
func (c *Cluster) onReceive(cl *Client, r Received) { c.chk.received(cl, r) }

// WriteTrace writes the full trace (scheduler steps included).
func (c *Cluster) WriteTrace(w io.Writer) error {
	_, err := io.WriteString(w, c.trace.Full())
	return err
}
