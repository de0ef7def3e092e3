// Package service makes a hubfabric node a self-hosted SignalR service for
// backends in any language, compatible with Azure SignalR Service in
// "serverless" mode: its data-plane REST API (version 2022-06-01 and the
// older /api/v1 paths), its client endpoint (/client/?hub=NAME with access
// tokens signed by an access key) and its upstream webhooks (connection
// events and client invocations POSTed to a URL template, signed with the
// access keys). cmd/node turns it on with --access-key or
// --connection-string.
//
// Wiring, in this order: New; wrap the node's backplane with
// Service.Backplane and give the result to hub.Config.Backplane (service
// commands, such as closing a connection on another node, travel on it,
// on channels of their own); Service.Authenticator as
// hub.Config.Authenticator; Service.Register for each hub instead of
// node.Register; node.Start; Service.Start; serve Service.Handler. Close
// after the node's Shutdown.
//
// Every node of a cluster needs the same access keys and one shared Store
// (backplane/redis NewStore on the backplane's Redis).
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// Service channels, beside the actors' ("h:", "n:"); the backplane adds
// its prefix.
const (
	channelPrefix = "svc:"
	channelAll    = channelPrefix + "all"
)

func nodeServiceChannel(node string) string { return channelPrefix + "n:" + node }

// Service is the service mode of a node. Its methods are safe for
// concurrent use once Start returned.
type Service struct {
	cfg      Config
	log      *slog.Logger
	verifier *verifier
	up       *upstream // nil without Config.Upstream

	mu       sync.Mutex
	node     *hub.Node
	nodeID   string
	bp       backplane.Backplane // the wrapped backplane, for commands
	hubs     map[string]*serviceHub
	lower    map[string]string                // lower-case hub name -> name, for /client/?hub=
	local    map[string]map[string]*localConn // hub -> conn id -> connection on this node
	ctx      map[string]*hub.HubContext       // set by Start
	started  bool
	closed   bool
	closeCtx context.Context
	cancel   context.CancelFunc

	timers   map[*time.Timer]struct{} // user-group expiries (expiry.go)
	expiring sync.WaitGroup           // expiries running
	looping  sync.WaitGroup           // the heartbeat loop (liveness.go)
	hbStop   chan struct{}            // closed by stopHeartbeat
	hbOnce   sync.Once

	// beatHook, if set (by tests, before Start), is called after each
	// heartbeat round.
	beatHook func()

	// connectedHook, if set (by tests, before Start), is called when
	// OnConnected has recorded a connection and joined its user's groups.
	connectedHook func(hub, conn string)
	// expiredHook, if set (by tests, before Start), is called when an
	// expiry timer has done its work.
	expiredHook func(hub, user, group string)
}

type localConn struct {
	user     string
	attached bool                // OnAttached recorded it (OnConnected may run first)
	close    func(reason string) // nil until OnConnected
	// closeWanted, closeReason: a close asked for before OnConnected.
	closeWanted bool
	closeReason string
}

// New checks cfg and returns a Service that is not started.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, log: cfg.Logger, verifier: newVerifier(cfg.AccessKeys, cfg.Endpoint),
		hubs: map[string]*serviceHub{}, timers: map[*time.Timer]struct{}{}, lower: map[string]string{}, local: map[string]map[string]*localConn{},
		closeCtx: ctx, cancel: cancel, hbStop: make(chan struct{}),
	}
	if cfg.Upstream != "" {
		s.up = newUpstream(cfg)
	}
	return s, nil
}

// Authenticator returns the authenticator of client connections: an access
// token (HS256 with an access key, aud the client URL, exp required) on
// negotiate and connect; the user id is its nameid claim. Give it to
// hub.Config.Authenticator.
func (s *Service) Authenticator() auth.Authenticator { return s.verifier.clientAuthenticator() }

// Register registers hub name on node with the service's hub: clients may
// invoke any method name (forwarded upstream), and the connection events
// go upstream. Call it before node.Start.
func (s *Service) Register(node *hub.Node, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("service: Register after Start")
	}
	s.nodeID = node.ID()
	h := &serviceHub{s: s, name: name}
	if err := node.Register(name, h); err != nil {
		return err
	}
	s.hubs[name] = h
	s.lower[strings.ToLower(name)] = name
	s.local[name] = map[string]*localConn{}
	return nil
}

// Start connects the service to its started node: it forgets connections
// an earlier run of this node id left in the Store, sends the node's first
// heartbeat, starts the heartbeat loop (liveness.go) and subscribes the
// service channels. The node's Backplane must be the one Backplane
// returned.
func (s *Service) Start(ctx context.Context, node *hub.Node) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return errors.New("service: already started or closed")
	}
	if s.bp == nil {
		s.mu.Unlock()
		return errors.New("service: the node's backplane must be wrapped with Service.Backplane")
	}
	hcs := map[string]*hub.HubContext{}
	for name := range s.hubs {
		hc, err := node.HubContext(name)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("service: %w", err)
		}
		hcs[name] = hc
	}
	s.node, s.ctx, s.started = node, hcs, true
	bp := s.bp
	s.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	resync := map[string]bool{}
	for name := range hcs {
		if err := s.cfg.Store.Forget(sctx, name, node.ID()); err != nil {
			s.log.Warn("service: could not forget the connections of an earlier run of this node", "hub", name, "err", err)
		}
		if _, err := s.cfg.Store.Heartbeat(sctx, name, node.ID(), s.cfg.HeartbeatTTL); err != nil {
			s.log.Warn("service: first heartbeat failed; retried every heartbeat interval", "hub", name, "err", err)
		}
		// The first round lists again any connection that arrived
		// between node.Start and the Forget above.
		resync[name] = true
	}
	s.looping.Add(1)
	go s.liveness(s.closeCtx, resync)
	if err := bp.Subscribe(ctx, nodeServiceChannel(node.ID()), channelAll); err != nil && !errors.Is(err, backplane.ErrUnavailable) {
		return fmt.Errorf("service: subscribe: %w", err)
	}
	return nil
}

