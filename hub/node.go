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
// type <-chan T receive client upload streams. Method names match
// case-insensitively, as in SignalR.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/hubfabric/hubfabric/transport"
)

// Config configures a Node. The zero value is a working single node with
// the in-memory backplane; every field documents its default.
type Config struct {
	// NodeID names the node on the backplane; it must differ between nodes
	// sharing a backplane. Default: random.
	NodeID string
	// Backplane connects the node to others. Default: backplane.NewMemory(),
	// which serves one process only. The node closes it on Shutdown.
	Backplane backplane.Backplane
	// ChannelPrefix starts every backplane channel name, so several apps can
	// share one Redis. Default: "hubfabric".
	ChannelPrefix string
	// ActorSystem runs the node's actors. Default: a new system logging to
	// Logger, shut down with the node. A system given here is not shut down.
	ActorSystem *actor.ActorSystem
	// Logger receives the node's logs (and protoactor's, for a system the
	// node creates). Default: discard.
	Logger *slog.Logger
	// Authenticator identifies users on negotiate and connect. Default:
	// auth.Anonymous (every request allowed, no user id).
	Authenticator auth.Authenticator
	// AllowedOrigins are host patterns of browser origins allowed to connect
	// cross-origin (e.g. "app.example.com", "*.example.com"). Default: none.
	AllowedOrigins []string
	// TokenSecret keys connection tokens; give every node of a cluster the
	// same secret so a client may negotiate with one node and connect to
	// another. Default: random per node.
	TokenSecret []byte
	// KeepAliveInterval: a Ping goes to a client that was sent nothing for
	// this long. Default 15 s.
	KeepAliveInterval time.Duration
	// ClientTimeout: a client that sent nothing for this long (counted from
	// its first message) is closed. Default 30 s.
	ClientTimeout time.Duration
	// HandshakeTimeout bounds the wait for a client's handshake. Default 15 s.
	HandshakeTimeout time.Duration
	// MaxMessageSize bounds one received hub message. Default 32 KiB.
	MaxMessageSize int
	// MaxOutboundBytes bounds what may wait for one slow client before it is
	// closed with a Close message saying so. Default 1 MiB.
	MaxOutboundBytes int
	// MaxParallelInvocations is how many hub methods of one client run at
	// once. Default 1: one at a time, in arrival order.
	MaxParallelInvocations int
	// StreamBufferCapacity is how many items of one client upload stream may
	// wait for the hub method. Default 10.
	StreamBufferCapacity int
	// GroupAckTimeout bounds the wait for another node to apply a group
	// change for one of its connections. Default 10 s.
	GroupAckTimeout time.Duration
	// PublishTimeout bounds each batch of backplane publishes. Default 5 s.
	PublishTimeout time.Duration
	// DetailedErrors sends the text of non-hub errors to clients. Default
	// false, as in SignalR: clients see a generic message.
	DetailedErrors bool
	// Props builds every actor's Props (tests use it to swap dispatchers).
	// Default: actors.DefaultProps.
	Props actors.PropsFactory
	// Runtime starts the fabric's goroutines and timers and waits for its
	// actors' answers (the testkit swaps in a deterministic one). Default:
	// actors.RealRuntime.
	Runtime actors.Runtime
	// OnBackplaneEvent is called for every backplane health event (down,
	// restored, gap), after it was logged and counted.
	OnBackplaneEvent func(backplane.Event)
}

// Node is one hubfabric server: hubs, their actors, the HTTP handler and the
// bridge to the backplane. Register hubs, Start, serve Handler, and
// Shutdown. Methods are safe for concurrent use.
type Node struct {
	cfg      Config
	id       string
	log      *slog.Logger
	system   *actor.ActorSystem
	ownsSys  bool
	root     *actor.RootContext
	channels actors.Channels
	stats    *actors.BridgeStats

	mu       sync.Mutex
	hubs     map[string]*hubRuntime
	started  bool
	stopped  bool
	bridge   *actor.PID
	server   *transport.Server
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
	pid     *actor.PID
}

