package service

import (
	"context"
	"strings"

	"github.com/hubfabric/hubfabric/backplane"
)

// Backplane wraps the node's backplane so that the service's commands
// (closing connections of other nodes) travel on it, on channels of their
// own ("svc:..."), which the wrapper hands to the service instead of the
// node. Everything else passes through unchanged, including the optional
// backplane.Audience. Give the result to hub.Config.Backplane; call it once.
func (s *Service) Backplane(inner backplane.Backplane) backplane.Backplane {
	w := &wrapped{Backplane: inner, s: s}
	var out backplane.Backplane = w
	if a, ok := inner.(backplane.Audience); ok {
		out = &wrappedAudience{wrapped: w, a: a}
	}
	s.mu.Lock()
	s.bp = out
	s.mu.Unlock()
	return out
}

type wrapped struct {
	backplane.Backplane
	s *Service
}

// Start starts the inner backplane with a handler that takes the service
// channels out.
func (w *wrapped) Start(ctx context.Context, h backplane.Handler) error {
	return w.Backplane.Start(ctx, &splitHandler{Handler: h, s: w.s})
}

type wrappedAudience struct {
	*wrapped
	a backplane.Audience
}

// OthersSubscribed forwards to the inner backplane.
func (w *wrappedAudience) OthersSubscribed(channel string) bool { return w.a.OthersSubscribed(channel) }

var (
	_ backplane.Backplane = (*wrapped)(nil)
	_ backplane.Audience  = (*wrappedAudience)(nil)
)

// splitHandler gives service channels to the service, the rest to the
// node's handler.
type splitHandler struct {
	backplane.Handler
	s *Service
}

func (h *splitHandler) HandleMessage(channel string, payload []byte) {
	if strings.HasPrefix(channel, channelPrefix) {
		h.s.onCommand(channel, payload)
		return
	}
	h.Handler.HandleMessage(channel, payload)
}
