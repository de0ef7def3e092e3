package service

import (
	"context"
	"strings"

	"github.com/hubfabric/hubfabric/backplane"
)

// Backplane wraps the node's backplane so that the service's commands
// (closing connections of other nodes) travel on it, on channels of their
// own ("svc:..."), which the wrapper hands to the service instead of the
// node. Everything else passes through unchanged; the inner backplane's
// optional abilities (backplane.Audience, backplane.SharedSecrets) are
// found through Unwrap (backplane.Ability). Give the result to
// hub.Config.Backplane; call it once.
func (s *Service) Backplane(inner backplane.Backplane) backplane.Backplane {
	w := &wrapped{Backplane: inner, s: s}
	s.mu.Lock()
	s.bp = w
	s.mu.Unlock()
	return w
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

// Unwrap returns the node's own backplane, for its optional abilities.
func (w *wrapped) Unwrap() backplane.Backplane { return w.Backplane }

var (
	_ backplane.Backplane = (*wrapped)(nil)
	_ backplane.Wrapper   = (*wrapped)(nil)
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
