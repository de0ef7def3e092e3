package conn

import (
	"bytes"
	"testing"

	"github.com/hubfabric/hubfabric/internal/metrics"
	"github.com/hubfabric/hubfabric/protocol"
)

// TestDeferredRecordsGoOutTogetherOnFlush: over a TrySocket, records
// queued with EnqueueDeferred are not written until Flush, and then go out
// as one frame, in order; only the first EnqueueDeferred of a batch asks
// for the Flush. The queued gauges count them while they wait and fall
// back to zero once written. An Enqueue meanwhile writes them too, in
// order, and the Flush then has nothing left.
func TestDeferredRecordsGoOutTogetherOnFlush(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	c, sock, greeting := openTryConn(t, rt)
	stats := &metrics.Conn{}
	c.out.stats = stats // counted from here on

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
	if got := sock.wireStream(); !bytes.Equal(got, greeting) {
		t.Fatalf("written before Flush: %q, want only the greeting", got)
	}
	if b, r := stats.QueuedBytes.Load(), stats.QueuedRecords.Load(); b != 60 || r != 3 {
		t.Fatalf("queued gauges = %d bytes, %d records; want 60, 3", b, r)
	}
	c.Flush()
	awaitIdle(t, rt, c)
	if got := sock.lastCall(); got.kind != "try" || !bytes.Equal(got.frame, bytes.Join(recs, nil)) {
		t.Fatalf("Flush wrote %s %q, want the three records as one inline frame", got.kind, got.frame)
	}
	if b, r := stats.QueuedBytes.Load(), stats.QueuedRecords.Load(); b != 0 || r != 0 {
		t.Fatalf("queued gauges after the write = %d bytes, %d records; want 0, 0", b, r)
	}

	if flush, err := c.EnqueueDeferred(raw('d', 5)); err != nil || !flush {
		t.Fatalf("EnqueueDeferred after a flush = %v, %v; want a flush asked for", flush, err)
	}
	if err := c.Enqueue(raw('e', 5)); err != nil {
		t.Fatal(err)
	}
	awaitIdle(t, rt, c)
	c.Flush()
	awaitIdle(t, rt, c)
	want := append(append(append([]byte(nil), greeting...), bytes.Join(recs, nil)...), append(raw('d', 5), raw('e', 5)...)...)
	if got := sock.wireStream(); !bytes.Equal(got, want) {
		t.Fatalf("the client got %q, want %q", got, want)
	}
}

// TestDeferredIsImmediateWithoutTrySocket: a connection whose socket is
// not a TrySocket (a stateful one) does not defer: EnqueueDeferred writes
// as Enqueue does and asks for no Flush.
func TestDeferredIsImmediateWithoutTrySocket(t *testing.T) {
	t.Parallel()
	rt := newFakeRuntime(t)
	sock := newFakeSocket()
	c, _ := openConn(t, sock, testOptions(protocol.JSON, rt), nil)
	sock.awaitFrames(t, 1) // the greeting
	if flush, err := c.EnqueueDeferred(raw('a', 10)); err != nil || flush {
		t.Fatalf("EnqueueDeferred = %v, %v; want it written at once, no flush asked", flush, err)
	}
	sock.awaitFrames(t, 2)
	if got := sock.snapshot().frames[1]; !bytes.Equal(got, raw('a', 10)) {
		t.Fatalf("second frame %q, want the record", got)
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