// Close stops upstream requests in flight. It is idempotent; call it after
// the node's Shutdown (whose OnDisconnected hooks still use the service).
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	s.mu.Unlock()
	s.cancel()
	s.looping.Wait()
	s.expiring.Wait()
	if s.up != nil {
		s.up.close()
	}
	return nil
}

// stopHeartbeat ends the heartbeat loop as a crash would (tests): nothing
// is removed, the node's heartbeat just lapses.
func (s *Service) stopHeartbeat() { s.hbOnce.Do(func() { close(s.hbStop) }) }

// hubContext returns the sender of a hub the service serves.
func (s *Service) hubContext(name string) (*hub.HubContext, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc, ok := s.ctx[name]
	return hc, ok
}

func (s *Service) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.StoreTimeout)
}

// closeConnections closes conns (id -> node) of hub: its own at once, the
// others' by a command on their node's service channel.
func (s *Service) closeConnections(ctx context.Context, hubName string, conns map[string]string, reason string) error {
	byNode := map[string][]string{}
	for id, node := range conns {
		byNode[node] = append(byNode[node], id)
	}
	var errs []error
	for node, ids := range byNode {
		sort.Strings(ids)
		if node == s.nodeID {
			s.closeLocal(hubName, ids, false, nil, reason)
			continue
		}
		errs = append(errs, s.publish(ctx, nodeServiceChannel(node), &fabricv1.ServiceCommand{Hub: hubName, ConnectionIds: ids, Reason: reason}))
	}
	return errors.Join(errs...)
}

// closeAll closes every connection of hub on every node but excluded.
func (s *Service) closeAll(ctx context.Context, hubName string, excluded []string, reason string) error {
	s.closeLocal(hubName, nil, true, excluded, reason)
	return s.publish(ctx, channelAll, &fabricv1.ServiceCommand{Hub: hubName, All: true, ExcludedConnectionIds: excluded, Reason: reason})
}

func (s *Service) publish(ctx context.Context, channel string, cmd *fabricv1.ServiceCommand) error {
	cmd.OriginNode = s.nodeID
	payload, err := proto.Marshal(cmd)
	if err != nil {
		return err
	}
	return s.bp.Publish(ctx, []backplane.Message{{Channel: channel, Payload: payload}})
}

// closeLocal closes connections of hub on this node: ids, or all but
// excluded. It does not block.
func (s *Service) closeLocal(hubName string, ids []string, all bool, excluded []string, reason string) {
	s.mu.Lock()
	conns := s.local[hubName]
	var closers []func(string)
	take := func(c *localConn) {
		if c.close == nil { // OnConnected has not run yet: it closes
			c.closeWanted, c.closeReason = true, reason
			return
		}
		closers = append(closers, c.close)
	}
	if all {
		skip := map[string]bool{}
		for _, e := range excluded {
			skip[e] = true
		}
		for id, c := range conns {
			if !skip[id] {
				take(c)
			}
		}
	} else {
		for _, id := range ids {
			if c := conns[id]; c != nil {
				take(c)
			}
		}
	}
	s.mu.Unlock()
	for _, c := range closers {
		c(reason)
	}
}

// onCommand handles a service command from the backplane (on its delivery
// goroutine: it must not block, and closing does not).
func (s *Service) onCommand(channel string, payload []byte) {
	var cmd fabricv1.ServiceCommand
	if err := proto.Unmarshal(payload, &cmd); err != nil {
		s.log.Debug("service: malformed command dropped", "channel", channel, "err", err)
		return
	}
	if cmd.OriginNode == s.nodeID {
		return // served locally before it was published
	}
	s.closeLocal(cmd.Hub, cmd.ConnectionIds, cmd.All, cmd.ExcludedConnectionIds, cmd.Reason)
}

// localLocked returns hub's local connection id, made if needed (nil for
// an unknown hub).
func (s *Service) localLocked(hubName, id string) *localConn {
	m := s.local[hubName]
	if m == nil {
		return nil
	}
	c := m[id]
	if c == nil {
		c = &localConn{}
		m[id] = c
	}
	return c
}

func (s *Service) addLocal(hubName, id, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.localLocked(hubName, id); c != nil {
		c.user, c.attached = user, true
	}
}

// setCloser gives a local connection its closer and runs it if a close
// was asked for before.
func (s *Service) setCloser(hubName, id string, closer func(string)) {
	s.mu.Lock()
	c := s.localLocked(hubName, id) // OnConnected may run before OnAttached
	if c == nil {
		s.mu.Unlock()
		return
	}
	c.close = closer
	wanted, reason := c.closeWanted, c.closeReason
	s.mu.Unlock()
	if wanted {
		closer(reason)
	}
}

func (s *Service) removeLocal(hubName, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.local[hubName], id)
}
