package sched

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
)

// These tests synchronise on the scheduler's test hooks and faultstore's
// gates, never on sleeps, and assert orders and counts, never durations:
// they run on shared, noisy machines.

// harness is a Store over a faultstore over a mem store, with the test
// hooks feeding channels.
type harness struct {
	*Store
	fs        *faultstore.Store
	queued    chan Class
	decisions chan decision
	done      chan raceEvent
}

type decision struct {
	key    string
	hedged bool
}

type raceEvent struct {
	key   string
	hedge bool
	err   error
}

func newHarness(t *testing.T, o Options) *harness {
	t.Helper()
	fs := faultstore.New(store.NewMem())
	h := &harness{
		Store:     New(fs, o),
		fs:        fs,
		queued:    make(chan Class, 1000),
		decisions: make(chan decision, 1000),
		done:      make(chan raceEvent, 1000),
	}
	h.hooks = hooks{
		queued:        func(c Class) { h.queued <- c },
		hedgeDecision: func(key string, hedged bool) { h.decisions <- decision{key, hedged} },
		raceDone:      func(key string, hedge bool, err error) { h.done <- raceEvent{key, hedge, err} },
	}
	t.Cleanup(fs.Clear) // release every gate, so no goroutine outlives the test
	return h
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// recv waits for a value from ch, failing the test if ctx ends first.
func recv[T any](t *testing.T, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, ctx.Err())
		panic("unreachable")
	}
}

// put stores data at key behind the scheduler's back.
func (h *harness) put(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := h.fs.Inner().Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

// warm makes n successful Gets of key (to the end), which teaches the
// hedger the unsized class's latency.
func (h *harness) warm(t *testing.T, key string, n int) {
	t.Helper()
	h.put(t, key, []byte("warm"))
	// In the Background class, which is never hedged: on a loaded machine a
	// warm-up GET slower than the p99 learned so far would otherwise be
	// hedged, and its decision, race and counts would be mistaken for the
	// test's own.
	for range n {
		if _, err := h.Get(WithClass(context.Background(), Background), key, 0, -1); err != nil {
			t.Fatal(err)
		}
	}
	if h.hedge.delay(unsizedClass) == 0 {
		t.Fatalf("no hedging threshold after %d samples", n)
	}
}

// async runs f on a goroutine; the returned channel yields its error.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// getAsync starts a Get of key in class c.
func (h *harness) getAsync(ctx context.Context, c Class, key string) <-chan error {
	return async(func() error {
		_, err := h.Get(WithClass(ctx, c), key, 0, -1)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
}

// order records the keys of the calls a Match selects, in the order they
// reach the inner store.
type order struct {
	mu   sync.Mutex
	keys []string
}

func (h *harness) record(m faultstore.Match) *order {
	o := &order{}
	h.fs.Before(m, func(_ faultstore.Op, key string) error {
		o.mu.Lock()
		o.keys = append(o.keys, key)
		o.mu.Unlock()
		return nil
	})
	return o
}

func (o *order) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprint(o.keys)
}

func wantNil(t *testing.T, ctx context.Context, ch <-chan error, what string) {
	t.Helper()
	if err := recv(t, ctx, ch, what); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
