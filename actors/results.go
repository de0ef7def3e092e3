package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// Client results: the server invokes a method on one connection and waits
// for the client's Completion.
//
// On the connection's node the hub actor hands the invocation to the
// connection actor, which queues it on the outlet, keeps the caller's reply
// PID under the invocation id and answers it when the client's Completion
// arrives, when the caller cancels, or with ErrClientDisconnected when the
// connection ends. For a connection of another node the bridge publishes a
// ClientInvoke on the connection's channel and keeps the caller; the owner
// answers at once with a ClientInvokeAck (no ack within GroupAckTimeout:
// no node has the connection) and later with a ClientResult, both on this
// node's channel. A caller that stops waiting sends a ClientInvokeCancel,
// so the owner forgets the invocation too.

// ClientInvokeRequest asks a hub actor to invoke a client method on one
// connection, wherever it is, and to answer with a *ClientInvokeResponse
// once the client answered (or cannot). Build it with
// NewClientInvokeRequest. The invocation id must be unique on the
// connection while the call waits; package hub makes random ones.
type ClientInvokeRequest struct {
	ConnectionID string
	InvocationID string
	payload      *payload
}

// NewClientInvokeRequest returns the request that invokes
// target(args...) on connection connectionID under invocationID. The
// invocation is encoded here, once per protocol. It fails when a name is
// empty or an argument cannot be encoded.
func NewClientInvokeRequest(connectionID, invocationID, target string, args ...any) (*ClientInvokeRequest, error) {
	if connectionID == "" || invocationID == "" || target == "" {
		return nil, errors.New("actors: a client invocation needs a connection id, an invocation id and a target")
	}
	inv := &protocol.Invocation{InvocationID: invocationID, Target: target, Arguments: args}
	js, err := protocol.JSON.AppendMessage(nil, inv)
	if err != nil {
		return nil, fmt.Errorf("actors: cannot encode the arguments of %q as JSON: %w", target, err)
	}
	mp, err := protocol.MessagePack.AppendMessage(nil, inv)
	if err != nil {
		return nil, fmt.Errorf("actors: cannot encode the arguments of %q as MessagePack: %w", target, err)
	}
	return &ClientInvokeRequest{ConnectionID: connectionID, InvocationID: invocationID, payload: &payload{json: js, msgpack: mp}}, nil
}

// ClientInvokeResponse answers ClientInvokeRequest. Err is nil when the
// client returned a value (HasResult; Result is it as the client encoded it
// in Protocol) or nothing; otherwise it is a *ClientError (the client
// answered with an error), or wraps ErrClientDisconnected,
// ErrUnknownConnection, ErrNotDeliveredRemotely or context.Canceled (the
// caller cancelled).
type ClientInvokeResponse struct {
	Result    protocol.RawValue
	HasResult bool
	Protocol  protocol.HubProtocol
	Err       error

	tag *remoteTag // set on the owner's side of a remote invocation
}

// ClientInvokeCancel tells a hub actor that nobody waits for the result of
// the invocation any more; the waiting request is answered with
// context.Canceled and the connection forgets it. A cancel for an
// invocation that already ended does nothing.
type ClientInvokeCancel struct {
	ConnectionID string
	InvocationID string
}

// ErrClientDisconnected: the invoked connection ended before it answered.
var ErrClientDisconnected = errors.New("the connection disconnected before it answered")

// ClientError is the error a client answered an invocation with: its
// handler threw (Message is the client's text) or it had no handler that
// returns a value (the official clients say "Client didn't provide a
// result.").
type ClientError struct{ Message string }

// Error returns the client's message.
func (e *ClientError) Error() string { return e.Message }

// remoteTag identifies, on the owner's node, a client invocation another
// node asked for: the origin node and its request id.
type remoteTag struct {
	origin string
	id     uint64
}

// clientInvoke is a client invocation for a connection actor. reply gets
// the *ClientInvokeResponse (carrying tag).
type clientInvoke struct {
	invocationID string
	payload      *payload
	reply        *actor.PID
	tag          *remoteTag
}

// cancelClientInvoke makes a connection actor forget an invocation; when
// answer is set, the waiting reply gets context.Canceled.
type cancelClientInvoke struct {
	invocationID string
	answer       bool
}

