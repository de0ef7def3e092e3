package actors

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/seam"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// Hand-over: a stateful connection whose client reconnected to another
// node moves there. The steps, with the new owner N and the old owner O
// (each a hub actor; the bridge publishes every step):
//
//  1. N publishes a HandoverRequest on the connection's channel.
//  2. O checks it (same user, a stateful connection not already moving),
//     takes the connection's state from its outlet (conn.Conn.HandOver:
//     from then on what is queued for it is forwarded, record by record,
//     as HandoverRecords) and sends N the HandoverState. Its connection
//     actor lets the calls in progress finish (their replies are
//     forwarded too) and fails the client invocations waiting for a
//     result.
//  3. N restores the stateful socket, attaches the client's new socket
//     (Sequence, then the unacknowledged records), registers the
//     connection as moving in (cut.go), joins its groups and subscribes to
//     its channels, then tells O it is subscribed.
//  4. O publishes a marker on each route channel. Once every marker came
//     back and its calls are done, O tells N it is done and lets go of the
//     connection (without OnDisconnected: the connection goes on).
//  5. N delivers what it held back for the connection (the sends after the
//     markers) once every route is cut over and O is done; the client's
//     messages, waiting meanwhile, run from then on.
//
// Each step waits at most GroupAckTimeout. A failure on O's side ends the
// connection there as a disconnect (OnDisconnected runs on O); on N's side
// the client's socket is closed with the reason, quietly, unless O already
// finished (then OnDisconnected runs on N). Either side tells the other.

// errMoving refuses what a moving connection cannot take (a group change,
// a client invocation on its old owner).
var errMoving = errors.New("the connection is moving to another node; try again")

// ErrNoHandover: a stateful connection cannot move to this node; the
// error's text says why.
var ErrNoHandover = errors.New("stateful reconnect to another node failed")

// moveKey identifies a hand-over: the new owner's node id and its number
// there.
type moveKey struct {
	node string
	id   uint64
}

// moveOut is a connection leaving this node.
type moveOut struct {
	key        moveKey
	conn       *hubConn
	fwd        *forwarder
	subscribed bool
	markers    int // markers published and not yet back
	drained    bool
	stage      int
	timer      seam.Timer
}

// moveIn is a connection arriving on this node.
type moveIn struct {
	key    moveKey
	connID string
	userID string
	from   string     // the old owner, once it answered
	asker  *actor.PID // waits for the TakeOverResponse; nil once answered
	groups []string
	conn   *hubConn // once attached
	real   fabric.Outlet
	held   *heldOutlet
	early  [][]byte // records forwarded before the connection was attached
	subs   int      // subscriptions (the connection's, each group) not yet in effect
	cuts   int      // routes not yet cut over
	done   bool     // the old owner is done
	stage  int
	timer  seam.Timer
}

// Hand-over messages to the hub actor, from the backplane handler, the
// bridge, group and connection actors and its own timers.
type (
	handoverRequest struct {
		key    moveKey
		connID string
		userID string
	}
	handoverState struct {
		key   moveKey
		from  string // the old owner
		state *fabricv1.HandoverState
	}
	handoverRecord struct {
		key    moveKey
		connID string
		record []byte
	}
	handoverStep struct {
		key    moveKey
		connID string
		kind   fabricv1.HandoverStepKind
		reason string
	}
	// markerArrival is a marker from a route channel (the hub's own come
	// back too).
	markerArrival struct {
		route  Route
		key    moveKey
		connID string
	}
	// moveFailed: the bridge could not publish a step of the move.
	moveFailed struct {
		key    moveKey
		connID string
		err    error
	}
	moveTimeout struct {
		connID string
		key    moveKey
		stage  int
	}
	// moveSubscribed: a subscription of a connection moving here is in
	// effect: its group's ("" for its connection and user channels).
	// handedOver: the connection moving away gave up its state (or could
	// not).
	handedOver struct {
		connID string
		key    moveKey
		state  conn.StatefulState
		err    error
	}
	moveSubscribed struct {
		connID string
		key    moveKey
		group  string
		err    error
	}
	// groupCut: a group actor cut one member's route (old owner: its marker
	// came back; new owner: the route is cut over).
	groupCut struct {
		connID string
		group  string
	}
	// cutMember asks a group actor to cut a member leaving the node: mark
	// it and publish the marker, in order with the group's sends.
	cutMember struct {
		connID string
		marker *handoverPublish
	}
	// moveDrained: a connection actor leaving the node has no call left.
	moveDrained struct{ connID string }
)

