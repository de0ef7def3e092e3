package redisbp_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/backplane"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial of the outage tests on stderr; the
	// tests assert on events and errors instead.
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// waitLimit only turns a hang into a failure; passing runs never wait for it.
const waitLimit = 20 * time.Second

var prefixSeq atomic.Int64

// uniquePrefix returns a channel prefix no other test uses (the test's
// name, with characters a prefix cannot have as '_').
func uniquePrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("test%d-%s:", prefixSeq.Add(1), name)
}

// faultNet dials Redis for one client and can cut it off: SetDown(true)
// closes every connection it made and refuses new ones, which is what the
// client sees when Redis dies; SetDown(false) lets dials through again.
type faultNet struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// Deafen makes every connection dialed so far drop whatever it receives,
// while writes still go through: the connection looks alive but delivers
// nothing. Connections dialed later are normal.
func (f *faultNet) Deafen() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.(*trackedConn).deaf.Store(true)
	}
}

func newFaultNet() *faultNet { return &faultNet{conns: make(map[net.Conn]struct{})} }

func (f *faultNet) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("injected fault: connection refused")}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("injected fault: connection refused")}
	}
	tc := &trackedConn{Conn: c, f: f}
	f.conns[tc] = struct{}{}
	return tc, nil
}

func (f *faultNet) SetDown(down bool) {
	f.mu.Lock()
	f.down = down
	var conns []net.Conn
	if down {
		for c := range f.conns {
			conns = append(conns, c)
		}
	}
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	f    *faultNet
	once sync.Once
	deaf atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if err != nil || !c.deaf.Load() {
			return n, err
		}
	}
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns, c)
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}

// newBackplane makes an unstarted Backplane on a client of its own (closed
// in t.Cleanup after the Backplane), dialing through fn if not nil.
func newBackplane(t testing.TB, opts redisbp.Options, fn *faultNet) (*redisbp.Backplane, redis.UniversalClient) {
	t.Helper()
	if opts.ChannelPrefix == "" {
		opts.ChannelPrefix = uniquePrefix(t)
	}
	uo := opts.UniversalOptions()
	if fn != nil {
		uo.Dialer = fn.Dial
	}
	client := redis.NewUniversalClient(uo)
	bp, err := redisbp.New(client, opts)
	if err != nil {
		client.Close()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := bp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		client.Close()
	})
	return bp, client
}

// handler records deliveries and events and lets a test wait for them.
type handler struct {
	mu      sync.Mutex
	msgs    map[string][]string
	events  []backplane.Event
	changed chan struct{}
	block   chan struct{} // if not nil, HandleMessage waits for it to close
	blocked chan struct{} // closed at the first blocked call
	once    sync.Once
}

func newHandler() *handler {
	return &handler{msgs: make(map[string][]string), changed: make(chan struct{}, 1)}
}

func (h *handler) HandleMessage(channel string, payload []byte) {
	if h.block != nil {
		h.once.Do(func() { close(h.blocked) })
		<-h.block
	}
	h.mu.Lock()
	h.msgs[channel] = append(h.msgs[channel], string(payload))
	h.mu.Unlock()
	h.notify()
}

func (h *handler) HandleEvent(ev backplane.Event) {
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
	h.notify()
}

func (h *handler) notify() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *handler) payloads(channel string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs[channel]...)
}

func (h *handler) kinds() []backplane.EventKind {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ks []backplane.EventKind
	for _, ev := range h.events {
		ks = append(ks, ev.Kind)
	}
	return ks
}

func (h *handler) eventsOf(kind backplane.EventKind) []backplane.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []backplane.Event
	for _, ev := range h.events {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// waitUntil returns once cond holds, re-checked after every Handler call.
func (h *handler) waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for !cond() {
		select {
		case <-h.changed:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s (events %v)", waitLimit, what, h.kinds())
		}
	}
}

func (h *handler) waitKind(t testing.TB, kind backplane.EventKind, n int) {
	t.Helper()
	h.waitUntil(t, fmt.Sprintf("%d %v event(s)", n, kind), func() bool { return len(h.eventsOf(kind)) >= n })
}

func (h *handler) waitPayload(t testing.TB, channel, payload string) {
	t.Helper()
	h.waitUntil(t, fmt.Sprintf("%q on %s", payload, channel), func() bool {
		for _, p := range h.payloads(channel) {
			if p == payload {
				return true
			}
		}
		return false
	})
}
