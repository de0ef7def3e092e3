// Package hub is hubfabric's public face: a Node serves SignalR hubs whose
// connections, groups and hubs are protoactor-go actors, and reaches other
// nodes through a backplane.
//
// Declare a hub as a Go value whose exported methods take a *Context first:
//
//	type Chat struct{}
//
//	func (Chat) Send(c *hub.Context, text string) error {
//		return c.Clients.All().Send(c, "message", c.UserID, text)
//	}
//
//	node, _ := hub.New(hub.Config{})
//	_ = node.Register("chat", Chat{})
//	_ = node.Start(ctx)
//	mux.Handle("/hubs/", node.Handler())
//
// Arguments are bound from JSON or MessagePack into the parameter types;
// a method may return nothing, an error, a value, a value and an error, or a
// receive channel (a stream the client reads with stream()). Parameters of
// type <-chan T receive client upload streams; the channel closes when the
// client ends the stream, and if it ended it with an error the method's
// Context is cancelled too, its context.Cause an *Error with the client's
// text. Method names match case-insensitively, as in SignalR.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/actorreg"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
	"github.com/hubfabric/hubfabric/transport"
)

func init() {
	fabric.Hooks.SetSeams = func(cfg any, s seam.Seams) { cfg.(*Config).seams = s }
	fabric.Hooks.Attach = func(ctx context.Context, node any, hub, id string, identity auth.Identity, out fabric.Outlet) (*fabric.Inbound, error) {
		return node.(*Node).attach(ctx, hub, id, identity, out)
	}
	fabric.Hooks.Stateful = func(node any) (bool, int, time.Duration) {
		c := node.(*Node).cfg
		return c.StatefulReconnect, c.StatefulReconnectBufferSize, c.StatefulReconnectWindow
	}
	fabric.Hooks.TakeOver = func(ctx context.Context, node any, hub, id string, identity auth.Identity) (protocol.HubProtocol, conn.StatefulState,
		func(context.Context, *conn.Conn) (conn.Session, error), func(string), error) {
		g, err := node.(*Node).takeOver(ctx, transport.TakeOverRequest{Hub: hub, ConnectionID: id, Identity: identity})
		if err != nil {
			return nil, conn.StatefulState{}, nil, nil, err
		}
		attach := func(ctx context.Context, c *conn.Conn) (conn.Session, error) { return g.Attach(ctx, c) }
		return g.Protocol, g.State, attach, g.Abort, nil
	}
	fabric.Hooks.ConnOptions = func(node any, id string, p protocol.HubProtocol) conn.Options {
		n := node.(*Node)
		return conn.Options{
			ID: id, Protocol: p, MaxOutboundBytes: n.cfg.MaxOutboundBytes,
			KeepAlive: n.cfg.KeepAliveInterval, ClientTimeout: n.cfg.ClientTimeout,
			Runtime: seam.Real{}, Logger: n.log.With("component", "transport", "conn_id", id),
		}
	}
}

// Node states.
const (
	stateNew int32 = iota
	stateStarting
	stateStarted
	stateFailed // Start returned an error; only Shutdown is left
	stateStopped
)

// Node is one hubfabric server: hubs, their actors, the HTTP handler and the
// bridge to the backplane. Register hubs, Start, serve Handler, and
// Shutdown. Methods are safe for concurrent use; none of them holds a lock
// across I/O, so Handler and Ready answer at once even while Start waits
// for an unreachable backplane.
type Node struct {
	cfg      Config // with defaults
	log      *slog.Logger
	system   *actor.ActorSystem
	ownsSys  bool
	root     *actor.RootContext
	counters fabric.Counters
	flusher  *fabric.Flusher // set by Start: writes what the fan-outs deferred
	metrics  *nodeMetrics    // nil without Config.Metrics

	mu   sync.Mutex // guards hubs until Start; they never change after it
	hubs map[string]*hubRuntime

	state     atomic.Int32
	server    atomic.Pointer[transport.Server] // set once Start succeeded (every hubRuntime.pid is set then)
	tree      atomic.Pointer[fabric.Tree]      // set once the actors are spawned
	startDone chan struct{}                    // closed when a Start call returns

	stopOnce sync.Once
	stopErr  error

	backplaneDown atomic.Bool
}

