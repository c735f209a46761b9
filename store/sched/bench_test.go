package sched

import (
	"context"
	"testing"

	"zerofs/store"
)

// BenchmarkSchedGet measures what the scheduler adds to a Get: compare
// "sched" and "hedging" (a learned threshold: the Get runs on its own
// goroutine with a timer) with "bare", the mem store alone.
func BenchmarkSchedGet(b *testing.B) {
	ctx := context.Background()
	mem := store.NewMem()
	if _, err := mem.Put(ctx, "k", make([]byte, 4096)); err != nil {
		b.Fatal(err)
	}
	hedging := New(mem, Options{})
	for range DefaultHedgeSamples {
		hedging.Get(ctx, "k", 0, 4096)
	}
	for _, bc := range []struct {
		name string
		st   store.Store
	}{
		{"bare", mem},
		{"sched", New(mem, Options{NoHedge: true})},
		{"hedging", hedging},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.st.Get(ctx, "k", 0, 4096); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bc.st.Get(ctx, "k", 0, 4096); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
