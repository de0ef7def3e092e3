package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/internal/metrics"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// subscribeRequest asks the bridge to (un)subscribe the channels of routes
// of hub Hub. When it is done the bridge sends OK (or Failed(err), if set,
// else the error) to Reply, if Reply is set. Subscription changes run in
// order.
type subscribeRequest struct {
	Hub         string
	Routes      []Route
	Unsubscribe bool
	Reply       *actor.PID
	OK          any
	Failed      func(error) any
}

// errNotHere: a remote group command named a connection this node does not
// have; the owner answers, not this node.
var errNotHere = errors.New("connection is not on this node")

// The bridge's own messages.
type (
	flushDone struct {
		batch []pendingPublish
		err   error
	}
	ackTimeout struct{ id uint64 }
	// inbound is a group command or ack another node sent to this one.
	inbound struct {
		hub string
		env *fabricv1.Envelope
	}
	subscribeDone    struct{}
	groupCommandDone struct {
		origin string
		id     uint64
		err    error
	}
)

type pendingPublish struct {
	msg   backplane.Message
	reply *actor.PID // answered with a *SendResponse; nil: nobody waits
	ackID uint64     // a group command waiting for this publish
	// relayID is a forwarded HTTP request waiting for this publish.
	relayID uint64
	// resultID is a remote client invocation waiting for this publish.
	resultID uint64
	// move is set for a hand-over step (move.go); a failure is reported
	// to notify and fails the move's later publishes.
	move    *handoverPublish
	barrier bool // starts a batch: published after every earlier one
}

type pendingAck struct {
	reply *actor.PID
	timer interface{ Stop() bool }
	conn  string
}

// bridge is the only actor that talks to the Backplane, and the only code
// that names channels and marshals envelopes. Publishes are batched:
// requests accumulate while one batch is in flight, and the next batch
// takes them all (up to MaxBatch). Subscription changes run one at a time,
// in order, on a worker goroutine, so a subscribe never overtakes an
// earlier unsubscribe of the same channel. What arrives from the backplane
// is decoded by backplaneHandler on the backplane's delivery goroutine;
// only group commands and acks come to this actor.
type bridge struct {
	cfg      *fabric.NodeConfig
	log      *slog.Logger
	hubs     map[string]*actor.PID // filled by SpawnNode before the backplane starts; survives a restart
	audience backplane.Audience    // nil when the backplane cannot tell

	pending  []pendingPublish
	flushing bool
	inFlight int // publishes in the batch being flushed
	acks     map[uint64]*pendingAck
	nextID   uint64

	res results // remote client invocations waiting (results.go)

	subQueue []*subscribeRequest
	subBusy  bool

	relay *relayState // forwarded HTTP-transport requests (relay.go); nil until the first

	failedMoves map[moveKey]bool // hand-overs whose publish failed, until moveClosed

	wg sync.WaitGroup

	box *metrics.MailboxRef // nil without metrics; forgotten when the bridge stops
}

// newBridgeProps returns the bridge's Props. hubs is the node's hub actors
// by name: SpawnNode fills it before anything reaches the bridge, and
// every incarnation of the bridge reads the same map.
func newBridgeProps(cfg *fabric.NodeConfig, hubs map[string]*actor.PID) *actor.Props {
	audience, _ := backplane.Ability[backplane.Audience](cfg.Backplane)
	box := cfg.Mailboxes.Ref(MailboxBridge)
	return trackMailbox(cfg.Seams.Props(func() actor.Actor {
		return &bridge{cfg: cfg, log: cfg.Logger, audience: audience, hubs: hubs, acks: map[uint64]*pendingAck{}, box: box}
	}), box)
}

// answer sends msg to to, if anybody waits there (a message sent without a
// sender has nobody to answer).
func answer(ctx actor.Context, to *actor.PID, msg any) {
	if to != nil {
		ctx.Send(to, msg)
	}
}

