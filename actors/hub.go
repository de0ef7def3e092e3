package actors

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/metrics"
)

// hub is the actor of one hub on one node. It is the parent of the hub's
// connection and group actors and keeps the local registry: connection id ->
// connection, user id -> local connections, group name -> group actor. Its
// route method is the one place that decides who gets a send.
type hub struct {
	batch  batch               // connections whose records wait for the mailbox to run dry
	box    *metrics.MailboxRef // nil without metrics; forgotten when the hub stops
	name   string
	cfg    *fabric.NodeConfig
	bridge *actor.PID

	conns  map[string]*hubConn   // by connection id
	order  []*hubConn            // the same, in connect order (swap-removed): deterministic fan-out
	byPID  map[string]string     // connection actor pid id -> connection id
	users  map[string][]*hubConn // user id -> its connections, in connect order
	groups map[string]*hubGroup
	gByPID map[string]string      // group actor pid id -> group name
	dying  map[string]*dyingGroup // groups stopping after their last member left

	emptyWaiters []*actor.PID // WaitNoConnections requesters

	// Hand-overs (move.go), by connection id.
	outs     map[string]*moveOut
	ins      map[string]*moveIn
	nextMove uint64
	echo     *echoCounter // shared with the backplane handler
	echoSeq  uint64       // the last echo number given to a send fanned out here (cut.go)

	connProps *actor.Props // every connection actor's, made on first use
	spawning  *connection  // the actor connProps' producer hands out next
}

type hubConn struct {
	id     string
	pid    *actor.PID
	userID string
	outlet fabric.Outlet
	pos    int                 // index in hub.order
	groups map[string]struct{} // the groups it is in, for MaxGroupsPerConnection
	cuts   *connCuts           // set while it moves between nodes (cut.go)
}

type hubGroup struct {
	pid       *actor.PID
	forwarded uint64 // membership requests forwarded to it
}

// dyingGroup is a group actor that is stopping (Poison: it still handles
// the sends already in its mailbox). Everything for that group that arrives
// meanwhile waits here, in order, and is routed again once it has stopped,
// so a later send can neither overtake an earlier one nor reach a stopped
// actor.
type dyingGroup struct {
	pid  *actor.PID
	held []any // *send or *heldMembership, in arrival order
}

// heldMembership is a group change that waits for a dying group.
type heldMembership struct {
	req      *GroupRequest
	reply    *actor.PID
	incoming *moveSubscribed // a join of a connection moving here
}

// send is a send on its way through the node: from SendRequest (made on
// this node: reply waits for the answer) or from another node (arrived).
type send struct {
	hub     string
	route   Route
	payload *payload
	reply   *actor.PID // nil: nobody waits
	arrived bool       // came from another node: never published again
	echo    bool       // came back from the backplane: only moving connections may take it (cut.go)
	publish bool       // set by route: hand it to the bridge after the local fan-out
	force   bool       // a moving connection waits for its echo: publish even if nobody else listens
	seq     uint64     // the echo's number, when a moving connection waits for it (cut.go)
}

// arrival is a send that another node published, decoded by the backplane
// handler.
type arrival struct {
	route   Route
	payload *payload
	echo    bool   // the node's own send, come back (cut.go)
	seq     uint64 // its echo number (cut.go)
}

// groupCommand asks the bridge to have the node owning a connection apply a
// group change; the bridge answers reply with a *GroupResponse.
type groupCommand struct {
	hub   string
	req   *GroupRequest
	reply *actor.PID
}

// remoteGroupCommand is a group change for a connection of this node,
// requested by another node; the hub answers with a *GroupResponse, or
// with errNotHere when the connection is not (or no longer) here.
type remoteGroupCommand struct{ req *GroupRequest }

// errConnectAbandoned ends a connection whose transport gave up waiting
// for the hub to attach it.
var errConnectAbandoned = errors.New("the connection was not attached in time and was closed")

