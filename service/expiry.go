package service

import (
	"context"
	"time"
)

// scheduleExpiry arranges that when user's membership of group ends (at
// until, unless renewed meanwhile), the user's connections leave the group,
// on whichever node they are. It is called by the node that set the ttl
// (REST) and by the node of every connection that joined through it
// (OnConnected), so the expiry happens while any of them runs; each
// expiry checks the Store first, so a renewed membership stays and
// duplicate timers do nothing more. The timers belong to the Service:
// Close stops them and waits for those running.
func (s *Service) scheduleExpiry(hubName, user, group string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(time.Until(until), func() {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		delete(s.timers, t)
		s.expiring.Add(1)
		s.mu.Unlock()
		defer s.expiring.Done()
		s.expireUserGroup(s.closeCtx, hubName, user, group)
		if s.expiredHook != nil {
			s.expiredHook(hubName, user, group)
		}
	})
	s.timers[t] = struct{}{}
}

// expireUserGroup takes user's connections out of group unless the Store
// still has the membership (renewed, or made permanent).
func (s *Service) expireUserGroup(ctx context.Context, hubName, user, group string) {
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	groups, err := s.cfg.Store.UserGroups(sctx, hubName, user)
	if err != nil {
		s.log.Warn("service: could not check a user-group membership at its expiry", "hub", hubName, "group", group, "err", err)
		return
	}
	if _, still := groups[group]; still {
		return
	}
	hc, ok := s.hubContext(hubName)
	if !ok {
		return
	}
	if e := s.userLeave(ctx, hc, hubName, user, []string{group}); e != nil {
		s.log.Warn("service: expired user-group membership: connections could not leave the group", "hub", hubName, "group", group, "err", e.msg)
	}
}