// remoteInvoke asks the bridge to have the owner of a connection run a
// client invocation.
type remoteInvoke struct {
	hub   string
	req   *ClientInvokeRequest
	reply *actor.PID
}

// remoteInvokeCancel asks the bridge to stop waiting for a remote client
// invocation and to tell the owner.
type remoteInvokeCancel struct {
	hub string
	req *ClientInvokeCancel
}

// arrivedInvoke is another node's ClientInvoke for the hub actor.
type arrivedInvoke struct {
	tag          *remoteTag
	connectionID string
	invocationID string
	payload      *payload
}

// arrivedInvokeCancel is another node's ClientInvokeCancel.
type arrivedInvokeCancel struct{ connectionID, invocationID string }

// invokeAccepted tells the bridge that this node's connection got another
// node's invocation: the bridge acknowledges it.
type invokeAccepted struct{ tag *remoteTag }

// resultAckTimeout: no node acknowledged remote invocation id in time.
type resultAckTimeout struct{ id uint64 }

// waitingResult is a remote client invocation this node waits for.
type waitingResult struct {
	reply        *actor.PID
	conn         string
	invocationID string
	hub          string
	timer        interface{ Stop() bool }
	acked        bool
}

// results is the bridge's table of remote client invocations.
type results struct {
	byID  map[uint64]*waitingResult
	byInv map[string]uint64 // invocation id -> request id
}

// onClientInvokeRequest routes a client invocation: to the local
// connection's actor, or through the bridge to the connection's node.
func (h *hub) onClientInvokeRequest(ctx actor.Context, m *ClientInvokeRequest) {
	if m.payload == nil {
		answer(ctx, ctx.Sender(), &ClientInvokeResponse{Err: errors.New("actors: a ClientInvokeRequest must be made with NewClientInvokeRequest")})
		return
	}
	if h.outs[m.ConnectionID] != nil {
		answer(ctx, ctx.Sender(), &ClientInvokeResponse{Err: fmt.Errorf("%w: %w", ErrClientDisconnected, errMoving)})
		return
	}
	if c := h.conns[m.ConnectionID]; c != nil {
		// With the caller as sender: if the connection actor stopped
		// meanwhile, the dead letter answers the caller with a
		// *actor.DeadLetterResponse instead of leaving it waiting.
		ctx.RequestWithCustomSender(c.pid, &clientInvoke{invocationID: m.InvocationID, payload: m.payload, reply: ctx.Sender()}, ctx.Sender())
		return
	}
	ctx.Send(h.bridge, &remoteInvoke{hub: h.name, req: m, reply: ctx.Sender()})
}

func (h *hub) onClientInvokeCancel(ctx actor.Context, m *ClientInvokeCancel) {
	if c := h.conns[m.ConnectionID]; c != nil {
		ctx.Send(c.pid, &cancelClientInvoke{invocationID: m.InvocationID, answer: true})
		return
	}
	ctx.Send(h.bridge, &remoteInvokeCancel{hub: h.name, req: m})
}

// onArrivedInvoke runs another node's invocation if the connection is
// here. The connection actor acknowledges it (before any result, both on
// their way to the bridge), so an invocation that reaches an actor that
// just stopped is not acknowledged and the asking node's ack timeout
// reports it, instead of leaving its caller waiting.
func (h *hub) onArrivedInvoke(ctx actor.Context, m *arrivedInvoke) {
	c := h.conns[m.connectionID]
	if c == nil || h.outs[m.connectionID] != nil {
		return // the owner answers, not this node (the new owner, for one moving away)
	}
	ctx.Send(c.pid, &clientInvoke{invocationID: m.invocationID, payload: m.payload, reply: h.bridge, tag: m.tag})
}

func (h *hub) onArrivedInvokeCancel(ctx actor.Context, m *arrivedInvokeCancel) {
	if c := h.conns[m.connectionID]; c != nil {
		ctx.Send(c.pid, &cancelClientInvoke{invocationID: m.invocationID})
	}
}

// pendingResult is an invocation a connection actor waits on the client
// for.
type pendingResult struct {
	reply *actor.PID
	tag   *remoteTag
}