// Hand-over messages to a connection actor.
type (
	// leave: the connection is leaving the node; finish the calls, fail
	// the waiting client invocations, then say moveDrained.
	leave struct{}
	// arrive: the connection that moved here is complete; run the
	// client's calls.
	arrive struct{}
	// quit: stop without OnDisconnected (the connection lives on, or it
	// never connected here).
	quit struct{}
)

// handoverPublish asks the bridge to publish a hand-over envelope on a
// route channel of hub (node == "") or on node's channel. A failure is
// reported to notify as a *moveFailed, and the bridge drops the move's
// later publishes until it gets a moveClosed.
type handoverPublish struct {
	hub     string
	route   Route
	node    string
	key     moveKey
	connID  string
	env     *fabricv1.Envelope
	ask     bool // fail at once when no other node listens (a request)
	barrier bool // publish only after everything queued before it was
	notify  *actor.PID
}

// moveClosed tells the bridge a move ended: forget its failure.
type moveClosed struct{ key moveKey }

// forwarder passes the records queued for a connection that left the node
// on to the bridge, in order; until start, they wait, so that the state
// goes out first. Safe for concurrent use (every actor that delivers to
// the connection calls forward).
type forwarder struct {
	root   *actor.RootContext
	bridge *actor.PID
	hub    string
	key    moveKey
	connID string
	notify *actor.PID

	mu      sync.Mutex
	started bool
	stopped bool
	early   [][]byte
}

func (f *forwarder) forward(rec []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.stopped:
	case !f.started:
		f.early = append(f.early, rec)
	default:
		f.send(rec)
	}
}

func (f *forwarder) send(rec []byte) {
	f.root.Send(f.bridge, &handoverPublish{hub: f.hub, node: f.key.node, key: f.key, connID: f.connID, notify: f.notify,
		env: &fabricv1.Envelope{Body: &fabricv1.Envelope_HandoverRecord{HandoverRecord: &fabricv1.HandoverRecord{
			MoveId: f.key.id, Hub: f.hub, ConnectionId: f.connID, Record: rec}}}})
}

func (f *forwarder) start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.early {
		f.send(r)
	}
	f.early, f.started = nil, true
}

func (f *forwarder) stop() {
	f.mu.Lock()
	f.stopped, f.early = true, nil
	f.mu.Unlock()
}

// heldOutlet is the outlet of a connection moving here while it moves:
// deliveries wait in it until release, so that they follow every record
// the old owner forwards. Safe for concurrent use.
type heldOutlet struct {
	fabric.Outlet
	mu    sync.Mutex
	held  bool
	queue [][]byte
}

func (o *heldOutlet) Enqueue(rec []byte) error {
	o.mu.Lock()
	if o.held {
		o.queue = append(o.queue, rec)
		o.mu.Unlock()
		return nil
	}
	o.mu.Unlock()
	return o.Outlet.Enqueue(rec)
}

func (o *heldOutlet) Send(m protocol.Message) error {
	rec, err := o.Protocol().AppendMessage(nil, m)
	if err != nil {
		return err
	}
	return o.Enqueue(rec)
}

// HandOver implements fabric.Mover for the connection's own outlet, so a
// connection that moved here can move on (or back). The hub moves a
// connection only once it has settled here, when nothing is held.
func (o *heldOutlet) HandOver(forward func(rec []byte), done func(conn.StatefulState, error)) {
	m, ok := o.Outlet.(fabric.Mover)
	if !ok {
		done(conn.StatefulState{}, errors.New("the connection's transport cannot move"))
		return
	}
	m.HandOver(forward, done)
}

// release queues what was held, in order, and lets later records through.
func (o *heldOutlet) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.queue {
		_ = o.Outlet.Enqueue(r)
	}
	o.queue, o.held = nil, false
}

// echoCounter is, per hub, how many connections are moving in: while it is
// above zero the backplane handler passes the node's own sends back to
// the hub (their echo).
type echoCounter = atomic.Int32

