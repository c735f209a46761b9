// Package sched is the one scheduler every request to an object store goes
// through. It wraps a store.Store and
//
//   - bounds the requests in flight, admitting waiters by priority class
//     (Demand, ReadAhead, Background, from the context: WithClass) without
//     starving any class (limit.go says how and why);
//   - hedges GETs that run far past the recent tail latency of GETs their
//     size, at a capped rate (hedge.go);
//   - counts requests, bytes, failures and hedges per operation, and the
//     limiter's state per class (Stats, stats.go).
//
// Errors of the inner store pass through unchanged, so callers keep testing
// the store's sentinels with errors.Is. An error of the scheduler's own (a
// context that ended while the request waited for a slot) names the
// operation and key and wraps the context's error.
//
// The package imports only package store, so anything that makes store
// requests may import it to tag its contexts.
package sched

import (
	"context"
	"fmt"
	"time"

	"zerofs/store"
)

// Defaults of Options' zero fields.
const (
	DefaultMaxRequests   = 64
	DefaultMinHedgeDelay = 20 * time.Millisecond
	DefaultHedgeFactor   = 1.0
	DefaultHedgeRate     = 0.05
	DefaultHedgeSamples  = 50
)

// Options configure a Store. The zero value is the defaults, hedging on.
type Options struct {
	// MaxRequests bounds the requests in flight, hedges aside (they run
	// in a separate pool of MaxRequests/8, at least 1). 0 means
	// DefaultMaxRequests.
	MaxRequests int

	// NoHedge turns hedging off.
	NoHedge bool
	// MinHedgeDelay is the least time a GET runs before it is hedged,
	// whatever the learned tail: no healthy object store answers faster,
	// so hedging sooner would only add load. 0 means 20ms.
	MinHedgeDelay time.Duration
	// HedgeFactor multiplies the p99 latency of a size class to give its
	// hedging threshold. 0 means 1.
	HedgeFactor float64
	// HedgeRate is the largest fraction of GETs that may be hedged (plus
	// a small burst). 0 means 0.05; at most 1.
	HedgeRate float64
	// HedgeSamples is the number of latencies a size class needs before
	// its GETs are hedged. 0 means 50.
	HedgeSamples int
}

// Store is a store.Store whose requests are scheduled: see the package
// documentation. It is safe for concurrent use.
type Store struct {
	inner   store.Store
	lim     *limiter
	hedge   hedger
	noHedge bool
	stats   counters
	hooks   hooks
}

// hooks let tests observe the scheduler's decisions; all nil in
// production.
type hooks struct {
	queued        func(c Class)                           // a request queued for a slot
	hedgeDecision func(key string, hedged bool)           // a Get passed its threshold
	raceDone      func(key string, hedge bool, err error) // a request of a hedged Get returned
}

var _ store.Store = (*Store)(nil)

// New wraps inner. It panics on options out of range (a programming
// error: configuration is validated before it gets here).
func New(inner store.Store, o Options) *Store {
	if o.MaxRequests == 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.MinHedgeDelay == 0 {
		o.MinHedgeDelay = DefaultMinHedgeDelay
	}
	if o.HedgeFactor == 0 {
		o.HedgeFactor = DefaultHedgeFactor
	}
	if o.HedgeRate == 0 {
		o.HedgeRate = DefaultHedgeRate
	}
	if o.HedgeSamples == 0 {
		o.HedgeSamples = DefaultHedgeSamples
	}
	switch {
	case o.MaxRequests < 0:
		panic(fmt.Sprintf("sched: MaxRequests %d is negative", o.MaxRequests))
	case o.MinHedgeDelay < 0, o.HedgeFactor < 0, o.HedgeRate < 0, o.HedgeRate > 1, o.HedgeSamples < 0:
		panic(fmt.Sprintf("sched: hedging options out of range: %+v", o))
	}
	return &Store{
		inner: inner,
		lim:   newLimiter(o.MaxRequests),
		hedge: hedger{
			minDelay:   o.MinHedgeDelay,
			factor:     o.HedgeFactor,
			minSamples: o.HedgeSamples,
			rate:       int64(o.HedgeRate * creditUnit),
		},
		noHedge: o.NoHedge,
	}
}

