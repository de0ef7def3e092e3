package actors

import (
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// BackplaneHandler is the receiving half of the bridge: it decodes what the
// backplane delivers, drops the node's own messages, and sends the rest to
// the hub actors (deliveries) or to the bridge actor (group commands and
// acks). It runs on the backplane's delivery goroutine, so decoding stays off
// the actors.
type BackplaneHandler struct {
	root     *actor.RootContext
	bridge   *actor.PID
	hubs     map[string]*actor.PID
	nodeID   string
	channels Channels
	stats    *BridgeStats
	log      *slog.Logger
	onEvent  func(backplane.Event)
}

// NewBackplaneHandler returns the handler for a node. hubs must not change
// afterwards. onEvent, if set, is called for every health event after it
// was logged and counted.
func NewBackplaneHandler(root *actor.RootContext, bridge *actor.PID, hubs map[string]*actor.PID, cfg BridgeConfig, onEvent func(backplane.Event)) *BackplaneHandler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stats := cfg.Stats
	if stats == nil {
		stats = &BridgeStats{}
	}
	return &BackplaneHandler{root: root, bridge: bridge, hubs: hubs, nodeID: cfg.NodeID, channels: cfg.Channels, stats: stats, log: log, onEvent: onEvent}
}

var _ backplane.Handler = (*BackplaneHandler)(nil)

// HandleMessage implements backplane.Handler.
func (h *BackplaneHandler) HandleMessage(channel string, payload []byte) {
	hub, route, isNode, ok := h.channels.Parse(channel)
	if !ok {
		h.stats.Malformed.Add(1)
		return
	}
	env := &fabricv1.Envelope{}
	if err := proto.Unmarshal(payload, env); err != nil {
		h.stats.Malformed.Add(1)
		h.log.Warn("dropping a backplane message that is not an envelope", "channel", channel, "err", err)
		return
	}
	if env.OriginNode == h.nodeID {
		return
	}
	h.stats.Received.Add(1)
	switch body := env.Body.(type) {
	case *fabricv1.Envelope_Invocation:
		pid := h.hubs[hub]
		if isNode || pid == nil {
			h.stats.Malformed.Add(1)
			return
		}
		route.Excluded = body.Invocation.ExcludedConnectionIds
		h.root.Send(pid, &remoteDelivery{Route: route, Payload: &Payload{JSON: body.Invocation.Json, MessagePack: body.Invocation.Messagepack}})
	case *fabricv1.Envelope_GroupCommand:
		if route.Kind != RouteConnection || route.Name != body.GroupCommand.ConnectionId {
			h.stats.Malformed.Add(1)
			return
		}
		h.root.Send(h.bridge, &inbound{hub: hub, env: env})
	case *fabricv1.Envelope_GroupAck:
		h.root.Send(h.bridge, &inbound{env: env})
	default:
		h.stats.Malformed.Add(1)
	}
}

// HandleEvent implements backplane.Handler: it logs and counts health
// changes and passes them on.
func (h *BackplaneHandler) HandleEvent(ev backplane.Event) {
	switch ev.Kind {
	case backplane.EventDown:
		h.stats.Down.Add(1)
		h.log.Error("backplane down: sends to other nodes fail until it recovers", "err", ev.Err)
	case backplane.EventRestored:
		h.log.Info("backplane restored")
	case backplane.EventGap:
		h.stats.Gaps.Add(1)
		h.log.Warn("backplane resubscribed after a drop: messages in between may be lost", "channels", len(ev.Channels))
	}
	if h.onEvent != nil {
		h.onEvent(ev)
	}
}