// onClientInvoke queues a client invocation on the connection's socket and
// remembers who waits for its Completion.
func (c *connection) onClientInvoke(ctx actor.Context, m *clientInvoke) {
	p := c.info.Outlet.Protocol()
	if c.closing {
		ctx.Send(m.reply, &ClientInvokeResponse{Protocol: p, Err: ErrClientDisconnected, tag: m.tag})
		return
	}
	if c.results[m.invocationID] != nil {
		ctx.Send(m.reply, &ClientInvokeResponse{Protocol: p, Err: fmt.Errorf("invocation id %q is already waiting for a result", m.invocationID), tag: m.tag})
		return
	}
	if m.tag != nil {
		ctx.Send(m.reply, &invokeAccepted{tag: m.tag}) // m.reply is the bridge
	}
	if c.results == nil {
		c.results = map[string]*pendingResult{} // only while results are awaited
	}
	c.results[m.invocationID] = &pendingResult{reply: m.reply, tag: m.tag}
	deliver(c.info.Outlet, m.payload)
}

// onClientCompletion answers whoever waits for the client's Completion;
// a Completion nobody waits for is ignored (as in ASP.NET, which logs it).
func (c *connection) onClientCompletion(ctx actor.Context, m *protocol.Completion) {
	r := c.takeResult(m.InvocationID)
	if r == nil {
		ctx.Logger().Debug("ignoring a Completion for no pending client invocation", "conn_id", c.info.ID, "invocation_id", m.InvocationID)
		return
	}
	resp := &ClientInvokeResponse{Protocol: c.info.Outlet.Protocol(), tag: r.tag}
	switch {
	case m.Error != "":
		resp.Err = &ClientError{Message: m.Error}
	case m.HasResult:
		raw, _ := m.Result.(protocol.RawValue)
		resp.Result, resp.HasResult = raw, true
	}
	ctx.Send(r.reply, resp)
}

func (c *connection) onCancelClientInvoke(ctx actor.Context, m *cancelClientInvoke) {
	if r := c.takeResult(m.invocationID); r != nil && m.answer {
		ctx.Send(r.reply, &ClientInvokeResponse{Protocol: c.info.Outlet.Protocol(), Err: context.Canceled, tag: r.tag})
	}
}

// failResults answers every pending client invocation with err (wrapping
// ErrClientDisconnected); the connection is ending here.
func (c *connection) failResults(ctx actor.Context, err error) {
	for id, r := range c.results {
		ctx.Send(r.reply, &ClientInvokeResponse{Protocol: c.info.Outlet.Protocol(), Err: err, tag: r.tag})
		delete(c.results, id)
	}
	c.results = nil
}

func (c *connection) takeResult(id string) *pendingResult {
	r := c.results[id]
	if r == nil {
		return nil
	}
	delete(c.results, id)
	if len(c.results) == 0 {
		c.results = nil
	}
	return r
}

// onRemoteInvoke publishes a client invocation for a connection of another
// node and waits for its acknowledgement, then its result.
func (b *bridge) onRemoteInvoke(ctx actor.Context, m *remoteInvoke) {
	ch := routeChannel(m.hub, Route{Kind: RouteConnection, Name: m.req.ConnectionID})
	if !b.othersListen(ch) {
		answer(ctx, m.reply, &ClientInvokeResponse{Err: fmt.Errorf("%w: no node has connection %q", ErrUnknownConnection, m.req.ConnectionID)})
		return
	}
	if b.res.byID == nil {
		b.res.byID, b.res.byInv = map[uint64]*waitingResult{}, map[string]uint64{}
	}
	if _, dup := b.res.byInv[m.req.InvocationID]; dup {
		answer(ctx, m.reply, &ClientInvokeResponse{Err: fmt.Errorf("invocation id %q is already waiting for a result", m.req.InvocationID)})
		return
	}
	b.nextID++
	id := b.nextID
	payload, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_ClientInvoke{ClientInvoke: &fabricv1.ClientInvoke{
		Id: id, ConnectionId: m.req.ConnectionID, InvocationId: m.req.InvocationID, Json: m.req.payload.json, Messagepack: m.req.payload.msgpack,
	}}})
	if err != nil { // cannot happen for these field types; never silent
		b.log.Error("marshal client invocation", "err", err)
		answer(ctx, m.reply, &ClientInvokeResponse{Err: ErrNotDeliveredRemotely})
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	w := &waitingResult{reply: m.reply, conn: m.req.ConnectionID, invocationID: m.req.InvocationID, hub: m.hub}
	w.timer = b.cfg.Seams.Runtime.AfterFunc(b.cfg.GroupAckTimeout, func() { root.Send(self, &resultAckTimeout{id: id}) })
	b.res.byID[id] = w
	b.res.byInv[m.req.InvocationID] = id
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: ch, Payload: payload}, resultID: id})
}