// hubRuntime is one registered hub on this node.
type hubRuntime struct {
	name    string
	impl    any
	methods map[string]*method
	node    *Node
	pid     *actor.PID // set by Start before the node counts as started

	// With Config.Metrics: the hub's connection counters and the children
	// of unknown method names; nil without.
	stats   *metrics.Conn
	unknown *methodMetrics
}

// New checks cfg (see Config.Validate) and returns a Node with no hubs.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("node_id", cfg.NodeID),
		hubs:      map[string]*hubRuntime{},
		startDone: make(chan struct{}),
	}
	if cfg.ActorSystem != nil {
		n.system = cfg.ActorSystem
	} else {
		logger := slog.New(quietInfo{n.log.Handler()}).With("component", "protoactor")
		n.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
		actorreg.Compact(n.system)
		n.ownsSys = true
	}
	n.root = n.system.Root
	if cfg.Metrics != nil {
		m, err := newNodeMetrics(n, cfg.Metrics)
		if err != nil {
			if n.ownsSys {
				n.system.Shutdown()
			}
			return nil, err
		}
		n.metrics = m
	}
	return n, nil
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Register adds a hub under name (1-64 letters, digits, '-', '_', '.'),
// served at {mount}/{name}. impl's methods are found as described in the
// package doc; impl is shared by all connections, so its methods may run
// concurrently. Register must be called before Start.
func (n *Node) Register(name string, impl any) error {
	if !ValidHubName(name) {
		return fmt.Errorf("hub: invalid hub name %q: use 1-64 letters, digits, '-', '_' or '.'", name)
	}
	methods, err := methodsOf(impl)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state.Load() != stateNew {
		return errors.New("hub: Register after Start")
	}
	if _, dup := n.hubs[name]; dup {
		return fmt.Errorf("hub: hub %q registered twice", name)
	}
	rt := &hubRuntime{name: name, impl: impl, methods: methods, node: n}
	if n.metrics != nil {
		n.metrics.instrument(rt)
	}
	n.hubs[name] = rt
	return nil
}

// ValidHubName reports whether name can name a hub: 1-64 characters from
// letters, digits, '-', '_' and '.'.
func ValidHubName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	return true
}

// Start spawns the actors, connects the backplane and subscribes the
// node's channels. With a backplane that is unreachable it still starts
// (local traffic works) unless the backplane itself refuses to start.
// While it waits for the backplane, Handler answers 503 and Ready reports
// "starting".
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	switch n.state.Load() {
	case stateStopped:
		n.mu.Unlock()
		return ErrNodeClosed
	case stateStarting, stateStarted:
		n.mu.Unlock()
		return errors.New("hub: node already started")
	case stateFailed:
		n.mu.Unlock()
		return errors.New("hub: an earlier Start failed; shut the node down and make a new one")
	}
	if len(n.hubs) == 0 {
		n.mu.Unlock()
		return errors.New("hub: no hubs registered")
	}
	n.state.Store(stateStarting) // from here on the hubs never change
	n.mu.Unlock()
	defer close(n.startDone) // Shutdown waits for it before stopping the actors
	srv, err := n.startNode(ctx)
	if err != nil {
		n.state.CompareAndSwap(stateStarting, stateFailed)
		return err
	}
	n.server.Store(srv) // before the state: a started node always has it
	if !n.state.CompareAndSwap(stateStarting, stateStarted) {
		n.server.Store(nil)
		return ErrNodeClosed // Shutdown began meanwhile
	}
	return nil
}

