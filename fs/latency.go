package fs

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the latency histograms fs keeps
// (seconds), from 50 µs to 10 s.
var LatencyBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// Histogram is a lock-free latency histogram over LatencyBuckets; the last
// count is for values above every bound.
type Histogram struct {
	counts [17]atomic.Uint64
	sumNs  atomic.Int64
}

func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// Snapshot returns per-bucket (not cumulative) counts and the sum in seconds.
func (h *Histogram) Snapshot() (counts []uint64, sum float64) {
	counts = make([]uint64, len(h.counts))
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
	}
	return counts, float64(h.sumNs.Load()) / 1e9
}
