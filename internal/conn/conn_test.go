package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestOptionsCheck proves that Open refuses options without a Protocol or a
// Runtime or with a non-positive limit, with an error naming what is wrong,
// before calling connect or touching the socket.
func TestOptionsCheck(t *testing.T) {
	t.Parallel()
	valid := testOptions(protocol.JSON, seam.Real{})
	limits := "MaxOutboundBytes, KeepAlive and ClientTimeout must be positive"
	tests := []struct {
		name   string
		mutate func(*Options)
		want   []string // substrings of the error; none: valid
	}{
		{"valid", func(*Options) {}, nil},
		{"valid without logger or id", func(o *Options) { o.Logger, o.ID = nil, "" }, nil},
		{"no protocol", func(o *Options) { o.Protocol = nil }, []string{"Options.Protocol is required"}},
		{"no runtime", func(o *Options) { o.Runtime = nil }, []string{"Options.Runtime is required"}},
		{"no protocol nor runtime", func(o *Options) { o.Protocol, o.Runtime = nil, nil }, []string{"Protocol"}},
		{"zero MaxOutboundBytes", func(o *Options) { o.MaxOutboundBytes = 0 }, []string{limits, "got 0, 15s, 30s"}},
		{"negative MaxOutboundBytes", func(o *Options) { o.MaxOutboundBytes = -1 }, []string{limits, "got -1, 15s, 30s"}},
		{"zero KeepAlive", func(o *Options) { o.KeepAlive = 0 }, []string{limits, "got 1048576, 0s, 30s"}},
		{"negative KeepAlive", func(o *Options) { o.KeepAlive = -time.Second }, []string{limits, "-1s"}},
		{"zero ClientTimeout", func(o *Options) { o.ClientTimeout = 0 }, []string{limits, "got 1048576, 15s, 0s"}},
		{"negative ClientTimeout", func(o *Options) { o.ClientTimeout = -time.Minute }, []string{limits, "-1m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := valid
			tt.mutate(&opts)
			err := opts.check()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("check() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("check() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("check() = %q, want it to contain %q", err, w)
				}
			}
			sock := newFakeSocket()
			called := false
			c, openErr := Open(context.Background(), sock, opts, func(context.Context, *Conn) (Session, error) {
				called = true
				return &fakeSession{}, nil
			})
			if c != nil || openErr == nil || openErr.Error() != err.Error() {
				t.Fatalf("Open = %v, %v; want nil and %q", c, openErr, err)
			}
			if st := sock.snapshot(); called || len(st.attempts) != 0 || st.closes != 0 || st.closeNows != 0 {
				t.Fatalf("invalid options: connect called %v, socket %+v; want nothing touched", called, st)
			}
		})
	}
}

// TestOpenHoldsOutputUntilConnected proves that nothing reaches the socket
// while connect runs (not even by a writer goroutine it might start), and
// that once connect returned the handshake answer is the first bytes
// written, followed by the records queued during connect in order, each
// whole in one frame.
func TestOpenHoldsOutputUntilConnected(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		for _, n := range []int{0, 1, 3, 50} {
			t.Run(fmt.Sprintf("%s/%d records", p.Name(), n), func(t *testing.T) {
				t.Parallel()
				rt := newFakeRuntime(t)
				rt.setHold(true)
				sock := newFakeSocket()
				greeting := protocol.AppendHandshakeResponse(nil, "")
				want := [][]byte{greeting}
				c, _ := openConn(t, sock, testOptions(p, rt), func(c *Conn) {
					for i := range n {
						var err error
						if i%2 == 0 {
							rec := record(t, p, fmt.Sprintf("enqueued%d", i), i)
							want = append(want, rec)
							err = c.Enqueue(rec)
						} else {
							m := &protocol.Invocation{Target: fmt.Sprintf("sent%d", i), Arguments: []any{"x"}}
							want = append(want, encode(t, p, m))
							err = c.Send(m)
						}
						if err != nil {
							t.Errorf("record %d during connect: %v", i, err)
						}
					}
					// Run, here and now, any writer started so far: it
					// must find nothing to write.
					rt.runHeld()
					if st := sock.snapshot(); len(st.attempts) != 0 || st.closes != 0 {
						t.Errorf("during connect the socket saw %d writes (%q), %d Close; want none", len(st.attempts), st.attempts, st.closes)
					}
				})
				rt.setHold(false)
				total := len(bytes.Join(want, nil))
				sock.awaitBytes(t, total)
				st := sock.snapshot()
				if !bytes.HasPrefix(st.stream(), greeting) {
					t.Fatalf("first bytes %q, want the handshake answer %q", short(st.stream()), greeting)
				}
				recordsPerFrame(t, st.frames, want)
				msgs := parseAll(t, p, st.stream()[len(greeting):])
				if len(msgs) != n {
					t.Fatalf("parsed %d messages after the greeting, want %d", len(msgs), n)
				}
				if c.ID() != "conn-1" || c.Protocol() != p {
					t.Fatalf("ID, Protocol = %q, %v", c.ID(), c.Protocol())
				}
			})
		}
	}
}

