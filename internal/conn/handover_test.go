package conn

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/hubfabric/hubfabric/protocol"
)

// TestStatefulHandOver moves a stateful connection: the old node's Stateful gives up exactly
// the unacknowledged records and the sequence numbers, passes on (and neither writes nor
// buffers) what is written after it, and the new node's Stateful, restored from the state and
// fed the forwarded records, attaches the client's new socket with Sequence and every message
// the client has not acknowledged, once and in order; the client's side carries over too (a
// resent message is dropped, a Sequence beyond what was processed is refused, the Ack due).
func TestStatefulHandOver(t *testing.T) {
	for _, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack} {
		t.Run(p.Name(), func(t *testing.T) {
			ctx := context.Background()
			oldSock := newFakeSocket()
			a := NewStateful(p, 1<<20, oldSock)
			greeting := protocol.AppendHandshakeResponse(nil, "")
			if err := a.WriteFrame(ctx, append(append([]byte{}, greeting...), inv(t, p, 1)...)); err != nil {
				t.Fatal(err)
			}
			for i := 2; i <= 5; i++ {
				if err := a.WriteFrame(ctx, inv(t, p, i)); err != nil {
					t.Fatal(err)
				}
			}
			a.Received(&protocol.Ack{SequenceID: 2})
			for range 3 { // the client's messages 1-3
				if pass, err := a.Received(&protocol.Invocation{Target: "x"}); !pass || err != nil {
					t.Fatalf("client message: pass %v, err %v", pass, err)
				}
			}
			if ack, due := a.AckDue(); !due || ack.SequenceID != 3 {
				t.Fatalf("AckDue = %v, %v; want 3", ack, due)
			}
			var mu sync.Mutex
			var forwarded [][]byte
			state, ok := a.HandOver(func(rec []byte) { mu.Lock(); forwarded = append(forwarded, rec); mu.Unlock() })
			if !ok {
				t.Fatal("HandOver refused")
			}
			if _, again := a.HandOver(func([]byte) {}); again {
				t.Fatal("a second HandOver succeeded")
			}
			if state.FirstSeq != 3 || len(state.Records) != 3 || state.Processed != 3 || state.Acked != 3 {
				t.Fatalf("state: first %d, %d records, processed %d, acked %d; want 3, 3, 3, 3", state.FirstSeq, len(state.Records), state.Processed, state.Acked)
			}
			if oldSock.snapshot().closeNows == 0 {
				t.Fatal("HandOver did not close the old socket")
			}
			select {
			case <-a.Done():
			default:
				t.Fatal("Done is not closed after HandOver")
			}
			if !a.Moved() {
				t.Fatal("Moved is false after HandOver")
			}
			written := len(oldSock.snapshot().frames)
			for i := 6; i <= 7; i++ { // still written on the old node: forwarded
				if err := a.WriteFrame(ctx, inv(t, p, i)); err != nil {
					t.Fatal(err)
				}
			}
			if n, _ := a.Buffered(); n != 0 || len(oldSock.snapshot().frames) != written {
				t.Fatalf("after HandOver the old node buffered %d records and wrote %d frames", n, len(oldSock.snapshot().frames)-written)
			}
			if err := a.Attach(ctx, newFakeSocket()); !errors.Is(err, ErrStatefulMoved) {
				t.Fatalf("Attach after HandOver: %v", err)
			}

			b, err := RestoreStateful(p, 1<<20, state)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			for _, r := range forwarded {
				if err := b.WriteFrame(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			mu.Unlock()
			if err := b.WriteFrame(ctx, inv(t, p, 8)); err != nil { // detached: buffered
				t.Fatal(err)
			}
			// The client reconnects and resends from its message 3, which the old node processed.
			if _, err := b.Received(&protocol.Sequence{SequenceID: 5}); err == nil {
				t.Fatal("a Sequence beyond what was processed was accepted")
			}
			if _, err := b.Received(&protocol.Sequence{SequenceID: 3}); err != nil {
				t.Fatal(err)
			}
			if pass, _ := b.Received(&protocol.Invocation{Target: "x"}); pass {
				t.Fatal("the client's resent message 3 was handed on again")
			}
			if pass, _ := b.Received(&protocol.Invocation{Target: "x"}); !pass {
				t.Fatal("the client's new message 4 was dropped")
			}
			if ack, due := b.AckDue(); !due || ack.SequenceID != 4 {
				t.Fatalf("AckDue on the new node = %v, %v; want 4", ack, due)
			}
			newSock := newFakeSocket()
			if err := b.Attach(ctx, newSock); err != nil {
				t.Fatal(err)
			}
			if err := b.WriteFrame(ctx, inv(t, p, 9)); err != nil {
				t.Fatal(err)
			}
			got := summary(t, p, parseFrames(t, p, newSock.snapshot().frames))
			if want := []string{"seq3", "3", "4", "5", "6", "7", "8", "9"}; !equal(got, want) {
				t.Fatalf("the new node's socket got %v, want %v", got, want)
			}
		})
	}
}

// TestStatefulHandOverAfterClose: a closed connection has nothing to hand over.
func TestStatefulHandOverAfterClose(t *testing.T) {
	st := NewStateful(protocol.JSON, 1<<20, newFakeSocket())
	_ = st.Close()
	if _, ok := st.HandOver(func([]byte) {}); ok {
		t.Fatal("HandOver after Close succeeded")
	}
}

// TestStatefulHandOverReleasesAWaitingWrite: a write waiting for room when the connection is
// handed over is forwarded instead of waiting for an Ack that will never come here.
func TestStatefulHandOverReleasesAWaitingWrite(t *testing.T) {
	p := protocol.HubProtocol(protocol.JSON)
	ctx := context.Background()
	rec := inv(t, p, 1)
	st := NewStateful(p, len(rec)+1, newFakeSocket())
	if err := st.WriteFrame(ctx, append(protocol.AppendHandshakeResponse(nil, ""), rec...)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.WriteFrame(ctx, inv(t, p, 2)) }()
	got := make(chan []byte, 1)
	st.HandOver(func(r []byte) { got <- r })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Whether it was already waiting or came after HandOver, it is forwarded: the buffer is
	// full and nothing acknowledges.
	if r := <-got; string(r) != string(inv(t, p, 2)) {
		t.Fatalf("forwarded %q", r)
	}
}

// TestRestoreStatefulRefuses: a state that is not one is refused with the reason.
func TestRestoreStatefulRefuses(t *testing.T) {
	p := protocol.HubProtocol(protocol.JSON)
	rec := inv(t, p, 1)
	ping, _ := p.AppendMessage(nil, &protocol.Ping{})
	for name, st := range map[string]StatefulState{
		"first id 0":          {FirstSeq: 0},
		"overflow":            {FirstSeq: math.MaxInt64, Records: [][]byte{rec}},
		"negative processed":  {FirstSeq: 1, Processed: -1},
		"ack beyond":          {FirstSeq: 1, Processed: 2, Acked: 3},
		"two records in one":  {FirstSeq: 1, Records: [][]byte{append(append([]byte{}, rec...), rec...)}},
		"a partial record":    {FirstSeq: 1, Records: [][]byte{rec[:len(rec)-1]}},
		"not trackable":       {FirstSeq: 1, Records: [][]byte{ping}},
		"empty record":        {FirstSeq: 1, Records: [][]byte{{}}},
		"msgpack in json":     {FirstSeq: 1, Records: [][]byte{inv(t, protocol.MessagePack, 1)}},
		"max processed":       {FirstSeq: 1, Processed: math.MaxInt64},
		"negative acked":      {FirstSeq: 1, Acked: -1},
		"first id -5 records": {FirstSeq: -5, Records: [][]byte{rec}},
	} {
		if _, err := RestoreStateful(p, 1<<20, st); err == nil {
			t.Errorf("%s: restored", name)
		}
	}
}

// FuzzRestoreStateful restores a state from arbitrary records and numbers: it never panics,
// and a state it accepts replays on Attach exactly its records after Sequence FirstSeq.
func FuzzRestoreStateful(f *testing.F) {
	f.Add(true, []byte("{\"type\":1,\"target\":\"m\",\"arguments\":[1]}\x1e"), []byte("{\"type\":3,\"invocationId\":\"1\"}\x1e"), int64(1), int64(0), int64(0))
	f.Add(false, []byte{0x05, 0x95, 0x01, 0x80, 0xc0, 0xa1, 0x6d}, []byte{0x02, 0x91, 0x06}, int64(7), int64(3), int64(2))
	f.Fuzz(func(t *testing.T, json bool, a, b []byte, first, processed, acked int64) {
		p := protocol.HubProtocol(protocol.MessagePack)
		if json {
			p = protocol.JSON
		}
		st, err := RestoreStateful(p, 1<<20, StatefulState{Records: [][]byte{a, b}, FirstSeq: first, Processed: processed, Acked: acked})
		if err != nil {
			return
		}
		sock := newFakeSocket()
		if err := st.Attach(context.Background(), sock); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for _, fr := range sock.snapshot().frames {
			got = append(got, fr...)
		}
		want, err := p.AppendMessage(nil, &protocol.Sequence{SequenceID: first})
		if err != nil {
			t.Fatal(err)
		}
		want = append(append(want, a...), b...)
		if string(got) != string(want) {
			t.Fatalf("attach wrote %q, want %q", got, want)
		}
	})
}
