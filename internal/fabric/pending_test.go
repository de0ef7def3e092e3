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
		p := NewPending(2, 100, nil)
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

// TestPendingCountsInTheNodeGauges: what a Pending holds is in
// PendingInvocations while it waits; a Close takes what is left out (the
// connection ended), and Releases after it change nothing; a reader that
// waited is out of ReadsPaused once its wait ends.
func TestPendingCountsInTheNodeGauges(t *testing.T) {
	var c Counters
	p := NewPending(2, 100, &c)
	gone := make(chan struct{})
	for i := 0; i < 2; i++ {
		if !p.Acquire(10, gone) {
			t.Fatal("Acquire under the bound failed")
		}
	}
	if n := c.PendingInvocations.Load(); n != 2 {
		t.Fatalf("PendingInvocations = %d, want 2", n)
	}
	p.Release(10)
	if n := c.PendingInvocations.Load(); n != 1 {
		t.Fatalf("PendingInvocations after a Release = %d, want 1", n)
	}
	if !p.Acquire(10, gone) {
		t.Fatal("Acquire after a Release failed")
	}
	waited := make(chan bool)
	go func() { waited <- p.Acquire(10, gone) }() // over the bound: waits
	p.Close()
	if <-waited {
		t.Fatal("a waiting Acquire succeeded after Close")
	}
	if n, r := c.PendingInvocations.Load(), c.ReadsPaused.Load(); n != 0 || r != 0 {
		t.Fatalf("after Close: PendingInvocations = %d, ReadsPaused = %d; want 0, 0", n, r)
	}
	p.Release(10) // the connection actor lets go of what it held
	if n := c.PendingInvocations.Load(); n != 0 {
		t.Fatalf("a Release after Close moved PendingInvocations to %d", n)
	}
}