// handoverOK reports why the node cannot take part in moves, or nil.
func (h *hub) handoverOK() error {
	o, ok := backplane.Ability[backplane.ChannelOrder](h.cfg.Backplane)
	if !ok || !o.OneOrderPerChannel() {
		// Cause first: a WebSocket close reason keeps 123 bytes.
		return fmt.Errorf("%w: classic pub/sub on a Redis cluster has no one order per channel, which moving needs", ErrNoHandover)
	}
	return nil
}

func (h *hub) moving() bool { return len(h.outs)+len(h.ins) > 0 }

func (h *hub) armMove(ctx actor.Context, stage *int, timer *seam.Timer, connID string, key moveKey) {
	if *timer != nil {
		(*timer).Stop()
	}
	*stage++
	st := *stage
	self, root := ctx.Self(), ctx.ActorSystem().Root
	*timer = h.cfg.Seams.Runtime.AfterFunc(h.cfg.GroupAckTimeout, func() {
		root.Send(self, &moveTimeout{connID: connID, key: key, stage: st})
	})
}

func (h *hub) publishMove(ctx actor.Context, p *handoverPublish) {
	p.hub, p.notify = h.name, ctx.Self()
	ctx.Send(h.bridge, p)
}

func (h *hub) step(ctx actor.Context, node string, key moveKey, connID string, kind fabricv1.HandoverStepKind, reason string, barrier bool) {
	h.publishMove(ctx, &handoverPublish{node: node, key: key, connID: connID, barrier: barrier,
		env: &fabricv1.Envelope{Body: &fabricv1.Envelope_HandoverStep{HandoverStep: &fabricv1.HandoverStep{
			MoveId: key.id, MoverNode: key.node, Hub: h.name, ConnectionId: connID, Kind: kind, Reason: reason}}}})
}

func (h *hub) marker(key moveKey, connID string, r Route) *handoverPublish {
	return &handoverPublish{hub: h.name, route: r, key: key, connID: connID,
		env: &fabricv1.Envelope{Body: &fabricv1.Envelope_HandoverMarker{HandoverMarker: &fabricv1.HandoverMarker{
			MoveId: key.id, MoverNode: key.node, ConnectionId: connID}}}}
}

// ---- the new owner ----

// onTakeOver starts a move here: it asks whichever node owns the
// connection for it.
func (h *hub) onTakeOver(ctx actor.Context, m *fabric.TakeOverRequest) {
	fail := func(err error) { ctx.Respond(&fabric.TakeOverResponse{Err: err}) }
	if err := h.handoverOK(); err != nil {
		fail(err)
		return
	}
	if h.conns[m.ConnectionID] != nil || h.ins[m.ConnectionID] != nil {
		fail(fmt.Errorf("%w: connection %s is already here", ErrNoHandover, m.ConnectionID))
		return
	}
	h.nextMove++
	mi := &moveIn{key: moveKey{node: h.cfg.NodeID, id: h.nextMove}, connID: m.ConnectionID, userID: m.UserID, asker: ctx.Sender()}
	h.ins[m.ConnectionID] = mi
	h.echo.Add(1)
	h.armMove(ctx, &mi.stage, &mi.timer, mi.connID, mi.key)
	h.publishMove(ctx, &handoverPublish{route: Route{Kind: RouteConnection, Name: m.ConnectionID}, key: mi.key, connID: mi.connID, ask: true,
		env: &fabricv1.Envelope{Body: &fabricv1.Envelope_HandoverRequest{HandoverRequest: &fabricv1.HandoverRequest{
			MoveId: mi.key.id, ConnectionId: m.ConnectionID, UserId: m.UserID}}}})
}

func (h *hub) moveInOf(connID string, key moveKey) *moveIn {
	if mi := h.ins[connID]; mi != nil && mi.key == key {
		return mi
	}
	return nil
}

