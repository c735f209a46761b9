package sched

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
)

// fill starts one held Get per class listed, on keys fill/<i>, each at its
// own gate, and waits until all are held. It returns the gates.
func (h *harness) fill(t *testing.T, ctx context.Context, classes ...Class) ([]*faultstore.Gate, []<-chan error) {
	t.Helper()
	var gates []*faultstore.Gate
	var errs []<-chan error
	for i, c := range classes {
		key := fmt.Sprintf("fill/%d", i)
		g := h.fs.Hold(faultstore.On(faultstore.OpGet).Key(key))
		errs = append(errs, h.getAsync(ctx, c, key))
		if err := g.WaitBlocked(ctx, 1); err != nil {
			t.Fatal(err)
		}
		gates = append(gates, g)
	}
	return gates, errs
}

// queue starts a Get of key in class c and waits until it is queued.
func (h *harness) queue(t *testing.T, ctx context.Context, c Class, key string) <-chan error {
	t.Helper()
	ch := h.getAsync(ctx, c, key)
	if got := recv(t, ctx, h.queued, "a queued "+c.String()+" request"); got != c {
		t.Fatalf("queued class %v, want %v", got, c)
	}
	return ch
}

func TestPriorityOrder(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{MaxRequests: 8, NoHedge: true}) // caps: readahead 4, background 2
	// Every slot taken, each class with a request in flight (so no
	// guaranteed share applies), both other classes under their caps.
	gates, _ := h.fill(t, ctx, Demand, Demand, Demand, Demand, Demand, Demand, ReadAhead, Background)
	got := h.record(faultstore.On(faultstore.OpGet).Prefix("q/"))
	// Queued in the reverse of priority order.
	bg := h.queue(t, ctx, Background, "q/bg")
	ra := h.queue(t, ctx, ReadAhead, "q/ra")
	d := h.queue(t, ctx, Demand, "q/d")
	if st := h.Stats(); st.Classes[Demand].Waiting != 1 || st.Classes[ReadAhead].Waiting != 1 || st.Classes[Background].Waiting != 1 {
		t.Fatalf("waiting = %+v, want one per class", st.Classes)
	}
	gates[0].Release() // one slot frees: the queue drains through it, one at a time
	for _, ch := range []<-chan error{d, ra, bg} {
		wantNil(t, ctx, ch, "queued Get")
	}
	if want := "[q/d q/ra q/bg]"; got.String() != want {
		t.Fatalf("admitted in order %s, want %s", got, want)
	}
}

func TestFIFOWithinClass(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{MaxRequests: 2, NoHedge: true})
	gates, _ := h.fill(t, ctx, Demand, Demand)
	got := h.record(faultstore.On(faultstore.OpGet).Prefix("q/"))
	var chs []<-chan error
	for i := range 5 {
		chs = append(chs, h.queue(t, ctx, Demand, fmt.Sprintf("q/%d", i)))
	}
	gates[0].Release()
	for _, ch := range chs {
		wantNil(t, ctx, ch, "queued Get")
	}
	if want := "[q/0 q/1 q/2 q/3 q/4]"; got.String() != want {
		t.Fatalf("admitted in order %s, want %s", got, want)
	}
}

// A class with waiters and nothing in flight goes before Demand requests
// that queued earlier: demand load cannot starve the other classes.
func TestGuaranteedShare(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{MaxRequests: 4, NoHedge: true})
	gates, _ := h.fill(t, ctx, Demand, Demand, Demand, Demand)
	got := h.record(faultstore.On(faultstore.OpGet).Prefix("q/"))
	var chs []<-chan error
	chs = append(chs, h.queue(t, ctx, Demand, "q/d1"))
	chs = append(chs, h.queue(t, ctx, Demand, "q/d2"))
	chs = append(chs, h.queue(t, ctx, Background, "q/bg"))
	chs = append(chs, h.queue(t, ctx, ReadAhead, "q/ra"))
	chs = append(chs, h.queue(t, ctx, Demand, "q/d3"))
	gates[0].Release()
	for _, ch := range chs {
		wantNil(t, ctx, ch, "queued Get")
	}
	if want := "[q/ra q/bg q/d1 q/d2 q/d3]"; got.String() != want {
		t.Fatalf("admitted in order %s, want %s", got, want)
	}
}

// Under a demand load that keeps every slot busy, Background and
// ReadAhead requests still finish.
func TestNoStarvationUnderLoad(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{MaxRequests: 2, NoHedge: true})
	// Six loops of slow Demand Gets through two slots: Demand requests
	// are nearly always waiting.
	h.fs.Delay(faultstore.On(faultstore.OpGet).Prefix("load/"), time.Millisecond)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := h.Get(ctx, fmt.Sprintf("load/%d", i), 0, -1); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 20 {
		wantNil(t, ctx, h.getAsync(ctx, Background, "bg"), "Background Get")
		wantNil(t, ctx, h.getAsync(ctx, ReadAhead, "ra"), "ReadAhead Get")
	}
	stop.Store(true)
	wg.Wait()
}