func newHubProps(name string, cfg *fabric.NodeConfig, bridge *actor.PID, echo *echoCounter) *actor.Props {
	box := cfg.Mailboxes.Ref(MailboxHub)
	return trackMailbox(cfg.Seams.Props(func() actor.Actor {
		return &hub{
			batch:  batch{flusher: cfg.Flusher},
			box:    box,
			name:   name,
			cfg:    cfg,
			bridge: bridge,
			conns:  map[string]*hubConn{},
			byPID:  map[string]string{},
			users:  map[string][]*hubConn{},
			groups: map[string]*hubGroup{},
			gByPID: map[string]string{},
			dying:  map[string]*dyingGroup{},
			outs:   map[string]*moveOut{},
			ins:    map[string]*moveIn{},
			echo:   echo,
		}
	}), box)
}

// Receive dispatches.
func (h *hub) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *SendRequest:
		if err := m.check(); err != nil {
			answer(ctx, ctx.Sender(), &SendResponse{Err: err})
			return
		}
		if m.Route.Kind == RouteGroup {
			if err := h.checkGroupName(m.Route.Name); err != nil {
				answer(ctx, ctx.Sender(), &SendResponse{Err: err})
				return
			}
		}
		h.route(ctx, &send{hub: h.name, route: m.Route, payload: m.payload, reply: ctx.Sender()})
	case *arrival:
		h.route(ctx, &send{hub: h.name, route: m.route, payload: m.payload, arrived: true, echo: m.echo, seq: m.seq})
	case *GroupRequest:
		err := m.check()
		if err == nil {
			err = h.checkGroupName(m.Group)
		}
		if err != nil {
			answer(ctx, ctx.Sender(), &GroupResponse{Err: err})
			return
		}
		h.onGroupRequest(ctx, m)
	case *remoteGroupCommand:
		h.onRemoteGroupCommand(ctx, m)
	case *ClientInvokeRequest:
		h.onClientInvokeRequest(ctx, m)
	case *ClientInvokeCancel:
		h.onClientInvokeCancel(ctx, m)
	case *arrivedInvoke:
		h.onArrivedInvoke(ctx, m)
	case *arrivedInvokeCancel:
		h.onArrivedInvokeCancel(ctx, m)
	case *groupEmpty:
		h.onGroupEmpty(ctx, m)
	case *fabric.ConnectRequest:
		h.onConnect(ctx, m)
	case *fabric.TakeOverRequest:
		h.onTakeOver(ctx, m)
	case *fabric.TakeOverAbort:
		h.onTakeOverAbort(ctx, m)
	case *handoverRequest:
		h.onHandoverRequest(ctx, m)
	case *handedOver:
		h.onHandedOver(ctx, m)
	case *handoverState:
		h.onHandoverState(ctx, m)
	case *handoverRecord:
		h.onHandoverRecord(ctx, m)
	case *handoverStep:
		h.onHandoverStep(ctx, m)
	case *markerArrival:
		h.onMarker(ctx, m)
	case *moveSubscribed:
		h.onMoveSubscribed(ctx, m)
	case *groupCut:
		h.onGroupCut(ctx, m)
	case *moveDrained:
		if mo := h.outs[m.connID]; mo != nil {
			mo.drained = true
			h.finishIfDone(ctx, mo)
		}
	case *moveFailed:
		h.onMoveFailed(ctx, m)
	case *moveTimeout:
		h.onMoveTimeout(ctx, m)
	case *fabric.AbandonConnect:
		if c := h.conns[m.ID]; c != nil {
			ctx.Send(c.pid, &fabric.ClientClosed{Err: errConnectAbandoned})
		}
	case *fabric.CloseAll:
		h.onCloseAll(ctx, m)
	case *fabric.WaitNoConnections:
		h.emptyWaiters = append(h.emptyWaiters, ctx.Sender())
		h.answerIfEmpty(ctx)
	case flushBatch:
		h.batch.flush()
	case *actor.Stopping, *actor.Restarting:
		h.batch.flush() // nothing queued is left unwritten
	case *actor.Terminated:
		h.onTerminated(ctx, m.Who)
		h.answerIfEmpty(ctx)
	case *actor.Stopped:
		h.box.Remove()
	}
}