func (h *hub) onHandoverState(ctx actor.Context, m *handoverState) {
	mi := h.moveInOf(m.state.ConnectionId, m.key)
	if mi == nil || mi.asker == nil {
		return
	}
	st := m.state
	p, ok := protocol.Lookup(st.Protocol)
	var err error
	switch {
	case !ok:
		err = fmt.Errorf("%w: the old node sent an unknown protocol %q", ErrNoHandover, st.Protocol)
	case st.UserId != mi.userID:
		err = fmt.Errorf("%w: the old node sent another user", ErrNoHandover)
	case len(st.Groups) > h.cfg.MaxGroupsPerConnection:
		err = fmt.Errorf("%w: the connection is in %d groups and the limit here is %d (MaxGroupsPerConnection)", ErrNoHandover, len(st.Groups), h.cfg.MaxGroupsPerConnection)
	}
	if err == nil {
		for _, g := range st.Groups {
			if err = h.checkGroupName(g); err != nil {
				break
			}
		}
	}
	if err != nil {
		h.abortIn(ctx, mi, err.Error(), true)
		return
	}
	mi.groups, mi.from = st.Groups, m.from
	answer(ctx, mi.asker, &fabric.TakeOverResponse{MoveID: mi.key.id, Protocol: p, State: stateOf(st)})
	mi.asker = nil
	h.armMove(ctx, &mi.stage, &mi.timer, mi.connID, mi.key)
}

// onConnectMoved attaches a connection that moved here.
func (h *hub) onConnectMoved(ctx actor.Context, m *fabric.ConnectRequest) {
	id := m.Info.ID
	mi := h.moveInOf(id, moveKey{node: h.cfg.NodeID, id: m.Moved})
	if mi == nil || mi.asker != nil || mi.conn != nil {
		ctx.Respond(&fabric.ConnectResponse{Err: fmt.Errorf("%w: the hand-over of connection %s ended", ErrNoHandover, id)})
		return
	}
	mi.real = m.Info.Outlet
	mi.held = &heldOutlet{Outlet: m.Info.Outlet, held: true}
	m.Info.Outlet = mi.held
	for _, r := range mi.early {
		_ = mi.real.Enqueue(r)
	}
	mi.early = nil
	hc, resp, err := h.register(ctx, m, true)
	if err != nil {
		ctx.Respond(&fabric.ConnectResponse{Err: err})
		h.abortIn(ctx, mi, err.Error(), true)
		return
	}
	mi.conn = hc
	hc.cuts = &connCuts{all: cut{in: true}, conn: cut{in: true}, user: cut{in: true}}
	mi.cuts = 2
	routes := []Route{{Kind: RouteConnection, Name: id}}
	if hc.userID != "" {
		mi.cuts++
		if len(h.users[hc.userID]) == 1 {
			routes = append(routes, Route{Kind: RouteUser, Name: hc.userID})
		}
	}
	mi.subs = 1 + len(mi.groups)
	key := mi.key
	ctx.Send(h.bridge, &subscribeRequest{Hub: h.name, Routes: routes, Reply: ctx.Self(),
		OK:     &moveSubscribed{connID: id, key: key},
		Failed: func(err error) any { return &moveSubscribed{connID: id, key: key, err: err} }})
	for _, g := range mi.groups {
		mi.cuts++
		h.forwardMembership(ctx, &GroupRequest{Action: GroupAdd, ConnectionID: id, Group: g}, hc, ctx.Self(), &moveSubscribed{connID: id, key: key, group: g})
	}
	ctx.Respond(resp)
}

func (h *hub) onMoveSubscribed(ctx actor.Context, m *moveSubscribed) {
	mi := h.moveInOf(m.connID, m.key)
	if mi == nil {
		return
	}
	if m.err != nil {
		h.abortIn(ctx, mi, "the new node could not subscribe to the connection's channels: "+m.err.Error(), true)
		return
	}
	if m.group == "" && mi.conn != nil {
		for _, k := range []RouteKind{RouteAll, RouteConnection, RouteUser} {
			mi.conn.cuts.of(k).listening = true
		}
	}
	mi.subs--
	if mi.subs == 0 {
		// Behind every earlier publish of this node (barrier): a send made
		// here before the move began is on its channel before the markers.
		h.step(ctx, mi.from, mi.key, mi.connID, fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_SUBSCRIBED, "", true)
		h.armMove(ctx, &mi.stage, &mi.timer, mi.connID, mi.key)
	}
}

func (h *hub) onHandoverRecord(_ actor.Context, m *handoverRecord) {
	mi := h.moveInOf(m.connID, m.key)
	if mi == nil {
		return
	}
	if mi.real == nil {
		mi.early = append(mi.early, m.record)
		return
	}
	_ = mi.real.Enqueue(m.record)
}