// ReadAhead may hold at most half the slots and Background a quarter,
// even when more are free: the rest is kept for Demand.
func TestClassCaps(t *testing.T) {
	for _, tc := range []struct {
		class Class
		cap   int
	}{{ReadAhead, 4}, {Background, 2}} {
		t.Run(tc.class.String(), func(t *testing.T) {
			ctx := testCtx(t)
			h := newHarness(t, Options{MaxRequests: 8, NoHedge: true})
			g := h.fs.Hold(faultstore.On(faultstore.OpGet).Prefix("held/"))
			var chs []<-chan error
			for i := range tc.cap {
				chs = append(chs, h.getAsync(ctx, tc.class, fmt.Sprintf("held/%d", i)))
			}
			if err := g.WaitBlocked(ctx, tc.cap); err != nil {
				t.Fatal(err)
			}
			chs = append(chs, h.queue(t, ctx, tc.class, "held/over"))
			// Demand still gets in, more than once at a time.
			dg := h.fs.Hold(faultstore.On(faultstore.OpGet).Prefix("demand/"))
			d1 := h.getAsync(ctx, Demand, "demand/1")
			d2 := h.getAsync(ctx, Demand, "demand/2")
			if err := dg.WaitBlocked(ctx, 2); err != nil {
				t.Fatal(err)
			}
			st := h.Stats()
			if c := st.Classes[tc.class]; c.InFlight != tc.cap || c.Waiting != 1 {
				t.Fatalf("%v: %+v, want %d in flight and 1 waiting", tc.class, c, tc.cap)
			}
			if c := st.Classes[Demand]; c.InFlight != 2 || c.Waiting != 0 {
				t.Fatalf("demand: %+v, want 2 in flight", c)
			}
			dg.Release()
			wantNil(t, ctx, d1, "Demand Get")
			wantNil(t, ctx, d2, "Demand Get")
			g.Release()
			for _, ch := range chs {
				wantNil(t, ctx, ch, "held Get")
			}
		})
	}
}

func TestCancelledWaiter(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{MaxRequests: 1, NoHedge: true})
	gates, fills := h.fill(t, ctx, Demand)

	wctx, cancel := context.WithCancel(ctx)
	w := h.queue(t, wctx, Demand, "q/cancelled")
	cancel()
	err := recv(t, ctx, w, "the cancelled waiter")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "q/cancelled") {
		t.Fatalf("cancelled waiter: %v, want context.Canceled naming the key", err)
	}
	st := h.Stats()
	if c := st.Classes[Demand]; c.InFlight != 1 || c.Waiting != 0 || c.Waits != 1 {
		t.Fatalf("after cancel: %+v, want 1 in flight, 0 waiting, 1 wait", c)
	}
	if n := h.fs.Count(faultstore.OpGet).Calls; n != 1 {
		t.Fatalf("%d Gets reached the store, want 1 (the cancelled one never does)", n)
	}
	// The slot is still taken: the next request waits too.
	next := h.queue(t, ctx, Demand, "q/next")
	gates[0].Release()
	wantNil(t, ctx, fills[0], "the held Get")
	wantNil(t, ctx, next, "the next Get")
	st = h.Stats()
	if c := st.Classes[Demand]; c.InFlight != 0 || c.Waiting != 0 {
		t.Fatalf("at the end: %+v, want nothing in flight or waiting", c)
	}
	if e := st.Ops[OpGet]; e.Requests != 3 || e.Errors != 1 {
		t.Fatalf("Get stats %+v, want 3 requests, 1 error", e)
	}
}

// Many requests of random classes, some cancelled, through a small
// limit: the store never sees more than the limit at once, and at the end
// nothing is in flight or waiting.
func TestLimitHolds(t *testing.T) {
	ctx := testCtx(t)
	const limit = 3
	h := newHarness(t, Options{MaxRequests: limit, NoHedge: true})
	var cur, peak atomic.Int64
	h.fs.Jitter(faultstore.On(), 200*time.Microsecond) // requests overlap
	h.fs.Before(faultstore.On(), func(faultstore.Op, string) error {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		return nil
	})
	h.fs.After(faultstore.On(), func(_ faultstore.Op, _ string, err error) error {
		cur.Add(-1)
		return err
	})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := Class(rand.N(NumClasses))
			rctx, cancel := context.WithCancel(WithClass(ctx, c))
			defer cancel()
			if i%5 == 0 {
				cancel()
			}
			key := fmt.Sprintf("k/%d", i%7)
			if i%2 == 0 {
				h.Put(rctx, key, []byte("x"))
			} else {
				h.Get(rctx, key, 0, -1)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Fatalf("%d requests at the store at once, limit %d", p, limit)
	}
	st := h.Stats()
	for c, cs := range st.Classes {
		if cs.InFlight != 0 || cs.Waiting != 0 {
			t.Fatalf("%v: %+v at the end", Class(c), cs)
		}
	}
	if n := st.Ops[OpGet].Requests + st.Ops[OpPut].Requests; n != 200 {
		t.Fatalf("%d requests counted, want 200", n)
	}
}
