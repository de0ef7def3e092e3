package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
)

// trySocket is a fakeSocket that is also a TrySocket. TryWriteFrame takes
// a frame whole, or keeps it (a spill: complete is false) when told to, or
// fails; Flush delivers what was kept, and so does a WriteFrame before its
// own frame, as the TrySocket contract says. Every call is logged in
// order, and wire is what reached the client, in order. Its state is
// guarded by the fakeSocket's mu, so await sees it.
type trySocket struct {
	*fakeSocket

	calls    []sockCall
	tries    []string // the goroutine of each TryWriteFrame call
	wire     [][]byte // what the client got, in order
	kept     []byte   // spilled, waiting for Flush or WriteFrame
	spills   int      // how many coming TryWriteFrame calls keep their frame
	tryErr   error    // non-nil: TryWriteFrame fails with it
	flushErr error    // non-nil: Flush fails with it
	during   func()   // run inside the next TryWriteFrame, before it returns
}

// sockCall is one call the connection made to a trySocket.
type sockCall struct {
	kind  string // try, flush, write or close
	frame []byte
}

var _ TrySocket = (*trySocket)(nil)

func newTrySocket() *trySocket { return &trySocket{fakeSocket: newFakeSocket()} }

// TryWriteFrame implements TrySocket.
func (s *trySocket) TryWriteFrame(frame []byte) (bool, error) {
	cp := bytes.Clone(frame) // the connection reuses its coalescing buffer
	s.mu.Lock()
	s.calls = append(s.calls, sockCall{"try", cp})
	s.tries = append(s.tries, goroutineID())
	during := s.during
	s.during = nil
	s.notifyLocked()
	s.mu.Unlock()
	if during != nil {
		during()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notifyLocked()
	switch {
	case s.tryErr != nil:
		return false, s.tryErr
	case s.spills > 0 || len(s.kept) > 0: // behind a spill, a frame waits too
		if s.spills > 0 {
			s.spills--
		}
		s.kept = append(s.kept, cp...)
		return false, nil
	}
	s.wire = append(s.wire, cp)
	return true, nil
}

// Flush implements TrySocket.
func (s *trySocket) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notifyLocked()
	s.calls = append(s.calls, sockCall{"flush", nil})
	if s.flushErr != nil {
		return s.flushErr
	}
	if len(s.kept) > 0 {
		s.wire = append(s.wire, s.kept)
		s.kept = nil
	}
	return nil
}

// WriteFrame implements Socket: what was kept goes first.
func (s *trySocket) WriteFrame(ctx context.Context, frame []byte) error {
	cp := bytes.Clone(frame)
	s.mu.Lock()
	s.calls = append(s.calls, sockCall{"write", cp})
	s.mu.Unlock()
	if err := s.fakeSocket.WriteFrame(ctx, frame); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notifyLocked()
	if len(s.kept) > 0 {
		s.wire = append(s.wire, s.kept)
		s.kept = nil
	}
	s.wire = append(s.wire, cp)
	return nil
}

// Close implements Socket.
func (s *trySocket) Close() error {
	s.mu.Lock()
	s.calls = append(s.calls, sockCall{"close", nil})
	s.mu.Unlock()
	return s.fakeSocket.Close()
}

// spillNext makes the next n TryWriteFrame calls keep their frame.
func (s *trySocket) spillNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spills = n
}

// duringNextTry runs fn inside the next TryWriteFrame, while the
// connection's inline write is in progress.
func (s *trySocket) duringNextTry(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.during = fn
}

// failTries makes later TryWriteFrame calls fail with err.
func (s *trySocket) failTries(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tryErr = err
}

// failFlushes makes later Flush calls fail with err.
func (s *trySocket) failFlushes(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushErr = err
}

// kinds lists the calls made so far, as "write try flush ...".
func (s *trySocket) kinds() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := make([]string, len(s.calls))
	for i, c := range s.calls {
		k[i] = c.kind
	}
	return strings.Join(k, " ")
}

