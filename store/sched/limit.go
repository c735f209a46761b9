package sched

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// # Why a limit, and why this policy
//
// Every request zerofs makes to its object store goes through one limiter
// per store. Without it, the number of requests in flight is whatever the
// callers happen to start: a GC pass packing segments, a checkpoint upload,
// a burst of cache misses and the WAL all at once. The store (and our one
// HTTP connection pool) then serves them in no particular order, so a
// client's 4 KiB read queues behind 64 MiB of garbage collection, and past
// some concurrency an S3 prefix answers with 503 SlowDown, which the
// backend retries with backoff: more load makes everything slower. A limit
// turns that free-for-all into a queue we control, and a queue lets us say
// who goes first.
//
// The limit (Options.MaxRequests, [storage] max_requests, default 64)
// counts requests from the moment they are admitted until the inner store
// returns, retries included: a request backing off after a 503 still holds
// its slot, which is what we want (it will send again).
//
// Three classes, from the context (WithClass):
//
//   - Demand: a client waits for it now (a read that missed the caches, a
//     WAL append under a FLUSH). May use every slot.
//   - ReadAhead: a guess at what a client will ask for. At most half the
//     slots (readAheadCap), so however much read-ahead is queued, half the
//     store's concurrency stays available to reads a client actually made.
//   - Background: GC, checkpoints, the head watch. At most a quarter of the
//     slots (backgroundCap). Background work is throughput work; a quarter
//     of 64 is 16 concurrent requests, which already saturates a link with
//     64 MiB segments, while more would only lengthen the queue demand
//     reads see.
//
// Together the caps keep at least a quarter of the slots for Demand even
// when both other classes are busy: a demand request arriving to an
// otherwise idle zerofs that is packing and reading ahead is admitted at
// once, not after the next background request finishes.
//
// When a slot frees and requests wait, the next one is chosen as follows:
//
//  1. Guaranteed share: if ReadAhead (then Background) has waiters and
//     nothing in flight, it goes first. Without this, a steady stream of
//     demand reads that keeps the limit full would starve the other
//     classes for ever: a checkpoint would never finish, GC would never
//     free space. One request in flight per class is enough to make
//     progress and costs Demand at most one slot per class.
//  2. Otherwise strict priority: Demand, then ReadAhead (if under its cap),
//     then Background (if under its cap).
//  3. Within a class, first come first served.
//
// Caps make the limiter non-work-conserving on purpose: a ReadAhead
// request may wait while slots are free, because those slots are being
// kept for Demand requests that have not arrived yet. With a small limit
// the arithmetic degenerates (each cap is at least 1, so with a limit of 1
// or 2 the classes may together take every slot); small limits are for
// debugging, not for tuning.
//
// An arriving request is admitted at once if its class may take a slot
// now; otherwise it queues. This cannot overtake a waiter: after every
// admission decision no waiter is admissible (dispatch admits while it
// can), so if a newcomer is admissible, every waiter is held back by
// something the newcomer is not (its class's cap, or it is of a lower
// class than a Demand newcomer when slots are free, which happens only
// under caps).
//
// A waiter whose context ends leaves the queue and returns the context's
// error. If its slot was granted in the same instant, it gives the slot
// back (and the next waiter is admitted) instead of starting a request
// nobody wants.
//
// # Hedges
//
// A hedge (hedge.go) is a second copy of a GET that has run past its
// class's recent tail. It must not wait in the queue: the requests it
// would wait behind may be exactly the stuck ones it is meant to route
// around, and if every slot were held by stuck GETs whose hedges queued,
// nothing would move until they timed out. So hedges take a slot from a
// small separate pool (hedgeCap: an eighth of the limit, at least 1) and
// never wait: if the pool is empty the GET is simply not hedged. In-flight
// requests are thus bounded by MaxRequests plus that pool; the hedge rate
// cap (at most 5% of GETs) keeps the pool mostly empty.
type limiter struct {
	mu       sync.Mutex
	max      int
	caps     [NumClasses]int
	inflight [NumClasses]int
	total    int
	queues   [NumClasses]list.List // of *waiter, FIFO
	waits    [NumClasses]int64     // requests that had to queue
	waited   [NumClasses]time.Duration

	hedgeCap int
	hedges   int
}

