package conn

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
)

// inv is a framed Invocation of p with argument n.
func inv(t testing.TB, p protocol.HubProtocol, n int) []byte {
	t.Helper()
	b, err := p.AppendMessage(nil, &protocol.Invocation{Target: "m", Arguments: []any{n}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseAll parses the written stream (without the handshake answer) into messages.
func parseFrames(t *testing.T, p protocol.HubProtocol, frames [][]byte) []protocol.Message {
	t.Helper()
	var out []protocol.Message
	for _, f := range frames {
		msgs, n, err := p.ParseMessages(f, 1<<20)
		if err != nil || n != len(f) {
			t.Fatalf("frame %q: %d of %d bytes parsed, %v", f, n, len(f), err)
		}
		out = append(out, msgs...)
	}
	return out
}

// args returns the first argument of each Invocation and -seq for each Sequence, as strings.
func summary(t *testing.T, p protocol.HubProtocol, msgs []protocol.Message) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		switch m := m.(type) {
		case *protocol.Invocation:
			var n int
			if err := p.Unmarshal(m.Arguments[0].(protocol.RawValue), &n); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(n))
		case *protocol.Sequence:
			out = append(out, fmt.Sprintf("seq%d", m.SequenceID))
		case *protocol.Ping:
			out = append(out, "ping")
		default:
			out = append(out, fmt.Sprintf("%T", m))
		}
	}
	return out
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestStatefulResendsWhatWasNotAcked writes records (some while no socket is attached),
// acknowledges part of them and attaches a new socket: it gets Sequence with the first
// unacknowledged id, then exactly the unacknowledged records in order; Pings are neither
// numbered nor resent; the handshake answer is not a record.
func TestStatefulResendsWhatWasNotAcked(t *testing.T) {
	for _, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		t.Run(p.Name(), func(t *testing.T) {
			ctx := context.Background()
			first := newFakeSocket()
			st := NewStateful(p, 1<<20, first)
			ping, _ := p.AppendMessage(nil, &protocol.Ping{})
			greeting := protocol.AppendHandshakeResponse(nil, "")
			// The handshake answer with record 1 in one frame, as the outbound writes it.
			if err := st.WriteFrame(ctx, append(append([]byte{}, greeting...), inv(t, p, 1)...)); err != nil {
				t.Fatal(err)
			}
			// Records 2 and 3 coalesced with a Ping between them.
			frame := append(append(append([]byte{}, inv(t, p, 2)...), ping...), inv(t, p, 3)...)
			if err := st.WriteFrame(ctx, frame); err != nil {
				t.Fatal(err)
			}
			if n, _ := st.Buffered(); n != 3 {
				t.Fatalf("%d records buffered, want 3", n)
			}
			st.Received(&protocol.Ack{SequenceID: 1})
			st.Detach(first)
			for i := 4; i <= 5; i++ {
				if err := st.WriteFrame(ctx, inv(t, p, i)); err != nil {
					t.Fatal(err)
				}
			}
			if got := len(first.snapshot().frames); got != 2 {
				t.Fatalf("the detached socket got %d frames, want the 2 before Detach", got)
			}
			second := newFakeSocket()
			if err := st.Attach(ctx, second); err != nil {
				t.Fatal(err)
			}
			if err := st.WriteFrame(ctx, inv(t, p, 6)); err != nil {
				t.Fatal(err)
			}
			got := summary(t, p, parseFrames(t, p, second.snapshot().frames))
			if want := []string{"seq2", "2", "3", "4", "5", "6"}; !equal(got, want) {
				t.Fatalf("the new socket got %v, want %v", got, want)
			}
			// Nothing buffered: Sequence names the next id.
			st.Received(&protocol.Ack{SequenceID: 6})
			third := newFakeSocket()
			if err := st.Attach(ctx, third); err != nil {
				t.Fatal(err)
			}
			if got := summary(t, p, parseFrames(t, p, third.snapshot().frames)); !equal(got, []string{"seq7"}) {
				t.Fatalf("attach with nothing buffered wrote %v, want [seq7]", got)
			}
			// Attaching over an attached socket closes that one.
			if err := st.Attach(ctx, newFakeSocket()); err != nil {
				t.Fatal(err)
			}
			if third.snapshot().closeNows == 0 {
				t.Fatal("Attach did not close the socket it replaced")
			}
			_ = st.Close()
			if err := st.WriteFrame(ctx, inv(t, p, 7)); !errors.Is(err, ErrStatefulClosed) {
				t.Fatalf("write after Close: %v", err)
			}
			if err := st.Attach(ctx, newFakeSocket()); !errors.Is(err, ErrStatefulClosed) {
				t.Fatalf("attach after Close: %v", err)
			}
		})
	}
}

// TestStatefulFailedWriteDetaches: a write that fails keeps its records for the next socket
// and is not an error for the connection.
func TestStatefulFailedWriteDetaches(t *testing.T) {
	p := protocol.JSON
	ctx := context.Background()
	sock := newFakeSocket()
	st := NewStateful(p, 1<<20, sock)
	_ = st.WriteFrame(ctx, protocol.AppendHandshakeResponse(nil, ""))
	sock.failWrites(errors.New("broken pipe"))
	if err := st.WriteFrame(ctx, inv(t, p, 1)); err != nil {
		t.Fatalf("failed write returned %v, want nil (kept for the next socket)", err)
	}
	if sock.snapshot().closeNows == 0 {
		t.Fatal("the broken socket was not closed")
	}
	next := newFakeSocket()
	if err := st.Attach(ctx, next); err != nil {
		t.Fatal(err)
	}
	if got := summary(t, p, parseFrames(t, p, next.snapshot().frames)); !equal(got, []string{"seq1", "1"}) {
		t.Fatalf("got %v", got)
	}
}