// startNode does Start's work, without holding n.mu: spawning, then the
// backplane's I/O, and returns the HTTP server to serve. It stops early
// once Shutdown has begun.
func (n *Node) startNode(ctx context.Context) (*transport.Server, error) {
	names := make([]string, 0, len(n.hubs))
	var stats map[string]*metrics.Conn
	for name, rt := range n.hubs {
		names = append(names, name)
		if rt.stats != nil {
			if stats == nil {
				stats = map[string]*metrics.Conn{}
			}
			stats[name] = rt.stats
		}
	}
	// The transport checks its options first, so bad settings fail before
	// any actor starts.
	c := n.cfg
	c.TokenSecret = n.tokenSecret(ctx)
	srv, err := transport.NewServer(transport.Options{
		Hubs:              names,
		Connect:           n.connect,
		Authenticator:     c.Authenticator,
		TokenSecret:       c.TokenSecret,
		TokenTTL:          c.TokenTTL,
		AllowedOrigins:    c.AllowedOrigins,
		KeepAliveInterval: c.KeepAliveInterval,
		ClientTimeout:     c.ClientTimeout,
		HandshakeTimeout:  c.HandshakeTimeout,
		MaxMessageSize:    c.MaxMessageSize,
		MaxOutboundBytes:  c.MaxOutboundBytes,
		PollTimeout:       c.PollTimeout,
		NodeID:            c.NodeID,
		Relay:             relay{n},
		Logger:            n.log.With("component", "transport"),

		DisableLongPolling:      c.DisableLongPolling,
		DisableServerSentEvents: c.DisableServerSentEvents,
		Stats:                   stats,

		StatefulReconnect:           c.StatefulReconnect,
		StatefulReconnectBufferSize: c.StatefulReconnectBufferSize,
		StatefulReconnectWindow:     c.StatefulReconnectWindow,
		TakeOver:                    n.takeOver,
	})
	if err != nil {
		return nil, err
	}
	if n.state.Load() == stateStopped {
		return nil, ErrNodeClosed
	}
	n.flusher = fabric.NewFlusher(c.seams.Runtime)
	ncfg := &fabric.NodeConfig{
		NodeID: c.NodeID, Hubs: names, Backplane: c.Backplane,
		BackplaneTimeout: c.BackplaneTimeout, GroupAckTimeout: c.GroupAckTimeout, MaxBatch: defaultMaxPublishBatch,
		MaxParallelInvocations: c.MaxParallelInvocations, StreamBufferCapacity: c.StreamBufferCapacity,
		MaxPendingInvocations: c.MaxPendingInvocations, MaxPendingInvocationBytes: c.MaxPendingInvocationBytes,
		MaxStreamsPerConnection: c.MaxStreamsPerConnection,
		MaxGroupsPerConnection:  c.MaxGroupsPerConnection, MaxGroupNameBytes: c.MaxGroupNameBytes,
		Seams: c.seams, Logger: n.log.With("component", "bridge"), Counters: &n.counters, Flusher: n.flusher,
		OnBackplaneEvent: n.onBackplaneEvent,
		ServeHTTP:        serveForwarded(srv),
	}
	if n.metrics != nil {
		ncfg.PublishDuration = n.metrics.publish
		ncfg.Mailboxes = n.metrics.mailboxes
	}
	tree, err := actors.SpawnNode(n.root, ncfg)
	if tree != nil {
		n.tree.Store(tree) // Shutdown stops whatever was spawned
	}
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	for name, pid := range tree.Hubs {
		n.hubs[name].pid = pid
	}
	if n.state.Load() == stateStopped {
		return nil, ErrNodeClosed
	}
	if err := c.Backplane.Start(ctx, tree.Handler); err != nil {
		return nil, fmt.Errorf("hub: start backplane: %w", err)
	}
	if err := c.Backplane.Subscribe(ctx, tree.Channels...); err != nil {
		if !errors.Is(err, backplane.ErrUnavailable) {
			return nil, fmt.Errorf("hub: subscribe node channels: %w", err)
		}
		n.log.Warn("backplane unavailable at start; serving local traffic until it recovers (the node channels are subscribed then)", "err", err)
	}
	return srv, nil
}

// Handler returns the HTTP handler serving every hub: mount it on a prefix
// such as "/hubs/" and clients connect to "/hubs/{name}". Until Start has
// finished it answers 503.
func (n *Node) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv := n.server.Load()
		if srv == nil || n.state.Load() == stateStarting {
			http.Error(w, "node not started", http.StatusServiceUnavailable)
			return
		}
		srv.ServeHTTP(w, r)
	})
}

