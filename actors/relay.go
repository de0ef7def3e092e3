package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// Requests of the HTTP transports (long polling, Server-Sent Events) for a
// connection another node owns go to the owner as an HttpRequest envelope
// and come back as an HttpResponse on this node's channel, as group
// commands and acks do. The bridge keeps the requests waiting for their
// answers; the owner's bridge hands a request to NodeConfig.ServeHTTP on a
// goroutine (a poll waits up to the poll timeout) and publishes its answer.

// ErrNoOwner: no node answered a forwarded HTTP-transport request in time.
var ErrNoOwner = errors.New("no node answered for the connection")

// relayMessage marks the bridge's messages of this file, dispatched by
// onRelay.
type relayMessage interface{ relayMessage() }

type (
	// httpForward asks the bridge to publish req on channel and answer the
	// sender with *HTTPForwarded.
	httpForward struct {
		channel string
		req     *fabricv1.HttpRequest
		timeout time.Duration
	}
	relayTimeout struct{ id uint64 }
	// relayAbandon: the forwarder waiting at reply stopped waiting.
	relayAbandon struct {
		reply *actor.PID
		err   error
	}
	relayServed struct {
		origin string
		resp   *fabricv1.HttpResponse
	}
)

func (*httpForward) relayMessage()  {}
func (*relayTimeout) relayMessage() {}
func (*relayAbandon) relayMessage() {}
func (*relayServed) relayMessage()  {}

// HTTPForwarded answers ForwardHTTP's request inside the actor system.
type HTTPForwarded struct {
	Resp *fabricv1.HttpResponse
	Err  error
}

// relayState is the bridge's part for forwarded HTTP requests.
type relayState struct {
	waiting map[uint64]*pendingRelay
	nextID  uint64
	// ctx ends the owner side's requests in flight when the bridge stops.
	ctx    context.Context
	cancel context.CancelFunc
}

type pendingRelay struct {
	reply *actor.PID
	timer interface{ Stop() bool }
}

func (b *bridge) relays() *relayState {
	if b.relay == nil {
		ctx, cancel := context.WithCancel(context.Background())
		b.relay = &relayState{waiting: map[uint64]*pendingRelay{}, ctx: ctx, cancel: cancel}
	}
	return b.relay
}

// ForwardHTTP sends req to the owner of its connection and waits for the
// answer, up to timeout: to node toNode's channel when toNode is set (the
// home node of a long-polling token), else to the connection's channel
// (hub req.Hub, connection req.ConnectionId). It fails with ErrNoOwner
// when no node answered in time (or none listens, when the backplane can
// tell), with ErrNotDeliveredRemotely when the backplane is down. Safe for
// concurrent use.
func ForwardHTTP(ctx context.Context, root *actor.RootContext, bridge *actor.PID, toNode string, req *fabricv1.HttpRequest, timeout time.Duration) (*fabricv1.HttpResponse, error) {
	ch := nodeChannel(toNode)
	if toNode == "" {
		ch = routeChannel(req.Hub, Route{Kind: RouteConnection, Name: req.ConnectionId})
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The bridge answers within timeout (its own timer); the future's
	// bound only turns a stopped bridge into an error. When ctx ends
	// first, the bridge is told to answer now.
	f := actor.NewFuture(root.ActorSystem(), timeout+5*time.Second)
	root.RequestWithCustomSender(bridge, &httpForward{channel: ch, req: req, timeout: timeout}, f.PID())
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			root.Send(bridge, &relayAbandon{reply: f.PID(), err: ctx.Err()})
		case <-done:
		}
	}()
	res, err := f.Result()
	if err != nil {
		return nil, fmt.Errorf("forwarding to the connection's node: %w", err)
	}
	fw, ok := res.(*HTTPForwarded)
	if !ok {
		return nil, fmt.Errorf("actors: unexpected forward answer %T", res)
	}
	return fw.Resp, fw.Err
}