// route is the one place that decides who gets a send, for sends made on
// this node and sends that arrived from others alike. It hands the payload
// to this node's recipients: straight into their outbound queues, or, for a
// group, to the group actor, which fans out. A send made here is also
// published for other nodes, unless its one recipient is here (a
// connection); the bridge decides only how (channel, envelope) and whether
// anyone else listens at all.
func (h *hub) route(ctx actor.Context, s *send) {
	r := s.route
	s.publish = !s.arrived
	if h.moving() {
		h.routeMoving(ctx, s)
		return
	}
	if s.echo {
		return // nobody moves here any more
	}
	switch r.Kind {
	case RouteAll:
		for _, c := range h.order {
			if len(r.Excluded) == 0 || !r.excludes(c.id) {
				h.batch.deliver(ctx, c.outlet, s.payload)
			}
		}
	case RouteConnection:
		if c := h.conns[r.Name]; c != nil {
			h.batch.deliver(ctx, c.outlet, s.payload)
			s.publish = false // connection ids are unique: nobody else has it
		}
	case RouteUser:
		for _, c := range h.users[r.Name] {
			h.batch.deliver(ctx, c.outlet, s.payload)
		}
	case RouteGroup:
		if g := h.groups[r.Name]; g != nil {
			ctx.Send(g.pid, s) // it fans out, then finishes the send
			return
		}
		if d := h.dying[r.Name]; d != nil {
			d.held = append(d.held, s) // routed again once it has stopped
			return
		}
	}
	finishSend(ctx, h.bridge, s)
}

// routeMoving is route while connections move to or from this node: each
// recipient's cut (cut.go) decides whether it takes the send.
func (h *hub) routeMoving(ctx actor.Context, s *send) {
	r := s.route
	switch r.Kind {
	case RouteAll:
		for _, c := range h.order {
			if (len(r.Excluded) == 0 || !r.excludes(c.id)) && c.cuts.of(RouteAll).take(s, &h.echoSeq) {
				h.batch.deliver(ctx, c.outlet, s.payload)
			}
			if s.echo && c.cuts != nil {
				h.countCut(ctx, c, RouteAll)
			}
		}
	case RouteConnection:
		if c := h.conns[r.Name]; c != nil {
			took := c.cuts.of(RouteConnection).take(s, &h.echoSeq)
			if took {
				h.batch.deliver(ctx, c.outlet, s.payload)
			}
			if s.echo && c.cuts != nil {
				h.countCut(ctx, c, RouteConnection)
			}
			// Published only when a moving connection did not take it: it
			// waits for its echo (new owner), or it is the new owner's to
			// deliver (old owner).
			s.publish = !s.arrived && c.cuts != nil && !took
		}
	case RouteUser:
		for _, c := range h.users[r.Name] {
			if c.cuts.of(RouteUser).take(s, &h.echoSeq) {
				h.batch.deliver(ctx, c.outlet, s.payload)
			}
			if s.echo && c.cuts != nil {
				h.countCut(ctx, c, RouteUser)
			}
		}
	case RouteGroup:
		if g := h.groups[r.Name]; g != nil {
			ctx.Send(g.pid, s)
			return
		}
		if d := h.dying[r.Name]; d != nil {
			d.held = append(d.held, s)
			return
		}
	}
	if s.echo {
		return
	}
	finishSend(ctx, h.bridge, s)
}

// finishSend ends a send once its local fan-out is done: the bridge
// publishes it (and answers), or it is answered here.
func finishSend(ctx actor.Context, bridge *actor.PID, s *send) {
	if s.echo {
		return // answered when it was sent
	}
	if s.publish {
		ctx.Send(bridge, s)
		return
	}
	answer(ctx, s.reply, &SendResponse{})
}

