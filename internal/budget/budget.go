// Package budget bounds memory held by requests in flight: a weighted
// semaphore whose waiters are served strictly in arrival order and can give
// up when their context ends.
//
// Why arrival order: the servers read a request, then wait here before they
// read (NBD) or apply (fs) the next thing. If waiters could overtake each
// other, a large request would starve behind a stream of small ones, and —
// worse — a request that arrived first could be served after one that
// arrived later. Two writes to one block from two connections must not be
// reordered by a memory wait (docs/durability.md, "Requests of a connection
// that dies").
//
// Why a context: a request belongs to its connection. When the connection is
// gone its context is canceled, and a request still waiting here leaves the
// queue without taking anything, so it can never begin after newer requests
// from other connections were acknowledged.
package budget

import (
	"context"
	"fmt"
	"sync"
)

// Budget is a pool of bytes. The zero value is not usable; see New.
type Budget struct {
	mu      sync.Mutex
	size    int64
	avail   int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{} // closed when the bytes were granted
}

// New returns a budget of size bytes (size > 0).
func New(size int64) *Budget { return &Budget{size: size, avail: size} }

// Size is the budget's total.
func (b *Budget) Size() int64 { return b.size }

// InUse is how many bytes are taken now.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size - b.avail
}

// Waiting is how many acquirers are queued now.
func (b *Budget) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters)
}

// clamp bounds a request to the whole budget, so that one request always
// fits eventually.
func (b *Budget) clamp(n int64) int64 { return min(n, b.size) }

// Acquire takes n bytes, waiting behind earlier acquirers until they are
// free. It returns an error wrapping context.Cause(ctx) if ctx ends first;
// then nothing was taken. Release the same n afterwards.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	n = b.clamp(n)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.avail >= n {
		b.avail -= n
		b.mu.Unlock()
		return nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while we were giving up: hand the bytes on.
		b.avail += n
	default:
		for i, x := range b.waiters {
			if x == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	// The head may have left: whoever is first now may fit.
	b.grantLocked()
	return fmt.Errorf("waiting for %d bytes of memory: %w", n, context.Cause(ctx))
}

// Release returns n bytes taken by Acquire and wakes waiters in order.
func (b *Budget) Release(n int64) {
	n = b.clamp(n)
	b.mu.Lock()
	b.avail += n
	b.grantLocked()
	b.mu.Unlock()
}

func (b *Budget) grantLocked() {
	for len(b.waiters) > 0 && b.avail >= b.waiters[0].n {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.avail -= w.n
		close(w.ready)
	}
}
