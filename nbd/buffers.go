package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from size-class pools (powers of two from 4 KiB to the
// 32 MiB maximum payload), so a stream of 1 MiB requests does not allocate
// and collect 1 MiB per request.

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 25 // 32 MiB = maxPayload
)

var bufPools [maxClassShift - minClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of length n (contents undefined).
func getBuf(n int) []byte {
	if n > maxPayload {
		return make([]byte, n)
	}
	c := classOf(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(b []byte) {
	c := cap(b)
	if c < 1<<minClassShift || c > maxPayload || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	bufPools[classOf(c)].Put(&b)
}

// budget bounds the payload bytes one connection holds in memory: WRITE data
// read but not yet written, READ data read but not yet sent. Waiters are
// served first come, first served, so a large request is not starved by a
// stream of small ones. Every holder releases what it took once its reply is
// sent or dropped, which needs no other resource, so waiting cannot deadlock.
type budget struct {
	mu      sync.Mutex
	size    int64
	avail   int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newBudget(size int64) *budget { return &budget{size: size, avail: size} }

// clamp bounds a request to the whole budget, so one request always fits.
func (b *budget) clamp(n int64) int64 { return min(n, b.size) }

// acquire takes n bytes (clamped), waiting until they are free.
func (b *budget) acquire(n int64) {
	n = b.clamp(n)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.avail >= n {
		b.avail -= n
		b.mu.Unlock()
		return
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	<-w.ready
}

// release returns n bytes (clamped as acquire did) and wakes waiters in order.
func (b *budget) release(n int64) {
	n = b.clamp(n)
	b.mu.Lock()
	b.avail += n
	for len(b.waiters) > 0 && b.avail >= b.waiters[0].n {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.avail -= w.n
		close(w.ready)
	}
	b.mu.Unlock()
}