type waiter struct {
	ready   chan struct{} // closed when granted
	granted bool          // under mu
}

func newLimiter(n int) *limiter {
	l := &limiter{max: n, hedgeCap: max(1, n/8)}
	l.caps[Demand] = n
	l.caps[ReadAhead] = max(1, n/2)
	l.caps[Background] = max(1, n/4)
	return l
}

// admissible reports whether a request of class c may take a slot now.
func (l *limiter) admissible(c Class) bool {
	return l.total < l.max && l.inflight[c] < l.caps[c]
}

func (l *limiter) admit(c Class) {
	l.inflight[c]++
	l.total++
}

// acquire takes a slot for a request of class c, waiting for one if need
// be. It returns ctx's error if ctx ends first; a nil error means the
// caller holds a slot and must release it. onQueue, if not nil, is called
// (without the lock) once the request is queued; tests use it.
func (l *limiter) acquire(ctx context.Context, c Class, onQueue func(Class)) error {
	l.mu.Lock()
	if l.admissible(c) {
		l.admit(c)
		l.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return err
	}
	w := &waiter{ready: make(chan struct{})}
	e := l.queues[c].PushBack(w)
	l.waits[c]++
	l.mu.Unlock()
	start := time.Now()
	if onQueue != nil {
		onQueue(c)
	}
	select {
	case <-w.ready:
		l.mu.Lock()
		l.waited[c] += time.Since(start)
		l.mu.Unlock()
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waited[c] += time.Since(start)
	if w.granted {
		// Granted as ctx ended: hand the slot on rather than start a
		// request nobody waits for.
		l.inflight[c]--
		l.total--
		l.dispatch()
	} else {
		l.queues[c].Remove(e)
	}
	return ctx.Err()
}

// release gives back a slot taken by acquire for class c.
func (l *limiter) release(c Class) {
	l.mu.Lock()
	l.inflight[c]--
	l.total--
	l.dispatch()
	l.mu.Unlock()
}

// dispatch admits waiters while slots are free, in the policy's order.
// Called with mu held.
func (l *limiter) dispatch() {
	for l.total < l.max {
		c, ok := l.next()
		if !ok {
			return
		}
		w := l.queues[c].Remove(l.queues[c].Front()).(*waiter)
		l.admit(c)
		w.granted = true
		close(w.ready)
	}
}

// next picks the class whose first waiter gets the next free slot.
func (l *limiter) next() (Class, bool) {
	// The guaranteed share: a class with waiters and nothing in flight.
	for _, c := range [...]Class{ReadAhead, Background} {
		if l.queues[c].Len() > 0 && l.inflight[c] == 0 {
			return c, true
		}
	}
	for c := Demand; c < NumClasses; c++ {
		if l.queues[c].Len() > 0 && l.inflight[c] < l.caps[c] {
			return c, true
		}
	}
	return 0, false
}

// tryHedge takes a slot from the hedge pool if one is free; it never
// waits (see "Hedges" above).
func (l *limiter) tryHedge() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hedges >= l.hedgeCap {
		return false
	}
	l.hedges++
	return true
}

func (l *limiter) releaseHedge() {
	l.mu.Lock()
	l.hedges--
	l.mu.Unlock()
}

// snapshot fills the limiter's part of st.
func (l *limiter) snapshot(st *Stats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st.Limit = l.max
	st.HedgeLimit = l.hedgeCap
	st.HedgesInFlight = l.hedges
	for c := range Class(NumClasses) {
		st.Classes[c] = ClassStats{
			InFlight: l.inflight[c],
			Waiting:  l.queues[c].Len(),
			Waits:    l.waits[c],
			WaitTime: l.waited[c],
		}
	}
}