// lastCall is the last call made.
func (s *trySocket) lastCall() sockCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[len(s.calls)-1]
}

// wireStream is what the client got, concatenated.
func (s *trySocket) wireStream() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Join(s.wire, nil)
}

// awaitWire waits until the client got n bytes.
func (s *trySocket) awaitWire(t *testing.T, n int) {
	t.Helper()
	s.await(t, fmt.Sprintf("%d bytes on the wire", n), func() bool { return len(bytes.Join(s.wire, nil)) >= n })
}

// goroutineID is the calling goroutine's number, from its stack header
// ("goroutine 18 [running]:").
func goroutineID() string {
	var buf [64]byte
	f := bytes.Fields(buf[:runtime.Stack(buf[:], false)])
	return string(f[1])
}

// heldGo is how many functions the runtime's Go holds.
func heldGo(rt *fakeRuntime) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.held)
}

// openTryConn opens a JSON connection over a trySocket on rt and waits
// until its greeting is written (by the writer goroutine, which Release
// starts) and the writer ended.
func openTryConn(t *testing.T, rt *fakeRuntime) (*Conn, *trySocket, []byte) {
	t.Helper()
	sock := newTrySocket()
	c, err := Open(context.Background(), sock, testOptions(protocol.JSON, rt), func(context.Context, *Conn) (Session, error) {
		return &fakeSession{}, nil
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	// As cleanupConn, but a connection that never ends fails the test
	// instead of hanging it.
	t.Cleanup(func() {
		c.Close("", false)
		rt.setHold(false)
		select {
		case <-c.Done():
			waitReturns(t, "Wait", c.Wait)
		case <-time.After(waitGuard):
			t.Error("the connection did not end: Done still open after Close")
		}
	})
	greeting := protocol.AppendHandshakeResponse(nil, "")
	sock.awaitWire(t, len(greeting))
	awaitIdle(t, rt, c)
	if got := sock.kinds(); got != "write" {
		t.Fatalf("opening made the calls %q, want the greeting's write", got)
	}
	return c, sock, greeting
}

// A record that finds the queue empty is written by Enqueue itself, on the
// caller's goroutine, with TryWriteFrame: no writer goroutine is started
// (the runtime holds every Go call, and none came), nothing waits for the
// client (WriteFrame is not called) and the outbound is idle again when
// Enqueue returns.
func TestEnqueueWritesInlineOnTheCallersGoroutine(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	c, sock, greeting := openTryConn(t, rt)
	rt.setHold(true)
	want := [][]byte{greeting}
	for i := range 3 {
		rec := raw(byte('a'+i), 10+i)
		want = append(want, rec)
		if err := c.Enqueue(rec); err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
		if n := heldGo(rt); n != 0 {
			t.Fatalf("Enqueue %d into an empty queue started %d goroutines, want the write inline", i, n)
		}
		if got, want := sock.kinds(), "write"+strings.Repeat(" try", i+1); got != want {
			t.Fatalf("after Enqueue %d the socket saw %q, want %q (one TryWriteFrame per record)", i, got, want)
		}
		if call := sock.lastCall(); !bytes.Equal(call.frame, rec) {
			t.Fatalf("TryWriteFrame(%q), want the record %q alone", call.frame, rec)
		}
		if !outboundIdle(c) {
			t.Fatalf("after the inline write of record %d the outbound is still writing or queued", i)
		}
	}
	sock.mu.Lock()
	tries := append([]string(nil), sock.tries...)
	sock.mu.Unlock()
	for i, g := range tries {
		if g != goroutineID() {
			t.Fatalf("TryWriteFrame %d ran on goroutine %s, want Enqueue's caller (%s)", i, g, goroutineID())
		}
	}
	if got := sock.wireStream(); !bytes.Equal(got, bytes.Join(want, nil)) {
		t.Fatalf("the client got %q, want %q", got, bytes.Join(want, nil))
	}
}

// When the socket does not take an inline write whole (a spill), the
// writer goroutine starts and calls Flush before anything else; records
// queued meanwhile, during the inline write or after it, go out after the
// spilled one in one WriteFrame, in order. With nothing queued the Flush
// alone delivers the spill. An inline write taken whole with records
// queued meanwhile starts the writer without a Flush.
func TestSpillIsFlushedBeforeTheNextFrame(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		spill  bool
		during int // records enqueued during the inline write
		after  int // records enqueued after it, before the writer runs
		calls  string
	}{
		{"spill, records queued after", true, 0, 3, "write try flush write"},
		{"spill, records queued during", true, 3, 0, "write try flush write"},
		{"spill, records queued during and after", true, 2, 2, "write try flush write"},
		{"spill, nothing queued", true, 0, 0, "write try flush"},
		{"whole, records queued during", false, 3, 0, "write try write"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			c, sock, greeting := openTryConn(t, rt)
			rt.setHold(true)
			first := raw('f', 20)
			var later [][]byte
			for i := range tt.during + tt.after {
				later = append(later, raw(byte('a'+i), 10+i))
			}
			enqueue := func(recs [][]byte) {
				for _, rec := range recs {
					if err := c.Enqueue(rec); err != nil {
						t.Errorf("Enqueue: %v", err)
					}
				}
			}
			sock.duringNextTry(func() { enqueue(later[:tt.during]) })
			if tt.spill {
				sock.spillNext(1)
			}
			if err := c.Enqueue(first); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			enqueue(later[tt.during:])
			if got := sock.kinds(); got != "write try" {
				t.Fatalf("before the writer ran the socket saw %q, want only the inline write", got)
			}
			if n := heldGo(rt); n != 1 {
				t.Fatalf("%d goroutines started, want the writer once", n)
			}
			rt.setHold(false)
			awaitIdle(t, rt, c)
			if got := sock.kinds(); got != tt.calls {
				t.Fatalf("the socket saw %q, want %q", got, tt.calls)
			}
			if len(later) > 0 {
				if call := sock.lastCall(); !bytes.Equal(call.frame, bytes.Join(later, nil)) {
					t.Fatalf("the writer wrote %q, want the %d records queued meanwhile in one frame, in order", call.frame, len(later))
				}
			}
			want := append(append(bytes.Clone(greeting), first...), bytes.Join(later, nil)...)
			if got := sock.wireStream(); !bytes.Equal(got, want) {
				t.Fatalf("the client got %q, want %q", got, want)
			}
			// The connection writes inline again once the writer is done.
			rt.setHold(true)
			next := raw('n', 5)
			if err := c.Enqueue(next); err != nil {
				t.Fatal(err)
			}
			if n := heldGo(rt); n != 0 || !bytes.Equal(sock.lastCall().frame, next) || sock.lastCall().kind != "try" {
				t.Fatalf("after the writer ended, Enqueue started %d goroutines and made the call %+v; want an inline write", n, sock.lastCall())
			}
			// The spill was flushed once: the writer that a Close starts
			// later does not flush again.
			rt.setHold(false)
			c.Close("", false)
			awaitDone(t, c)
			if got, want := sock.kinds(), tt.calls+" try write close"; got != want {
				t.Fatalf("after a Close the socket saw %q, want %q", got, want)
			}
		})
	}
}