// Receive dispatches.
func (b *bridge) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *send:
		b.onPublish(ctx, m)
	case *handoverPublish:
		b.onHandoverPublish(ctx, m)
	case *moveClosed:
		delete(b.failedMoves, m.key)
	case *flushDone:
		b.onFlushDone(ctx, m)
	case *subscribeRequest:
		b.subQueue = append(b.subQueue, m)
		b.nextSubscription(ctx)
	case *subscribeDone:
		b.subBusy = false
		b.nextSubscription(ctx)
	case *groupCommand:
		b.onGroupCommand(ctx, m)
	case *ackTimeout:
		if a, ok := b.acks[m.id]; ok {
			b.settleAck(ctx, m.id, fmt.Errorf("%w: no node answered for connection %q within the group acknowledgement timeout (%s): no node has it, or its node is unreachable", ErrUnknownConnection, a.conn, b.cfg.GroupAckTimeout))
		}
	case *inbound:
		b.onInbound(ctx, m)
	case *groupCommandDone:
		b.onGroupCommandDone(ctx, m)
	case relayMessage:
		b.onRelay(ctx, m)
	case *remoteInvoke:
		b.onRemoteInvoke(ctx, m)
	case *remoteInvokeCancel:
		b.onRemoteInvokeCancel(ctx, m)
	case *resultAckTimeout:
		b.onResultAckTimeout(ctx, m)
	case *invokeAccepted:
		b.onInvokeAccepted(ctx, m)
	case *ClientInvokeResponse:
		b.onOwnedResult(ctx, m)
	case *actor.Stopping:
		b.stopRelays(ctx)
		b.failAllResults(ctx)
		for id, a := range b.acks {
			a.timer.Stop()
			answer(ctx, a.reply, &GroupResponse{Err: errors.New("the node is shutting down")})
			delete(b.acks, id)
		}
	case *actor.Stopped:
		b.cfg.Seams.Runtime.Join(&b.wg)
		b.box.Remove()
	}
}

// othersListen reports whether another node may be subscribed to channel:
// always, unless the backplane knows that none is.
func (b *bridge) othersListen(channel string) bool {
	return b.audience == nil || b.audience.OthersSubscribed(channel)
}

// onPublish hands a send made on this node to other nodes: it names the
// route's channel, marshals the envelope and queues the publish; the
// answer goes to the sender when the batch is done.
func (b *bridge) onPublish(ctx actor.Context, s *send) {
	ch := routeChannel(s.hub, s.route)
	if !s.force && !b.othersListen(ch) {
		answer(ctx, s.reply, &SendResponse{})
		return
	}
	env, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{
		ExcludedConnectionIds: s.route.Excluded, Json: s.payload.json, Messagepack: s.payload.msgpack, EchoSeq: s.seq,
	}}})
	if err != nil { // cannot happen for these field types; never silent
		b.log.Error("marshal envelope", "err", err)
		answer(ctx, s.reply, &SendResponse{Err: ErrNotDeliveredRemotely})
		return
	}
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: ch, Payload: env}, reply: s.reply})
}

func (b *bridge) enqueue(ctx actor.Context, p pendingPublish) {
	b.pending = append(b.pending, p)
	if !b.flushing {
		b.flush(ctx)
	}
	b.countQueued()
}

// countQueued sets the PublishQueued gauge: what waits for a batch, and
// what the batch in flight holds.
func (b *bridge) countQueued() {
	b.cfg.Counters.PublishQueued.Store(int64(len(b.pending) + b.inFlight))
}

func (b *bridge) flush(ctx actor.Context) {
	n := min(len(b.pending), b.cfg.MaxBatch)
	for i := 1; i < n; i++ {
		if b.pending[i].barrier {
			n = i
			break
		}
	}
	batch := make([]pendingPublish, n)
	copy(batch, b.pending[:n])
	rest := copy(b.pending, b.pending[n:])
	clear(b.pending[rest:])
	b.pending = b.pending[:rest]
	b.flushing = true
	b.inFlight = n
	self, root := ctx.Self(), ctx.ActorSystem().Root
	b.wg.Add(1)
	b.cfg.Seams.Runtime.Go(func() {
		defer b.wg.Done()
		msgs := make([]backplane.Message, len(batch))
		for i := range batch {
			msgs[i] = batch[i].msg
		}
		pctx, cancel := context.WithTimeout(context.Background(), b.cfg.BackplaneTimeout)
		var start time.Time
		if b.cfg.PublishDuration != nil {
			start = time.Now()
		}
		err := b.cfg.Backplane.Publish(pctx, msgs)
		if b.cfg.PublishDuration != nil {
			b.cfg.PublishDuration.Observe(time.Since(start).Seconds())
		}
		cancel()
		root.Send(self, &flushDone{batch: batch, err: err})
	})
}

