package conn

import (
	"bytes"
	"testing"

	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestDeferredRecordsGoOutTogetherOnFlush: records queued with
// EnqueueDeferred are not written until Flush, and then go out as one
// frame, in order; only the first EnqueueDeferred of a batch asks for the
// Flush. The queued gauges count them while they wait and fall back to
// zero once written.
func TestDeferredRecordsGoOutTogetherOnFlush(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	sock := newFakeSocket()
	opts := testOptions(protocol.JSON, rt)
	stats := &metrics.Conn{}
	opts.Stats = stats
	c, _ := openConn(t, sock, opts, nil)
	sock.awaitFrames(t, 1) // the greeting
	awaitIdle(t, rt, c)

	recs := [][]byte{raw('a', 10), raw('b', 20), raw('c', 30)}
	for i, rec := range recs {
		flush, err := c.EnqueueDeferred(rec)
		if err != nil {
			t.Fatalf("EnqueueDeferred %d: %v", i, err)
		}
		if flush != (i == 0) {
			t.Fatalf("EnqueueDeferred %d asked for a flush: %v, want only the first to", i, flush)
		}
	}
	if st := sock.snapshot(); len(st.frames) != 1 || len(st.attempts) != 1 {
		t.Fatalf("%d frames written before Flush, want only the greeting", len(st.frames))
	}
	if b, r := stats.QueuedBytes.Load(), stats.QueuedRecords.Load(); b != 60 || r != 3 {
		t.Fatalf("queued gauges = %d bytes, %d records; want 60, 3", b, r)
	}
	c.Flush()
	sock.awaitFrames(t, 2)
	awaitIdle(t, rt, c)
	st := sock.snapshot()
	if want := bytes.Join(recs, nil); len(st.frames) != 2 || !bytes.Equal(st.frames[1], want) {
		t.Fatalf("frames after Flush = %q, want the greeting then %q as one frame", st.frames, want)
	}
	if b, r := stats.QueuedBytes.Load(), stats.QueuedRecords.Load(); b != 0 || r != 0 {
		t.Fatalf("queued gauges after the write = %d bytes, %d records; want 0, 0", b, r)
	}

	// A later batch asks for a Flush again.
	if flush, err := c.EnqueueDeferred(raw('d', 5)); err != nil || !flush {
		t.Fatalf("EnqueueDeferred after a flush = %v, %v; want a flush asked for", flush, err)
	}
	// An Enqueue meanwhile writes the deferred record too, in order; the
	// Flush then has nothing left.
	if err := c.Enqueue(raw('e', 5)); err != nil {
		t.Fatal(err)
	}
	sock.awaitBytes(t, len(st.stream())+10)
	awaitIdle(t, rt, c)
	c.Flush()
	awaitIdle(t, rt, c)
	if got := sock.snapshot().stream(); !bytes.HasSuffix(got, append(raw('d', 5), raw('e', 5)...)) || len(got) != len(st.stream())+10 {
		t.Fatalf("stream ends %q, want the deferred record then the enqueued one, once", got[max(0, len(got)-20):])
	}
}

// TestQueuedGaugesDropWithTheQueue: records discarded by a Close (the
// socket blocked, the queue dropped) leave the gauges, so they return to
// zero once the connection ends.
func TestQueuedGaugesDropWithTheQueue(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	sock := newFakeSocket()
	sock.block()
	opts := testOptions(protocol.JSON, rt)
	stats := &metrics.Conn{}
	opts.Stats = stats
	c, _ := openConn(t, sock, opts, nil)
	sock.awaitWaiting(t, 1) // the greeting's write hangs
	for i := 0; i < 4; i++ {
		if err := c.Enqueue(raw('x', 100)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.EnqueueDeferred(raw('y', 50)); err != nil {
		t.Fatal(err)
	}
	if b, r := stats.QueuedBytes.Load(), stats.QueuedRecords.Load(); b != 450 || r != 5 {
		t.Fatalf("queued gauges = %d bytes, %d records; want 450, 5", b, r)
	}
	c.Close("bye", false)
	if b, r := stats.QueuedBytes.Load(), stats.QueuedRecords.Load(); b != 0 || r != 0 {
		t.Fatalf("queued gauges after Close = %d bytes, %d records; want 0, 0 (the queue was dropped)", b, r)
	}
}
