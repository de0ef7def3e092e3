package main

// seqOutcome classifies one received sequence number.
type seqOutcome int

const (
	seqNew     seqOutcome = iota // first arrival, in order or after a gap
	seqReorder                   // first arrival of a number skipped earlier
	seqDup                       // seen before
)

// maxMissing bounds the numbers one tracker remembers as skipped. Beyond
// it, a late arrival of an unremembered number is classed as a duplicate;
// loss is computed from counts, not from this set, so it stays exact.
const maxMissing = 1 << 16

// seqTracker checks the sequence numbers of one publisher as seen by one
// receiver. Numbers start at 1. It is not safe for concurrent use (each
// receiver owns its trackers).
type seqTracker struct {
	next    uint64              // highest number seen + 1 (1 when none)
	missing map[uint64]struct{} // numbers below next not seen yet
}

// observe records seq and says whether it was new, a late (reordered)
// first arrival, or a duplicate.
func (t *seqTracker) observe(seq uint64) seqOutcome {
	if t.next == 0 {
		t.next = 1
	}
	switch {
	case seq == t.next:
		t.next++
		return seqNew
	case seq > t.next:
		for s := t.next; s < seq; s++ {
			if t.missing == nil {
				t.missing = make(map[uint64]struct{})
			}
			if len(t.missing) >= maxMissing {
				break
			}
			t.missing[s] = struct{}{}
		}
		t.next = seq + 1
		return seqNew
	default:
		if _, ok := t.missing[seq]; ok {
			delete(t.missing, seq)
			return seqReorder
		}
		return seqDup
	}
}
