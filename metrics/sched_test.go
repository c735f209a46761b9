package metrics

import (
	"context"
	"testing"

	"zerofs/store"
	"zerofs/store/sched"
)

func TestWatchSched(t *testing.T) {
	m := New()
	s := sched.New(m.Store(store.NewMem(), "main"), sched.Options{MaxRequests: 8})
	m.WatchSched("main", s)
	ctx := context.Background()
	if _, err := s.Put(ctx, "k", []byte("data")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(sched.WithClass(ctx, sched.Background), "k", 0, -1); err != nil {
		t.Fatal(err)
	}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]int{}
	for _, f := range families {
		samples[f.GetName()] = len(f.GetMetric())
		if f.GetName() == "zerofs_store_max_requests" {
			if v := f.GetMetric()[0].GetGauge().GetValue(); v != 8 {
				t.Errorf("zerofs_store_max_requests = %v, want 8", v)
			}
		}
	}
	for name, want := range map[string]int{
		"zerofs_store_inflight":             sched.NumClasses + 1, // and hedge
		"zerofs_store_waiting":              sched.NumClasses,
		"zerofs_store_waits_total":          sched.NumClasses,
		"zerofs_store_wait_seconds_total":   sched.NumClasses,
		"zerofs_store_max_requests":         1,
		"zerofs_store_hedges_total":         1,
		"zerofs_store_hedges_won_total":     1,
		"zerofs_store_hedges_skipped_total": 1,
		"zerofs_store_requests_total":       2, // put and get, from the instrumented store below
	} {
		if samples[name] != want {
			t.Errorf("%s: %d samples, want %d", name, samples[name], want)
		}
	}
}