// cutDone counts a route of a connection moving here that is cut over.
func (h *hub) cutDone(ctx actor.Context, mi *moveIn) {
	mi.cuts--
	h.settleIfDone(ctx, mi)
}

func (h *hub) settleIfDone(ctx actor.Context, mi *moveIn) {
	if !mi.done || mi.cuts > 0 || mi.subs > 0 || mi.conn == nil {
		return
	}
	mi.timer.Stop()
	mi.held.release()
	c := mi.conn
	c.cuts = nil
	h.endMoveIn(ctx, mi)
	ctx.Send(c.pid, &arrive{})
	ctx.Logger().Debug("connection moved here", "hub", h.name, "conn_id", c.id)
}

func (h *hub) endMoveIn(ctx actor.Context, mi *moveIn) {
	if mi.timer != nil {
		mi.timer.Stop()
	}
	delete(h.ins, mi.connID)
	h.echo.Add(-1)
	ctx.Send(h.bridge, &moveClosed{key: mi.key})
}

// abortIn ends a move here: the asker or the client hears why, the old
// owner is told (unless it told us), and the connection, if attached,
// ends (quietly, unless the old owner already let it go).
func (h *hub) abortIn(ctx actor.Context, mi *moveIn, reason string, tell bool) {
	if h.ins[mi.connID] != mi {
		return
	}
	ctx.Logger().Info("stateful connection could not move here", "hub", h.name, "conn_id", mi.connID, "reason", reason)
	if mi.asker != nil {
		answer(ctx, mi.asker, &fabric.TakeOverResponse{Err: fmt.Errorf("%w: %s", ErrNoHandover, reason)})
	}
	if tell && mi.from != "" {
		h.step(ctx, mi.from, mi.key, mi.connID, fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_ABORTED, reason, false)
	}
	if c := mi.conn; c != nil {
		mi.real.Close("Connection closed with an error: the connection could not move to this node: "+reason, false)
		if mi.done {
			ctx.Send(c.pid, &fabric.ClientClosed{Err: errors.New(reason)})
		} else {
			ctx.Send(c.pid, &quit{})
		}
	}
	h.endMoveIn(ctx, mi)
}

// ---- the old owner ----

func (h *hub) onHandoverRequest(ctx actor.Context, m *handoverRequest) {
	c := h.conns[m.connID]
	if c == nil || h.ins[m.connID] != nil {
		return // its owner answers, if any
	}
	refuse := func(reason string) {
		h.step(ctx, m.key.node, m.key, m.connID, fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_ABORTED, reason, false)
	}
	if h.outs[m.connID] != nil {
		refuse("the connection is already moving")
		return
	}
	if c.userID != m.userID {
		refuse("the reconnecting client is not the connection's user")
		return
	}
	if err := h.handoverOK(); err != nil {
		refuse(err.Error())
		return
	}
	mover, ok := c.outlet.(fabric.Mover)
	if !ok {
		refuse("the connection's transport cannot move")
		return
	}
	fwd := &forwarder{root: ctx.ActorSystem().Root, bridge: h.bridge, hub: h.name, key: m.key, connID: m.connID, notify: ctx.Self()}
	mo := &moveOut{key: m.key, conn: c, fwd: fwd}
	h.outs[m.connID] = mo
	c.cuts = &connCuts{}
	self, root, key, id := ctx.Self(), ctx.ActorSystem().Root, m.key, m.connID
	// Not waited for here: the connection's writer may be in the middle of
	// a frame, and the state comes once it is out.
	mover.HandOver(fwd.forward, func(state conn.StatefulState, err error) {
		root.Send(self, &handedOver{connID: id, key: key, state: state, err: err})
	})
	h.armMove(ctx, &mo.stage, &mo.timer, m.connID, m.key)
}

