package actors

import (
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// backplaneHandler is the receiving half of the bridge: it decodes what the
// backplane delivers, drops the node's own messages, and sends the rest on:
// a send to its hub actor, whose router treats it as any other send; group
// commands and acks to the bridge actor. It runs on the backplane's
// delivery goroutine, so decoding stays off the actors.
type backplaneHandler struct {
	root     *actor.RootContext
	bridge   *actor.PID
	hubs     map[string]*actor.PID // never changes after spawn
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
		h.counters.Malformed.Add(1)
		return
	}
	env := &fabricv1.Envelope{}
	if err := proto.Unmarshal(data, env); err != nil {
		h.counters.Malformed.Add(1)
		h.log.Warn("dropping a backplane message that is not an envelope", "channel", channel, "err", err)
		return
	}
	if env.OriginNode == h.nodeID {
		return
	}
	h.counters.Received.Add(1)
	switch body := env.Body.(type) {
	case *fabricv1.Envelope_Invocation:
		pid := h.hubs[hub]
		if isNode || pid == nil {
			h.counters.Malformed.Add(1)
			return
		}
		inv := body.Invocation
		if len(inv.Json) == 0 || len(inv.Messagepack) == 0 || route.check() != nil {
			h.counters.Malformed.Add(1) // nothing to deliver, or no recipient to name
			return
		}
		route.Excluded = inv.ExcludedConnectionIds
		h.root.Send(pid, &arrival{route: route, payload: &payload{json: inv.Json, msgpack: inv.Messagepack}})
	case *fabricv1.Envelope_GroupCommand:
		cmd := body.GroupCommand
		action := cmd.Action
		if route.Kind != RouteConnection || cmd.ConnectionId == "" || route.Name != cmd.ConnectionId || cmd.Group == "" ||
			(action != fabricv1.GroupAction_GROUP_ACTION_ADD && action != fabricv1.GroupAction_GROUP_ACTION_REMOVE) {
			h.counters.Malformed.Add(1)
			return
		}
		h.root.Send(h.bridge, &inbound{hub: hub, env: env})
	case *fabricv1.Envelope_GroupAck:
		if !isNode {
			h.counters.Malformed.Add(1)
			return
		}
		h.root.Send(h.bridge, &inbound{env: env})
	default:
		h.counters.Malformed.Add(1)
	}
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