// settleResult answers the caller of remote invocation id, if it still
// waits.
func (b *bridge) settleResult(ctx actor.Context, id uint64, resp *ClientInvokeResponse) *waitingResult {
	w := b.res.byID[id]
	if w == nil {
		return nil
	}
	w.timer.Stop()
	delete(b.res.byID, id)
	delete(b.res.byInv, w.invocationID)
	answer(ctx, w.reply, resp)
	return w
}

func (b *bridge) onResultAckTimeout(ctx actor.Context, m *resultAckTimeout) {
	if w := b.res.byID[m.id]; w != nil && !w.acked {
		b.settleResult(ctx, m.id, &ClientInvokeResponse{Err: fmt.Errorf("%w: no node answered for connection %q within the group acknowledgement timeout (%s): no node has it, or its node is unreachable", ErrUnknownConnection, w.conn, b.cfg.GroupAckTimeout)})
	}
}

// onRemoteInvokeCancel stops waiting for a remote invocation and tells
// the connection's node to forget it.
func (b *bridge) onRemoteInvokeCancel(ctx actor.Context, m *remoteInvokeCancel) {
	id, ok := b.res.byInv[m.req.InvocationID]
	if !ok {
		return
	}
	w := b.settleResult(ctx, id, &ClientInvokeResponse{Err: context.Canceled})
	payload, err := proto.Marshal(&fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_ClientInvokeCancel{ClientInvokeCancel: &fabricv1.ClientInvokeCancel{
		Id: id, ConnectionId: w.conn, InvocationId: w.invocationID,
	}}})
	if err != nil {
		b.log.Error("marshal client invocation cancel", "err", err)
		return
	}
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: routeChannel(m.hub, Route{Kind: RouteConnection, Name: w.conn}), Payload: payload}})
}

// onInvokeAccepted acknowledges another node's invocation on its channel.
func (b *bridge) onInvokeAccepted(ctx actor.Context, m *invokeAccepted) {
	b.publishToNode(ctx, m.tag.origin, &fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_ClientInvokeAck{ClientInvokeAck: &fabricv1.ClientInvokeAck{Id: m.tag.id}}})
}

// onOwnedResult sends the result of another node's invocation back to it.
func (b *bridge) onOwnedResult(ctx actor.Context, m *ClientInvokeResponse) {
	if m.tag == nil {
		return
	}
	r := &fabricv1.ClientResult{Id: m.tag.id, HasResult: m.HasResult, Result: m.Result}
	if m.Protocol != nil {
		r.Protocol = m.Protocol.Name()
	}
	var ce *ClientError
	switch {
	case errors.As(m.Err, &ce):
		r.Error, r.ClientError = ce.Message, true
	case errors.Is(m.Err, context.Canceled):
		return // the asking node stopped waiting
	case m.Err != nil:
		r.Error = m.Err.Error()
	}
	b.publishToNode(ctx, m.tag.origin, &fabricv1.Envelope{OriginNode: b.cfg.NodeID, Body: &fabricv1.Envelope_ClientResult{ClientResult: r}})
}

func (b *bridge) publishToNode(ctx actor.Context, node string, env *fabricv1.Envelope) {
	payload, err := proto.Marshal(env)
	if err != nil {
		b.log.Error("marshal envelope", "err", err)
		return
	}
	b.enqueue(ctx, pendingPublish{msg: backplane.Message{Channel: nodeChannel(node), Payload: payload}})
}