// Inner returns the wrapped store.
func (s *Store) Inner() store.Store { return s.inner }

// String names the inner store, so logs and errors read the same with or
// without the scheduler.
func (s *Store) String() string { return s.inner.String() }

// acquire takes a slot for a request of op on key, in ctx's class.
func (s *Store) acquire(ctx context.Context, op Op, key string) (Class, error) {
	c := ClassOf(ctx)
	if err := s.lim.acquire(ctx, c, s.hooks.queued); err != nil {
		return c, fmt.Errorf("sched: %v %q: waiting for a request slot (%v): %w", op, key, c, err)
	}
	return c, nil
}

// do runs one request that is never hedged: it waits for a slot, runs f
// holding it, and counts the outcome. The slot is released by a defer:
// the servers recover from a panic in a request, and a leaked slot would
// be lost for good.
func (s *Store) do(ctx context.Context, op Op, key string, out int, f func() error) error {
	err := s.run(ctx, op, key, f)
	s.stats.count(op, err, 0, out)
	return err
}

func (s *Store) run(ctx context.Context, op Op, key string, f func() error) error {
	c, err := s.acquire(ctx, op, key)
	if err != nil {
		return err
	}
	defer s.lim.release(c)
	return f()
}

// Get implements store.Store. Demand and ReadAhead Gets may be hedged
// (hedge.go).
func (s *Store) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	s.hedge.earn()
	b, err := s.get(ctx, key, off, length)
	s.stats.count(OpGet, err, len(b), 0)
	return b, err
}

func (s *Store) get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	c, err := s.acquire(ctx, OpGet, key)
	if err != nil {
		return nil, err
	}
	sc := sizeClass(length)
	if delay := s.hedge.delay(sc); delay > 0 && !s.noHedge && c != Background {
		return s.hedgedGet(ctx, c, sc, delay, key, off, length)
	}
	defer s.lim.release(c)
	start := time.Now()
	b, err := s.inner.Get(ctx, key, off, length)
	if err == nil && !s.noHedge {
		s.hedge.record(sc, time.Since(start))
	}
	return b, err
}

// Put implements store.Store. None of the puts is ever hedged: a second
// copy could land after, or fail against, the first.
func (s *Store) Put(ctx context.Context, key string, data []byte) (etag string, err error) {
	err = s.do(ctx, OpPut, key, len(data), func() (err error) {
		etag, err = s.inner.Put(ctx, key, data)
		return err
	})
	return etag, err
}

// PutIfAbsent implements store.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, data []byte) (etag string, err error) {
	err = s.do(ctx, OpPut, key, len(data), func() (err error) {
		etag, err = s.inner.PutIfAbsent(ctx, key, data)
		return err
	})
	return etag, err
}

// PutIfMatch implements store.Store.
func (s *Store) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (newETag string, err error) {
	err = s.do(ctx, OpPut, key, len(data), func() (err error) {
		newETag, err = s.inner.PutIfMatch(ctx, key, data, etag)
		return err
	})
	return newETag, err
}

// Head implements store.Store.
func (s *Store) Head(ctx context.Context, key string) (info store.Info, err error) {
	err = s.do(ctx, OpHead, key, 0, func() (err error) {
		info, err = s.inner.Head(ctx, key)
		return err
	})
	return info, err
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) (infos []store.Info, err error) {
	err = s.do(ctx, OpList, prefix, 0, func() (err error) {
		infos, err = s.inner.List(ctx, prefix)
		return err
	})
	return infos, err
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, OpDelete, key, 0, func() error { return s.inner.Delete(ctx, key) })
}