// A failing TryWriteFrame, or a failing Flush of a spill, ends the
// connection as a failing WriteFrame does: the socket is closed (Done),
// nothing more is written (no Close record on a broken socket) and later
// Enqueues fail with ErrConnectionClosed.
func TestFailedTryWriteEndsTheConnection(t *testing.T) {
	t.Parallel()
	broken := errors.New("write: broken pipe")
	for _, tt := range []struct {
		name  string
		fail  func(*trySocket)
		calls string
	}{
		{"TryWriteFrame fails", func(s *trySocket) { s.failTries(broken) }, "write try close"},
		{"Flush fails", func(s *trySocket) { s.spillNext(1); s.failFlushes(broken) }, "write try flush close"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			c, sock, greeting := openTryConn(t, rt)
			tt.fail(sock)
			if err := c.Enqueue(raw('x', 10)); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			awaitDone(t, c)
			if err := c.Enqueue(raw('y', 10)); !errors.Is(err, ErrConnectionClosed) {
				t.Fatalf("Enqueue after a failed write = %v, want ErrConnectionClosed", err)
			}
			c.Close("too late", true)
			c.End(broken)
			waitReturns(t, "Wait", c.Wait)
			if got := sock.kinds(); got != tt.calls {
				t.Fatalf("the socket saw %q, want %q", got, tt.calls)
			}
			if got := sock.wireStream(); !bytes.Equal(got, greeting) {
				t.Fatalf("the client got %q, want only the greeting", got)
			}
			if st := sock.snapshot(); st.closes != 1 || st.closeNows != 0 {
				t.Fatalf("Close %d, CloseNow %d; want 1, 0", st.closes, st.closeNows)
			}
			if got := rt.pending(); len(got) != 0 {
				t.Fatalf("timers armed at %v after the connection ended", got)
			}
		})
	}
}

