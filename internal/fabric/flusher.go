package fabric

import (
	"sync"

	"github.com/hubfabric/hubfabric/internal/seam"
)

// Flusher writes what fan-outs deferred (Batcher.Flush) on a goroutine of
// its own, apart from the actors that fanned out: they only append to
// outbound queues and hand the connections over. While the node keeps up,
// each hand-over is written at once; when the node is saturated, the
// Flusher falls behind, more records wait in each connection's queue by
// the time it gets there, and each write carries several of them, so the
// cost per delivery falls as load rises instead of the backlog waiting in
// front of the fan-out. The goroutine runs only while there is work (an
// idle node has none) and is started through the runtime seam. Safe for
// concurrent use; Wait joins it.
type Flusher struct {
	rt  seam.Runtime
	run func() // loop as a func value, made once

	mu      sync.Mutex
	ready   []Batcher // handed over, not flushed yet (may repeat an outlet)
	spare   []Batcher // the slice loop emptied last, reused
	running bool
	wg      sync.WaitGroup
}

// NewFlusher returns an idle Flusher that starts its goroutine with rt.
func NewFlusher(rt seam.Runtime) *Flusher {
	f := &Flusher{rt: rt}
	f.run = f.loop
	return f
}

// Add hands outlets over for a Flush; it copies the slice and never
// blocks.
func (f *Flusher) Add(outlets []Batcher) {
	if len(outlets) == 0 {
		return
	}
	f.mu.Lock()
	f.ready = append(f.ready, outlets...)
	start := !f.running
	f.running = true
	if start {
		f.wg.Add(1)
	}
	f.mu.Unlock()
	if start {
		f.rt.Go(f.run)
	}
}

// Busy reports whether the goroutine runs: connections handed over are
// waiting for it, or being flushed.
func (f *Flusher) Busy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// Wait returns once the goroutine has flushed everything handed over and
// ended.
func (f *Flusher) Wait() { f.wg.Wait() }

func (f *Flusher) loop() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		batch := f.ready
		if len(batch) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.ready, f.spare = f.spare[:0], nil
		f.mu.Unlock()
		for i, o := range batch {
			o.Flush()
			batch[i] = nil
		}
		f.mu.Lock()
		f.spare = batch[:0]
		f.mu.Unlock()
	}
}
