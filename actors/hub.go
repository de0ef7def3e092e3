package actors

import (
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
)

// HubConfig configures a hub actor.
type HubConfig struct {
	Name       string
	Channels   Channels
	Bridge     *actor.PID
	Connection ConnectionConfig
	Props      PropsFactory
	// Runtime starts goroutines and timers. Default: RealRuntime.
	Runtime Runtime
}

// hub is the actor of one hub on one node. It is the parent of the hub's
// connection and group actors and keeps the local registry: connection id ->
// actor, user id -> local connections, group name -> group actor. Sends are
// routed here: local recipients directly, others through the bridge.
type hub struct {
	cfg HubConfig

	conns  map[string]*hubConn   // by connection id
	order  []*hubConn            // the same, in connect order (swap-removed): deterministic fan-out
	byPID  map[string]string     // connection actor pid id -> connection id
	users  map[string][]*hubConn // user id -> its connections, in connect order
	groups map[string]*hubGroup
	gByPID map[string]string // group actor pid id -> group name

	emptyWaiters []*actor.PID // WaitNoConnections requesters
}

type hubConn struct {
	id     string
	pid    *actor.PID
	userID string
	outlet Outlet
	pos    int // index in hub.order
}

// deliver queues p for c. Deliveries go straight to the connection's
// outbound queue (safe for concurrent use) rather than through its actor:
// a mailbox hop per recipient is the largest cost of fan-out after the
// socket write. Order per route holds because each route's fan-out runs in
// one actor; a caller's Completion still follows its sends, since a send
// is answered only after its local fan-out.
func deliver(o Outlet, p *Payload) { _ = o.Enqueue(p.For(o.Protocol())) }

type hubGroup struct {
	pid       *actor.PID
	forwarded uint64 // membership requests forwarded to it
}

// NewHubProps returns the Props of a hub actor.
func NewHubProps(cfg HubConfig) *actor.Props {
	if cfg.Props == nil {
		cfg.Props = DefaultProps
	}
	cfg.Runtime = runtimeOr(cfg.Runtime)
	return cfg.Props(func() actor.Actor {
		return &hub{
			cfg:    cfg,
			conns:  map[string]*hubConn{},
			byPID:  map[string]string{},
			users:  map[string][]*hubConn{},
			groups: map[string]*hubGroup{},
			gByPID: map[string]string{},
		}
	})
}

// Receive dispatches.
func (h *hub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *ConnectRequest:
		h.onConnect(ctx, m)
	case *SendRequest:
		h.onSend(ctx, m)
	case *remoteDelivery:
		h.deliverLocal(ctx, m.Route, m.Payload, m)
	case *GroupRequest:
		h.onGroupRequest(ctx, m)
	case *remoteGroupCommand:
		h.onRemoteGroupCommand(ctx, m)
	case *groupEmpty:
		h.onGroupEmpty(ctx, m)
	case *CloseAll:
		for _, c := range h.order {
			ctx.Send(c.pid, &closeConnection{reason: m.Reason})
		}
		ctx.Respond(&CloseAllResponse{Count: len(h.conns)})
	case *WaitNoConnections:
		h.emptyWaiters = append(h.emptyWaiters, ctx.Sender())
		h.answerIfEmpty(ctx)
	case *actor.Terminated:
		h.onTerminated(ctx, m.Who)
		h.answerIfEmpty(ctx)
	}
}

func (h *hub) answerIfEmpty(ctx actor.Context) {
	if len(h.conns) > 0 {
		return
	}
	for _, w := range h.emptyWaiters {
		if w != nil {
			ctx.Send(w, &NoConnections{})
		}
	}
	h.emptyWaiters = nil
}

func (h *hub) onConnect(ctx actor.Context, m *ConnectRequest) {
	id := m.Info.ID
	if _, dup := h.conns[id]; dup {
		ctx.Respond(&ConnectResponse{Err: fmt.Errorf("connection id %s is already connected", id)})
		return
	}
	if h.cfg.Connection.StreamBufferCapacity <= 0 {
		h.cfg.Connection.StreamBufferCapacity = 10
	}
	m.Info.uploads = newUploadRegistry(h.cfg.Connection.StreamBufferCapacity)
	pid, err := ctx.SpawnNamed(newConnectionProps(m.Info, m.Invoker, h.cfg.Connection, h.cfg.Props, h.cfg.Runtime), "c-"+id)
	if err != nil {
		ctx.Respond(&ConnectResponse{Err: fmt.Errorf("spawn connection actor: %w", err)})
		return
	}
	hc := &hubConn{id: id, pid: pid, userID: m.Info.UserID, outlet: m.Info.Outlet, pos: len(h.order)}
	h.conns[id] = hc
	h.order = append(h.order, hc)
	h.byPID[pid.Id] = id
	channels := []string{h.cfg.Channels.Route(h.cfg.Name, Route{Kind: RouteConnection, Name: id})}
	if u := m.Info.UserID; u != "" {
		if len(h.users[u]) == 0 {
			channels = append(channels, h.cfg.Channels.Route(h.cfg.Name, Route{Kind: RouteUser, Name: u}))
		}
		h.users[u] = append(h.users[u], hc)
	}
	log, hubName := ctx.Logger(), h.cfg.Name
	resp := &ConnectResponse{Inbound: newInbound(ctx.ActorSystem().Root, pid, m.Info.uploads)}
	ctx.Send(h.cfg.Bridge, &subscribeRequest{
		Channels: channels,
		Reply:    ctx.Sender(),
		OK:       resp,
		Failed: func(err error) any {
			// Runs on the bridge's worker goroutine: no actor state here.
			// Local traffic works; the backplane resubscribes on recovery.
			log.Warn("connection subscriptions failed; it is reachable locally until the backplane recovers", "hub", hubName, "conn_id", id, "err", err)
			return resp
		},
	})
}

