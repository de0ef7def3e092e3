package fabric

import (
	"testing"
	"testing/synctest"
)

// TestPendingBoundsCountAndBytes: Acquire returns at once under both
// bounds and waits past either; a Release lets one waiter in; one
// invocation larger than the byte bound still passes when nothing waits
// (it is bounded by the message size); Close and gone end a wait with
// false. synctest.Wait makes "still waiting" an observation, not a timing.
func TestPendingBoundsCountAndBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPending(2, 100)
		gone := make(chan struct{})
		if !p.Acquire(10, gone) || !p.Acquire(10, gone) {
			t.Fatal("Acquire under the bound did not pass")
		}
		third := make(chan bool)
		go func() { third <- p.Acquire(10, gone) }()
		synctest.Wait()
		select {
		case <-third:
			t.Fatal("a third Acquire passed a count bound of 2")
		default:
		}
		p.Release(10)
		if !<-third {
			t.Fatal("the waiter was not let in after a Release")
		}
		if n, b := p.Waiting(); n != 2 || b != 20 {
			t.Fatalf("Waiting = %d, %d; want 2, 20", n, b)
		}

		// Bytes: with 10 held, 91 more do not fit in 100.
		p.Release(10)
		big := make(chan bool)
		go func() { big <- p.Acquire(91, gone) }()
		synctest.Wait()
		select {
		case <-big:
			t.Fatal("Acquire(91) passed with 10 of 100 bytes held")
		default:
		}
		p.Release(10)
		if !<-big {
			t.Fatal("Acquire(91) did not pass once the 10 were released")
		}
		p.Release(91)
		if !p.Acquire(1000, gone) {
			t.Fatal("one oversized invocation was refused with nothing held")
		}

		ended := make(chan bool)
		go func() { ended <- p.Acquire(1, gone) }()
		synctest.Wait()
		close(gone)
		if <-ended {
			t.Fatal("Acquire returned true after gone closed")
		}
		p.Close()
		p.Close() // idempotent
		if p.Acquire(1, make(chan struct{})) {
			t.Fatal("Acquire passed on a closed bound")
		}
	})
}
