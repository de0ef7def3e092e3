package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// backplaneHandler is the receiving half of the bridge: it decodes what the
// backplane delivers, drops the node's own messages, and sends the rest on:
// a send to its hub actor, whose router treats it as any other send; group
// commands and acks to the bridge actor. It runs on the backplane's
// delivery goroutine, so decoding stays off the actors.
//
// Nothing another node sends is trusted: what does not fit its channel, or
// a send whose records are not exactly what NewSendRequest encodes, is
// dropped, counted in Counters.Malformed and logged at Debug (a flood of
// bad messages must not become a flood of log lines).
type backplaneHandler struct {
	root     *actor.RootContext
	bridge   *actor.PID
	hubs     map[string]*actor.PID   // never changes after spawn
	echoes   map[string]*echoCounter // per hub: connections moving in (cut.go); never changes after spawn
	nodeID   string
	counters *fabric.Counters
	log      *slog.Logger
	onEvent  func(backplane.Event)
}

var _ backplane.Handler = (*backplaneHandler)(nil)

// HandleMessage implements backplane.Handler.
func (h *backplaneHandler) HandleMessage(channel string, data []byte) {
	hub, route, isNode, ok := parseChannel(channel)
	if !ok {
		h.drop(channel, "a channel of another form", nil)
		return
	}
	if h.unwantedEcho(hub, isNode, data) {
		return
	}
	env := &fabricv1.Envelope{}
	if err := proto.Unmarshal(data, env); err != nil {
		h.drop(channel, "not an envelope", err)
		return
	}
	echo := false
	if env.OriginNode == h.nodeID {
		body := envelopeBodyOf(env)
		if h.dropOwn(hub, isNode, body) {
			return
		}
		echo = body == envelopeInvocation
	}
	if !echo {
		h.counters.Received.Add(1)
	}
	if h.handover(channel, hub, route, isNode, env) {
		return
	}
	if err, ok := checkResultEnvelope(env, route, isNode); ok {
		if err != nil {
			h.drop(channel, "a client-result message that does not fit", err)
			return
		}
		h.root.Send(h.bridge, &inbound{hub: hub, env: env})
		return
	}
	switch body := env.Body.(type) {
	case *fabricv1.Envelope_Invocation:
		pid := h.hubs[hub]
		if isNode || pid == nil {
			h.drop(channel, "a send on a node channel or for an unknown hub", nil)
			return
		}
		inv := body.Invocation
		if err := route.check(); err != nil {
			h.drop(channel, "a send without a recipient", err)
			return
		}
		// Checked once per envelope, before any recipient shares the
		// bytes: a broken record would corrupt the next one on every
		// socket it reached, and a forged Close or Completion would act on
		// the clients. The JSON parser also refuses invalid UTF-8, which
		// text frames must not carry.
		if err := checkSendRecord(protocol.JSON, inv.Json); err != nil {
			h.drop(channel, "a send whose JSON record is not one", err)
			return
		}
		if err := checkSendRecord(protocol.MessagePack, inv.Messagepack); err != nil {
			h.drop(channel, "a send whose MessagePack record is not one", err)
			return
		}
		route.Excluded = inv.ExcludedConnectionIds
		h.root.Send(pid, &arrival{route: route, payload: &payload{json: inv.Json, msgpack: inv.Messagepack}, echo: echo, seq: inv.EchoSeq})
	case *fabricv1.Envelope_GroupCommand:
		cmd := body.GroupCommand
		action := cmd.Action
		if route.Kind != RouteConnection || cmd.ConnectionId == "" || route.Name != cmd.ConnectionId || cmd.Group == "" ||
			(action != fabricv1.GroupAction_GROUP_ACTION_ADD && action != fabricv1.GroupAction_GROUP_ACTION_REMOVE) {
			h.drop(channel, "a group command that does not fit its channel", nil)
			return
		}
		h.root.Send(h.bridge, &inbound{hub: hub, env: env})
	case *fabricv1.Envelope_GroupAck:
		if !isNode {
			h.drop(channel, "a group ack on a hub channel", nil)
			return
		}
		h.root.Send(h.bridge, &inbound{env: env})
	case *fabricv1.Envelope_HttpRequest:
		req := body.HttpRequest
		k := req.Kind
		fits := req.Id != 0 && req.Token != "" && req.ConnectionId != "" && h.hubs[req.Hub] != nil &&
			(k == fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_POLL || k == fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_SEND ||
				k == fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_DELETE) &&
			(isNode || (route.Kind == RouteConnection && route.Name == req.ConnectionId && hub == req.Hub))
		if !fits {
			h.drop(channel, "an http request that does not fit its channel", nil)
			return
		}
		h.root.Send(h.bridge, &inbound{hub: req.Hub, env: env})
	case *fabricv1.Envelope_HttpResponse:
		if !isNode || body.HttpResponse.Id == 0 {
			h.drop(channel, "an http response on a hub channel or without an id", nil)
			return
		}
		h.root.Send(h.bridge, &inbound{env: env})
	default:
		h.drop(channel, "an envelope without a known body", nil)
	}
}