func (h *hub) onTerminated(ctx actor.Context, who *actor.PID) {
	if id, ok := h.byPID[who.Id]; ok {
		c := h.conns[id]
		delete(h.byPID, who.Id)
		delete(h.conns, id)
		last := len(h.order) - 1
		h.order[c.pos] = h.order[last]
		h.order[c.pos].pos = c.pos
		h.order[last] = nil
		h.order = h.order[:last]
		unsub := []string{h.cfg.Channels.Route(h.cfg.Name, Route{Kind: RouteConnection, Name: id})}
		if u := c.userID; u != "" {
			h.users[u] = slices.DeleteFunc(h.users[u], func(x *hubConn) bool { return x == c })
			if len(h.users[u]) == 0 {
				delete(h.users, u)
				unsub = append(unsub, h.cfg.Channels.Route(h.cfg.Name, Route{Kind: RouteUser, Name: u}))
			}
		}
		ctx.Send(h.cfg.Bridge, &subscribeRequest{Channels: unsub, Unsubscribe: true})
		return
	}
	if name, ok := h.gByPID[who.Id]; ok {
		delete(h.gByPID, who.Id)
		if g := h.groups[name]; g != nil && g.pid.Id == who.Id {
			delete(h.groups, name)
		}
	}
}

func (h *hub) onSend(ctx actor.Context, m *SendRequest) {
	r := m.Route
	switch r.Kind {
	case RouteGroup:
		if g := h.groups[r.Name]; g != nil {
			ctx.Forward(g.pid) // the group fans out and hands the publish to the bridge
			return
		}
	case RouteConnection:
		if c := h.conns[r.Name]; c != nil {
			deliver(c.outlet, m.Payload)
			ctx.Respond(&SendResponse{})
			return
		}
	default:
		h.deliverLocal(ctx, r, m.Payload, nil)
	}
	ctx.Forward(h.cfg.Bridge)
}

// deliverLocal hands p to the local recipients of r. fwd, when set, is a
// remote delivery to forward to a group actor.
func (h *hub) deliverLocal(ctx actor.Context, r Route, p *Payload, fwd *remoteDelivery) {
	switch r.Kind {
	case RouteAll:
		for _, c := range h.order {
			if len(r.Excluded) > 0 && r.excludes(c.id) {
				continue
			}
			deliver(c.outlet, p)
		}
	case RouteConnection:
		if c := h.conns[r.Name]; c != nil {
			deliver(c.outlet, p)
		}
	case RouteUser:
		for _, c := range h.users[r.Name] {
			deliver(c.outlet, p)
		}
	case RouteGroup:
		if g := h.groups[r.Name]; g != nil && fwd != nil {
			ctx.Send(g.pid, fwd)
		}
	}
}

func (h *hub) onGroupRequest(ctx actor.Context, m *GroupRequest) {
	c := h.conns[m.ConnectionID]
	if c == nil {
		// Not ours: ask the node that owns it, through the backplane.
		m.hub = h.cfg.Name
		ctx.Forward(h.cfg.Bridge)
		return
	}
	h.forwardMembership(ctx, m, c)
}

func (h *hub) forwardMembership(ctx actor.Context, m *GroupRequest, member *hubConn) {
	g := h.groups[m.Group]
	if g == nil {
		if m.Action == GroupRemove {
			ctx.Respond(&GroupResponse{})
			return
		}
		channel := h.cfg.Channels.Route(h.cfg.Name, Route{Kind: RouteGroup, Name: m.Group})
		pid := ctx.Spawn(newGroupProps(m.Group, channel, h.cfg.Bridge, h.cfg.Props))
		g = &hubGroup{pid: pid}
		h.groups[m.Group] = g
		h.gByPID[pid.Id] = m.Group
	}
	g.forwarded++
	ctx.RequestWithCustomSender(g.pid, &groupMembership{Request: m, PID: member.pid, Outlet: member.outlet}, ctx.Sender())
}

func (h *hub) onRemoteGroupCommand(ctx actor.Context, m *remoteGroupCommand) {
	c := h.conns[m.Request.ConnectionID]
	if c == nil {
		ctx.Respond(&GroupResponse{Err: errNotHere})
		return
	}
	h.forwardMembership(ctx, m.Request, c)
}

func (h *hub) onGroupEmpty(ctx actor.Context, m *groupEmpty) {
	g := h.groups[m.Name]
	if g == nil || g.forwarded != m.Processed {
		return // a membership request is on its way to it
	}
	delete(h.groups, m.Name)
	ctx.Stop(g.pid)
}
