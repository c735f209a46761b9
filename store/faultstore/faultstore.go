// Package faultstore is the one fault-injection library for store.Store that
// every test uses, in the spirit of pebble's vfs/errorfs. Tests used to wrap
// the store themselves, one hand-rolled wrapper per test file, each with its
// own half of the interface, its own locking (or none) and its own idea of
// what a failure looks like. Here the wrapper is written once, tested once
// (it passes the store conformance suite in pass-through mode), and safe to
// reconfigure while operations run.
//
// It is for tests only: nothing but _test.go files may import it.
//
// # Use
//
// Wrap a store, then add rules. With no rules every call passes through.
//
//	st := faultstore.New(store.NewMem())
//	outage := st.Fail(faultstore.On(), nil)    // every call fails with ErrInjected
//	...
//	outage.Remove()                            // the store is back
//
// A Match selects the calls a rule applies to: by operation (On), by key
// (Prefix, Key, Where), and by position among the calls it selects (Skip,
// Times):
//
//	st.Fail(faultstore.On(faultstore.OpPutIfAbsent).Prefix("wal/").Times(20), nil) // the next 20 WAL puts fail
//	st.Delay(faultstore.Puts(), 10*time.Millisecond)                               // a slow store
//	st.Fail(faultstore.On(faultstore.OpGet).Skip(3), errReset)                     // Gets fail after the 3rd
//
// A gate holds the calls it selects until released, or until their context
// ends; WaitBlocked replaces sleeping until they have arrived:
//
//	g := st.Hold(faultstore.Puts())
//	... start something that writes ...
//	g.WaitBlocked(ctx, 1) // a write is now held
//	g.Release()
//
// Before and After run a test's own code around selected calls, for staging
// a race (another writer slips in just before a conditional put) or losing
// the answer to a request that did land.
//
// The store counts calls, errors and bytes per operation (Count,
// ResetCounts).
//
// # Semantics
//
// Rules act in the order they were added. For each call, every rule that
// selects it acts in turn: Fail (and a Before hook returning an error) ends
// the call without reaching the inner store; Delay, Jitter and Hold wait and
// then let the next rule act. A rule added while a call waits at an earlier
// rule still acts on that call. After hooks run once the inner store has
// answered, in the same order. Rules can be added and removed at any time,
// from any goroutine, including from inside a hook.
//
// Injected errors name the operation and key and wrap the cause: the error
// the test gave, or ErrInjected, which is none of the store package's
// sentinels (so it looks like a failure that persisted through the backend's
// retries). A call whose context ends while delayed or held returns an error
// wrapping the context's error.
package faultstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/store"
)

// ErrInjected is the cause of a failure injected without an error of the
// test's own (Fail with a nil error).
var ErrInjected = errors.New("injected fault")

// Op names a store.Store operation.
type Op uint8

// The operations, one per method of store.Store (String excepted).
const (
	OpGet Op = iota
	OpPut
	OpPutIfAbsent
	OpPutIfMatch
	OpHead
	OpList
	OpDelete
	numOps
)

var opNames = [numOps]string{"Get", "Put", "PutIfAbsent", "PutIfMatch", "Head", "List", "Delete"}

func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Match selects the calls a rule applies to. The zero Match (like On())
// selects every call. Its methods return a narrowed copy; conditions add up
// (all must hold).
type Match struct {
	ops   uint16            // bit per Op; 0 means every op
	key   func(string) bool // nil means every key
	skip  int64             // let this many selected calls through first
	times int64             // then act on at most this many (0: no limit)
}

// On selects calls to the given operations; with none, every operation.
func On(ops ...Op) Match {
	var m Match
	for _, o := range ops {
		if o >= numOps {
			panic(fmt.Sprintf("faultstore: unknown %v", o))
		}
		m.ops |= 1 << o
	}
	return m
}

// Puts selects the operations that store data: Put, PutIfAbsent and
// PutIfMatch.
func Puts() Match { return On(OpPut, OpPutIfAbsent, OpPutIfMatch) }

// Where narrows m to calls whose key satisfies f. For List the key is the
// prefix listed. f may be called from many goroutines at once.
func (m Match) Where(f func(key string) bool) Match {
	prev := m.key
	if prev == nil {
		m.key = f
	} else {
		m.key = func(k string) bool { return prev(k) && f(k) }
	}
	return m
}