// A Close while an inline write is in progress (spilled or not), or after
// it (before the writer flushed a spill, or once idle), still writes its
// Close record, last: after the inline record (flushed first when it was
// spilled), then closes the socket. Records queued behind the inline
// write before the Close are dropped, and no close-grace timer is left to
// cut the socket.
func TestCloseAfterInlineWriteWritesCloseLast(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		spill  bool
		during bool // Close inside TryWriteFrame; else after Enqueue returned
		queue  bool // a record is queued behind the inline write before the Close
		calls  string
	}{
		{"during a whole write", false, true, true, "write try write close"},
		{"during a spilled write", true, true, true, "write try flush write close"},
		{"after a spilled write", true, false, true, "write try flush write close"},
		{"after a whole write", false, false, false, "write try write close"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			c, sock, greeting := openTryConn(t, rt)
			rt.setHold(true) // the writer that flushes or closes waits
			closeAndQueue := func() {
				if tt.queue {
					if err := c.Enqueue(raw('d', 10)); err != nil { // dropped by the Close
						t.Errorf("Enqueue: %v", err)
					}
				}
				c.Close("bye", true)
				if err := c.Enqueue(raw('l', 10)); !errors.Is(err, ErrConnectionClosed) {
					t.Errorf("Enqueue after Close = %v, want ErrConnectionClosed", err)
				}
			}
			if tt.during {
				sock.duringNextTry(closeAndQueue)
			}
			if tt.spill {
				sock.spillNext(1)
			}
			rec := raw('r', 20)
			if err := c.Enqueue(rec); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if !tt.during {
				closeAndQueue()
			}
			rt.setHold(false)
			awaitDone(t, c)
			waitReturns(t, "Wait", c.Wait)
			if got := sock.kinds(); got != tt.calls {
				t.Fatalf("the socket saw %q, want %q", got, tt.calls)
			}
			closeRec := encode(t, protocol.JSON, &protocol.Close{Error: "bye", AllowReconnect: true})
			want := bytes.Join([][]byte{greeting, rec, closeRec}, nil)
			if got := sock.wireStream(); !bytes.Equal(got, want) {
				t.Fatalf("the client got %q, want the greeting, the record, then the Close %q", got, want)
			}
			rt.advance(2 * closeGrace)
			if st := sock.snapshot(); st.closes != 1 || st.closeNows != 0 {
				t.Fatalf("Close %d, CloseNow %d; want 1, 0", st.closes, st.closeNows)
			}
		})
	}
}