func (h *hub) onConnect(ctx actor.Context, m *fabric.ConnectRequest) {
	if m.Moved != 0 {
		h.onConnectMoved(ctx, m)
		return
	}
	hc, resp, err := h.register(ctx, m, false)
	if err != nil {
		ctx.Respond(&fabric.ConnectResponse{Err: err})
		return
	}
	id := hc.id
	routes := []Route{{Kind: RouteConnection, Name: id}}
	if u := hc.userID; u != "" && len(h.users[u]) == 1 {
		routes = append(routes, Route{Kind: RouteUser, Name: u})
	}
	log, hubName := ctx.Logger(), h.name
	ctx.Send(h.bridge, &subscribeRequest{
		Hub:    h.name,
		Routes: routes,
		Reply:  ctx.Sender(),
		OK:     resp,
		Failed: func(err error) any {
			// Runs on the bridge's worker goroutine: no actor state here.
			// Local traffic works; the backplane resubscribes on recovery.
			log.Warn("connection subscriptions failed; it is reachable locally until the backplane recovers", "hub", hubName, "conn_id", id, "err", err)
			return resp
		},
	})
}

// register spawns a connection's actor and enters it in the registry; the
// caller subscribes its channels. moved: it moved here (no OnConnected).
func (h *hub) register(ctx actor.Context, m *fabric.ConnectRequest, moved bool) (*hubConn, *fabric.ConnectResponse, error) {
	id := m.Info.ID
	if _, dup := h.conns[id]; dup {
		return nil, nil, fmt.Errorf("connection id %s is already connected", id)
	}
	uploads := fabric.NewUploads(h.cfg.StreamBufferCapacity, h.cfg.MaxStreamsPerConnection)
	pending := fabric.NewPending(h.cfg.MaxPendingInvocations, h.cfg.MaxPendingInvocationBytes, h.cfg.Counters)
	name := "c-" + id
	if moved {
		// It may be moving back to this node while the actor it left
		// here still stops.
		name += "-m" + strconv.FormatUint(m.Moved, 10)
	}
	if h.connProps == nil {
		h.connProps = newConnectionProps(h.cfg, func() *connection {
			c := h.spawning
			h.spawning = nil
			return c
		})
	}
	h.spawning = &connection{
		info: m.Info, invoker: m.Invoker, uploads: uploads, pending: pending, moved: moved,
		parallel: h.cfg.MaxParallelInvocations, maxStreams: h.cfg.MaxStreamsPerConnection, rt: h.cfg.Seams.Runtime,
	}
	pid, err := ctx.SpawnNamed(h.connProps, name)
	h.spawning = nil // taken, unless the spawn failed first
	if err != nil {
		return nil, nil, fmt.Errorf("spawn connection actor: %w", err)
	}
	hc := &hubConn{id: id, pid: pid, userID: m.Info.UserID, outlet: m.Info.Outlet, pos: len(h.order)}
	h.conns[id] = hc
	h.order = append(h.order, hc)
	h.byPID[pid.Id] = id
	if u := m.Info.UserID; u != "" {
		h.users[u] = append(h.users[u], hc)
	}
	return hc, &fabric.ConnectResponse{Inbound: fabric.NewInbound(ctx.ActorSystem().Root, pid, uploads, pending, m.Info.Outlet.Done())}, nil
}