// New checks cfg and returns a Node with no hubs.
func New(cfg Config) (*Node, error) {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxMessageSize", int64(cfg.MaxMessageSize)}, {"MaxOutboundBytes", int64(cfg.MaxOutboundBytes)},
		{"MaxParallelInvocations", int64(cfg.MaxParallelInvocations)}, {"StreamBufferCapacity", int64(cfg.StreamBufferCapacity)},
		{"KeepAliveInterval", int64(cfg.KeepAliveInterval)}, {"ClientTimeout", int64(cfg.ClientTimeout)},
		{"HandshakeTimeout", int64(cfg.HandshakeTimeout)}, {"GroupAckTimeout", int64(cfg.GroupAckTimeout)},
		{"PublishTimeout", int64(cfg.PublishTimeout)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("hub: Config.%s must not be negative (got %d); zero means the default", f.name, f.v)
		}
		if cfg.Logger == nil {
			cfg.Logger = slog.New(slog.DiscardHandler)
		}
		if cfg.NodeID == "" {
			var b [8]byte
			_, _ = rand.Read(b[:])
			cfg.NodeID = hex.EncodeToString(b[:])
		}
		if cfg.ChannelPrefix == "" {
			cfg.ChannelPrefix = "hubfabric"
		}
		if cfg.Backplane == nil {
			cfg.Backplane = backplane.NewMemory()
		}
		if cfg.Props == nil {
			cfg.Props = actors.DefaultProps
		}
		if cfg.Runtime == nil {
			cfg.Runtime = actors.RealRuntime{}
		}
		if cfg.GroupAckTimeout <= 0 {
			cfg.GroupAckTimeout = 10 * time.Second
		}
		if cfg.PublishTimeout <= 0 {
			cfg.PublishTimeout = 5 * time.Second
		}
	}
	n := &Node{
		cfg:      cfg,
		id:       cfg.NodeID,
		log:      cfg.Logger.With("node_id", cfg.NodeID),
		channels: actors.Channels{Prefix: cfg.ChannelPrefix},
		stats:    &actors.BridgeStats{},
		hubs:     map[string]*hubRuntime{},
	}
	if cfg.ActorSystem != nil {
		n.system = cfg.ActorSystem
	} else {
		logger := slog.New(quietInfo{n.log.Handler()}).With("component", "protoactor")
		n.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
		n.ownsSys = true
	}
	n.root = n.system.Root
	return n, nil
}

// ID returns the node id.
func (n *Node) ID() string { return n.id }

// Register adds a hub under name (letters, digits, '-', '_', '.'), served at
// {mount}/{name}. impl's methods are found as described in the package
// doc; impl is shared by all connections, so its methods may run
// concurrently. Register must be called before Start.
func (n *Node) Register(name string, impl any) error {
	if !actors.ValidHubName(name) {
		return fmt.Errorf("hub: invalid hub name %q: use 1-64 letters, digits, '-', '_' or '.'", name)
	}
	methods, err := methodsOf(impl)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		return errors.New("hub: Register after Start")
	}
	if _, dup := n.hubs[name]; dup {
		return fmt.Errorf("hub: hub %q registered twice", name)
	}
	n.hubs[name] = &hubRuntime{name: name, impl: impl, methods: methods, node: n}
	return nil
}

// Start spawns the actors, connects the backplane and subscribes the
// node's channels. With a backplane that is unreachable it still starts
// (local traffic works) unless the backplane itself refuses to start.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return ErrNodeClosed
	}
	if n.started {
		return errors.New("hub: node already started")
	}
	if len(n.hubs) == 0 {
		return errors.New("hub: no hubs registered")
	}
	// The transport checks its options first, so bad settings fail before
	// any actor starts.
	hubNames := make([]string, 0, len(n.hubs))
	for name := range n.hubs {
		hubNames = append(hubNames, name)
	}
	srv, err := transport.NewServer(transport.Options{
		Hubs:              hubNames,
		Connect:           n.connect,
		Authenticator:     n.cfg.Authenticator,
		TokenSecret:       n.cfg.TokenSecret,
		AllowedOrigins:    n.cfg.AllowedOrigins,
		KeepAliveInterval: n.cfg.KeepAliveInterval,
		ClientTimeout:     n.cfg.ClientTimeout,
		HandshakeTimeout:  n.cfg.HandshakeTimeout,
		MaxMessageSize:    n.cfg.MaxMessageSize,
		MaxOutboundBytes:  n.cfg.MaxOutboundBytes,
		Logger:            n.log.With("component", "transport"),
	})
	if err != nil {
		return err
	}
	bcfg := actors.BridgeConfig{
		NodeID: n.id, Channels: n.channels, Backplane: n.cfg.Backplane,
		PublishTimeout: n.cfg.PublishTimeout, GroupAckTimeout: n.cfg.GroupAckTimeout,
		Props: n.cfg.Props, Runtime: n.cfg.Runtime, Logger: n.log.With("component", "bridge"), Stats: n.stats,
	}
	bridge, err := n.root.SpawnNamed(actors.NewBridgeProps(bcfg), "hubfabric-bridge-"+n.id)
	if err != nil {
		return fmt.Errorf("hub: spawn bridge: %w", err)
	}
	n.bridge = bridge
	pids := map[string]*actor.PID{}
	subs := []string{n.channels.Node(n.id)}
	for name, rt := range n.hubs {
		hcfg := actors.HubConfig{
			Name: name, Channels: n.channels, Bridge: bridge, Props: n.cfg.Props, Runtime: n.cfg.Runtime,
			Connection: actors.ConnectionConfig{MaxParallelInvocations: n.cfg.MaxParallelInvocations, StreamBufferCapacity: n.cfg.StreamBufferCapacity},
		}
		pid, err := n.root.SpawnNamed(actors.NewHubProps(hcfg), "hubfabric-hub-"+n.id+"-"+name)
		if err != nil {
			return fmt.Errorf("hub: spawn hub %q: %w", name, err)
		}
		rt.pid = pid
		pids[name] = pid
		subs = append(subs, n.channels.Route(name, actors.Route{Kind: actors.RouteAll}))
		if _, err := n.cfg.Runtime.Request(n.root, bridge, &actors.RegisterHub{Name: name, PID: pid}, 10*time.Second).Result(); err != nil {
			return fmt.Errorf("hub: register hub %q with the bridge: %w", name, err)
		}
	}
	handler := actors.NewBackplaneHandler(n.root, bridge, pids, bcfg, n.onBackplaneEvent)
	if err := n.cfg.Backplane.Start(ctx, handler); err != nil {
		return fmt.Errorf("hub: start backplane: %w", err)
	}
	if err := n.cfg.Backplane.Subscribe(ctx, subs...); err != nil {
		if !errors.Is(err, backplane.ErrUnavailable) {
			return fmt.Errorf("hub: subscribe node channels: %w", err)
		}
		n.log.Warn("backplane unavailable at start; serving local traffic until it recovers", "err", err)
	}
	n.server = srv
	n.started = true
	return nil
}

