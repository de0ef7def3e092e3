package conn

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
)

// hbRecorder hosts a heartbeat on a fake clock and records its calls.
type hbRecorder struct {
	rt                 *fakeRuntime
	keepAlive, timeout time.Duration
	lastWrite          time.Time
	lastRead           time.Time
	read               bool
	pings              []time.Duration // when Ping was called, from the fake epoch
	expired            []time.Duration // when Expire was called
	idle               []time.Duration // Expire's argument
}

func newHBRecorder(t *testing.T, keepAlive, timeout time.Duration) (*hbRecorder, func()) {
	rt := newFakeRuntime(t)
	h := &hbRecorder{rt: rt, keepAlive: keepAlive, timeout: timeout, lastWrite: rt.Now()}
	hb := new(heartbeat)
	hb.start(rt, h)
	return h, hb.stop
}

func (h *hbRecorder) heartbeatTimes() (time.Duration, time.Duration) { return h.keepAlive, h.timeout }

func (h *hbRecorder) now() time.Time { return h.rt.Now() }

func (h *hbRecorder) lastWriteTime() time.Time { return h.lastWrite }

func (h *hbRecorder) lastReadTime() (time.Time, bool) { return h.lastRead, h.read }

func (h *hbRecorder) ping() {
	h.pings = append(h.pings, h.rt.since())
	h.lastWrite = h.rt.Now() // a Ping is a write, as in Conn
}

func (h *hbRecorder) expire(idle time.Duration) {
	h.expired = append(h.expired, h.rt.since())
	h.idle = append(h.idle, idle)
}

// advanceTo moves the fake clock to at (from the epoch).
func (h *hbRecorder) advanceTo(at time.Duration) { h.rt.advance(at - h.rt.since()) }

func secs(ss ...int) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = time.Duration(s) * time.Second
	}
	return out
}

// TestHeartbeatSchedule proves the heartbeat's schedule on one timer: a Ping
// after KeepAlive without a write (none while writes keep coming), Expire
// once Timeout passed since the last read, counted only from the first
// read, and the timer left unarmed after Expire.
func TestHeartbeatSchedule(t *testing.T) {
	t.Parallel()
	type event struct {
		at          time.Duration
		write, read bool
	}
	w := func(s int) event { return event{at: time.Duration(s) * time.Second, write: true} }
	r := func(s int) event { return event{at: time.Duration(s) * time.Second, read: true} }
	tests := []struct {
		name             string
		keepAlive, timeo time.Duration
		events           []event
		until            time.Duration
		wantPings        []time.Duration
		wantExpire       time.Duration // 0: never
	}{
		{
			name: "idle: a Ping every KeepAlive and no timeout before a first read",
			// 10 timeouts long
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 300 * time.Second,
			wantPings: secs(15, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180, 195, 210, 225, 240, 255, 270, 285, 300),
		},
		{
			name:      "a write postpones the Ping",
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 60 * time.Second,
			events:    []event{w(10)},
			wantPings: secs(25, 40, 55),
		},
		{
			name:      "writes more often than KeepAlive: no Ping",
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 54 * time.Second,
			events: []event{w(10), w(20), w(30), w(40)},
		},
		{
			name:      "timeout counted from the first read",
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 100 * time.Second,
			events:    []event{r(0)},
			wantPings: secs(15, 30), wantExpire: 30 * time.Second,
		},
		{
			name:      "a later read postpones the timeout",
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 100 * time.Second,
			events:    []event{r(0), r(20)},
			wantPings: secs(15, 30, 45), wantExpire: 50 * time.Second,
		},
		{
			name:      "a late first read starts the timeout",
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 200 * time.Second,
			events:    []event{r(100)},
			wantPings: secs(15, 30, 45, 60, 75, 90, 105, 120), wantExpire: 130 * time.Second,
		},
		{
			name:      "reads more often than the timeout: no Expire",
			keepAlive: 15 * time.Second, timeo: 30 * time.Second, until: 100 * time.Second,
			events:    []event{r(0), r(25), r(50), r(75)},
			wantPings: secs(15, 30, 45, 60, 75, 90),
		},
		{
			name:      "keep-alive longer than the timeout",
			keepAlive: 30 * time.Second, timeo: 10 * time.Second, until: 100 * time.Second,
			events:     []event{r(0)},
			wantExpire: 10 * time.Second,
		},
		{
			name:      "keep-alive longer than the timeout, no read",
			keepAlive: 30 * time.Second, timeo: 10 * time.Second, until: 100 * time.Second,
			wantPings: secs(30, 60, 90),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, stop := newHBRecorder(t, tt.keepAlive, tt.timeo)
			defer stop()
			for _, ev := range tt.events {
				h.advanceTo(ev.at)
				if ev.write {
					h.lastWrite = h.rt.Now()
				}
				if ev.read {
					h.lastRead, h.read = h.rt.Now(), true
				}
			}
			h.advanceTo(tt.until)
			if !slices.Equal(h.pings, tt.wantPings) {
				t.Errorf("pings at %v, want %v", h.pings, tt.wantPings)
			}
			switch {
			case tt.wantExpire == 0 && len(h.expired) != 0:
				t.Errorf("expired at %v (idle %v), want never", h.expired, h.idle)
			case tt.wantExpire != 0 && (len(h.expired) != 1 || h.expired[0] != tt.wantExpire || h.idle[0] != tt.timeo):
				t.Errorf("expired at %v (idle %v), want once at %v (idle %v)", h.expired, h.idle, tt.wantExpire, tt.timeo)
			case tt.wantExpire != 0 && len(h.rt.pending()) != 0:
				t.Errorf("timer still armed at %v after Expire", h.rt.pending())
			}
		})
	}
}