// TestOpenRefused proves that when connect fails the client gets only the
// handshake error "Connection refused: <err>" (not the greeting, not what
// connect queued), the socket is closed once, and Open returns the error
// with a Conn whose Wait returns and whose Enqueue then fails.
func TestOpenRefused(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		for _, queued := range []int{0, 2} {
			t.Run(fmt.Sprintf("%s/%d queued", p.Name(), queued), func(t *testing.T) {
				t.Parallel()
				rt := newFakeRuntime(t)
				sock := newFakeSocket()
				boom := errors.New("hub \"chat\" is not registered")
				c, err := Open(context.Background(), sock, testOptions(p, rt), func(_ context.Context, c *Conn) (Session, error) {
					for i := range queued {
						if err := c.Enqueue(record(t, p, "early", i)); err != nil {
							t.Errorf("Enqueue during connect: %v", err)
						}
					}
					return nil, boom
				})
				if !errors.Is(err, boom) {
					t.Fatalf("Open error = %v, want %v", err, boom)
				}
				if c == nil {
					t.Fatal("Open returned no Conn with its error")
				}
				waitReturns(t, "Wait", c.Wait)
				st := sock.snapshot()
				want := protocol.AppendHandshakeResponse(nil, "Connection refused: "+boom.Error())
				if len(st.frames) != 1 || !bytes.Equal(st.frames[0], want) {
					t.Fatalf("socket frames %q, want only %q", st.frames, want)
				}
				resp, n, err := protocol.ParseHandshakeResponse(st.frames[0])
				if err != nil || n != len(st.frames[0]) || resp.Error != "Connection refused: "+boom.Error() {
					t.Fatalf("handshake response %+v, %d, %v", resp, n, err)
				}
				if st.closes != 1 || st.closeNows != 0 {
					t.Fatalf("Close called %d times, CloseNow %d; want 1, 0", st.closes, st.closeNows)
				}
				select {
				case <-c.Done():
				default:
					t.Fatal("Done not closed after Wait")
				}
				if err := c.Enqueue(record(t, p, "late")); !errors.Is(err, ErrConnectionClosed) {
					t.Fatalf("Enqueue after refusal = %v, want ErrConnectionClosed", err)
				}
				if got := rt.pending(); len(got) != 0 {
					t.Fatalf("timers armed after refusal at %v, want none (no heartbeat)", got)
				}
			})
		}
	}
}

// TestCoalescing proves that records queued while a write is blocked go out,
// once it unblocks, coalesced into as few frames as the 64 KiB bound
// allows, whole records only, in order.
func TestCoalescing(t *testing.T) {
	t.Parallel()
	const maxF = maxCoalescedFrame
	tests := []struct {
		name  string
		sizes []int
		want  []int // records per frame after the greeting
	}{
		{"small records share one frame", []int{11, 11, 11, 11, 11}, []int{5}},
		{"one record alone", []int{100}, []int{1}},
		{"frames hold at most 64 KiB", repeat(10000, 15), []int{6, 6, 3}},
		{"exactly 64 KiB fills a frame", []int{maxF / 2, maxF / 2, 1}, []int{2, 1}},
		{"one byte over starts a new frame", []int{maxF - 10, 11}, []int{1, 1}},
		{"a record over the bound goes alone", []int{10, maxF + 100, 10, 10}, []int{1, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			sock := newFakeSocket()
			sock.block()
			c, _ := openConn(t, sock, testOptions(protocol.JSON, rt), nil)
			sock.awaitWaiting(t, 1) // the greeting's write is in progress
			greeting := protocol.AppendHandshakeResponse(nil, "")
			records := [][]byte{greeting}
			for i, n := range tt.sizes {
				rec := raw(byte('a'+i%26), n)
				records = append(records, rec)
				if err := c.Enqueue(rec); err != nil {
					t.Fatalf("Enqueue %d: %v", i, err)
				}
			}
			if st := sock.snapshot(); len(st.attempts) != 1 {
				t.Fatalf("%d writes while the first was blocked, want 1", len(st.attempts))
			}
			sock.unblock()
			sock.awaitFrames(t, 1+len(tt.want))
			awaitIdle(t, rt, c)
			st := sock.snapshot()
			got := recordsPerFrame(t, st.frames, records)
			if fmt.Sprint(got[1:]) != fmt.Sprint(tt.want) || got[0] != 1 {
				t.Fatalf("records per frame = %v, want [1 (greeting)] then %v", got, tt.want)
			}
			for i, f := range st.frames {
				if len(f) > maxF && got[i] > 1 {
					t.Fatalf("frame %d has %d records in %d bytes, over the %d-byte bound", i, got[i], len(f), maxF)
				}
			}
		})
	}
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}