// TestStatefulBufferBound: once unacknowledged records reach the bound, a write waits until
// an Ack makes room; Close ends the wait. The buffer never holds more than the bound (plus one
// record when it was empty).
func TestStatefulBufferBound(t *testing.T) {
	p := protocol.JSON
	ctx := context.Background()
	rec := inv(t, p, 1)
	st := NewStateful(p, 3*len(rec), newFakeSocket())
	_ = st.WriteFrame(ctx, protocol.AppendHandshakeResponse(nil, ""))
	for i := 1; i <= 3; i++ {
		if err := st.WriteFrame(ctx, inv(t, p, i)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- st.WriteFrame(ctx, inv(t, p, 4)) }()
	select {
	case err := <-done:
		t.Fatalf("write past the bound returned (%v) without an Ack", err)
	case <-time.After(50 * time.Millisecond): // proving a wait: a bounded look, not a sleep-to-sync
	}
	if _, b := st.Buffered(); b > 3*len(rec) {
		t.Fatalf("%d bytes buffered, bound %d", b, 3*len(rec))
	}
	st.Received(&protocol.Ack{SequenceID: 1})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Buffered(); n != 3 {
		t.Fatalf("%d records buffered after the Ack and the write, want 3", n)
	}
	go func() { done <- st.WriteFrame(ctx, inv(t, p, 5)) }()
	_ = st.CloseNow()
	if err := <-done; !errors.Is(err, ErrStatefulClosed) {
		t.Fatalf("write waiting at Close: %v", err)
	}
	// With a context that ends.
	st2 := NewStateful(p, len(rec), newFakeSocket())
	_ = st2.WriteFrame(ctx, append(protocol.AppendHandshakeResponse(nil, ""), rec...))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := st2.WriteFrame(cctx, rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with an ended ctx: %v", err)
	}
}

// TestStatefulReceived numbers the client's trackable messages, drops what it resends after a
// Sequence, and refuses a Sequence beyond what was received.
func TestStatefulReceived(t *testing.T) {
	st := NewStateful(protocol.JSON, 1000, newFakeSocket())
	m := &protocol.Invocation{Target: "x"}
	pass := func(msg protocol.Message) bool {
		t.Helper()
		ok, err := st.Received(msg)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for i := 0; i < 3; i++ {
		if !pass(m) {
			t.Fatalf("message %d dropped", i+1)
		}
	}
	if !pass(&protocol.Ping{}) || pass(&protocol.Ack{SequenceID: 0}) {
		t.Fatal("Ping must pass, Ack must not")
	}
	if ack, due := st.AckDue(); !due || ack.SequenceID != 3 {
		t.Fatalf("AckDue = %v, %v; want 3", ack, due)
	}
	if _, due := st.AckDue(); due {
		t.Fatal("AckDue twice for the same messages")
	}
	// The client reconnects and resends from 2: 2 and 3 are duplicates, 4 is new.
	if pass(&protocol.Sequence{SequenceID: 2}) {
		t.Fatal("a Sequence passed")
	}
	if pass(m) || pass(&protocol.Completion{InvocationID: "1"}) {
		t.Fatal("a resent message passed")
	}
	if !pass(m) {
		t.Fatal("message 4 dropped")
	}
	if _, err := st.Received(&protocol.Sequence{SequenceID: 9}); err == nil {
		t.Fatal("a Sequence beyond what was received was accepted")
	}
}

// FuzzStatefulFrames writes arbitrary frames (records from other nodes are forwarded as they
// came) through a Stateful: it never panics, never buffers more bytes than it was given, and
// resends on Attach exactly what it buffered.
func FuzzStatefulFrames(f *testing.F) {
	f.Add(true, []byte("{\"type\":1,\"target\":\"m\",\"arguments\":[1]}\x1e{\"type\":6}\x1e"), []byte("{}\x1e"))
	f.Add(false, []byte{0x05, 0x95, 0x01, 0x80, 0xc0, 0xa1}, []byte{0x02, 0x91, 0x06, 0x80})
	f.Add(true, []byte("{\"target\":\"m\",\"type\":3}\x1e{\"type\""), []byte{0x1e})
	f.Fuzz(func(t *testing.T, json bool, a, b []byte) {
		p := protocol.HubProtocol(protocol.MessagePack)
		if json {
			p = protocol.JSON
		}
		ctx := context.Background()
		st := NewStateful(p, 1<<20, newFakeSocket())
		for _, fr := range [][]byte{a, b} {
			if err := st.WriteFrame(ctx, fr); err != nil {
				t.Fatal(err)
			}
		}
		n, bytes := st.Buffered()
		if bytes > len(a)+len(b) || n > len(a)+len(b) {
			t.Fatalf("%d records, %d bytes buffered from %d bytes", n, bytes, len(a)+len(b))
		}
		next := newFakeSocket()
		if err := st.Attach(ctx, next); err != nil {
			t.Fatal(err)
		}
		var written int
		for _, fr := range next.snapshot().frames {
			written += len(fr)
		}
		seq, _ := p.AppendMessage(nil, &protocol.Sequence{SequenceID: 1})
		if written < bytes || written > bytes+len(seq)+16 {
			t.Fatalf("attach wrote %d bytes for %d buffered", written, bytes)
		}
	})
}