// handover passes on the hand-over envelopes (move.go) that fit their
// channel, drops those that do not, and reports false for other bodies.
func (h *backplaneHandler) handover(channel, hub string, route Route, isNode bool, env *fabricv1.Envelope) bool {
	origin := env.OriginNode
	switch body := env.Body.(type) {
	case *fabricv1.Envelope_HandoverRequest:
		r := body.HandoverRequest
		pid := h.hubs[hub]
		if isNode || pid == nil || route.Kind != RouteConnection || route.Name != r.ConnectionId || r.MoveId == 0 || origin == "" {
			h.drop(channel, "a hand-over request that does not fit its channel", nil)
			return true
		}
		h.root.Send(pid, &handoverRequest{key: moveKey{node: origin, id: r.MoveId}, connID: r.ConnectionId, userID: r.UserId})
	case *fabricv1.Envelope_HandoverState:
		st := body.HandoverState
		pid := h.hubs[st.Hub]
		if !isNode || pid == nil || st.MoveId == 0 || st.ConnectionId == "" {
			h.drop(channel, "a hand-over state that does not fit its channel", nil)
			return true
		}
		h.root.Send(pid, &handoverState{key: moveKey{node: h.nodeID, id: st.MoveId}, from: origin, state: st})
	case *fabricv1.Envelope_HandoverRecord:
		r := body.HandoverRecord
		pid := h.hubs[r.Hub]
		if !isNode || pid == nil || r.MoveId == 0 || r.ConnectionId == "" || len(r.Record) == 0 {
			h.drop(channel, "a hand-over record that does not fit its channel", nil)
			return true
		}
		h.root.Send(pid, &handoverRecord{key: moveKey{node: h.nodeID, id: r.MoveId}, connID: r.ConnectionId, record: r.Record})
	case *fabricv1.Envelope_HandoverStep:
		st := body.HandoverStep
		pid := h.hubs[st.Hub]
		k := st.Kind
		if !isNode || pid == nil || st.MoveId == 0 || st.ConnectionId == "" || st.MoverNode == "" ||
			(k != fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_SUBSCRIBED && k != fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_DONE &&
				k != fabricv1.HandoverStepKind_HANDOVER_STEP_KIND_ABORTED) {
			h.drop(channel, "a hand-over step that does not fit its channel", nil)
			return true
		}
		h.root.Send(pid, &handoverStep{key: moveKey{node: st.MoverNode, id: st.MoveId}, connID: st.ConnectionId, kind: k, reason: st.Reason})
	case *fabricv1.Envelope_HandoverMarker:
		mk := body.HandoverMarker
		pid := h.hubs[hub]
		if isNode || pid == nil || mk.MoveId == 0 || mk.ConnectionId == "" || mk.MoverNode == "" || route.check() != nil {
			h.drop(channel, "a hand-over marker that does not fit its channel", nil)
			return true
		}
		h.root.Send(pid, &markerArrival{route: route, key: moveKey{node: mk.MoverNode, id: mk.MoveId}, connID: mk.ConnectionId})
	default:
		return false
	}
	return true
}

// drop counts a message that cannot be used and logs why at Debug.
func (h *backplaneHandler) drop(channel, why string, err error) {
	h.counters.Malformed.Add(1)
	if !h.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if err != nil {
		h.log.Debug("dropping a malformed backplane message: "+why, "channel", channel, "err", err)
		return
	}
	h.log.Debug("dropping a malformed backplane message: "+why, "channel", channel)
}

// errNoRecord: an envelope's record is missing.
var errNoRecord = errors.New("no record")

// checkSendRecord reports why rec is not exactly one framed record of p of
// the kind NewSendRequest encodes: an Invocation with a target, an
// arguments array, no invocation id (a send expects no Completion) and no
// stream ids, with nothing before or after it.
func checkSendRecord(p protocol.HubProtocol, rec []byte) error {
	return checkInvocationRecord(p, rec, "")
}

