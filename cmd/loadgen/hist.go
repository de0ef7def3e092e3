package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is HDR-style: values (nanoseconds) below histSub
// have a bucket each; above that every power of two is split into histHalf
// buckets, so a bucket's width is under 1/64 of its values (relative error
// below 1.6%). Values are clamped to histMax (about 4.9 hours).
const (
	histSubBits = 7
	histSub     = 1 << histSubBits // 128
	histHalf    = histSub / 2      // 64
	histMaxBits = 45
	histMax     = 1<<histMaxBits - 1
	histBuckets = histSub + (histMaxBits-histSubBits)*histHalf // 2560
)

// histIndex returns the bucket of v (clamped to [0, histMax]).
func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > histMax {
		v = histMax
	}
	u := uint64(v)
	if u < histSub {
		return int(u)
	}
	e := bits.Len64(u) - histSubBits // >= 1
	m := u >> uint(e)                // in [histHalf, histSub)
	return histSub + (e-1)*histHalf + int(m-histHalf)
}

// histUpper returns the highest value that falls in bucket i.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := (i-histSub)/histHalf + 1
	m := uint64((i-histSub)%histHalf + histHalf)
	return int64((m+1)<<uint(e) - 1)
}

// histogram counts values in log buckets. record is safe for concurrent use
// (one atomic add); snapshot may run concurrently with records.
type histogram struct {
	counts [histBuckets]atomic.Uint64
}

func (h *histogram) record(v int64) { h.counts[histIndex(v)].Add(1) }

// histSnap is a merged, immutable copy of one or more histograms.
type histSnap struct {
	counts [histBuckets]uint64
	total  uint64
}

// add merges h into s.
func (s *histSnap) add(h *histogram) {
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] += c
		s.total += c
	}
}

// quantile returns the value at quantile q (0..1) as the upper bound of
// its bucket, or 0 for an empty histogram.
func (s *histSnap) quantile(q float64) int64 {
	if s.total == 0 {
		return 0
	}
	rank := uint64(q * float64(s.total))
	if float64(rank) < q*float64(s.total) || rank == 0 {
		rank++ // ceil, and at least the first value
	}
	var cum uint64
	for i, c := range s.counts {
		cum += c
		if cum >= rank {
			return histUpper(i)
		}
	}
	return histUpper(histBuckets - 1)
}

// max returns the upper bound of the highest non-empty bucket.
func (s *histSnap) max() int64 {
	for i := histBuckets - 1; i >= 0; i-- {
		if s.counts[i] > 0 {
			return histUpper(i)
		}
	}
	return 0
}

// histShards spreads the recording of many goroutines over a few
// histograms so that they do not all hit one cache line.
const histShards = 16

type shardedHist [histShards]histogram

func (h *shardedHist) record(shard int, v int64) { h[shard%histShards].record(v) }

func (h *shardedHist) snapshot() *histSnap {
	s := new(histSnap)
	for i := range h {
		s.add(&h[i])
	}
	return s
}

// ms converts nanoseconds to milliseconds for reports.
func ms(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }
