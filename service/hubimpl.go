package service

import (
	"context"
	"errors"

	"github.com/hubfabric/hubfabric/hub"
)

// serviceHub is the hub of every hub name in service mode: no Go methods;
// every invocation goes upstream (hub.Dispatcher); connections are
// recorded in the Store and join their user's groups.
type serviceHub struct {
	s    *Service
	name string
}

var (
	_ hub.Attacher     = (*serviceHub)(nil)
	_ hub.Connector    = (*serviceHub)(nil)
	_ hub.Disconnector = (*serviceHub)(nil)
	_ hub.Dispatcher   = (*serviceHub)(nil)
)

// OnAttached records the connection in the Store and joins it to its
// user's groups before the client gets its handshake answer, so a REST
// call made as soon as the client is connected finds it. A Store that
// cannot record it refuses the connection (the handshake's error says
// so).
func (h *serviceHub) OnAttached(c *hub.Context) error {
	s := h.s
	s.addLocal(h.name, c.ConnectionID, c.UserID)
	sctx, cancel := s.storeCtx(c)
	defer cancel()
	if err := s.cfg.Store.AddConnection(sctx, h.name, c.ConnectionID, c.UserID, s.nodeID); err != nil {
		s.removeLocal(h.name, c.ConnectionID)
		s.log.Warn("service: store unavailable; connection refused", "hub", h.name, "err", err)
		return errors.New("the service's connection registry is unavailable; try again")
	}
	if c.UserID == "" {
		return nil
	}
	groups, err := s.cfg.Store.UserGroups(sctx, h.name, c.UserID)
	if err != nil {
		s.log.Warn("service: could not read the user's groups", "hub", h.name, "err", err)
	}
	for g, until := range groups {
		if !until.IsZero() {
			s.scheduleExpiry(h.name, c.UserID, g, until)
		}
		if err := c.Groups.Add(c, c.ConnectionID, g); err != nil {
			s.log.Warn("service: could not join the user's group", "hub", h.name, "group", g, "err", err)
			continue
		}
		if _, err := s.cfg.Store.AddToGroup(sctx, h.name, g, c.ConnectionID); err != nil {
			s.log.Warn("service: could not record the group", "hub", h.name, "group", g, "err", err)
		}
	}
	return nil
}

// OnConnected gives the service the connection's closer (a close asked
// for since OnAttached happens now) and posts the connected event
// upstream (which does not refuse it).
func (h *serviceHub) OnConnected(c *hub.Context) error {
	s := h.s
	s.setCloser(h.name, c.ConnectionID, c.CloseFunc())
	if s.up != nil {
		s.up.event(c, h.name, c.ConnectionID, c.UserID, c.Claims, "connections", "connected", nil)
	}
	if s.connectedHook != nil {
		s.connectedHook(h.name, c.ConnectionID)
	}
	return nil
}

// OnDisconnected forgets the connection and posts the disconnected event
// upstream with the error, if any.
func (h *serviceHub) OnDisconnected(c *hub.Context, cause error) {
	s := h.s
	s.removeLocal(h.name, c.ConnectionID)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	if err := s.cfg.Store.RemoveConnection(sctx, h.name, c.ConnectionID); err != nil {
		s.log.Warn("service: could not forget a connection in the store", "hub", h.name, "err", err)
	}
	if s.up != nil {
		s.up.event(s.closeCtx, h.name, c.ConnectionID, c.UserID, c.Claims, "connections", "disconnected", cause)
	}
}

// Dispatch forwards an invocation upstream; without an upstream it fails.
func (h *serviceHub) Dispatch(c *hub.Context, inv hub.Invocation) (any, error) {
	if h.s.up == nil {
		return nil, hub.Errorf("method %q cannot be invoked: this service has no upstream configured (--upstream)", inv.Target)
	}
	return h.s.up.invoke(c, h.name, inv)
}
