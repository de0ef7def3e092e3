package fabric

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hubfabric/hubfabric/internal/seam"
)

// countingBatcher counts its Flush calls and the goroutines that ran them.
type countingBatcher struct {
	flushes atomic.Int64
}

func (b *countingBatcher) EnqueueDeferred([]byte) (bool, error) { return true, nil }
func (b *countingBatcher) Flush()                               { b.flushes.Add(1) }

// TestFlusherFlushesEverythingHandedOver: outlets handed over from many
// goroutines are each flushed at least once after their hand-over, the
// goroutine ends when there is no work (Wait returns), and a later Add
// starts it again.
func TestFlusherFlushesEverythingHandedOver(t *testing.T) {
	f := NewFlusher(seam.Real{})
	outlets := make([]*countingBatcher, 64)
	for i := range outlets {
		outlets[i] = &countingBatcher{}
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 50; round++ {
				batch := make([]Batcher, 0, 8)
				for i := 0; i < 8; i++ {
					batch = append(batch, outlets[(g*8+i+round)%len(outlets)])
				}
				f.Add(batch)
			}
		}()
	}
	wg.Wait()
	f.Wait()
	var total int64
	for i, o := range outlets {
		n := o.flushes.Load()
		if n == 0 {
			t.Fatalf("outlet %d was handed over but never flushed", i)
		}
		total += n
	}
	if total > 8*50*8 {
		t.Fatalf("%d flushes for %d hand-overs", total, 8*50*8)
	}
	if f.running {
		t.Fatal("the flusher still runs after Wait")
	}

	before := outlets[0].flushes.Load()
	f.Add([]Batcher{outlets[0]})
	f.Wait()
	if outlets[0].flushes.Load() != before+1 {
		t.Fatal("an Add after the goroutine ended was not flushed")
	}
	f.Add(nil) // nothing to do: no goroutine
	f.Wait()
}