// started returns the hub name's runtime once the node is started (and
// while it shuts down: senders made before then keep working until the
// actors stop).
func (n *Node) started(name string) (*hubRuntime, error) {
	state := n.state.Load()
	if state != stateStarted && (state != stateStopped || n.server.Load() == nil) {
		n.mu.Lock()
		_, ok := n.hubs[name]
		n.mu.Unlock()
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %q", ErrUnknownHub, name)
		case state == stateStopped:
			return nil, ErrNodeClosed
		}
		return nil, ErrNotStarted
	}
	rt, ok := n.hubs[name] // immutable once spawned
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownHub, name)
	}
	return rt, nil
}

// HubContext returns the sender for hub name, for use outside hub methods.
func (n *Node) HubContext(name string) (*HubContext, error) {
	rt, err := n.started(name)
	if err != nil {
		return nil, err
	}
	return &HubContext{Clients: Clients{targets{rt: rt}}, Groups: Groups{rt: rt}}, nil
}

// HubPID returns the PID of hub name's actor, for programs that run their
// own actors in the node's actor system (Config.ActorSystem): they may send
// it actors.SendRequest and actors.GroupRequest. It fails with
// ErrNotStarted until Start has returned nil.
func (n *Node) HubPID(name string) (*actor.PID, error) {
	rt, err := n.started(name)
	if err != nil {
		return nil, err
	}
	return rt.pid, nil
}

// HubContext sends to a hub's clients and changes its groups from outside
// hub methods (background jobs, HTTP handlers). Safe for concurrent use.
type HubContext struct {
	Clients Clients
	Groups  Groups
}

func (n *Node) onBackplaneEvent(ev backplane.Event) {
	switch ev.Kind {
	case backplane.EventDown:
		n.backplaneDown.Store(true)
	case backplane.EventRestored:
		n.backplaneDown.Store(false)
	}
	if n.cfg.OnBackplaneEvent != nil {
		n.cfg.OnBackplaneEvent(ev)
	}
}

// Ready reports whether the node is started, not shutting down, and its
// backplane is up (no EventDown without a later EventRestored), with the
// reason when it is not. It never blocks. A node that is not ready may
// still serve its local clients.
func (n *Node) Ready() (bool, string) {
	switch n.state.Load() {
	case stateStopped:
		return false, "shutting down"
	case stateNew:
		return false, "not started"
	case stateStarting:
		return false, "starting: waiting for the backplane"
	case stateFailed:
		return false, "start failed"
	}
	if n.backplaneDown.Load() {
		return false, "backplane down"
	}
	return true, "ready"
}

// Stats are a node's backplane counters since it started.
type Stats struct {
	Published     uint64 // messages handed to the backplane
	PublishFailed uint64 // messages whose publish failed (their senders got an error)
	Received      uint64 // messages received from other nodes
	Malformed     uint64 // backplane messages that were not valid envelopes, dropped
	Gaps          uint64 // resubscriptions after a drop (possible loss, logged)
	Down          uint64 // times the backplane went down

	// Where a backlog sits now (gauges; the outbound queues' share is in
	// the metrics, by hub):
	PendingInvocations int64 // invocations read from clients, not started
	ReadsPaused        int64 // connections not read: their pending invocations reached the bound
	PublishQueued      int64 // sends waiting for, or in, a backplane batch publish
}

// Stats returns a snapshot of the node's counters. Safe to call at any time.
func (n *Node) Stats() Stats {
	c := &n.counters
	return Stats{
		Published: c.Published.Load(), PublishFailed: c.PublishFailed.Load(), Received: c.Received.Load(),
		Malformed: c.Malformed.Load(), Gaps: c.Gaps.Load(), Down: c.Down.Load(),
		PendingInvocations: c.PendingInvocations.Load(), ReadsPaused: c.ReadsPaused.Load(), PublishQueued: c.PublishQueued.Load(),
	}
}

