package sched

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
)

// hedgeOptions hedge after 1ms at least: the warm-up on a mem store makes
// the learned p99 tiny, so the threshold is about that (longer on a slow
// machine, which changes nothing but the tests' duration).
var hedgeOptions = Options{MinHedgeDelay: time.Millisecond}

// doneEvents collects n raceDone events.
func (h *harness) doneEvents(t *testing.T, ctx context.Context, n int) (primary, hedge []raceEvent) {
	t.Helper()
	for range n {
		ev := recv(t, ctx, h.done, "a request of a hedged Get to return")
		if ev.hedge {
			hedge = append(hedge, ev)
		} else {
			primary = append(primary, ev)
		}
	}
	return primary, hedge
}

func (h *harness) wantIdle(t *testing.T) {
	t.Helper()
	st := h.Stats()
	for c, cs := range st.Classes {
		if cs.InFlight != 0 || cs.Waiting != 0 {
			t.Fatalf("%v: %+v, want nothing in flight or waiting", Class(c), cs)
		}
	}
	if st.HedgesInFlight != 0 {
		t.Fatalf("%d hedges in flight, want 0", st.HedgesInFlight)
	}
}

func TestNoHedgeBeforeEnoughSamples(t *testing.T) {
	h := newHarness(t, hedgeOptions)
	h.put(t, "k", []byte("x"))
	for range DefaultHedgeSamples - 1 {
		if _, err := h.Get(t.Context(), "k", 0, -1); err != nil {
			t.Fatal(err)
		}
	}
	if d := h.hedge.delay(unsizedClass); d != 0 {
		t.Fatalf("threshold %v after %d samples, want none", d, DefaultHedgeSamples-1)
	}
	h.warm(t, "k", 1)
	if d := h.hedge.delay(sizeClass(4096)); d != 0 {
		t.Fatalf("the 4 KiB class learned from unsized Gets: %v", d)
	}
}

// A Get held at the store past its threshold is hedged; the hedge's
// answer is returned and the first request cancelled.
func TestHedgeWins(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, hedgeOptions)
	h.warm(t, "k", DefaultHedgeSamples)
	g := h.fs.Hold(faultstore.On(faultstore.OpGet).Key("k").Times(1)) // the first call only, for ever
	b, err := h.Get(ctx, "k", 0, -1)
	if err != nil || string(b) != "warm" {
		t.Fatalf("hedged Get = %q, %v", b, err)
	}
	if d := recv(t, ctx, h.decisions, "the hedge decision"); !d.hedged || d.key != "k" {
		t.Fatalf("decision %+v, want k hedged", d)
	}
	primary, hedge := h.doneEvents(t, ctx, 2)
	if len(primary) != 1 || !errors.Is(primary[0].err, context.Canceled) {
		t.Fatalf("the first request ended with %+v, want it cancelled", primary)
	}
	if len(hedge) != 1 || hedge[0].err != nil {
		t.Fatalf("the hedge ended with %+v", hedge)
	}
	if g.Hits() != 1 || g.Blocked() != 0 {
		t.Fatalf("gate: %d hits, %d blocked; want 1, 0", g.Hits(), g.Blocked())
	}
	st := h.Stats()
	if st.Hedges != 1 || st.HedgesWon != 1 || st.HedgesSkipped != 0 {
		t.Fatalf("hedges %d, won %d, skipped %d; want 1, 1, 0", st.Hedges, st.HedgesWon, st.HedgesSkipped)
	}
	want := OpStats{Requests: DefaultHedgeSamples + 1, BytesIn: 4 * (DefaultHedgeSamples + 1)}
	if st.Ops[OpGet] != want {
		t.Fatalf("Get stats %+v, want %+v (the hedge is not a request of its own)", st.Ops[OpGet], want)
	}
	if c := h.fs.Count(faultstore.OpGet); c.Calls != DefaultHedgeSamples+2 || c.Errors != 1 {
		t.Fatalf("the store saw %+v, want %d calls, 1 error (the cancelled one)", c, DefaultHedgeSamples+2)
	}
	h.wantIdle(t)
}

