package backplanetest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
)

// recorder is the Handler the suite starts backplanes with. It records what
// it is given, wakes waiters, and notes contract violations it can see by
// itself: overlapping calls, and calls after Close returned.
type recorder struct {
	calls   atomic.Int32  // Handler calls in progress
	changed chan struct{} // capacity 1: "something was recorded"

	mu     sync.Mutex
	msgs   []delivery
	evs    []backplane.Event
	closed bool   // Close has returned; further calls are violations
	bad    string // first violation seen
}

type delivery struct {
	channel, payload string
}

var _ backplane.Handler = (*recorder)(nil)

func newRecorder() *recorder {
	return &recorder{changed: make(chan struct{}, 1)}
}

func (r *recorder) HandleMessage(channel string, payload []byte) {
	r.enter("HandleMessage")
	defer r.calls.Add(-1)
	d := delivery{channel: channel, payload: string(payload)}
	// The payload is the handler's: scribbling on it must not disturb any
	// other subscriber (the race detector and their assertions would see it).
	for i := range payload {
		payload[i] = 0
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, d)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) HandleEvent(ev backplane.Event) {
	r.enter("HandleEvent")
	defer r.calls.Add(-1)
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) enter(method string) {
	if n := r.calls.Add(1); n != 1 {
		r.violate(fmt.Sprintf("%s called while %d other Handler call(s) were running", method, n-1))
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		r.violate(method + " called after Close returned")
	}
}

func (r *recorder) violate(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad == "" {
		r.bad = what
	}
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) markClosed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
}

// violation returns the first contract violation seen, or "".
func (r *recorder) violation() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// payloads returns the payloads delivered on channel, in delivery order.
func (r *recorder) payloads(channel string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, d := range r.msgs {
		if d.channel == channel {
			out = append(out, d.payload)
		}
	}
	return out
}

// count returns how many messages were delivered, on any channel.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) events() []backplane.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]backplane.Event(nil), r.evs...)
}

// waitUntil returns once cond holds, re-checking it after every Handler
// call; it fails t if that takes longer than WaitTimeout.
func (r *recorder) waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	for !cond() {
		select {
		case <-r.changed:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s", WaitTimeout, what)
		}
	}
}

func (r *recorder) waitPayloads(t testing.TB, channel string, n int) {
	t.Helper()
	r.waitUntil(t, fmt.Sprintf("%d message(s) on %s", n, channel), func() bool {
		return len(r.payloads(channel)) >= n
	})
}

func (r *recorder) waitCount(t testing.TB, n int) {
	t.Helper()
	r.waitUntil(t, fmt.Sprintf("%d message(s)", n), func() bool { return r.count() >= n })
}

func (r *recorder) waitEvents(t testing.TB, n int) {
	t.Helper()
	r.waitUntil(t, fmt.Sprintf("%d event(s)", n), func() bool { return len(r.events()) >= n })
}

func (r *recorder) waitKind(t testing.TB, kind backplane.EventKind) {
	t.Helper()
	r.waitUntil(t, "event "+kind.String(), func() bool {
		for _, ev := range r.events() {
			if ev.Kind == kind {
				return true
			}
		}
		return false
	})
}