// onHandedOver goes on with a move away once the connection gave up its
// state: the state goes to the new owner.
func (h *hub) onHandedOver(ctx actor.Context, m *handedOver) {
	mo := h.moveOutOf(m.connID, m.key)
	if mo == nil {
		return // the move ended meanwhile (abortOut ended the connection)
	}
	c := mo.conn
	if m.err != nil {
		mo.timer.Stop()
		delete(h.outs, m.connID)
		c.cuts = nil
		ctx.Send(h.bridge, &moveClosed{key: m.key})
		h.step(ctx, m.key.node, m.key, m.connID, fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_ABORTED, m.err.Error(), false)
		return
	}
	state := m.state
	groups := make([]string, 0, len(c.groups))
	for g := range c.groups {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	h.publishMove(ctx, &handoverPublish{node: m.key.node, key: m.key, connID: m.connID,
		env: &fabricv1.Envelope{Body: &fabricv1.Envelope_HandoverState{HandoverState: &fabricv1.HandoverState{
			MoveId: m.key.id, Hub: h.name, ConnectionId: m.connID, Protocol: c.outlet.Protocol().Name(), UserId: c.userID,
			Groups: groups, Records: state.Records, FirstSeq: state.FirstSeq, Processed: state.Processed, Acked: state.Acked}}}})
	mo.fwd.start()
	ctx.Send(c.pid, &leave{})
	h.armMove(ctx, &mo.stage, &mo.timer, m.connID, m.key)
}

func (h *hub) moveOutOf(connID string, key moveKey) *moveOut {
	if mo := h.outs[connID]; mo != nil && mo.key == key {
		return mo
	}
	return nil
}

// cutOut publishes the markers of a connection leaving the node.
func (h *hub) cutOut(ctx actor.Context, mo *moveOut) {
	mo.subscribed = true
	c := mo.conn
	routes := []Route{{Kind: RouteAll}, {Kind: RouteConnection, Name: c.id}}
	if c.userID != "" {
		routes = append(routes, Route{Kind: RouteUser, Name: c.userID})
	}
	for _, r := range routes {
		c.cuts.of(r.Kind).marked = true
		mo.markers++
		h.publishMove(ctx, h.marker(mo.key, c.id, r))
	}
	for g := range c.groups {
		hg := h.groups[g]
		if hg == nil {
			continue // cannot be: a member's group actor lives while it has members
		}
		mo.markers++
		mk := h.marker(mo.key, c.id, Route{Kind: RouteGroup, Name: g})
		mk.notify = ctx.Self()
		ctx.Send(hg.pid, &cutMember{connID: c.id, marker: mk})
	}
	h.armMove(ctx, &mo.stage, &mo.timer, c.id, mo.key)
}

func (h *hub) markerBack(ctx actor.Context, mo *moveOut) {
	mo.markers--
	h.finishIfDone(ctx, mo)
}

func (h *hub) finishIfDone(ctx actor.Context, mo *moveOut) {
	if !mo.subscribed || mo.markers > 0 || !mo.drained {
		return
	}
	mo.timer.Stop()
	h.step(ctx, mo.key.node, mo.key, mo.conn.id, fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_DONE, "", false)
	mo.fwd.stop()
	delete(h.outs, mo.conn.id)
	ctx.Send(h.bridge, &moveClosed{key: mo.key})
	// Unregistered now, not when its actor stops: from here on a send to
	// it must go to the new owner, never into the outlet it left behind,
	// and it may move back here while that actor still stops.
	for g := range mo.conn.groups {
		if hg := h.groups[g]; hg != nil {
			hg.forwarded++
			ctx.Send(hg.pid, &groupMembership{action: GroupRemove, connID: mo.conn.id})
		}
	}
	h.unregister(ctx, mo.conn)
	ctx.Send(mo.conn.pid, &quit{})
	h.answerIfEmpty(ctx)
	ctx.Logger().Debug("connection moved away", "hub", h.name, "conn_id", mo.conn.id, "to", mo.key.node)
}

// abortOut ends a failed move away: the connection's state is gone, so it
// ends here as a disconnect.
func (h *hub) abortOut(ctx actor.Context, mo *moveOut, reason string, tell bool) {
	if h.outs[mo.conn.id] != mo {
		return
	}
	ctx.Logger().Info("stateful connection could not move away; it ends", "hub", h.name, "conn_id", mo.conn.id, "to", mo.key.node, "reason", reason)
	mo.timer.Stop()
	mo.fwd.stop()
	if tell {
		h.step(ctx, mo.key.node, mo.key, mo.conn.id, fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_ABORTED, reason, false)
	}
	delete(h.outs, mo.conn.id)
	ctx.Send(h.bridge, &moveClosed{key: mo.key})
	ctx.Send(mo.conn.pid, &fabric.ClientClosed{Err: errors.New("the connection could not move to another node: " + reason)})
}

// ---- both ----

func (h *hub) onHandoverStep(ctx actor.Context, m *handoverStep) {
	switch m.kind {
	case fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_SUBSCRIBED:
		if mo := h.moveOutOf(m.connID, m.key); mo != nil && !mo.subscribed {
			h.cutOut(ctx, mo)
		}
	case fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_DONE:
		if mi := h.moveInOf(m.connID, m.key); mi != nil {
			mi.done = true
			h.settleIfDone(ctx, mi)
		}
	case fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_ABORTED:
		if mi := h.moveInOf(m.connID, m.key); mi != nil {
			h.abortIn(ctx, mi, "the old node: "+m.reason, false)
		} else if mo := h.moveOutOf(m.connID, m.key); mo != nil {
			h.abortOut(ctx, mo, "the new node: "+m.reason, false)
		}
	}
}

func (h *hub) onMarker(ctx actor.Context, m *markerArrival) {
	if m.route.Kind == RouteGroup {
		if g := h.groups[m.route.Name]; g != nil {
			ctx.Send(g.pid, m)
		}
		return
	}
	c := h.conns[m.connID]
	if c == nil || c.cuts == nil {
		return
	}
	ct := c.cuts.of(m.route.Kind)
	if ct == nil || ct.seen || (m.route.Kind == RouteUser && m.route.Name != c.userID) {
		return
	}
	if mo := h.moveOutOf(m.connID, m.key); mo != nil && ct.marked {
		ct.seen = true
		h.markerBack(ctx, mo)
		return
	}
	if mi := h.moveInOf(m.connID, m.key); mi != nil && mi.conn == c {
		ct.seen = true
		h.countCut(ctx, c, m.route.Kind)
	}
}

// countCut counts a hub-level route of a connection moving here once it is
// cut over (its marker arrived and no echo is awaited).
func (h *hub) countCut(ctx actor.Context, c *hubConn, k RouteKind) {
	mi := h.ins[c.id]
	ct := c.cuts.of(k)
	if mi == nil || mi.conn != c || ct == nil || ct.counted || !ct.done() {
		return
	}
	ct.counted = true
	h.cutDone(ctx, mi)
}

func (h *hub) onGroupCut(ctx actor.Context, m *groupCut) {
	if mo := h.outs[m.connID]; mo != nil {
		h.markerBack(ctx, mo)
		return
	}
	if mi := h.ins[m.connID]; mi != nil {
		h.cutDone(ctx, mi)
	}
}

func (h *hub) onMoveFailed(ctx actor.Context, m *moveFailed) {
	reason := m.err.Error()
	if mi := h.moveInOf(m.connID, m.key); mi != nil {
		h.abortIn(ctx, mi, reason, false)
	} else if mo := h.moveOutOf(m.connID, m.key); mo != nil {
		h.abortOut(ctx, mo, reason, false)
	}
}

func (h *hub) onMoveTimeout(ctx actor.Context, m *moveTimeout) {
	if mi := h.moveInOf(m.connID, m.key); mi != nil && mi.stage == m.stage {
		reason := fmt.Sprintf("no answer from the connection's old node within %s (GroupAckTimeout)", h.cfg.GroupAckTimeout)
		if mi.asker != nil {
			reason = fmt.Sprintf("no node answered for the connection within %s (GroupAckTimeout): it ended, or its node is unreachable", h.cfg.GroupAckTimeout)
		}
		h.abortIn(ctx, mi, reason, true)
	} else if mo := h.moveOutOf(m.connID, m.key); mo != nil && mo.stage == m.stage {
		h.abortOut(ctx, mo, fmt.Sprintf("no answer from the new node within %s (GroupAckTimeout)", h.cfg.GroupAckTimeout), true)
	}
}

func (h *hub) onTakeOverAbort(ctx actor.Context, m *fabric.TakeOverAbort) {
	if mi := h.moveInOf(m.ConnectionID, moveKey{node: h.cfg.NodeID, id: m.MoveID}); mi != nil {
		h.abortIn(ctx, mi, m.Reason, true)
	}
}

// stateOf is the conn package's form of a HandoverState.
func stateOf(st *fabricv1.HandoverState) conn.StatefulState {
	return conn.StatefulState{Records: st.Records, FirstSeq: st.FirstSeq, Processed: st.Processed, Acked: st.Acked}
}