// TestOverflow proves that with the socket blocked, the Enqueue that would
// put more than MaxOutboundBytes in the queue fails with
// ErrOutboundOverflow, the client then gets (instead of what was queued) a
// Close record saying it is too slow with allowReconnect true, the socket is
// closed, later Enqueues fail with ErrConnectionClosed and the session
// hears the reason. A record alone over the bound is accepted.
func TestOverflow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		max      int
		sizes    []int // enqueued in order while the greeting write is blocked
		overflow int   // index of the Enqueue that overflows; -1: none
	}{
		{"third record overflows", 100, []int{40, 40, 40}, 2},
		{"exactly at the bound is fine", 100, []int{50, 50, 1}, 2},
		{"first record over the bound is accepted alone", 100, []int{150, 1}, 1},
		{"within the bound", 100, []int{30, 30, 30}, -1},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.Name()+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rt := newFakeRuntime(t)
				sock := newFakeSocket()
				sock.block()
				opts := testOptions(p, rt)
				opts.MaxOutboundBytes = tt.max
				c, sess := openConn(t, sock, opts, nil)
				sock.awaitWaiting(t, 1)
				for i, n := range tt.sizes {
					err := c.Enqueue(raw('a', n))
					switch {
					case i == tt.overflow && !errors.Is(err, ErrOutboundOverflow):
						t.Fatalf("Enqueue %d (%d bytes) = %v, want ErrOutboundOverflow", i, n, err)
					case i < tt.overflow || tt.overflow < 0:
						if err != nil {
							t.Fatalf("Enqueue %d (%d bytes) = %v, want nil", i, n, err)
						}
					}
				}
				if tt.overflow < 0 {
					if isClosing(c) {
						t.Fatal("closing without an overflow")
					}
					return
				}
				if err := c.Enqueue(raw('z', 1)); !errors.Is(err, ErrConnectionClosed) {
					t.Fatalf("Enqueue after overflow = %v, want ErrConnectionClosed", err)
				}
				sock.unblock()
				awaitDone(t, c)
				st := sock.snapshot()
				if len(st.frames) != 2 {
					t.Fatalf("frames %q, want the greeting and a Close", st.frames)
				}
				cl := parseClose(t, p, st.frames[1])
				wantMsg := fmt.Sprintf("Connection closed: the client is too slow; more than %d bytes were waiting to be sent.", tt.max)
				if cl.Error != wantMsg || !cl.AllowReconnect {
					t.Fatalf("Close = %+v, want error %q and allowReconnect", cl, wantMsg)
				}
				if st.closes != 1 || st.closeNows != 0 {
					t.Fatalf("Close %d, CloseNow %d; want 1, 0", st.closes, st.closeNows)
				}
				// The close grace timer was stopped once the socket closed.
				rt.advance(2 * closeGrace)
				if st := sock.snapshot(); st.closeNows != 0 {
					t.Fatalf("CloseNow called %d times after a clean close", st.closeNows)
				}
				c.End(nil)
				if errs := sess.closed(); len(errs) != 1 || errs[0] == nil || errs[0].Error() != wantMsg {
					t.Fatalf("session Closed(%v), want once with %q", errs, wantMsg)
				}
			})
		}
	}
}