// errAttachTimeout is what a client hears when the hub did not attach its
// connection in time (the cause is logged).
var errAttachTimeout = errors.New("the server did not attach the connection in time; try again")

func (n *Node) connect(ctx context.Context, req transport.ConnectRequest) (transport.Session, error) {
	in, err := n.attach(ctx, req.Hub, req.ConnectionID, req.Identity, req.Conn)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// takeOver asks the hub to move a stateful connection here from the node
// that owns it (its client reconnected here) and returns what the
// transport needs to rebuild it.
func (n *Node) takeOver(ctx context.Context, req transport.TakeOverRequest) (*transport.TakeOverGrant, error) {
	rt, err := n.started(req.Hub)
	if err != nil {
		return nil, err
	}
	res, err := n.request(ctx, rt.pid, &fabric.TakeOverRequest{ConnectionID: req.ConnectionID, UserID: req.Identity.UserID}, n.cfg.GroupAckTimeout+n.cfg.BackplaneTimeout+answerMargin)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", actors.ErrNoHandover, err)
	}
	r, ok := res.(*fabric.TakeOverResponse)
	if !ok {
		return nil, fmt.Errorf("hub: unexpected take-over answer %T", res)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	abort := func(reason string) {
		n.root.Send(rt.pid, &fabric.TakeOverAbort{ConnectionID: req.ConnectionID, MoveID: r.MoveID, Reason: reason})
	}
	return &transport.TakeOverGrant{
		Protocol: r.Protocol,
		State:    r.State,
		Abort:    abort,
		Attach: func(ctx context.Context, c *conn.Conn) (transport.Session, error) {
			info := &fabric.ConnectionInfo{
				ID: req.ConnectionID, UserID: req.Identity.UserID, Claims: req.Identity.Claims,
				Hub: req.Hub, Items: map[string]any{}, Outlet: c,
			}
			res, err := n.request(ctx, rt.pid, &fabric.ConnectRequest{Info: info, Invoker: rt, Moved: r.MoveID}, n.cfg.BackplaneTimeout+answerMargin)
			if err != nil {
				abort("the new node did not attach the connection in time")
				return nil, errAttachTimeout
			}
			cr, ok := res.(*fabric.ConnectResponse)
			if !ok {
				abort("internal error")
				return nil, fmt.Errorf("hub: unexpected connect answer %T", res)
			}
			if cr.Err != nil {
				return nil, cr.Err
			}
			return cr.Inbound, nil
		},
	}, nil
}

// attach connects a client whose socket side is out: the node's transport
// calls it after a handshake, the testkit for its simulated clients. id
// must be unique on the node.
func (n *Node) attach(ctx context.Context, hubName, id string, identity auth.Identity, out fabric.Outlet) (*fabric.Inbound, error) {
	rt, err := n.started(hubName)
	if err != nil {
		return nil, err
	}
	info := &fabric.ConnectionInfo{
		ID: id, UserID: identity.UserID, Claims: identity.Claims,
		Hub: hubName, Items: map[string]any{}, Outlet: out,
	}
	res, err := n.request(ctx, rt.pid, &fabric.ConnectRequest{Info: info, Invoker: rt}, n.cfg.BackplaneTimeout+answerMargin)
	if err != nil {
		// The hub may still attach it: have it end the connection then, so
		// no actor, subscription or OnDisconnected is left behind.
		n.root.Send(rt.pid, &fabric.AbandonConnect{ID: id})
		n.log.Warn("connection not attached in time; refused", "hub", hubName, "conn_id", id, "err", err)
		return nil, errAttachTimeout
	}
	r, ok := res.(*fabric.ConnectResponse)
	if !ok {
		return nil, fmt.Errorf("hub: unexpected connect answer %T", res)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	ac := newContext(ctx, rt, info)
	ac.Items = nil // OnConnected may be using them
	if err := rt.attached(ac); err != nil {
		n.root.Send(rt.pid, &fabric.AbandonConnect{ID: id}) // ends it; OnDisconnected runs
		return nil, err
	}
	return r.Inbound, nil
}

// pendingRequest is an actor request in flight.
type pendingRequest struct {
	f   seam.Awaiter
	err error
}

// start sends msg to pid as a request whose answer is awaited by wait. The
// wait is bounded by ctx's deadline, or by def when ctx has none.
func (n *Node) start(ctx context.Context, pid *actor.PID, msg any, def time.Duration) *pendingRequest {
	if err := ctx.Err(); err != nil {
		return &pendingRequest{err: err}
	}
	timeout := def
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return &pendingRequest{err: context.DeadlineExceeded}
		}
	}
	return &pendingRequest{f: n.cfg.seams.Runtime.Request(n.root, pid, msg, timeout)}
}