// HandleFailure implements actor.SupervisorStrategy for the hub's
// children; protoactor calls it on the hub's goroutine. A group actor gets
// protoactor's default strategy (a restart). Any other child is a
// connection actor, registered or already let go (a connection that moved
// away is unregistered before it quits), and is stopped, not restarted: a
// restarted one would run OnConnected again on a connection that is open,
// with the state of its calls gone, and the hub's one connection Props can
// make an actor only when the hub spawns one. Its Stopping closes the
// connection and runs OnDisconnected (connection.failed).
func (h *hub) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	if _, isGroup := h.gByPID[child.Id]; isGroup {
		actor.DefaultSupervisorStrategy().HandleFailure(sys, sup, child, rs, reason, msg)
		return
	}
	sys.Logger().Error("connection actor failed; its connection is closed", "hub", h.name, "actor", child.Id, "conn_id", h.byPID[child.Id], "reason", fmt.Sprint(reason), "message", fmt.Sprintf("%T", msg))
	sup.StopChildren(child)
}

func (h *hub) onCloseAll(ctx actor.Context, m *fabric.CloseAll) {
	for _, c := range h.order {
		ctx.Send(c.pid, &closeConnection{reason: m.Reason})
	}
	ctx.Respond(&fabric.CloseAllResponse{})
}

func (h *hub) answerIfEmpty(ctx actor.Context) {
	if len(h.conns) > 0 {
		return
	}
	for _, w := range h.emptyWaiters {
		answer(ctx, w, &fabric.NoConnections{})
	}
	h.emptyWaiters = nil
}

// unregister forgets a connection: sends stop reaching it from this node,
// and its own channels are let go.
func (h *hub) unregister(ctx actor.Context, c *hubConn) {
	id := c.id
	delete(h.byPID, c.pid.Id)
	delete(h.conns, id)
	last := len(h.order) - 1
	h.order[c.pos] = h.order[last]
	h.order[c.pos].pos = c.pos
	h.order[last] = nil
	h.order = h.order[:last]
	unsub := []Route{{Kind: RouteConnection, Name: id}}
	if u := c.userID; u != "" {
		h.users[u] = slices.DeleteFunc(h.users[u], func(x *hubConn) bool { return x == c })
		if len(h.users[u]) == 0 {
			delete(h.users, u)
			unsub = append(unsub, Route{Kind: RouteUser, Name: u})
		}
	}
	ctx.Send(h.bridge, &subscribeRequest{Hub: h.name, Routes: unsub, Unsubscribe: true})
}

func (h *hub) onTerminated(ctx actor.Context, who *actor.PID) {
	if id, ok := h.byPID[who.Id]; ok {
		h.unregister(ctx, h.conns[id])
		return
	}
	if name, ok := h.gByPID[who.Id]; ok {
		delete(h.gByPID, who.Id)
		if g := h.groups[name]; g != nil && g.pid.Id == who.Id {
			delete(h.groups, name)
		}
		if d := h.dying[name]; d != nil && d.pid.Id == who.Id {
			h.onGroupStopped(ctx, name, d)
		}
	}
}

func (h *hub) onGroupRequest(ctx actor.Context, m *GroupRequest) {
	h.changeMembership(ctx, m, ctx.Sender())
}

// changeMembership applies a group change for a local connection, or asks
// the bridge to have the connection's node apply it.
func (h *hub) changeMembership(ctx actor.Context, m *GroupRequest, reply *actor.PID) {
	if c := h.conns[m.ConnectionID]; c != nil {
		h.forwardMembership(ctx, m, c, reply, nil)
		return
	}
	// Not ours: the bridge asks the node that owns it.
	ctx.Send(h.bridge, &groupCommand{hub: h.name, req: m, reply: reply})
}

func (h *hub) onRemoteGroupCommand(ctx actor.Context, m *remoteGroupCommand) {
	c := h.conns[m.req.ConnectionID]
	if c == nil {
		ctx.Respond(&GroupResponse{Err: errNotHere})
		return
	}
	h.forwardMembership(ctx, m.req, c, ctx.Sender(), nil)
}