// blockGets makes the Gets of key block at the store, ignoring their
// context, until the test answers them: call i (from 0) waits for
// answers[i] and fails with what it receives. entered tells the calls'
// arrival.
func (h *harness) blockGets(key string, answers []chan error) <-chan int {
	entered := make(chan int, len(answers))
	var n atomic.Int32
	h.fs.Before(faultstore.On(faultstore.OpGet).Key(key), func(faultstore.Op, string) error {
		i := int(n.Add(1)) - 1
		entered <- i
		return <-answers[i]
	})
	return entered
}

// A Get returns as soon as its context ends, even though the store does
// not let go of its requests; their slots come back when it does.
func TestHedgedGetReturnsWhenContextEnds(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, hedgeOptions)
	h.warm(t, "k", DefaultHedgeSamples)
	answers := []chan error{make(chan error, 1), make(chan error, 1)}
	entered := h.blockGets("k", answers)
	gctx, cancel := context.WithCancel(ctx)
	res := async(func() error { _, err := h.Get(gctx, "k", 0, -1); return err })
	recv(t, ctx, entered, "the first request")
	if d := recv(t, ctx, h.decisions, "the hedge decision"); !d.hedged {
		t.Fatal("not hedged")
	}
	recv(t, ctx, entered, "the hedge")
	cancel()
	if err := recv(t, ctx, res, "the Get"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get: %v, want context.Canceled", err)
	}
	if st := h.Stats(); st.Classes[Demand].InFlight != 1 || st.HedgesInFlight != 1 {
		t.Fatalf("the requests still run at the store, but the scheduler counts %d + %d", st.Classes[Demand].InFlight, st.HedgesInFlight)
	}
	answers[0] <- nil
	answers[1] <- nil
	h.doneEvents(t, ctx, 2)
	h.wantIdle(t)
	if st := h.Stats(); st.Ops[OpGet].Errors != 1 || st.HedgesWon != 0 {
		t.Fatalf("Get stats %+v, hedges won %d; want 1 error, none won", st.Ops[OpGet], st.HedgesWon)
	}
}

// The race's rules: a failure waits for the twin; an answer (success or
// not found) ends the race; when both fail the first request's error is
// returned unchanged.
func TestHedgeRace(t *testing.T) {
	errPrimary := errors.New("primary failed")
	errHedge := errors.New("hedge failed")
	for _, tc := range []struct {
		name    string
		first   int // which request is answered first: 0 the primary, 1 the hedge
		answers []error
		wait    bool  // the Get waits for the second answer
		want    error // nil: the content
		won     int64
	}{
		{"primary fails, hedge answers", 0, []error{errPrimary, nil}, true, nil, 1},
		{"hedge fails, primary answers", 1, []error{nil, errHedge}, true, nil, 0},
		{"both fail, hedge first", 1, []error{errPrimary, errHedge}, true, errPrimary, 0},
		{"both fail, primary first", 0, []error{errPrimary, errHedge}, true, errPrimary, 0},
		{"primary not found", 0, []error{store.ErrNotFound, nil}, false, store.ErrNotFound, 0},
		{"hedge not found", 1, []error{nil, store.ErrNotFound}, false, store.ErrNotFound, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			h := newHarness(t, hedgeOptions)
			h.warm(t, "k", DefaultHedgeSamples)
			answers := []chan error{make(chan error, 1), make(chan error, 1)}
			entered := h.blockGets("k", answers)
			res := make(chan []byte, 1)
			errc := async(func() error { b, err := h.Get(ctx, "k", 0, -1); res <- b; return err })
			recv(t, ctx, entered, "the first request")
			recv(t, ctx, h.decisions, "the hedge decision")
			recv(t, ctx, entered, "the hedge")

			answers[tc.first] <- tc.answers[tc.first]
			second := 1 - tc.first
			if tc.wait {
				primary, hedge := h.doneEvents(t, ctx, 1)
				if len(primary)+len(hedge) != 1 || len(hedge) == 1 != (tc.first == 1) {
					t.Fatalf("the wrong request returned: %+v %+v", primary, hedge)
				}
				answers[second] <- tc.answers[second]
			}
			err := recv(t, ctx, errc, "the Get")
			b := <-res
			if tc.want == nil {
				if err != nil || string(b) != "warm" {
					t.Fatalf("Get = %q, %v; want the content", b, err)
				}
			} else if !errors.Is(err, tc.want) || (tc.want == errPrimary && errors.Is(err, errHedge)) {
				t.Fatalf("Get: %v, want %v", err, tc.want)
			}
			if tc.wait {
				h.doneEvents(t, ctx, 1)
			} else {
				answers[second] <- tc.answers[second] // the loser, cancelled, still returns
				h.doneEvents(t, ctx, 2)
			}
			h.wantIdle(t)
			if st := h.Stats(); st.Hedges != 1 || st.HedgesWon != tc.won {
				t.Fatalf("hedges %d, won %d; want 1, %d", st.Hedges, st.HedgesWon, tc.won)
			}
		})
	}
}