// Prefix narrows m to keys starting with p.
func (m Match) Prefix(p string) Match {
	return m.Where(func(k string) bool { return strings.HasPrefix(k, p) })
}

// Key narrows m to the key k.
func (m Match) Key(k string) Match {
	return m.Where(func(key string) bool { return key == k })
}

// Skip lets the first n calls m selects through untouched: the rule acts
// from the (n+1)th on ("fail after n").
func (m Match) Skip(n int) Match {
	if n < 0 {
		panic("faultstore: Skip with a negative count")
	}
	m.skip = int64(n)
	return m
}

// Times makes the rule act on n calls at most (after those skipped), then
// let every call through ("fail the next n").
func (m Match) Times(n int) Match {
	if n < 1 {
		panic("faultstore: Times needs a count of at least 1")
	}
	m.times = int64(n)
	return m
}

func (m Match) selects(op Op, key string) bool {
	return (m.ops == 0 || m.ops&(1<<op) != 0) && (m.key == nil || m.key(key))
}

// Rule is one fault added to a Store. It stays in force until removed.
type Rule struct {
	s        *Store
	id       uint64
	m        Match
	before   func(ctx context.Context, op Op, key string) error
	after    func(op Op, key string, err error) error
	onRemove func()
	seen     atomic.Int64 // calls m selected
	hits     atomic.Int64 // calls the rule acted on
	removed  atomic.Bool
}

// Remove takes the rule out of force; calls already inside it (delayed,
// held) finish their wait. Removing a Hold rule releases its gate. Remove
// is idempotent.
func (r *Rule) Remove() {
	if !r.removed.CompareAndSwap(false, true) {
		return
	}
	r.s.mu.Lock()
	for i, x := range r.s.rules {
		if x == r {
			r.s.rules = append(r.s.rules[:i:i], r.s.rules[i+1:]...)
			break
		}
	}
	r.s.mu.Unlock()
	if r.onRemove != nil {
		r.onRemove()
	}
}

// Hits returns how many calls the rule has acted on.
func (r *Rule) Hits() int { return int(r.hits.Load()) }

// take reports whether the rule acts on this call, counting it.
func (r *Rule) take(op Op, key string) bool {
	if !r.m.selects(op, key) {
		return false
	}
	n := r.seen.Add(1)
	if n <= r.m.skip || (r.m.times > 0 && n > r.m.skip+r.m.times) {
		return false
	}
	r.hits.Add(1)
	return true
}

// Count is what a Store has seen of one operation.
type Count struct {
	Calls  int64 // every call made, including those failed by a rule
	Errors int64 // calls that returned an error, injected or not
	Bytes  int64 // Get: bytes returned; Put, PutIfAbsent, PutIfMatch: bytes stored
}

type counter struct{ calls, errors, bytes atomic.Int64 }

// Store wraps a store.Store, injecting the faults its rules describe. It is
// safe for concurrent use.
type Store struct {
	inner  store.Store
	mu     sync.Mutex
	rules  []*Rule // in id order
	nextID uint64
	counts [numOps]counter
}

var _ store.Store = (*Store)(nil)

// New wraps inner. With no rules, every call passes through unchanged.
func New(inner store.Store) *Store { return &Store{inner: inner} }

// Inner returns the wrapped store, for setting up or checking state behind
// the rules' back.
func (s *Store) Inner() store.Store { return s.inner }

// Count returns the counts for op since New or the last ResetCounts.
func (s *Store) Count(op Op) Count {
	c := &s.counts[op]
	return Count{Calls: c.calls.Load(), Errors: c.errors.Load(), Bytes: c.bytes.Load()}
}

// ResetCounts sets every count to zero.
func (s *Store) ResetCounts() {
	for i := range s.counts {
		c := &s.counts[i]
		c.calls.Store(0)
		c.errors.Store(0)
		c.bytes.Store(0)
	}
}

// Clear removes every rule, releasing every gate.
func (s *Store) Clear() {
	s.mu.Lock()
	rules := append([]*Rule(nil), s.rules...)
	s.mu.Unlock()
	for _, r := range rules {
		r.Remove()
	}
}

