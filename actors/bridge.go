package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// BridgeConfig configures the backplane bridge of a node.
type BridgeConfig struct {
	NodeID    string
	Channels  Channels
	Backplane backplane.Backplane
	// PublishTimeout bounds one batch of publishes. Default 5 s.
	PublishTimeout time.Duration
	// GroupAckTimeout bounds the wait for the node owning a connection to
	// acknowledge a group change. Default 10 s.
	GroupAckTimeout time.Duration
	// MaxBatch caps the messages published in one batch. Default 512.
	MaxBatch int
	Props    PropsFactory
	// Runtime starts goroutines and timers. Default: RealRuntime.
	Runtime Runtime
	Logger  *slog.Logger
	// Stats, when set, receives counters.
	Stats *BridgeStats
}

// BridgeStats counts what the bridge saw; read with the atomic methods.
type BridgeStats struct {
	Published     atomic.Uint64 // messages handed to the backplane
	PublishFailed atomic.Uint64 // messages whose publish failed
	Received      atomic.Uint64 // envelopes received from other nodes
	Malformed     atomic.Uint64 // payloads that were not valid envelopes
	Gaps          atomic.Uint64 // EventGap reports
	Down          atomic.Uint64 // EventDown reports
}

// subscribeRequest asks the bridge to (un)subscribe channels. When it is
// done the bridge sends OK (or Failed(err), if set, else the error) to
// Reply, if Reply is set. Subscription changes run in order.
type subscribeRequest struct {
	Channels    []string
	Unsubscribe bool
	Reply       *actor.PID
	OK          any
	Failed      func(error) any
}

// remoteGroupCommand is a group change for a connection of this node,
// requested by another node; the hub answers with a *GroupResponse.
type remoteGroupCommand struct{ Request *GroupRequest }

var errNotHere = errors.New("connection is not on this node")

type (
	flushDone struct {
		batch []pendingPublish
		err   error
	}
	ackTimeout struct{ id uint64 }
	inbound    struct {
		hub string
		env *fabricv1.Envelope
	}
	subscribeDone    struct{}
	groupCommandDone struct {
		origin string
		id     uint64
		err    error
	}
	// RegisterHub tells the bridge which actor serves a hub name.
	RegisterHub struct {
		Name string
		PID  *actor.PID
	}
)

type pendingPublish struct {
	msg   backplane.Message
	reply *actor.PID // nil: nobody waits
	ackID uint64     // a remote group command waiting for this publish
}

type pendingAck struct {
	reply *actor.PID
	timer Timer
	conn  string
}

// bridge is the only actor that talks to the Backplane. Publishes are
// batched: requests accumulate while one batch is in flight, and the next
// batch takes them all (up to MaxBatch). Subscription changes run one at a
// time, in order, on a worker goroutine, so a subscribe never overtakes an
// earlier unsubscribe of the same channel. Messages from the backplane are
// decoded on the backplane's delivery goroutine and sent straight to the hub
// actors.
type bridge struct {
	cfg  BridgeConfig
	log  *slog.Logger
	hubs map[string]*actor.PID

	pending  []pendingPublish
	flushing bool
	acks     map[uint64]*pendingAck
	nextID   uint64

	subQueue []*subscribeRequest
	subBusy  bool

	wg sync.WaitGroup
}

// NewBridgeProps returns the Props of a bridge actor. The actor starts the
// backplane with itself as handler when it starts.
func NewBridgeProps(cfg BridgeConfig) *actor.Props {
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.GroupAckTimeout <= 0 {
		cfg.GroupAckTimeout = 10 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 512
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = &BridgeStats{}
	}
	if cfg.Props == nil {
		cfg.Props = DefaultProps
	}
	cfg.Runtime = runtimeOr(cfg.Runtime)
	return cfg.Props(func() actor.Actor {
		return &bridge{cfg: cfg, log: cfg.Logger, hubs: map[string]*actor.PID{}, acks: map[uint64]*pendingAck{}}
	})
}

// Receive dispatches.
func (b *bridge) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *RegisterHub:
		b.hubs[m.Name] = m.PID
		ctx.Respond(&struct{}{})
	case *SendRequest:
		if m.Envelope == nil {
			ctx.Respond(&SendResponse{})
			return
		}
		b.enqueue(ctx, backplane.Message{Channel: m.Channel, Payload: m.Envelope}, ctx.Sender())
	case *flushDone:
		b.onFlushDone(ctx, m)
	case *subscribeRequest:
		b.subQueue = append(b.subQueue, m)
		b.nextSubscription(ctx)
	case *subscribeDone:
		b.subBusy = false
		b.nextSubscription(ctx)
	case *GroupRequest:
		b.onRemoteGroupRequest(ctx, m)
	case *ackTimeout:
		if a, ok := b.acks[m.id]; ok {
			b.failAck(ctx, m.id, fmt.Errorf("no node acknowledged the group change for connection %s within %s: it is not connected to any node", a.conn, b.cfg.GroupAckTimeout))
		}
	case *inbound:
		b.onInbound(ctx, m)
	case *groupCommandDone:
		b.onGroupCommandDone(ctx, m)
	case *actor.Stopping:
		for id, a := range b.acks {
			a.timer.Stop()
			ctx.Send(a.reply, &GroupResponse{Err: errors.New("node is shutting down")})
			delete(b.acks, id)
		}
	case *actor.Stopped:
		b.cfg.Runtime.Join(&b.wg)
	}
}

func (b *bridge) enqueue(ctx actor.Context, msg backplane.Message, reply *actor.PID) {
	b.pending = append(b.pending, pendingPublish{msg: msg, reply: reply})
	if !b.flushing {
		b.flush(ctx)
	}
}