func (p *pendingRequest) wait(ctx context.Context) (any, error) {
	if p.err != nil {
		return nil, p.err
	}
	res, err := p.f.Result()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("no answer from the node's actors: %w", err)
	}
	if e, ok := res.(error); ok {
		return nil, e
	}
	return res, nil
}

func (n *Node) request(ctx context.Context, pid *actor.PID, msg any, def time.Duration) (any, error) {
	return n.start(ctx, pid, msg, def).wait(ctx)
}

// Shutdown stops the node: it refuses new connections, sends every client a
// Close message that allows reconnecting (to another node), waits for the
// connections to end, stops every actor, closes the backplane and, if the
// node created it, the actor system. It returns ctx's error if ctx ended
// first. It is idempotent; later calls return the first call's result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.shutdown(ctx) })
	return n.stopErr
}

func (n *Node) shutdown(ctx context.Context) error {
	prev := n.state.Swap(stateStopped)
	var errs []error
	if prev == stateStarting {
		// Start is spawning or waiting for the backplane: let it see the
		// stop and return before its actors are stopped.
		select {
		case <-n.startDone:
		case <-ctx.Done():
			return fmt.Errorf("hub: shutdown: waiting for Start to return: %w", ctx.Err())
		}
	}
	if srv := n.server.Load(); srv != nil && prev == stateStarted {
		srv.StopAccepting()
		for _, rt := range n.hubs {
			if _, err := n.request(ctx, rt.pid, &fabric.CloseAll{Reason: "Server is shutting down."}, shutdownStepTimeout); err != nil {
				errs = append(errs, fmt.Errorf("close connections of hub %q: %w", rt.name, err))
			}
		}
		if err := srv.Wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("wait for connections: %w", err))
		}
		// Let every connection actor finish its OnDisconnected hook before
		// the hubs stop: stopping discards the messages still queued.
		for _, rt := range n.hubs {
			if _, err := n.request(ctx, rt.pid, &fabric.WaitNoConnections{}, shutdownStepTimeout); err != nil {
				errs = append(errs, fmt.Errorf("wait for the connections of hub %q to end: %w", rt.name, err))
			}
		}
	}
	if tree := n.tree.Load(); tree != nil {
		for name, pid := range tree.Hubs {
			if err := n.poison(ctx, pid); err != nil {
				errs = append(errs, fmt.Errorf("stop hub %q: %w", name, err))
			}
		}
		if err := n.poison(ctx, tree.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("stop bridge: %w", err))
		}
	}
	if n.flusher != nil {
		n.flusher.Wait() // the actors are stopped: nothing hands it more
	}

	if err := n.cfg.Backplane.Close(); err != nil && !errors.Is(err, backplane.ErrClosed) {
		errs = append(errs, fmt.Errorf("close backplane: %w", err))
	}
	if n.ownsSys {
		n.system.Shutdown()
	}
	if n.metrics != nil {
		n.metrics.unregister()
	}
	if len(errs) > 0 {
		return fmt.Errorf("hub: shutdown: %w", errors.Join(errs...))
	}
	return ctx.Err()
}

// poison stops pid after the messages already queued for it, waiting at
// most until ctx ends.
func (n *Node) poison(ctx context.Context, pid *actor.PID) error {
	done := make(chan error, 1)
	go func() { done <- n.root.PoisonFuture(pid).Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
