package service

import (
	"context"
	"time"
)

// liveness is the heartbeat loop of the Service (started by Start, stopped
// by Close, which waits for it): every HeartbeatInterval, for each hub, it
// refreshes this node's heartbeat in the Store, resyncs the node's
// connections when the heartbeat had lapsed or the Store was unreachable,
// and sweeps one batch of dead nodes' connections.
func (s *Service) liveness(ctx context.Context, needResync map[string]bool) {
	defer s.looping.Done()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := map[string]bool{} // hubs whose last heartbeat failed (logged once)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.hbStop:
			return
		case <-t.C:
		}
		for name := range needResync {
			needResync[name], failing[name] = s.beat(ctx, name, needResync[name], failing[name])
		}
		if s.beatHook != nil {
			s.beatHook()
		}
	}
}

// beat runs one round for hub name and reports whether the next one must
// resync and whether the Store could not be reached (failing: the last
// round could not, and logged it).
func (s *Service) beat(ctx context.Context, name string, resync, failing bool) (bool, bool) {
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	was, err := s.cfg.Store.Heartbeat(sctx, name, s.nodeID, s.cfg.HeartbeatTTL)
	if err != nil {
		if ctx.Err() == nil && !failing {
			s.log.Warn("service: heartbeat failed; this node's connections stop being listed if it lasts beyond the heartbeat ttl", "hub", name, "ttl", s.cfg.HeartbeatTTL, "err", err)
		}
		return true, true
	}
	if failing {
		s.log.Info("service: heartbeat back", "hub", name)
	}
	if resync || !was {
		if err := s.resync(sctx, name); err != nil {
			s.log.Warn("service: could not list this node's connections again", "hub", name, "err", err)
			return true, false
		}
	}
	if n, err := s.cfg.Store.Sweep(sctx, name, s.cfg.SweepBatch); err != nil {
		s.log.Warn("service: sweep of dead nodes' connections failed", "hub", name, "err", err)
	} else if n > 0 {
		s.log.Info("service: swept connections of nodes whose heartbeat lapsed", "hub", name, "connections", n)
	}
	return false, false
}

// resync makes the Store's record of this node's connections of hub name
// what the node holds: its open connections are added again (a sweep may
// have removed them while it was cut off, or Redis restarted empty), and
// those it no longer holds (their removal failed during an outage) are
// removed. OnConnected adds a connection locally before the Store and
// OnDisconnected removes it locally first, so a connection checked local
// after its addition here is still open, and one recorded but not local
// is gone.
func (s *Service) resync(ctx context.Context, name string) error {
	recorded, err := s.cfg.Store.NodeConnections(ctx, name, s.nodeID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	held := make(map[string]string, len(s.local[name]))
	for id, c := range s.local[name] {
		if c.attached {
			held[id] = c.user
		}
	}
	s.mu.Unlock()
	for id, user := range held {
		if err := s.cfg.Store.AddConnection(ctx, name, id, user, s.nodeID); err != nil {
			return err
		}
		if !s.isLocal(name, id) { // closed meanwhile: its removal may have run first
			if err := s.cfg.Store.RemoveConnection(ctx, name, id); err != nil {
				return err
			}
		}
	}
	for _, id := range recorded {
		if _, ok := held[id]; ok || s.isLocal(name, id) {
			continue
		}
		if err := s.cfg.Store.RemoveConnection(ctx, name, id); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) isLocal(hubName, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.local[hubName][id]
	return ok
}