// onRelay handles the messages of forwarded HTTP requests.
func (b *bridge) onRelay(ctx actor.Context, m relayMessage) {
	rs := b.relays()
	switch m := m.(type) {
	case *httpForward:
		if !b.othersListen(m.channel) {
			answer(ctx, ctx.Sender(), &HTTPForwarded{Err: fmt.Errorf("%w: no node has it", ErrNoOwner)})
			return
		}
		rs.nextID++
		id := rs.nextID
		req := proto.Clone(m.req).(*fabricv1.HttpRequest)
		req.Id = id
		payload, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_HttpRequest{HttpRequest: req}})
		if err != nil {
			answer(ctx, ctx.Sender(), &HTTPForwarded{Err: ErrNotDeliveredRemotely})
			return
		}
		self, root := ctx.Self(), ctx.ActorSystem().Root
		p := &pendingRelay{reply: ctx.Sender()}
		p.timer = b.cfg.Seams.Runtime.AfterFunc(m.timeout, func() { root.Send(self, &relayTimeout{id: id}) })
		rs.waiting[id] = p
		b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: m.channel, Payload: payload}, relayID: id})
	case *relayAbandon:
		for id, p := range rs.waiting {
			if p.reply.Equal(m.reply) {
				b.settleRelay(ctx, id, nil, m.err)
			}
		}
	case *relayTimeout:
		b.settleRelay(ctx, m.id, nil, fmt.Errorf("%w within %s", ErrNoOwner, "the forwarding timeout"))
	case *relayServed:
		payload, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_HttpResponse{HttpResponse: m.resp}})
		if err != nil {
			b.log.Error("marshal http response", "err", err)
			return
		}
		b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: nodeChannel(m.origin), Payload: payload}})
	}
}

// settleRelay answers the forwarded request id, if it still waits.
func (b *bridge) settleRelay(ctx actor.Context, id uint64, resp *fabricv1.HttpResponse, err error) {
	rs := b.relays()
	if p, ok := rs.waiting[id]; ok {
		p.timer.Stop()
		delete(rs.waiting, id)
		answer(ctx, p.reply, &HTTPForwarded{Resp: resp, Err: err})
	}
}

// onRelayInbound handles another node's HttpRequest (serving it if this
// node owns the connection) or the answer to one of this node's.
func (b *bridge) onRelayInbound(ctx actor.Context, origin string, env *fabricv1.Envelope) {
	switch body := env.Body.(type) {
	case *fabricv1.Envelope_HttpResponse:
		b.settleRelay(ctx, body.HttpResponse.Id, body.HttpResponse, nil)
	case *fabricv1.Envelope_HttpRequest:
		serve := b.cfg.ServeHTTP
		if serve == nil {
			return
		}
		rs := b.relays()
		req, self, root := body.HttpRequest, ctx.Self(), ctx.ActorSystem().Root
		b.wg.Add(1)
		b.cfg.Seams.Runtime.Go(func() {
			defer b.wg.Done()
			resp := serve(rs.ctx, req)
			if resp == nil {
				return // not this node's: the owner answers
			}
			resp.Id = req.Id
			root.Send(self, &relayServed{origin: origin, resp: resp})
		})
	}
}

// stopRelays ends the requests this node serves for others and answers the
// ones it waits for, when the bridge stops.
func (b *bridge) stopRelays(ctx actor.Context) {
	if b.relay == nil {
		return
	}
	b.relay.cancel()
	for id, p := range b.relay.waiting {
		p.timer.Stop()
		answer(ctx, p.reply, &HTTPForwarded{Err: errors.New("the node is shutting down")})
		delete(b.relay.waiting, id)
	}
}

// subscribedConnection answers SubscribeConnection's request.
type subscribedConnection struct{}

// SubscribeConnection subscribes this node to the channel of connection id
// of hub (or unsubscribes it), so HTTP-transport requests forwarded for
// the connection reach this node before its hub actor has it (between the
// first poll or the event stream and the handshake). A subscription
// returns once in effect, or with its error; an unsubscription is queued
// and returns at once. Safe for concurrent use.
func SubscribeConnection(root *actor.RootContext, bridge *actor.PID, hub, id string, unsubscribe bool, timeout time.Duration) error {
	if unsubscribe { // nobody waits: the bridge runs changes in order
		root.Send(bridge, &subscribeRequest{Hub: hub, Routes: []Route{{Kind: RouteConnection, Name: id}}, Unsubscribe: true})
		return nil
	}
	f := actor.NewFuture(root.ActorSystem(), timeout)
	root.Send(bridge, &subscribeRequest{
		Hub: hub, Routes: []Route{{Kind: RouteConnection, Name: id}}, Unsubscribe: unsubscribe,
		Reply: f.PID(), OK: &subscribedConnection{}, Failed: func(err error) any { return err },
	})
	res, err := f.Result()
	if err != nil {
		return err
	}
	if err, ok := res.(error); ok {
		return err
	}
	return nil
}
