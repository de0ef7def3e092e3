package conn

import (
	"bytes"
	"testing"
)

func TestTakeCoalescesWholeRecords(t *testing.T) {
	t.Parallel()
	o := &outbound{}
	var want []byte
	for i := 0; i < 5; i++ {
		rec := bytes.Repeat([]byte{byte('a' + i)}, 10)
		rec = append(rec, 0x1e)
		o.queue = append(o.queue, rec)
		o.queued += len(rec)
		want = append(want, rec...)
	}
	frame, records, queued := o.takeLocked()
	if records != 5 || queued != 55 {
		t.Fatalf("took %d records of %d queued bytes, want 5 of 55", records, queued)
	}
	if !bytes.Equal(frame, want) {
		t.Fatalf("frame = %q, want every queued record in order", frame)
	}
	if o.queued != 0 || len(o.queue) != 0 {
		t.Fatalf("queue not drained: %d bytes, %d records", o.queued, len(o.queue))
	}
}

func TestTakeNeverSplitsAndBoundsFrames(t *testing.T) {
	t.Parallel()
	o := &outbound{}
	big := bytes.Repeat([]byte("x"), maxCoalescedFrame/2+1)
	for i := 0; i < 3; i++ {
		o.queue = append(o.queue, big)
		o.queued += len(big)
	}
	for i := 0; i < 3; i++ {
		frame, _, _ := o.takeLocked()
		if len(frame) != len(big) {
			t.Fatalf("frame %d has %d bytes; two records of %d would exceed the %d-byte bound, so each goes alone", i, len(frame), len(big), maxCoalescedFrame)
		}
	}
	if o.queued != 0 {
		t.Fatalf("%d bytes left", o.queued)
	}
}