func (b *bridge) flush(ctx actor.Context) {
	n := min(len(b.pending), b.cfg.MaxBatch)
	batch := make([]pendingPublish, n)
	copy(batch, b.pending[:n])
	rest := copy(b.pending, b.pending[n:])
	clear(b.pending[rest:])
	b.pending = b.pending[:rest]
	b.flushing = true
	self, root := ctx.Self(), ctx.ActorSystem().Root
	b.wg.Add(1)
	b.cfg.Runtime.Go(func() {
		defer b.wg.Done()
		msgs := make([]backplane.Message, len(batch))
		for i := range batch {
			msgs[i] = batch[i].msg
		}
		pctx, cancel := context.WithTimeout(context.Background(), b.cfg.PublishTimeout)
		err := b.cfg.Backplane.Publish(pctx, msgs)
		cancel()
		root.Send(self, &flushDone{batch: batch, err: err})
	})
}

func (b *bridge) onFlushDone(ctx actor.Context, m *flushDone) {
	b.flushing = false
	var resp *SendResponse
	if m.err != nil {
		b.cfg.Stats.PublishFailed.Add(uint64(len(m.batch)))
		b.log.Warn("backplane publish failed", "messages", len(m.batch), "err", m.err)
		resp = &SendResponse{Err: fmt.Errorf("backplane: publish failed: %w", m.err)}
	} else {
		b.cfg.Stats.Published.Add(uint64(len(m.batch)))
		resp = &SendResponse{}
	}
	for _, p := range m.batch {
		if p.reply != nil {
			ctx.Send(p.reply, resp)
		}
		if p.ackID != 0 && m.err != nil {
			b.failAck(ctx, p.ackID, resp.Err)
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
	self, root := ctx.Self(), ctx.ActorSystem().Root
	b.wg.Add(1)
	b.cfg.Runtime.Go(func() {
		defer b.wg.Done()
		sctx, cancel := context.WithTimeout(context.Background(), b.cfg.PublishTimeout)
		var err error
		if req.Unsubscribe {
			err = b.cfg.Backplane.Unsubscribe(sctx, req.Channels...)
		} else {
			err = b.cfg.Backplane.Subscribe(sctx, req.Channels...)
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
			b.log.Warn("backplane subscription change failed", "channels", req.Channels, "unsubscribe", req.Unsubscribe, "err", err)
		}
		root.Send(self, &subscribeDone{})
	})
}

// onRemoteGroupRequest sends a group command to whichever node owns the
// connection (only that node subscribes to the connection's channel) and
// waits for its acknowledgement on this node's channel.
func (b *bridge) onRemoteGroupRequest(ctx actor.Context, m *GroupRequest) {
	hub := m.hub
	if hub == "" {
		ctx.Respond(&GroupResponse{Err: errors.New("group request from an unknown hub")})
		return
	}
	b.nextID++
	id := b.nextID
	action := fabricv1.GroupAction_GROUP_ACTION_ADD
	if m.Action == GroupRemove {
		action = fabricv1.GroupAction_GROUP_ACTION_REMOVE
	}
	env := &fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
		Id: id, Action: action, Group: m.Group, ConnectionId: m.ConnectionID,
	}}}
	payload, err := proto.Marshal(env)
	if err != nil {
		ctx.Respond(&GroupResponse{Err: err})
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	a := &pendingAck{reply: ctx.Sender(), conn: m.ConnectionID}
	a.timer = b.cfg.Runtime.AfterFunc(b.cfg.GroupAckTimeout, func() { root.Send(self, &ackTimeout{id: id}) })
	b.acks[id] = a
	ch := b.cfg.Channels.Route(hub, Route{Kind: RouteConnection, Name: m.ConnectionID})
	b.pending = append(b.pending, pendingPublish{msg: backplane.Message{Channel: ch, Payload: payload}, ackID: id})
	if !b.flushing {
		b.flush(ctx)
	}
}

// failAck answers a waiting remote group request with err.
func (b *bridge) failAck(ctx actor.Context, id uint64, err error) {
	if a, ok := b.acks[id]; ok {
		a.timer.Stop()
		delete(b.acks, id)
		ctx.Send(a.reply, &GroupResponse{Err: err})
	}
}

func (b *bridge) onInbound(ctx actor.Context, m *inbound) {
	switch body := m.env.Body.(type) {
	case *fabricv1.Envelope_GroupAck:
		if a, ok := b.acks[body.GroupAck.Id]; ok {
			a.timer.Stop()
			delete(b.acks, body.GroupAck.Id)
			var err error
			if body.GroupAck.Error != "" {
				err = errors.New(body.GroupAck.Error)
			}
			ctx.Send(a.reply, &GroupResponse{Err: err})
		}
	case *fabricv1.Envelope_GroupCommand:
		cmd := body.GroupCommand
		hubPID := b.hubs[m.hub]
		if hubPID == nil {
			return
		}
		action := GroupAdd
		switch cmd.Action {
		case fabricv1.GroupAction_GROUP_ACTION_ADD:
		case fabricv1.GroupAction_GROUP_ACTION_REMOVE:
			action = GroupRemove
		default:
			b.cfg.Stats.Malformed.Add(1)
			return
		}
		req := &GroupRequest{Action: action, ConnectionID: cmd.ConnectionId, Group: cmd.Group}
		f := b.cfg.Runtime.Request(ctx.ActorSystem().Root, hubPID, &remoteGroupCommand{Request: req}, b.cfg.GroupAckTimeout)
		self, root := ctx.Self(), ctx.ActorSystem().Root
		origin, id := m.env.OriginNode, cmd.Id
		b.wg.Add(1)
		b.cfg.Runtime.Go(func() {
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
	b.enqueue(ctx, backplane.Message{Channel: b.cfg.Channels.Node(m.origin), Payload: payload}, nil)
}
