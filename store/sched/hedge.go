package sched

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/store"
)

// # Hedged GETs
//
// Object stores answer most GETs in tens of milliseconds and a few percent
// far slower: a request lands on a busy or failing server, a connection
// stalls. Waiting longer does not help such a request; a second copy sent
// elsewhere usually answers in the normal time. S3's own guidance is to
// re-issue a GET that takes much longer than the recent tail. So: a GET
// that has run longer than the recent p99 of GETs of its size (times
// Options.HedgeFactor, at least Options.MinHedgeDelay) gets one identical
// twin, the hedge; the first good answer wins and the other request is
// cancelled.
//
// Only Get is hedged. A GET is idempotent and reading twice costs only
// load; two copies of a Put (or a conditional put, or a Delete) could land
// in either order, and a conditional one would fail against its own twin.
//
// The threshold is learned per size class (sizeClasses): the time to
// answer grows with the bytes asked for, and one threshold for 4 KiB frame
// reads and 64 MiB segment reads would either hedge every large read or
// none of the small ones. Each class keeps the last ringSize latencies of
// successful GETs, measured from admission (queueing is our delay, not the
// store's) to the answer, and hedges only once it has minSamples of them:
// before that a p99 means nothing. A latency includes the backend's own
// retries: a GET backing off after a 503 is as late for its caller as a
// stalled one, and its hedge may well land on a server that answers. A
// GET "to the end" (length < 0) asks for an unknown size and has a class
// of its own; whole-object reads mix small objects (the WAL head) with
// large ones (segments, checkpoints), so that class's p99 is the large
// ones' and small whole-object reads are hedged late: the safe side.
// A GET that was hedged records the time
// until its race ended, a lower bound of what it would have taken alone;
// recording nothing would drop exactly the slow tail from the window, and
// each recomputation would then lower the threshold further.
//
// Hedging adds load, so it is capped: credit accrues at Options.HedgeRate
// (5%) of a hedge per GET and each hedge spends a whole one, with at most
// hedgeBurst saved up. Over any stretch of GETs, hedges are at most 5% of
// them plus the burst, so a store that is slow across the board (where
// every GET exceeds the old p99 until the window catches up) sees at most
// 5% more GETs, not twice as many. A hedge also needs a slot of the
// limiter's small hedge pool (limit.go), taken without waiting; without
// one the GET is not hedged. GETs that ran past their threshold and were
// not hedged for either reason are counted (Stats.HedgesSkipped).
//
// Background GETs are never hedged: nobody waits for them, so their tail
// latency costs nothing, and their hedges would spend the budget demand
// reads need. They still feed the latency window; the store's speed does
// not depend on who asked.

const (
	ringSize   = 512 // latencies kept per size class
	recompute  = 32  // recompute a class's threshold every this many samples
	hedgeBurst = 10  // hedges of credit that can be saved up
	creditUnit = 1_000_000
)

// sizeClasses are the upper bounds (in bytes asked for) of the size
// classes; a larger range falls in the class after the last bound, and a
// Get "to the end" (length < 0, size unknown) in a class of its own.
var sizeClasses = [...]int64{256 << 10, 1 << 20, 4 << 20, 16 << 20}

const (
	numSizeClasses = len(sizeClasses) + 2
	unsizedClass   = numSizeClasses - 1
)

func sizeClass(length int64) int {
	if length < 0 {
		return unsizedClass
	}
	for i, b := range sizeClasses {
		if length <= b {
			return i
		}
	}
	return len(sizeClasses)
}

// hedger holds what hedging learns and spends.
type hedger struct {
	minDelay   time.Duration
	factor     float64
	minSamples int
	rate       int64 // credit per GET, in creditUnits

	credit atomic.Int64 // in creditUnits
	rings  [numSizeClasses]ring
}

// ring is one size class's recent latencies and the threshold they give.
type ring struct {
	mu        sync.Mutex
	samples   [ringSize]time.Duration
	n         int64        // samples ever recorded
	threshold atomic.Int64 // nanoseconds; 0 until minSamples recorded
}

// delay returns how long a GET of size class sc runs before it is hedged,
// or 0 if the class has too few samples to say.
func (h *hedger) delay(sc int) time.Duration {
	return time.Duration(h.rings[sc].threshold.Load())
}

// record adds the latency of a successful GET of size class sc.
func (h *hedger) record(sc int, d time.Duration) {
	r := &h.rings[sc]
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[r.n%ringSize] = d
	r.n++
	if r.n < int64(h.minSamples) || (r.n != int64(h.minSamples) && r.n%recompute != 0) {
		return
	}
	k := int(min(r.n, ringSize))
	// The p99 is the ceil(0.99·k)-th smallest, i.e. the m-th largest:
	// at most 7 of 512, found in one pass without sorting or copying.
	m := k - (k*99+99)/100 + 1
	p99 := kthLargest(r.samples[:k], m)
	r.threshold.Store(int64(max(h.minDelay, time.Duration(float64(p99)*h.factor))))
}

