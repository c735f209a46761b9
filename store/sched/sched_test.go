package sched

import (
	"testing"

	"zerofs/store"
	"zerofs/store/storetest"
)

// The scheduler is a store like any other: the conformance suite passes
// through it with the defaults, through a limit of one (every concurrent
// request of the suite queues), and with every Get hedged (the suite then
// checks the hedges' answers).
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"defaults", Options{}},
		{"limit1", Options{MaxRequests: 1}},
		{"hedgeAll", Options{MinHedgeDelay: 1, HedgeSamples: 1, HedgeRate: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				return New(store.NewMem(), tc.o)
			})
		})
	}
}

func TestClassOf(t *testing.T) {
	ctx := t.Context()
	if c := ClassOf(ctx); c != Demand {
		t.Fatalf("no class: %v, want demand", c)
	}
	for c := range Class(NumClasses) {
		if got := ClassOf(WithClass(ctx, c)); got != c {
			t.Fatalf("WithClass(%v): ClassOf = %v", c, got)
		}
	}
	if got := ClassOf(WithClass(WithClass(ctx, Background), ReadAhead)); got != ReadAhead {
		t.Fatalf("the innermost class wins: got %v", got)
	}
}
