package redisbp

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubfabric/hubfabric/backplane"
)

// shard is one subscription connection: all channels of one partition in
// sharded mode (so each SSUBSCRIBE names channels of one slot), or every
// channel in classic mode. It owns a go-redis PubSub and the reader
// goroutine draining it, and subscribes a private probe channel first, so
// its connection always has at least one subscription.
type shard struct {
	b        *Backplane
	sharded  bool
	part     int
	prefix   string // Redis name = prefix + logical name
	probe    string // Redis name of the probe channel
	presence string // Redis name of the partition's presence channel (presence.go)

	// subMu serializes subscribe commands and the replacement of ps, so a
	// command is never sent to a PubSub being replaced.
	subMu sync.Mutex

	mu         sync.Mutex
	closed     bool
	ps         *redis.PubSub
	readerDone chan struct{}
	desired    map[string]struct{}        // logical names wanted
	confirmed  map[string]struct{}        // Redis names confirmed on the current connection
	waiters    map[string][]chan struct{} // Redis name -> Subscribe calls waiting for it
	sentSeq    uint64                     // last probe sent
	recvSeq    uint64                     // last probe received
	unanswered time.Time                  // when the oldest unanswered probe was sent

	idle atomic.Bool // the reader is waiting for the next item
}

func newShard(b *Backplane, sharded bool, part int) *shard {
	prefix := b.prefix(sharded, part)
	return &shard{
		b:         b,
		sharded:   sharded,
		part:      part,
		prefix:    prefix,
		probe:     prefix + "__hubfabric_probe:" + b.id + ":" + strconv.Itoa(part),
		presence:  b.presenceName(sharded, part),
		desired:   make(map[string]struct{}),
		confirmed: make(map[string]struct{}),
		waiters:   make(map[string][]chan struct{}),
	}
}

// startLocked makes the PubSub subscribed to the probe and every desired
// channel, and starts its reader. replaced says the shard had a connection
// before, so the new connection's first confirmation is a gap. s.subMu is
// held.
func (s *shard) startLocked(ctx context.Context, replaced bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return backplane.ErrClosed
	}
	// The presence channel goes with the channels, in one command, so a
	// connection counted on it is subscribed to all of them.
	names := []string{s.presence}
	for c := range s.desired {
		names = append(names, s.prefix+c)
	}
	s.mu.Unlock()
	// The probe goes first and alone: on a cluster the connection is made to
	// the owner of the first channel's slot, and the probe's confirmation
	// (Count 1) marks the start of every connection. go-redis remembers the
	// channels even when the command fails, and subscribes them when it
	// connects; the error of the second command tells the caller whether
	// Redis could be reached now.
	var ps *redis.PubSub
	var err error
	if s.sharded {
		ps = s.b.client.SSubscribe(ctx, s.probe)
		err = ps.SSubscribe(ctx, names...)
	} else {
		ps = s.b.client.Subscribe(ctx, s.probe)
		err = ps.Subscribe(ctx, names...)
	}
	done := make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = ps.Close()
		return backplane.ErrClosed
	}
	s.ps, s.readerDone = ps, done
	s.b.wg.Add(1)
	go s.read(ps, replaced, done)
	return err
}

// subscribe adds channels to s and sends one subscribe command for those
// not yet confirmed; it returns channels closed on their confirmations.
func (s *shard) subscribe(ctx context.Context, channels []string) ([]<-chan struct{}, error) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.mu.Lock()
	var names []string
	var waits []<-chan struct{}
	for _, c := range channels {
		s.desired[c] = struct{}{}
		rn := s.prefix + c
		if _, ok := s.confirmed[rn]; ok {
			continue
		}
		w := make(chan struct{})
		s.waiters[rn] = append(s.waiters[rn], w)
		waits = append(waits, w)
		names = append(names, rn)
	}
	ps := s.ps
	s.mu.Unlock()
	if len(names) == 0 {
		return nil, nil
	}
	if ps == nil {
		// First use: the PubSub is created subscribed to everything desired.
		return waits, s.startLocked(ctx, false)
	}
	var err error
	if s.sharded {
		err = ps.SSubscribe(ctx, names...)
	} else {
		err = ps.Subscribe(ctx, names...)
	}
	return waits, err
}

// forget removes channels from the desired set: from now on their messages
// are discarded.
func (s *shard) forget(channels []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range channels {
		delete(s.desired, c)
		delete(s.confirmed, s.prefix+c)
	}
}

// unsubscribe tells Redis to stop sending channels that are still not
// desired. go-redis forgets them even if Redis cannot be told, so they are
// not resubscribed after a reconnection.
func (s *shard) unsubscribe(ctx context.Context, channels []string) error {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.mu.Lock()
	var names []string
	for _, c := range channels {
		if _, ok := s.desired[c]; !ok {
			names = append(names, s.prefix+c)
		}
	}
	ps := s.ps
	s.mu.Unlock()
	if len(names) == 0 || ps == nil { // an empty list would unsubscribe everything
		return nil
	}
	if s.sharded {
		return ps.SUnsubscribe(ctx, names...)
	}
	return ps.Unsubscribe(ctx, names...)
}