func (b *bridge) onFlushDone(ctx actor.Context, m *flushDone) {
	b.flushing = false
	b.inFlight = 0
	defer b.countQueued()
	resp := &SendResponse{}
	if m.err != nil {
		b.cfg.Counters.PublishFailed.Add(uint64(len(m.batch)))
		b.log.Warn("backplane publish failed; the senders were told", "messages", len(m.batch), "err", m.err)
		resp.Err = ErrNotDeliveredRemotely
	} else {
		b.cfg.Counters.Published.Add(uint64(len(m.batch)))
	}
	for _, p := range m.batch {
		answer(ctx, p.reply, resp)
		if p.ackID != 0 && m.err != nil {
			b.settleAck(ctx, p.ackID, ErrNotDeliveredRemotely)
		}
		if p.relayID != 0 && m.err != nil {
			b.settleRelay(ctx, p.relayID, nil, ErrNotDeliveredRemotely)
		}
		if p.resultID != 0 && m.err != nil {
			b.settleResult(ctx, p.resultID, &ClientInvokeResponse{Err: ErrNotDeliveredRemotely})
		}
		if p.move != nil && m.err != nil {
			b.failMove(ctx, p.move, m.err)
		}
	}
	if len(b.pending) > 0 {
		b.flush(ctx)
	}
}

func (b *bridge) nextSubscription(ctx actor.Context) {
	if b.subBusy || len(b.subQueue) == 0 {
		return
	}
	req := b.subQueue[0]
	b.subQueue[0] = nil
	b.subQueue = b.subQueue[1:]
	b.subBusy = true
	channels := make([]string, len(req.Routes))
	for i, r := range req.Routes {
		channels[i] = routeChannel(req.Hub, r)
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	b.wg.Add(1)
	b.cfg.Seams.Runtime.Go(func() {
		defer b.wg.Done()
		sctx, cancel := context.WithTimeout(context.Background(), b.cfg.BackplaneTimeout)
		var err error
		if req.Unsubscribe {
			err = b.cfg.Backplane.Unsubscribe(sctx, channels...)
		} else {
			err = b.cfg.Backplane.Subscribe(sctx, channels...)
		}
		cancel()
		if req.Reply != nil {
			switch {
			case err == nil:
				root.Send(req.Reply, req.OK)
			case req.Failed != nil:
				root.Send(req.Reply, req.Failed(err))
			default:
				root.Send(req.Reply, err)
			}
		} else if err != nil && !errors.Is(err, backplane.ErrClosed) {
			b.log.Warn("backplane subscription change failed", "channels", channels, "unsubscribe", req.Unsubscribe, "err", err)
		}
		root.Send(self, &subscribeDone{})
	})
}

// onGroupCommand sends a group change to whichever node owns the
// connection (only that node subscribes to the connection's channel) and
// waits for its acknowledgement on this node's channel.
func (b *bridge) onGroupCommand(ctx actor.Context, m *groupCommand) {
	ch := routeChannel(m.hub, Route{Kind: RouteConnection, Name: m.req.ConnectionID})
	if !b.othersListen(ch) {
		answer(ctx, m.reply, &GroupResponse{Err: fmt.Errorf("%w: no node has connection %q", ErrUnknownConnection, m.req.ConnectionID)})
		return
	}
	b.nextID++
	id := b.nextID
	action := fabricv1.GroupAction_GROUP_ACTION_ADD
	if m.req.Action == GroupRemove {
		action = fabricv1.GroupAction_GROUP_ACTION_REMOVE
	}
	payload, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
		Id: id, Action: action, Group: m.req.Group, ConnectionId: m.req.ConnectionID,
	}}})
	if err != nil { // cannot happen for these field types; never silent
		b.log.Error("marshal group command", "err", err)
		answer(ctx, m.reply, &GroupResponse{Err: ErrNotDeliveredRemotely})
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	a := &pendingAck{reply: m.reply, conn: m.req.ConnectionID}
	a.timer = b.cfg.Seams.Runtime.AfterFunc(b.cfg.GroupAckTimeout, func() { root.Send(self, &ackTimeout{id: id}) })
	b.acks[id] = a
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: ch, Payload: payload}, ackID: id})
}

// settleAck answers the group command waiting for ack id, if it still
// waits, with err (nil: the change is in effect).
func (b *bridge) settleAck(ctx actor.Context, id uint64, err error) {
	if a, ok := b.acks[id]; ok {
		a.timer.Stop()
		delete(b.acks, id)
		answer(ctx, a.reply, &GroupResponse{Err: err})
	}
}

