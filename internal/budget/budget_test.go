package budget

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// waitQueued waits until b has n waiters (no timing assumption: polls with a
// generous bound that only catches hangs).
func waitQueued(t *testing.T, b *Budget, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for b.Waiting() != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiters: %d, want %d", b.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAcquireRelease(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int64
		take      []int64
		wantInUse int64
	}{
		{"fits", 100, []int64{30, 30}, 60},
		{"exactly full", 100, []int64{60, 40}, 100},
		{"oversize clamped to the whole budget", 100, []int64{500}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.size)
			for _, n := range tc.take {
				if err := b.Acquire(context.Background(), n); err != nil {
					t.Fatal(err)
				}
			}
			if got := b.InUse(); got != tc.wantInUse {
				t.Fatalf("in use %d, want %d", got, tc.wantInUse)
			}
			for _, n := range tc.take {
				b.Release(n)
			}
			if got := b.InUse(); got != 0 {
				t.Fatalf("in use after release %d", got)
			}
		})
	}
}

// Waiters are served in arrival order: a small request that would fit does
// not overtake a large one queued before it.
func TestArrivalOrder(t *testing.T) {
	b := New(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 100); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		order []int64
		wg    sync.WaitGroup
	)
	for i, n := range []int64{80, 10, 10} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Acquire(ctx, n); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, n)
			mu.Unlock()
		}()
		waitQueued(t, b, i+1)
	}
	b.Release(20) // 20 free: the 10s fit, but the 80 is first
	if b.Waiting() != 3 {
		t.Fatalf("a later waiter overtook the first: %d waiting", b.Waiting())
	}
	b.Release(80)
	wg.Wait()
	if want := []int64{80, 10, 10}; len(order) != 3 || order[0] != 80 {
		t.Fatalf("order %v, want %v", order, want)
	}
}

// A waiter whose context ends leaves the queue with nothing taken, and the
// waiters behind it move up.
func TestCancelLeavesQueue(t *testing.T) {
	b := New(100)
	if err := b.Acquire(context.Background(), 90); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	gone := errors.New("connection gone")
	errc := make(chan error, 1)
	go func() { errc <- b.Acquire(ctx, 50) }()
	waitQueued(t, b, 1)
	second := make(chan error, 1)
	go func() { second <- b.Acquire(context.Background(), 10) }()
	waitQueued(t, b, 2)
	cancel(gone)
	if err := <-errc; !errors.Is(err, gone) {
		t.Fatalf("canceled acquire: %v, want the cause", err)
	}
	if err := <-second; err != nil { // 10 fits once the 50 left
		t.Fatal(err)
	}
	if got := b.InUse(); got != 100 {
		t.Fatalf("in use %d, want 100 (nothing leaked to the canceled waiter)", got)
	}
}

// Many goroutines acquiring, releasing and canceling never lose or leak bytes.
func TestStressNoLeak(t *testing.T) {
	b := New(1000)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				ctx, cancel := context.WithCancel(context.Background())
				if (i+j)%7 == 0 {
					cancel()
				}
				n := int64(1 + (i*31+j*17)%400)
				if err := b.Acquire(ctx, n); err == nil {
					b.Release(n)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if b.InUse() != 0 || b.Waiting() != 0 {
		t.Fatalf("in use %d, waiting %d after all released", b.InUse(), b.Waiting())
	}
}