// Puts, conditional puts, deletes, heads and lists are never hedged, and
// neither are Background Gets: held far past the threshold (a Demand Get
// started after them is hedged meanwhile), each reaches the store once.
func TestOnlyDemandAndReadAheadGetsAreHedged(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, hedgeOptions)
	h.warm(t, "k", DefaultHedgeSamples)
	h.put(t, "bg", []byte("background"))
	etag, err := h.fs.Inner().Put(ctx, "pm", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{"p": true, "pa": true, "pm": true, "del": true, "head": true, "list/": true, "bg": true}
	g := h.fs.Hold(faultstore.On().Where(func(k string) bool { return held[k] }))
	var chs []<-chan error
	add := func(f func() error) { chs = append(chs, async(f)) }
	add(func() error { _, err := h.Put(ctx, "p", []byte("x")); return err })
	add(func() error { _, err := h.PutIfAbsent(ctx, "pa", []byte("x")); return err })
	add(func() error { _, err := h.PutIfMatch(ctx, "pm", []byte("v2"), etag); return err })
	add(func() error { return h.Delete(ctx, "del") })
	add(func() error {
		_, err := h.Head(ctx, "head")
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	add(func() error { _, err := h.List(ctx, "list/"); return err })
	add(func() error { _, err := h.Get(WithClass(ctx, Background), "bg", 0, -1); return err })
	if err := g.WaitBlocked(ctx, len(held)); err != nil {
		t.Fatal(err)
	}

	// A Demand and a ReadAhead Get started now are hedged once past the
	// threshold, so by then the held requests have been running longer.
	for _, c := range []Class{Demand, ReadAhead} {
		kg := h.fs.Hold(faultstore.On(faultstore.OpGet).Key("k").Times(1))
		if b, err := h.Get(WithClass(ctx, c), "k", 0, -1); err != nil || string(b) != "warm" {
			t.Fatalf("%v Get = %q, %v", c, b, err)
		}
		if d := recv(t, ctx, h.decisions, "the hedge decision"); d.key != "k" || !d.hedged {
			t.Fatalf("decision %+v, want k hedged", d)
		}
		h.doneEvents(t, ctx, 2)
		kg.Release()
	}

	if g.Hits() != len(held) {
		t.Fatalf("the held requests reached the store %d times, want %d (once each)", g.Hits(), len(held))
	}
	g.Release()
	for _, ch := range chs {
		wantNil(t, ctx, ch, "a held request")
	}
	select {
	case d := <-h.decisions:
		t.Fatalf("hedge decision for %q", d.key)
	default:
	}
	for _, op := range []faultstore.Op{faultstore.OpPut, faultstore.OpPutIfAbsent, faultstore.OpPutIfMatch, faultstore.OpDelete, faultstore.OpHead, faultstore.OpList} {
		if n := h.fs.Count(op).Calls; n != 1 {
			t.Errorf("%v reached the store %d times, want 1", op, n)
		}
	}
	if st := h.Stats(); st.Hedges != 2 {
		t.Fatalf("%d hedges, want 2", st.Hedges)
	}
	h.wantIdle(t)
}

// At most HedgeRate of the Gets are hedged (plus a burst): Gets that pass
// their threshold beyond that are not. Exact: the test replays the
// budget's arithmetic.
func TestHedgeRateCap(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, hedgeOptions)
	h.warm(t, "k", DefaultHedgeSamples)
	credit := int64(DefaultHedgeSamples) * h.hedge.rate // what the warm-up earned
	const n = 40
	var want, got []int
	for i := range n {
		key := fmt.Sprintf("slow/%d", i)
		h.put(t, key, []byte("slow"))
		g := h.fs.Hold(faultstore.On(faultstore.OpGet).Key(key).Times(1))
		res := async(func() error { _, err := h.Get(ctx, key, 0, -1); return err })
		credit = min(credit+h.hedge.rate, hedgeBurst*creditUnit)
		if credit >= creditUnit {
			credit -= creditUnit
			want = append(want, i)
		}
		d := recv(t, ctx, h.decisions, "the hedge decision")
		if d.hedged {
			got = append(got, i)
		} else {
			g.Release() // the Get's only request goes on
		}
		wantNil(t, ctx, res, "the slow Get")
		h.doneEvents(t, ctx, map[bool]int{true: 2, false: 1}[d.hedged])
		g.Release()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("hedged Gets %v, want %v", got, want)
	}
	st := h.Stats()
	if st.Hedges != int64(len(want)) || st.HedgesSkipped != int64(n-len(want)) || st.Hedges > (DefaultHedgeSamples+n)*5/100 {
		t.Fatalf("hedges %d, skipped %d; want %d, %d", st.Hedges, st.HedgesSkipped, len(want), n-len(want))
	}
	h.wantIdle(t)
}

// Hedges run in a pool of their own, MaxRequests/8 at least 1, and never
// wait for it: a Get past its threshold with the pool taken is not hedged.
func TestHedgePool(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{MaxRequests: 8, MinHedgeDelay: time.Millisecond, HedgeRate: 1})
	h.warm(t, "k", DefaultHedgeSamples)
	h.put(t, "a", []byte("a"))
	h.put(t, "b", []byte("b"))
	g := h.fs.Hold(faultstore.On(faultstore.OpGet).Where(func(k string) bool { return k == "a" || k == "b" }))
	a := h.getAsync(ctx, Demand, "a")
	if d := recv(t, ctx, h.decisions, "a's hedge decision"); !d.hedged {
		t.Fatal("a not hedged")
	}
	if err := g.WaitBlocked(ctx, 2); err != nil {
		t.Fatal(err)
	}
	b := h.getAsync(ctx, Demand, "b")
	if d := recv(t, ctx, h.decisions, "b's hedge decision"); d.hedged {
		t.Fatal("b hedged with the pool taken")
	}
	st := h.Stats()
	if st.HedgeLimit != 1 || st.HedgesInFlight != 1 || st.Hedges != 1 || st.HedgesSkipped != 1 {
		t.Fatalf("stats %+v, want a pool of 1 in use, 1 hedge, 1 skipped", st)
	}
	g.Release()
	wantNil(t, ctx, a, "a")
	wantNil(t, ctx, b, "b")
	h.doneEvents(t, ctx, 3)
	h.wantIdle(t)
}