// TestHeartbeatStop proves that stop disarms the timer wherever the
// heartbeat is (before its first tick, after Pings, after Expire), that
// nothing is called after it, and that it is idempotent.
func TestHeartbeatStop(t *testing.T) {
	t.Parallel()
	for _, stopAt := range []time.Duration{0, 14 * time.Second, 15 * time.Second, 31 * time.Second, 45 * time.Second} {
		t.Run(fmt.Sprint(stopAt), func(t *testing.T) {
			t.Parallel()
			h, stop := newHBRecorder(t, 15*time.Second, 30*time.Second)
			h.lastRead, h.read = h.rt.Now(), true // expires at 30s
			h.advanceTo(stopAt)
			pings, expired := len(h.pings), len(h.expired)
			stop()
			stop()
			if got := h.rt.pending(); len(got) != 0 {
				t.Fatalf("timer armed at %v after stop", got)
			}
			h.advanceTo(stopAt + 10*time.Minute)
			if len(h.pings) != pings || len(h.expired) != expired {
				t.Fatalf("after stop: pings %v, expired %v; want nothing new after %d pings and %d expiries", h.pings, h.expired, pings, expired)
			}
		})
	}
}

// TestConnKeepAlive proves that a Conn queues a Ping record (of its
// protocol) once KeepAlive passed with nothing sent, not earlier, and not
// when something was sent meanwhile: the Ping then comes KeepAlive after
// that record.
func TestConnKeepAlive(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.Name(), func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			sock := newFakeSocket()
			opts := testOptions(p, rt)
			c, _ := openConn(t, sock, opts, nil)
			idleWith := func(frames int) {
				t.Helper()
				awaitIdle(t, rt, c)
				if st := sock.snapshot(); len(st.frames) != frames || len(st.attempts) != frames {
					t.Fatalf("at %v: %d frames, %d attempts; want %d", rt.since(), len(st.frames), len(st.attempts), frames)
				}
			}
			wantPing := func(frame int) {
				t.Helper()
				idleWith(frame + 1)
				msgs := parseAll(t, p, sock.snapshot().frames[frame])
				if len(msgs) != 1 {
					t.Fatalf("frame %d holds %d messages, want a Ping", frame, len(msgs))
				}
				if _, ok := msgs[0].(*protocol.Ping); !ok {
					t.Fatalf("frame %d holds a %T, want a Ping", frame, msgs[0])
				}
			}
			idleWith(1) // the greeting
			rt.advance(opts.KeepAlive - time.Nanosecond)
			idleWith(1)
			rt.advance(time.Nanosecond) // 15s
			wantPing(1)
			rt.advance(10 * time.Second) // 25s
			if err := c.Enqueue(record(t, p, "news")); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			idleWith(3)
			rt.advance(15*time.Second - time.Nanosecond) // just before 40s: the tick at 30s saw a recent write
			idleWith(3)
			rt.advance(time.Nanosecond) // 40s
			wantPing(3)
			rt.advance(opts.KeepAlive) // 55s
			wantPing(4)
		})
	}
}