// Handler returns the HTTP handler serving every hub: mount it on a prefix
// such as "/hubs/" and clients connect to "/hubs/{name}". Before Start it
// answers 503.
func (n *Node) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		srv := n.server
		n.mu.Unlock()
		if srv == nil {
			http.Error(w, "node not started", http.StatusServiceUnavailable)
			return
		}
		srv.ServeHTTP(w, r)
	})
}

// HubContext returns the sender for hub name, for use outside hub methods.
func (n *Node) HubContext(name string) (*HubContext, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rt, ok := n.hubs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownHub, name)
	}
	if !n.started {
		return nil, ErrNotStarted
	}
	return &HubContext{Clients: Clients{targets{rt: rt}}, Groups: Groups{rt: rt}}, nil
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
// backplane is up (no EventDown without a later EventRestored). A node that
// is not ready still serves its local clients.
func (n *Node) Ready() (bool, string) {
	n.mu.Lock()
	started, stopped := n.started, n.stopped
	n.mu.Unlock()
	switch {
	case stopped:
		return false, "shutting down"
	case !started:
		return false, "not started"
	case n.backplaneDown.Load():
		return false, "backplane down"
	}
	return true, "ready"
}

// Stats returns the node's backplane counters.
func (n *Node) Stats() *actors.BridgeStats { return n.stats }

func (n *Node) connect(ctx context.Context, req transport.ConnectRequest) (transport.Session, error) {
	in, err := n.Attach(ctx, req.Hub, req.ConnectionID, req.Identity, req.Conn)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// Attach connects a client served by a transport other than the node's own
// HTTP handler (the testkit's simulated clients use it): out is the
// connection's outbound side, and the returned Inbound takes the client's
// parsed messages and, at the end, Closed. id must be unique on the node.
func (n *Node) Attach(ctx context.Context, hubName, id string, identity auth.Identity, out actors.Outlet) (*actors.Inbound, error) {
	n.mu.Lock()
	rt := n.hubs[hubName]
	started := n.started
	n.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownHub, hubName)
	}
	if !started {
		return nil, ErrNotStarted
	}
	info := &actors.ConnectionInfo{
		ID: id, UserID: identity.UserID, Claims: identity.Claims,
		Hub: hubName, Items: map[string]any{}, Outlet: out,
	}
	res, err := n.request(ctx, rt.pid, &actors.ConnectRequest{Info: info, Invoker: rt}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	r, ok := res.(*actors.ConnectResponse)
	if !ok {
		return nil, fmt.Errorf("hub: unexpected connect answer %T", res)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	return r.Inbound, nil
}

// pendingRequest is an actor request in flight.
type pendingRequest struct {
	f   actors.Awaiter
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
	return &pendingRequest{f: n.cfg.Runtime.Request(n.root, pid, msg, timeout)}
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
	n.mu.Lock()
	n.stopped = true
	started := n.started
	srv := n.server
	n.mu.Unlock()
	var errs []error
	if started {
		srv.StopAccepting()
		for _, rt := range n.hubs {
			if _, err := n.request(ctx, rt.pid, &actors.CloseAll{Reason: "Server is shutting down."}, 10*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("close connections of hub %q: %w", rt.name, err))
			}
		}
		if err := srv.Wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("wait for connections: %w", err))
		}
		// Let every connection actor finish its OnDisconnected hook before
		// the hubs stop: stopping discards the messages still queued.
		for _, rt := range n.hubs {
			if _, err := n.request(ctx, rt.pid, &actors.WaitNoConnections{}, 30*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("wait for the connections of hub %q to end: %w", rt.name, err))
			}
		}
		for _, rt := range n.hubs {
			if err := n.poison(ctx, rt.pid); err != nil {
				errs = append(errs, fmt.Errorf("stop hub %q: %w", rt.name, err))
			}
		}
		if err := n.poison(ctx, n.bridge); err != nil {
			errs = append(errs, fmt.Errorf("stop bridge: %w", err))
		}
	}
	if err := n.cfg.Backplane.Close(); err != nil && !errors.Is(err, backplane.ErrClosed) {
		errs = append(errs, fmt.Errorf("close backplane: %w", err))
	}
	if n.ownsSys {
		n.system.Shutdown()
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