// kthLargest returns the m-th largest of s, for 1 ≤ m ≤ 8 and m ≤ len(s).
func kthLargest(s []time.Duration, m int) time.Duration {
	var top [8]time.Duration // the largest seen so far, descending
	n := 0                   // entries of top in use
	for _, v := range s {
		var i int
		switch {
		case n < m:
			i = n
			n++
		case v > top[m-1]:
			i = m - 1 // v displaces the smallest kept
		default:
			continue
		}
		for ; i > 0 && top[i-1] < v; i-- {
			top[i] = top[i-1]
		}
		top[i] = v
	}
	return top[m-1]
}

// earn adds one GET's worth of credit, up to the burst.
func (h *hedger) earn() {
	for {
		c := h.credit.Load()
		n := min(c+h.rate, hedgeBurst*creditUnit)
		if n == c || h.credit.CompareAndSwap(c, n) {
			return
		}
	}
}

// spend takes one hedge's credit if there is that much.
func (h *hedger) spend() bool {
	for {
		c := h.credit.Load()
		if c < creditUnit {
			return false
		}
		if h.credit.CompareAndSwap(c, c-creditUnit) {
			return true
		}
	}
}

// isAnswer reports whether err is the store's answer about the object
// rather than a failure to get one: a hedge would get the same answer, so
// it ends the race.
func isAnswer(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidRange)
}

// flight is one hedged Get: its primary request and, once past the
// threshold, its hedge, each on a goroutine of its own so that the caller
// can return as soon as a winner is known or its context ends, whatever
// the losers do. Each request gives back its own slot when the inner store
// lets go of it.
type flight struct {
	s           *Store
	key         string
	off, length int64
	class       Class
	results     chan getResult // buffered for both requests: never blocks a sender
	returned    atomic.Bool    // the caller has returned
}

type getResult struct {
	b     []byte
	err   error
	hedge bool
	panic any // the inner store panicked with this
}

// run runs one of the flight's requests and sends its result. A panic of
// the inner store (a bug, which the servers recover from per request) is
// handed to the caller to raise on its own goroutine, or raised here if
// the caller has already returned.
func (f *flight) run(ctx context.Context, hedge bool) {
	r := getResult{hedge: hedge}
	defer func() {
		if hedge {
			f.s.lim.releaseHedge()
		} else {
			f.s.lim.release(f.class)
		}
		if h := f.s.hooks.raceDone; h != nil {
			h(f.key, hedge, r.err)
		}
		if p := recover(); p != nil {
			if f.returned.Load() {
				panic(p)
			}
			r.panic = p
		}
		f.results <- r
	}()
	r.b, r.err = f.s.inner.Get(ctx, f.key, f.off, f.length)
}

// hedgedGet runs a Get that is hedged if it runs longer than delay. The
// caller holds a slot of class c, which the primary request releases.
func (s *Store) hedgedGet(ctx context.Context, c Class, sc int, delay time.Duration, key string, off, length int64) ([]byte, error) {
	start := time.Now()
	f := &flight{s: s, key: key, off: off, length: length, class: c, results: make(chan getResult, 2)}
	defer f.returned.Store(true)
	// One context for both requests, cancelled when the Get returns: by
	// then one has answered and the other, if any, is the loser.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go f.run(fctx, false)
	timer := time.NewTimer(delay)
	defer timer.Stop()

	var (
		pending                       = 1
		hcancel    context.CancelFunc = func() {}
		primaryErr error
	)
	defer func() { hcancel() }()
	for {
		select {
		case r := <-f.results:
			pending--
			if r.panic != nil {
				panic(r.panic)
			}
			if r.err == nil || isAnswer(r.err) {
				if r.err == nil {
					s.hedge.record(sc, time.Since(start))
				}
				if r.hedge {
					s.stats.hedgesWon.Add(1)
				}
				return r.b, r.err
			}
			if !r.hedge {
				primaryErr = r.err
			}
			if pending > 0 {
				continue // the twin may yet answer
			}
			// Every request failed: the primary's error, unchanged.
			return nil, primaryErr
		case <-timer.C:
			hedged := s.mayHedge()
			if hedged {
				go f.run(fctx, true)
				pending++
			}
			if s.hooks.hedgeDecision != nil {
				s.hooks.hedgeDecision(key, hedged)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("sched: get %q: %w", key, ctx.Err())
		}
	}
}

// mayHedge takes what a hedge needs, a slot of the hedge pool and a
// hedge's credit, if both are there.
func (s *Store) mayHedge() bool {
	if !s.lim.tryHedge() {
		s.stats.hedgesSkipped.Add(1)
		return false
	}
	if !s.hedge.spend() {
		s.lim.releaseHedge()
		s.stats.hedgesSkipped.Add(1)
		return false
	}
	s.stats.hedges.Add(1)
	return true
}