// TestCloseAndEnd proves that Close discards what is queued (frees it and
// never writes it), writes its Close record once (later Closes change
// nothing), then closes the socket; that End tells the session exactly once, with the server's close reason
// when the reader ended cleanly and with the reader's error otherwise, and
// closes the connection if it was open; and that Wait returns after it all
// and joins the writer through the Runtime.
func TestCloseAndEnd(t *testing.T) {
	t.Parallel()
	readerErr := errors.New("read: connection reset by peer")
	tests := []struct {
		name      string
		closeMsg  *string // Close(closeMsg, reconnect) before End; nil: none
		reconnect bool
		endErr    error
		wantClose protocol.Close // the Close record sent
		wantErr   string         // what the session hears; "" nil
	}{
		{"server close with reason, clean end", ptr("bye"), true, nil, protocol.Close{Error: "bye", AllowReconnect: true}, "bye"},
		{"server close with reason, reader error", ptr("bye"), false, readerErr, protocol.Close{Error: "bye"}, readerErr.Error()},
		{"server close without reason", ptr(""), true, nil, protocol.Close{AllowReconnect: true}, ""},
		{"clean end only", nil, false, nil, protocol.Close{}, ""},
		{"reader error only", nil, false, readerErr, protocol.Close{}, readerErr.Error()},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.Name()+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rt := newFakeRuntime(t)
				sock := newFakeSocket()
				sock.block()
				c, sess := openConn(t, sock, testOptions(p, rt), nil)
				sock.awaitWaiting(t, 1)
				for i := range 3 {
					if err := c.Enqueue(record(t, p, "discarded", i)); err != nil {
						t.Fatalf("Enqueue: %v", err)
					}
				}
				if tt.closeMsg != nil {
					c.Close(*tt.closeMsg, tt.reconnect)
					c.Close("second close", !tt.reconnect)
					if err := c.Enqueue(record(t, p, "late")); !errors.Is(err, ErrConnectionClosed) {
						t.Fatalf("Enqueue after Close = %v, want ErrConnectionClosed", err)
					}
					sock.unblock()
					awaitDone(t, c)
				}
				var wg sync.WaitGroup
				for range 3 {
					wg.Go(func() { c.End(tt.endErr) })
				}
				wg.Wait()
				c.out.mu.Lock()
				left, leftBytes := len(c.out.queue), c.out.queued
				c.out.mu.Unlock()
				if left != 0 || leftBytes != 0 {
					t.Fatalf("after Close %d records (%d bytes) still queued, want them discarded", left, leftBytes)
				}
				sock.unblock()
				waitReturns(t, "Wait", c.Wait)
				if !rt.hasJoined(&c.out.wg) {
					t.Fatal("Wait did not join the writers through the Runtime")
				}
				c.Close("after end", true)
				c.End(errors.New("again"))

				errs := sess.closed()
				if len(errs) != 1 {
					t.Fatalf("session Closed %d times (%v), want once", len(errs), errs)
				}
				switch {
				case tt.wantErr == "" && errs[0] != nil:
					t.Fatalf("session Closed(%v), want nil", errs[0])
				case tt.wantErr != "" && (errs[0] == nil || errs[0].Error() != tt.wantErr):
					t.Fatalf("session Closed(%v), want %q", errs[0], tt.wantErr)
				case tt.endErr != nil && !errors.Is(errs[0], tt.endErr):
					t.Fatalf("session Closed(%v), want the reader's error itself", errs[0])
				}
				st := sock.snapshot()
				if len(st.frames) != 2 || len(st.attempts) != 2 {
					t.Fatalf("frames %q (%d attempts), want the greeting and one Close", st.frames, len(st.attempts))
				}
				if cl := parseClose(t, p, st.frames[1]); *cl != tt.wantClose {
					t.Fatalf("Close record %+v, want %+v", *cl, tt.wantClose)
				}
				if st.closes != 1 || st.closeNows != 0 {
					t.Fatalf("Close %d, CloseNow %d; want 1, 0", st.closes, st.closeNows)
				}
			})
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestCloseWhileIdle proves that Close on a connection with no write in
// progress writes the Close record right after what was already written,
// arms no close-grace timer and ends with Done.
func TestCloseWhileIdle(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	sock := newFakeSocket()
	c, _ := openConn(t, sock, testOptions(protocol.JSON, rt), nil)
	sock.awaitFrames(t, 1)
	awaitIdle(t, rt, c)
	before := len(rt.pending())
	c.Close("maintenance", true)
	if got := len(rt.pending()); got != before {
		t.Fatalf("Close while idle armed %d timers, want none", got-before)
	}
	awaitDone(t, c)
	st := sock.snapshot()
	if len(st.frames) != 2 {
		t.Fatalf("frames %q, want greeting and Close", st.frames)
	}
	if cl := parseClose(t, protocol.JSON, st.frames[1]); cl.Error != "maintenance" || !cl.AllowReconnect {
		t.Fatalf("Close = %+v", cl)
	}
}