func (s *Store) add(r *Rule) *Rule {
	r.s = s
	s.mu.Lock()
	s.nextID++
	r.id = s.nextID
	s.rules = append(s.rules, r)
	s.mu.Unlock()
	return r
}

// Fail makes the calls m selects fail without reaching the inner store. The
// error names the operation and key and wraps err, or ErrInjected if err is
// nil.
func (s *Store) Fail(m Match, err error) *Rule {
	if err == nil {
		err = ErrInjected
	}
	return s.add(&Rule{m: m, before: func(_ context.Context, op Op, key string) error {
		return injected(op, key, err)
	}})
}

// Delay holds each call m selects for d before it goes on, or until its
// context ends (the call then fails with the context's error).
func (s *Store) Delay(m Match, d time.Duration) *Rule {
	return s.add(&Rule{m: m, before: func(ctx context.Context, op Op, key string) error {
		return sleep(ctx, op, key, d)
	}})
}

// Jitter is Delay by a random duration in [0, max), drawn for each call:
// calls overtake each other.
func (s *Store) Jitter(m Match, max time.Duration) *Rule {
	if max <= 0 {
		panic("faultstore: Jitter needs a positive maximum")
	}
	return s.add(&Rule{m: m, before: func(ctx context.Context, op Op, key string) error {
		return sleep(ctx, op, key, rand.N(max))
	}})
}

// Before runs fn before each call m selects, on the caller's goroutine. If
// fn returns an error the call fails with it (wrapped with the operation and
// key) without reaching the inner store. fn may use Inner to act on the
// store unobserved, and may add or remove rules.
func (s *Store) Before(m Match, fn func(op Op, key string) error) *Rule {
	return s.add(&Rule{m: m, before: func(_ context.Context, op Op, key string) error {
		if err := fn(op, key); err != nil {
			return injected(op, key, err)
		}
		return nil
	}})
}

// After runs fn once the inner store has answered a call m selects, with
// the call's error (nil on success); the call returns fn's result instead.
// Returning err keeps the outcome; returning an error for a call that
// succeeded models a request that landed but whose answer was lost. Calls
// failed before reaching the inner store do not run After hooks.
func (s *Store) After(m Match, fn func(op Op, key string, err error) error) *Rule {
	return s.add(&Rule{m: m, after: fn})
}

// Gate holds the calls its rule selects until released. See Store.Hold.
type Gate struct {
	rule    *Rule
	open    chan struct{} // closed by Release
	mu      sync.Mutex
	blocked int
	changed chan struct{} // closed and replaced whenever blocked changes
}

// Hold closes a gate on the calls m selects: each waits until the gate is
// released (and then goes on) or its context ends (and then fails with the
// context's error).
func (s *Store) Hold(m Match) *Gate {
	g := &Gate{open: make(chan struct{}), changed: make(chan struct{})}
	g.rule = &Rule{m: m, before: g.wait, onRemove: func() { close(g.open) }}
	s.add(g.rule)
	return g
}

// Release opens the gate for good: held calls go on, later ones pass. It
// removes the gate's rule and is idempotent.
func (g *Gate) Release() { g.rule.Remove() }

// Blocked returns how many calls wait at the gate now.
func (g *Gate) Blocked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.blocked
}

// Hits returns how many calls the gate has held (including those held now).
func (g *Gate) Hits() int { return g.rule.Hits() }

// WaitBlocked waits until at least n calls wait at the gate at once. It
// fails if ctx ends first or the gate is released.
func (g *Gate) WaitBlocked(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		b, changed := g.blocked, g.changed
		g.mu.Unlock()
		if b >= n {
			return nil
		}
		select {
		case <-changed:
		case <-g.open:
			return fmt.Errorf("faultstore: gate released while waiting for %d held calls (%d held)", n, b)
		case <-ctx.Done():
			return fmt.Errorf("faultstore: waiting for %d held calls (%d held): %w", n, b, ctx.Err())
		}
	}
}

func (g *Gate) setBlocked(delta int) {
	g.mu.Lock()
	g.blocked += delta
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

func (g *Gate) wait(ctx context.Context, op Op, key string) error {
	select {
	case <-g.open:
		return nil
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("faultstore: %v %q held: %w", op, key, err)
	}
	g.setBlocked(1)
	defer g.setBlocked(-1)
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("faultstore: %v %q held: %w", op, key, ctx.Err())
	}
}