func (b *bridge) onInbound(ctx actor.Context, m *inbound) {
	if b.onResultInbound(ctx, m) {
		return
	}
	switch body := m.env.Body.(type) {
	case *fabricv1.Envelope_GroupAck:
		var err error
		if body.GroupAck.Error != "" {
			err = fmt.Errorf("the node of the connection refused the group change: %s", body.GroupAck.Error)
		}
		b.settleAck(ctx, body.GroupAck.Id, err)
	case *fabricv1.Envelope_GroupCommand:
		b.onRemoteGroupCommand(ctx, m.hub, m.env.OriginNode, body.GroupCommand)
	case *fabricv1.Envelope_HttpRequest, *fabricv1.Envelope_HttpResponse:
		b.onRelayInbound(ctx, m.env.OriginNode, m.env)
	}
}

// onRemoteGroupCommand applies another node's group change if the
// connection is here; the hub actor's answer goes back as an ack.
func (b *bridge) onRemoteGroupCommand(ctx actor.Context, hubName, origin string, cmd *fabricv1.GroupCommand) {
	hubPID := b.hubs[hubName]
	if hubPID == nil {
		return
	}
	action := GroupAdd // the handler let only ADD and REMOVE through
	if cmd.Action == fabricv1.GroupAction_GROUP_ACTION_REMOVE {
		action = GroupRemove
	}
	req := &GroupRequest{Action: action, ConnectionID: cmd.ConnectionId, Group: cmd.Group}
	rt, root, self, id := b.cfg.Seams.Runtime, ctx.ActorSystem().Root, ctx.Self(), cmd.Id
	f := rt.Request(root, hubPID, &remoteGroupCommand{req: req}, b.cfg.GroupAckTimeout)
	b.wg.Add(1)
	rt.Go(func() {
		defer b.wg.Done()
		res, err := f.Result()
		if r, ok := res.(*GroupResponse); ok && err == nil {
			err = r.Err
		}
		if errors.Is(err, errNotHere) {
			return // the owner answers, not us
		}
		root.Send(self, &groupCommandDone{origin: origin, id: id, err: err})
	})
}

func (b *bridge) onGroupCommandDone(ctx actor.Context, m *groupCommandDone) {
	ack := &fabricv1.GroupAck{Id: m.id}
	if m.err != nil {
		ack.Error = m.err.Error()
	}
	payload, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_GroupAck{GroupAck: ack}})
	if err != nil {
		b.log.Error("marshal group ack", "err", err)
		return
	}
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: nodeChannel(m.origin), Payload: payload}})
}

// onHandoverPublish publishes a step of a hand-over (move.go) on its
// channel, unless an earlier step of the same move failed.
func (b *bridge) onHandoverPublish(ctx actor.Context, m *handoverPublish) {
	if b.failedMoves[m.key] {
		return
	}
	ch := nodeChannel(m.node)
	if m.node == "" {
		ch = routeChannel(m.hub, m.route)
	}
	if m.ask && !b.othersListen(ch) {
		b.failMove(ctx, m, fmt.Errorf("%w: no node has connection %q", ErrUnknownConnection, m.connID))
		return
	}
	m.env.OriginNode = b.cfg.NodeID
	payload, err := proto.Marshal(m.env)
	if err != nil { // cannot happen for these field types; never silent
		b.failMove(ctx, m, fmt.Errorf("marshal hand-over envelope: %w", err))
		return
	}
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: ch, Payload: payload}, move: m, barrier: m.barrier})
}

// failMove reports a failed step once and drops the move's later
// publishes, queued or to come, until the hub closes the move.
func (b *bridge) failMove(ctx actor.Context, m *handoverPublish, err error) {
	if b.failedMoves[m.key] {
		return
	}
	if b.failedMoves == nil {
		b.failedMoves = map[moveKey]bool{}
	}
	b.failedMoves[m.key] = true
	b.pending = slices.DeleteFunc(b.pending, func(p pendingPublish) bool { return p.move != nil && p.move.key == m.key })
	b.countQueued()
	if errors.Is(err, backplane.ErrUnavailable) || !errors.Is(err, ErrUnknownConnection) {
		err = fmt.Errorf("%w (%v)", ErrNotDeliveredRemotely, err)
	}
	answer(ctx, m.notify, &moveFailed{key: m.key, connID: m.connID, err: err})
}