// checkInvocationRecord reports why rec is not exactly one framed
// Invocation of p with a target, invocation id id ("" for none) and no
// stream ids, with nothing before or after it.
func checkInvocationRecord(p protocol.HubProtocol, rec []byte, id string) error {
	if len(rec) == 0 {
		return errNoRecord
	}
	msgs, n, err := p.ParseMessages(rec, 0)
	switch {
	case err != nil:
		return err
	case len(msgs) != 1:
		return fmt.Errorf("%d complete records, want 1", len(msgs))
	case n != len(rec):
		return fmt.Errorf("%d bytes after the record", len(rec)-n)
	}
	inv, ok := msgs[0].(*protocol.Invocation)
	switch {
	case !ok:
		return fmt.Errorf("a message of type %d, want an invocation (%d)", msgs[0].MessageType(), protocol.TypeInvocation)
	case inv.Target == "":
		return errors.New("an invocation without a target")
	case inv.InvocationID != id && id == "":
		return errors.New("an invocation with an invocation id")
	case inv.InvocationID != id:
		return fmt.Errorf("an invocation with id %q, want %q", inv.InvocationID, id)
	case len(inv.StreamIDs) != 0:
		return errors.New("an invocation with stream ids")
	}
	return nil
}

// HandleEvent implements backplane.Handler: it logs and counts health
// changes and passes them on.
func (h *backplaneHandler) HandleEvent(ev backplane.Event) {
	switch ev.Kind {
	case backplane.EventDown:
		h.counters.Down.Add(1)
		h.log.Error("backplane down: sends to other nodes fail until it recovers", "err", ev.Err)
	case backplane.EventRestored:
		h.log.Info("backplane restored")
	case backplane.EventGap:
		h.counters.Gaps.Add(1)
		h.log.Warn("backplane resubscribed after a drop: messages in between may be lost", "channels", len(ev.Channels))
	}
	if h.onEvent != nil {
		h.onEvent(ev)
	}
}

// Field numbers of fabricv1.Envelope's body that dropOwn tells apart.
const (
	envelopeInvocation     protowire.Number = 2
	envelopeHandoverMarker protowire.Number = 26
)

// envelopeOriginNode is the field number of fabricv1.Envelope.origin_node.
const envelopeOriginNode protowire.Number = 1

// envelopeBody is fabricv1.Envelope's body oneof; envelopeBodyFields its
// members.
var (
	envelopeBody       = (&fabricv1.Envelope{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	envelopeBodyFields = envelopeBody.Fields()
)

// envelopeBodyOf is the field number of env's body, 0 when it has none.
func envelopeBodyOf(env *fabricv1.Envelope) protowire.Number {
	if f := env.ProtoReflect().WhichOneof(envelopeBody); f != nil {
		return f.Number()
	}
	return 0
}

// dropOwn reports whether the node drops one of its own envelopes, whose
// body is the field numbered body, when it comes back from the backplane.
// It wants two kinds: its hand-over markers, and its sends on a hub route
// while a connection moves here (cut.go).
func (h *backplaneHandler) dropOwn(hub string, isNode bool, body protowire.Number) bool {
	switch body {
	case envelopeHandoverMarker:
		return false
	case envelopeInvocation:
		e := h.echoes[hub]
		return isNode || e == nil || e.Load() == 0
	default:
		return true
	}
}

// unwantedEcho reports whether data is one of the node's own envelopes that
// HandleMessage would decode only to drop (dropOwn). With two or more nodes
// in a group, half of what a node reads from Redis is its own sends coming
// back; this reads only the top-level fields, without allocating, instead
// of decoding each. What it cannot read is left to the decoder, which
// reports it; a body whose inside is broken is not looked at, so such an
// envelope under the node's own id is dropped without being counted as
// malformed.
func (h *backplaneHandler) unwantedEcho(hub string, isNode bool, data []byte) bool {
	var origin []byte
	var body protowire.Number
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return false
		}
		data = data[n:]
		// A known field with another wire type is an unknown field to the
		// decoder, as here.
		isBody := typ == protowire.BytesType && envelopeBodyFields.ByNumber(num) != nil
		if num == envelopeOriginNode && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(data)
			if m < 0 {
				return false
			}
			if string(v) != h.nodeID {
				// Another node's (its first field, as encoders write it):
				// decoded as usual. (An origin repeated further on would
				// win, so this is only ever a miss, never a wrong drop.)
				return false
			}
			origin, data = v, data[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return false
		}
		data = data[m:]
		if isBody {
			body = num // as in decoding, the last member of the oneof wins
		}
	}
	return string(origin) == h.nodeID && h.dropOwn(hub, isNode, body)
}