func injected(op Op, key string, err error) error {
	return fmt.Errorf("faultstore: %v %q: %w", op, key, err)
}

func sleep(ctx context.Context, op Op, key string, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("faultstore: %v %q delayed: %w", op, key, err)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("faultstore: %v %q delayed: %w", op, key, ctx.Err())
	}
}

// next returns the first rule in force after id with a hook for the phase.
func (s *Store) next(id uint64, after bool) *Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		if r.id > id && (after && r.after != nil || !after && r.before != nil) {
			return r
		}
	}
	return nil
}

// before runs the rules for a call about to reach the inner store.
func (s *Store) before(ctx context.Context, op Op, key string) error {
	for r := s.next(0, false); r != nil; r = s.next(r.id, false) {
		if r.take(op, key) {
			if err := r.before(ctx, op, key); err != nil {
				return err
			}
		}
	}
	return nil
}

// after runs the After hooks for a call the inner store answered with err.
func (s *Store) after(op Op, key string, err error) error {
	for r := s.next(0, true); r != nil; r = s.next(r.id, true) {
		if r.take(op, key) {
			err = r.after(op, key, err)
		}
	}
	return err
}

// call wraps one operation: count it, run the rules, then do it.
func (s *Store) call(ctx context.Context, op Op, key string, do func() (int, error)) error {
	c := &s.counts[op]
	c.calls.Add(1)
	err := s.before(ctx, op, key)
	if err == nil {
		var n int
		n, err = do()
		err = s.after(op, key, err)
		if err == nil {
			c.bytes.Add(int64(n))
		}
	}
	if err != nil {
		c.errors.Add(1)
	}
	return err
}

// Get implements store.Store, applying the rules first.
func (s *Store) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	var b []byte
	err := s.call(ctx, OpGet, key, func() (int, error) {
		var err error
		b, err = s.inner.Get(ctx, key, off, length)
		return len(b), err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Put implements store.Store, applying the rules first.
func (s *Store) Put(ctx context.Context, key string, data []byte) (string, error) {
	var etag string
	err := s.call(ctx, OpPut, key, func() (int, error) {
		var err error
		etag, err = s.inner.Put(ctx, key, data)
		return len(data), err
	})
	if err != nil {
		return "", err
	}
	return etag, nil
}

// PutIfAbsent implements store.Store, applying the rules first.
func (s *Store) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	var etag string
	err := s.call(ctx, OpPutIfAbsent, key, func() (int, error) {
		var err error
		etag, err = s.inner.PutIfAbsent(ctx, key, data)
		return len(data), err
	})
	if err != nil {
		return "", err
	}
	return etag, nil
}

// PutIfMatch implements store.Store, applying the rules first.
func (s *Store) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (string, error) {
	var newETag string
	err := s.call(ctx, OpPutIfMatch, key, func() (int, error) {
		var err error
		newETag, err = s.inner.PutIfMatch(ctx, key, data, etag)
		return len(data), err
	})
	if err != nil {
		return "", err
	}
	return newETag, nil
}

// Head implements store.Store, applying the rules first.
func (s *Store) Head(ctx context.Context, key string) (store.Info, error) {
	var info store.Info
	err := s.call(ctx, OpHead, key, func() (int, error) {
		var err error
		info, err = s.inner.Head(ctx, key)
		return 0, err
	})
	if err != nil {
		return store.Info{}, err
	}
	return info, nil
}

// List implements store.Store, applying the rules first.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	var infos []store.Info
	err := s.call(ctx, OpList, prefix, func() (int, error) {
		var err error
		infos, err = s.inner.List(ctx, prefix)
		return 0, err
	})
	if err != nil {
		return nil, err
	}
	return infos, nil
}

// Delete implements store.Store, applying the rules first.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.call(ctx, OpDelete, key, func() (int, error) {
		return 0, s.inner.Delete(ctx, key)
	})
}

// String is the inner store's name, so that errors and logs read the same
// with or without the wrapper.
func (s *Store) String() string { return s.inner.String() }