// TestCloseGraceCutsHungWrite proves that when a write hangs after Close,
// the socket is shut with CloseNow once closeGrace has passed on the
// runtime's clock, and not before; the Close record is then not written.
func TestCloseGraceCutsHungWrite(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	sock := newFakeSocket()
	sock.block()
	c, _ := openConn(t, sock, testOptions(protocol.JSON, rt), nil)
	sock.awaitWaiting(t, 1)
	c.Close("bye", true)
	rt.advance(closeGrace - time.Nanosecond)
	if st := sock.snapshot(); st.closeNows != 0 || st.closes != 0 {
		t.Fatalf("before the grace: CloseNow %d, Close %d; want 0, 0", st.closeNows, st.closes)
	}
	rt.advance(time.Nanosecond)
	awaitDone(t, c)
	st := sock.snapshot()
	if st.closeNows != 1 || st.closes != 1 {
		t.Fatalf("CloseNow %d, Close %d; want 1, 1", st.closeNows, st.closes)
	}
	if len(st.frames) != 0 || len(st.attempts) != 1 {
		t.Fatalf("frames %q, attempts %d; want the cut greeting write only", st.frames, len(st.attempts))
	}
}

// TestWriteError proves that a failing write closes the connection: the
// socket is closed (Done), nothing more is written (no Close record on a
// broken socket), later Enqueues fail and a later Close is a no-op (no
// write, no close-grace timer).
func TestWriteError(t *testing.T) {
	t.Parallel()
	broken := errors.New("write: broken pipe")
	for _, failGreeting := range []bool{true, false} {
		t.Run(fmt.Sprintf("greeting fails %v", failGreeting), func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			sock := newFakeSocket()
			if failGreeting {
				sock.failWrites(broken)
			}
			c, sess := openConn(t, sock, testOptions(protocol.JSON, rt), nil)
			okFrames := 0
			if !failGreeting {
				sock.awaitFrames(t, 1)
				awaitIdle(t, rt, c)
				okFrames = 1
				sock.failWrites(broken)
				if err := c.Enqueue(record(t, protocol.JSON, "fails")); err != nil {
					t.Fatalf("Enqueue: %v", err)
				}
			}
			awaitDone(t, c)
			if err := c.Enqueue(record(t, protocol.JSON, "late")); !errors.Is(err, ErrConnectionClosed) {
				t.Fatalf("Enqueue after a write error = %v, want ErrConnectionClosed", err)
			}
			c.Close("too late", true)
			c.End(broken)
			waitReturns(t, "Wait", c.Wait)
			if got := rt.pending(); len(got) != 0 {
				t.Fatalf("timers armed at %v after the connection ended", got)
			}
			st := sock.snapshot()
			if len(st.frames) != okFrames || len(st.attempts) != okFrames+1 {
				t.Fatalf("%d frames, %d attempts; want %d, %d", len(st.frames), len(st.attempts), okFrames, okFrames+1)
			}
			if st.closes != 1 || st.closeNows != 0 {
				t.Fatalf("Close %d, CloseNow %d; want 1, 0", st.closes, st.closeNows)
			}
			if errs := sess.closed(); len(errs) != 1 || !errors.Is(errs[0], broken) {
				t.Fatalf("session Closed(%v), want once with the reader's error", errs)
			}
		})
	}
}

// TestSendEncodeError proves that Send returns the protocol's encoding
// error and queues nothing.
func TestSendEncodeError(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	sock := newFakeSocket()
	c, _ := openConn(t, sock, testOptions(protocol.JSON, rt), nil)
	sock.awaitFrames(t, 1)
	awaitIdle(t, rt, c)
	if err := c.Send(&protocol.Invocation{Target: "t", Arguments: []any{make(chan int)}}); err == nil {
		t.Fatal("Send of an unencodable argument succeeded")
	}
	if !outboundIdle(c) || len(sock.snapshot().attempts) != 1 {
		t.Fatal("a failed Send queued something")
	}
}