// TestConnClientTimeout proves that a Conn closes with the client-timeout
// Close record (clientTimeoutMessage, allowReconnect true) exactly when
// ClientTimeout passed since the last Received, not a nanosecond before,
// never before the first Received, and that the session hears the reason.
func TestConnClientTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		receives []time.Duration
		wantAt   time.Duration // 0: never (checked over ten timeouts)
	}{
		{"never before the first Received", nil, 0},
		{"ClientTimeout after Received", secs(0), 30 * time.Second},
		{"from the last Received", secs(0, 20), 50 * time.Second},
		{"first Received late", secs(100), 130 * time.Second},
		{"Received often", secs(5, 25, 45, 65, 85), 115 * time.Second},
		{"Received between ticks", []time.Duration{7*time.Second + 300*time.Millisecond}, 37*time.Second + 300*time.Millisecond},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.Name()+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rt := newFakeRuntime(t)
				sock := newFakeSocket()
				opts := testOptions(p, rt)
				c, sess := openConn(t, sock, opts, nil)
				for _, at := range tt.receives {
					rt.advance(at - rt.since())
					if isClosing(c) {
						t.Fatalf("closing at %v, before a Received due then", rt.since())
					}
					c.Received()
				}
				if tt.wantAt == 0 {
					for range 20 {
						rt.advance(opts.KeepAlive)
						if isClosing(c) {
							t.Fatalf("closed at %v without any Received", rt.since())
						}
					}
					return
				}
				rt.advance(tt.wantAt - time.Nanosecond - rt.since())
				if isClosing(c) {
					t.Fatalf("closing at %v, before the client timeout", rt.since())
				}
				rt.advance(time.Nanosecond)
				if !isClosing(c) {
					t.Fatalf("not closing at %v, the client timeout", rt.since())
				}
				awaitDone(t, c)
				st := sock.snapshot()
				cl := parseClose(t, p, st.frames[len(st.frames)-1])
				want := clientTimeoutMessage(opts.ClientTimeout)
				if cl.Error != want || !cl.AllowReconnect {
					t.Fatalf("Close = %+v, want %q with allowReconnect", cl, want)
				}
				c.End(nil)
				if errs := sess.closed(); len(errs) != 1 || errs[0] == nil || errs[0].Error() != want {
					t.Fatalf("session Closed(%v), want %q", errs, want)
				}
				if got := rt.pending(); len(got) != 0 {
					t.Fatalf("timers armed at %v after the timeout and End", got)
				}
			})
		}
	}
}

// TestClientTimeoutMessage pins the Close error a timed-out client gets.
func TestClientTimeoutMessage(t *testing.T) {
	t.Parallel()
	if got, want := clientTimeoutMessage(30*time.Second), "Connection closed with an error: the client sent nothing for 30s."; got != want {
		t.Fatalf("clientTimeoutMessage = %q, want %q", got, want)
	}
}

// TestEndStopsHeartbeat proves that End disarms the heartbeat timer: no
// timer is left and no Ping (nor anything else) is written however long the
// clock runs afterwards.
func TestEndStopsHeartbeat(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.Name(), func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			sock := newFakeSocket()
			opts := testOptions(p, rt)
			c, _ := openConn(t, sock, opts, nil)
			c.Received()
			rt.advance(opts.KeepAlive) // one Ping
			sock.awaitBytes(t, len(protocol.AppendHandshakeResponse(nil, ""))+len(encode(t, p, &protocol.Ping{})))
			c.End(nil)
			waitReturns(t, "Wait", c.Wait)
			if got := rt.pending(); len(got) != 0 {
				t.Fatalf("timers armed at %v after End", got)
			}
			before := sock.snapshot()
			rt.advance(100 * opts.ClientTimeout)
			after := sock.snapshot()
			if len(after.attempts) != len(before.attempts) || after.closes != 1 {
				t.Fatalf("after End the socket saw %d more writes, %d Close", len(after.attempts)-len(before.attempts), after.closes)
			}
			if cl := parseClose(t, p, after.frames[len(after.frames)-1]); *cl != (protocol.Close{}) {
				t.Fatalf("last frame %+v, want End's plain Close", *cl)
			}
		})
	}
}

// TestHandOffPausesTheClientTimeout: while the reader hands a message on
// (HandOff, for instance waiting for a free invocation slot) it reads
// nothing, so the client's Pings wait in the socket; that time does not
// count as the client's silence. Once HandedOff, the timeout counts from
// then. Before, a reader waiting for the node got its client closed for
// a client timeout.
func TestHandOffPausesTheClientTimeout(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	opts := testOptions(protocols[0], rt)
	c, _ := openConn(t, newFakeSocket(), opts, nil)
	c.Received()
	c.HandOff()
	rt.advance(5 * opts.ClientTimeout)
	if isClosing(c) {
		t.Fatalf("closed at %v while the reader waited for the node", rt.since())
	}
	c.HandedOff()
	handedOff := rt.since()
	rt.advance(opts.ClientTimeout - time.Nanosecond)
	if isClosing(c) {
		t.Fatalf("closed at %v, before the client timeout counted from HandedOff at %v", rt.since(), handedOff)
	}
	rt.advance(time.Nanosecond)
	if !isClosing(c) {
		t.Fatalf("not closed at %v, a client timeout after HandedOff", rt.since())
	}
	awaitDone(t, c)
	c.End(nil)
}