// forwardMembership hands a change for a local connection to the group's
// actor, creating it for a first add; the group actor answers reply. For a
// join of a connection moving here, incoming is the answer (with the
// error, if it fails).
func (h *hub) forwardMembership(ctx actor.Context, m *GroupRequest, member *hubConn, reply *actor.PID, incoming *moveSubscribed) {
	var err error
	if member.cuts != nil && incoming == nil {
		err = errMoving
	} else {
		err = h.checkMembership(m, member)
	}
	if err != nil {
		if incoming != nil {
			answer(ctx, reply, &moveSubscribed{connID: incoming.connID, key: incoming.key, err: err})
			return
		}
		answer(ctx, reply, &GroupResponse{Err: err})
		return
	}
	if d := h.dying[m.Group]; d != nil {
		d.held = append(d.held, &heldMembership{req: m, reply: reply, incoming: incoming})
		return
	}
	g := h.groups[m.Group]
	if g == nil {
		if m.Action == GroupRemove {
			answer(ctx, reply, &GroupResponse{})
			return
		}
		pid := ctx.Spawn(newGroupProps(h.name, m.Group, h.bridge, h.cfg))
		g = &hubGroup{pid: pid}
		h.groups[m.Group] = g
		h.gByPID[pid.Id] = m.Group
	}
	g.forwarded++
	ctx.Send(g.pid, &groupMembership{action: m.Action, connID: member.id, pid: member.pid, outlet: member.outlet, reply: reply, incoming: incoming})
}

func (h *hub) onGroupEmpty(ctx actor.Context, m *groupEmpty) {
	g := h.groups[m.name]
	if g == nil || g.forwarded != m.processed {
		return // a membership request is on its way to it
	}
	delete(h.groups, m.name)
	// Poison, not Stop: a send routed to it before this point is still in
	// its mailbox and must be fanned out (to nobody) and finished. Until it
	// has stopped, what comes for the group waits in dying.
	h.dying[m.name] = &dyingGroup{pid: g.pid}
	ctx.Poison(g.pid)
}

// onGroupStopped routes again, in order, what waited for a dying group.
func (h *hub) onGroupStopped(ctx actor.Context, name string, d *dyingGroup) {
	delete(h.dying, name)
	for _, x := range d.held {
		switch x := x.(type) {
		case *send:
			h.route(ctx, x)
		case *heldMembership:
			if x.incoming == nil {
				h.changeMembership(ctx, x.req, x.reply)
			} else if c := h.conns[x.req.ConnectionID]; c != nil {
				delete(c.groups, x.req.Group) // recorded when it was held; forwardMembership records it again
				h.forwardMembership(ctx, x.req, c, x.reply, x.incoming)
			}
		}
	}
}

// checkGroupName refuses a group name over MaxGroupNameBytes.
func (h *hub) checkGroupName(name string) error {
	if len(name) > h.cfg.MaxGroupNameBytes {
		return fmt.Errorf("%w: the group name is %d bytes and the limit is %d (MaxGroupNameBytes)", ErrLimitExceeded, len(name), h.cfg.MaxGroupNameBytes)
	}
	return nil
}

// checkMembership applies the group limits to a change for a local
// connection and, when it passes, records it in the connection's set.
// Every change for a local connection passes here, so the set mirrors the
// group actors' membership.
func (h *hub) checkMembership(m *GroupRequest, c *hubConn) error {
	if err := h.checkGroupName(m.Group); err != nil {
		return err
	}
	if m.Action == GroupRemove {
		delete(c.groups, m.Group)
		return nil
	}
	if _, in := c.groups[m.Group]; in {
		return nil
	}
	if len(c.groups) >= h.cfg.MaxGroupsPerConnection {
		return fmt.Errorf("%w: connection %q is in %d groups and the limit is %d (MaxGroupsPerConnection)", ErrLimitExceeded, c.id, len(c.groups), h.cfg.MaxGroupsPerConnection)
	}
	if c.groups == nil {
		c.groups = map[string]struct{}{}
	}
	c.groups[m.Group] = struct{}{}
	return nil
}
