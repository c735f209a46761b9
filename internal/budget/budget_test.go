package budget

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"zerofs/internal/testutil"
)

// waitQueued waits until b has n waiters.
func waitQueued(t *testing.T, b *Budget, n int) {
	t.Helper()
	testutil.Eventually(t, func() bool { return b.Waiting() == n },
		func() string { return fmt.Sprintf("waiters: %d, want %d", b.Waiting(), n) })
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
	sizes := []int64{80, 10, 10}
	granted := make([]chan error, len(sizes))
	for i, n := range sizes {
		granted[i] = make(chan error, 1)
		go func() { granted[i] <- b.Acquire(ctx, n) }()
		waitQueued(t, b, i+1)
	}
	b.Release(20) // 20 free: the 10s would fit, but the 80 is first
	if b.Waiting() != 3 {
		t.Fatalf("a later waiter overtook the first: %d waiting", b.Waiting())
	}
	b.Release(60) // 80 free: exactly the first
	if err := <-granted[0]; err != nil {
		t.Fatal(err)
	}
	if b.Waiting() != 2 {
		t.Fatalf("%d waiting after the first was served, want 2", b.Waiting())
	}
	b.Release(20)
	for _, ch := range granted[1:] {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
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