// TestConcurrentEnqueue proves, under the race detector, that records
// enqueued from many goroutines while the socket is slow all arrive whole,
// each goroutine's in its order, then End closes the connection cleanly.
func TestConcurrentEnqueue(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.Name(), func(t *testing.T) {
			t.Parallel()
			const senders, each = 8, 200
			rt := newFakeRuntime(t)
			sock := newFakeSocket()
			c, _ := openConn(t, sock, testOptions(p, rt), nil)
			var wg sync.WaitGroup
			total := 0
			for g := range senders {
				for i := range each {
					total += len(record(t, p, fmt.Sprintf("g%d-%d", g, i)))
				}
				wg.Go(func() {
					for i := range each {
						if err := c.Send(&protocol.Invocation{Target: fmt.Sprintf("g%d-%d", g, i), Arguments: []any{}}); err != nil {
							t.Errorf("Send: %v", err)
							return
						}
						if i == each/2 && g == 0 {
							sock.block() // slow down midway: later records coalesce
						}
					}
				})
			}
			wg.Wait()
			sock.unblock()
			greeting := protocol.AppendHandshakeResponse(nil, "")
			sock.awaitBytes(t, len(greeting)+total)
			c.End(nil)
			waitReturns(t, "Wait", c.Wait)
			st := sock.snapshot()
			if !bytes.HasPrefix(st.frames[0], greeting) {
				t.Fatalf("first frame %q, want the greeting first", short(st.frames[0]))
			}
			frames := append([][]byte{st.frames[0][len(greeting):]}, st.frames[1:len(st.frames)-1]...)
			next := make([]int, senders)
			for f, frame := range frames {
				for _, m := range parseAll(t, p, frame) { // whole records per frame
					inv, ok := m.(*protocol.Invocation)
					if !ok {
						t.Fatalf("frame %d holds a %T", f+1, m)
					}
					var g, i int
					if _, err := fmt.Sscanf(inv.Target, "g%d-%d", &g, &i); err != nil || i != next[g] {
						t.Fatalf("got %q, want g%d-%d next", inv.Target, g, next[g])
					}
					next[g]++
				}
			}
			for g, n := range next {
				if n != each {
					t.Fatalf("sender %d: %d records arrived, want %d", g, n, each)
				}
			}
			parseClose(t, p, st.frames[len(st.frames)-1])
		})
	}
}

// TestRealRuntime proves the connection works on seam.Real (goroutines and
// time.AfterFunc): greeting, a record, End, Wait, no goroutine left.
func TestRealRuntime(t *testing.T) {
	t.Parallel()
	sock := newFakeSocket()
	opts := testOptions(protocol.JSON, seam.Real{})
	opts.KeepAlive, opts.ClientTimeout = time.Hour, time.Hour
	c, sess := openConn(t, sock, opts, nil)
	rec := record(t, protocol.JSON, "hello")
	if err := c.Enqueue(rec); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	greeting := protocol.AppendHandshakeResponse(nil, "")
	sock.awaitBytes(t, len(greeting)+len(rec))
	c.End(nil)
	waitReturns(t, "Wait", c.Wait)
	st := sock.snapshot()
	recordsPerFrame(t, st.frames[:len(st.frames)-1], [][]byte{greeting, rec})
	if errs := sess.closed(); len(errs) != 1 || errs[0] != nil {
		t.Fatalf("session Closed(%v), want once with nil", errs)
	}
}

// A Close right after Open, before the writer has taken the greeting from
// the queue (a malformed record in the handshake's frame, shutdown
// beginning during connect), still writes the handshake answer first, then
// the Close: before, closing discarded the queue, greeting included, and
// the client read a Close where it expected its handshake answer.
func TestCloseBeforeGreetingWrittenKeepsGreeting(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.Name(), func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			rt.setHold(true) // the writer Open starts waits
			sock := newFakeSocket()
			c, _ := openConn(t, sock, testOptions(p, rt), nil)
			c.Close("bad record", false)
			rt.setHold(false)
			c.Wait()
			greeting := protocol.AppendHandshakeResponse(nil, "")
			closeRec := encode(t, p, &protocol.Close{Error: "bad record"})
			if got := sock.snapshot().stream(); !bytes.Equal(got, append(greeting, closeRec...)) {
				t.Fatalf("wrote %q, want the handshake answer %q then the Close %q", got, greeting, closeRec)
			}
		})
	}
}