func TestSizeClass(t *testing.T) {
	for _, tc := range []struct {
		length int64
		want   int
	}{{-1, unsizedClass}, {0, 0}, {256 << 10, 0}, {256<<10 + 1, 1}, {1 << 20, 1}, {4 << 20, 2}, {16 << 20, 3}, {16<<20 + 1, 4}, {1 << 40, 4}} {
		if got := sizeClass(tc.length); got != tc.want {
			t.Errorf("sizeClass(%d) = %d, want %d", tc.length, got, tc.want)
		}
	}
}

// The threshold is the p99 of the window times the factor, at least the
// minimum delay.
func TestThreshold(t *testing.T) {
	h := hedger{minDelay: time.Millisecond, factor: 2, minSamples: 50}
	for i := range 100 {
		h.record(0, time.Duration(i+1)*time.Millisecond) // 1..100 ms
	}
	// recomputed at sample 96 (a multiple of 32): p99 of 1..96 ms is 96 ms.
	if d := h.delay(0); d != 192*time.Millisecond {
		t.Fatalf("threshold %v, want 192ms", d)
	}
	h = hedger{minDelay: time.Second, factor: 1, minSamples: 50}
	for range 50 {
		h.record(1, time.Millisecond)
	}
	if d := h.delay(1); d != time.Second {
		t.Fatalf("threshold %v, want the minimum, 1s", d)
	}
}

func TestKthLargest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		s := make([]time.Duration, 1+r.IntN(600))
		for i := range s {
			s[i] = time.Duration(r.IntN(50))
		}
		m := 1 + r.IntN(min(8, len(s)))
		sorted := slices.Clone(s)
		slices.Sort(sorted)
		if got, want := kthLargest(s, m), sorted[len(s)-m]; got != want {
			t.Fatalf("kthLargest(%v, %d) = %v, want %v", s, m, got, want)
		}
	}
}