// replace closes a connection that stopped receiving probes and makes a new
// one subscribed to everything; its first confirmation reports the gap.
func (s *shard) replace(ctx context.Context) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.mu.Lock()
	old, oldDone := s.ps, s.readerDone
	s.mu.Unlock()
	if old == nil {
		return
	}
	_ = old.Close()
	select {
	case <-oldDone: // keep delivery in order: the old reader finishes first
	case <-ctx.Done():
		return
	}
	s.mu.Lock()
	clear(s.confirmed)
	s.sentSeq, s.unanswered = s.recvSeq, time.Time{}
	s.mu.Unlock()
	if err := s.startLocked(ctx, true); err != nil {
		s.b.log.Debug("replacing a subscription connection", "err", err)
	}
}

// close closes the PubSub; the reader ends when go-redis closes its channel.
func (s *shard) close() {
	s.mu.Lock()
	s.closed = true
	ps := s.ps
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

// read is the reader goroutine of one PubSub: it turns confirmations into
// gap detection and Subscribe wake-ups, probes into probe accounting, and
// messages into Handler calls (serialized with every other reader by
// Backplane.dmu). It reads the connection itself (go-redis' Channel would
// add a goroutine, and a wake-up of its health checker, per message; the
// probes are this backplane's health check) and runs until the PubSub is
// closed. A slow Handler pushes back on the socket until Redis disconnects
// the subscriber (client-output-buffer-limit pubsub), which shows as a gap.
func (s *shard) read(ps *redis.PubSub, replaced bool, done chan struct{}) {
	defer s.b.wg.Done()
	defer close(done)
	// count is the number of subscriptions on the connection as Redis last
	// reported it. The probe is never unsubscribed, so a confirmation with
	// Count 1 after the first one means a new connection: go-redis
	// reconnected and resubscribed silently.
	count := 0
	if replaced {
		count = 1
	}
	failures := 0
	for {
		s.idle.Store(true)
		item, err := ps.Receive(context.Background())
		s.idle.Store(false)
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			// The next Receive reconnects and resubscribes; as go-redis'
			// own reader does, a second failure in a row waits a little
			// first, so a Redis that is down is not dialled in a loop.
			failures++
			if failures > 1 {
				time.Sleep(reconnectPause)
			}
			continue
		}
		failures = 0
		switch m := item.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				if m.Count == 1 && count > 0 {
					s.mu.Lock()
					clear(s.confirmed)
					s.mu.Unlock()
					s.b.reconnected(s, errReconnected)
				}
				s.confirm(m.Channel)
			}
			count = m.Count
		case *redis.Message:
			if m.Channel == s.probe {
				s.probeArrived(m.Payload)
				continue
			}
			if m.Channel == s.presence {
				continue // nobody publishes there; counted only
			}
			c, ok := strings.CutPrefix(m.Channel, s.prefix)
			if !ok {
				continue
			}
			s.b.deliver(s, c, []byte(m.Payload))
		}
	}
}

func (s *shard) confirm(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.confirmed[name] = struct{}{}
	for _, w := range s.waiters[name] {
		close(w)
	}
	delete(s.waiters, name)
}

func (s *shard) wants(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.desired[channel]
	return ok
}

func (s *shard) desiredList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.desired))
}

func (s *shard) probeArrived(payload string) {
	seq, err := strconv.ParseUint(payload, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	if seq > s.recvSeq {
		s.recvSeq = seq
	}
	s.mu.Unlock()
	if s.b.downFlag.Load() {
		s.b.poke() // may complete a restoration
	}
}

// noteSent records that probe seq was published at.
func (s *shard) noteSent(seq uint64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ps == nil {
		return
	}
	if s.recvSeq >= s.sentSeq {
		s.unanswered = at
	}
	s.sentSeq = seq
}

// deaf reports a connection whose probes stopped arriving although its
// reader is idle: connected, but receiving nothing.
func (s *shard) deaf(now time.Time, timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps != nil && s.recvSeq < s.sentSeq && now.Sub(s.unanswered) > timeout &&
		s.idle.Load()
}

// restoredSince reports whether every desired channel is confirmed on the
// current connection and a probe of round seq or later came back.
func (s *shard) restoredSince(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ps == nil {
		return len(s.desired) == 0
	}
	if s.recvSeq < seq {
		return false
	}
	if _, ok := s.confirmed[s.probe]; !ok {
		return false
	}
	if _, ok := s.confirmed[s.presence]; !ok {
		return false
	}
	for c := range s.desired {
		if _, ok := s.confirmed[s.prefix+c]; !ok {
			return false
		}
	}
	return true
}