// onResultInbound handles the client-result envelopes another node sent
// this one; it reports false for other bodies.
func (b *bridge) onResultInbound(ctx actor.Context, m *inbound) bool {
	switch body := m.env.Body.(type) {
	case *fabricv1.Envelope_ClientInvoke:
		ci := body.ClientInvoke
		if pid := b.hubs[m.hub]; pid != nil {
			ctx.Send(pid, &arrivedInvoke{
				tag: &remoteTag{origin: m.env.OriginNode, id: ci.Id}, connectionID: ci.ConnectionId, invocationID: ci.InvocationId,
				payload: &payload{json: ci.Json, msgpack: ci.Messagepack},
			})
		}
	case *fabricv1.Envelope_ClientInvokeCancel:
		if pid := b.hubs[m.hub]; pid != nil {
			ctx.Send(pid, &arrivedInvokeCancel{connectionID: body.ClientInvokeCancel.ConnectionId, invocationID: body.ClientInvokeCancel.InvocationId})
		}
	case *fabricv1.Envelope_ClientInvokeAck:
		a := body.ClientInvokeAck
		w := b.res.byID[a.Id]
		if w == nil {
			return true
		}
		if a.Error != "" {
			b.settleResult(ctx, a.Id, &ClientInvokeResponse{Err: fmt.Errorf("the node of the connection refused the invocation: %s", a.Error)})
			return true
		}
		w.acked = true
		w.timer.Stop()
	case *fabricv1.Envelope_ClientResult:
		r := body.ClientResult
		resp := &ClientInvokeResponse{HasResult: r.HasResult}
		resp.Protocol, _ = protocol.Lookup(r.Protocol) // the handler checked it
		if r.HasResult {
			resp.Result = protocol.RawValue(r.Result)
		}
		switch {
		case r.ClientError:
			resp.Err = &ClientError{Message: r.Error}
		case r.Error != "":
			resp.Err = fmt.Errorf("%w (on its node: %s)", ErrClientDisconnected, r.Error)
		}
		b.settleResult(ctx, r.Id, resp)
	default:
		return false
	}
	return true
}

// failAllResults answers every remote invocation still waiting; the node
// is shutting down.
func (b *bridge) failAllResults(ctx actor.Context) {
	for id := range b.res.byID {
		b.settleResult(ctx, id, &ClientInvokeResponse{Err: errors.New("the node is shutting down")})
	}
}

// checkResultEnvelope reports why a client-result envelope does not fit
// the channel it came on (nil: it fits). ok is false for other bodies.
func checkResultEnvelope(env *fabricv1.Envelope, route Route, isNode bool) (err error, ok bool) {
	switch body := env.Body.(type) {
	case *fabricv1.Envelope_ClientInvoke:
		ci := body.ClientInvoke
		if isNode || route.Kind != RouteConnection || ci.ConnectionId == "" || route.Name != ci.ConnectionId || ci.InvocationId == "" {
			return errors.New("a client invocation that does not fit its channel"), true
		}
		if err := checkInvocationRecord(protocol.JSON, ci.Json, ci.InvocationId); err != nil {
			return fmt.Errorf("a client invocation whose JSON record is not one: %w", err), true
		}
		if err := checkInvocationRecord(protocol.MessagePack, ci.Messagepack, ci.InvocationId); err != nil {
			return fmt.Errorf("a client invocation whose MessagePack record is not one: %w", err), true
		}
	case *fabricv1.Envelope_ClientInvokeCancel:
		cc := body.ClientInvokeCancel
		if isNode || route.Kind != RouteConnection || route.Name != cc.ConnectionId || cc.InvocationId == "" {
			return errors.New("a client invocation cancel that does not fit its channel"), true
		}
	case *fabricv1.Envelope_ClientInvokeAck:
		if !isNode {
			return errors.New("a client invocation ack on a hub channel"), true
		}
	case *fabricv1.Envelope_ClientResult:
		r := body.ClientResult
		if !isNode {
			return errors.New("a client result on a hub channel"), true
		}
		p, known := protocol.Lookup(r.Protocol)
		switch {
		case !known:
			return fmt.Errorf("a client result of unknown protocol %q", r.Protocol), true
		case r.HasResult && (len(r.Result) == 0 || r.Error != ""):
			return errors.New("a client result with both a value and an error, or an empty value"), true
		case r.HasResult:
			var v any
			if err := p.Unmarshal(protocol.RawValue(r.Result), &v); err != nil {
				return fmt.Errorf("a client result that is not one %s value: %w", p.Name(), err), true
			}
		}
	default:
		return nil, false
	}
	return nil, true
}
