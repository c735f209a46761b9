package fs

import (
	"context"
	"fmt"
)

// Admission to dirty memory. A mutation that adds data first waits here
// until the dirty buffers of unapplied batches, plus what earlier admitted
// mutations are about to add, are under MaxDirtyBytes: back-pressure while
// the store is slow or down, instead of unbounded memory.
//
// Waiters are admitted strictly in arrival order, and a waiter whose
// context ends (its connection is gone: see docs/durability.md, "Requests
// of a connection that dies") leaves the queue without beginning. Both
// matter for correctness, not only fairness: a write that waited through an
// outage must never be applied after a newer write to the same block that
// another connection made and flushed meanwhile. Arrival order keeps the
// older write ahead of the newer one; cancellation keeps a write whose
// client gave up (and may have re-sent it elsewhere) from being applied at
// all once the client is known to be gone.
//
// Arrival order holds for applying, not only for admitting: a mutation
// admitted from the queue finishes before the next waiter is looked at
// (memDraining), so two writes to one block that both waited are applied
// in the order they arrived. That serializes mutations only while some
// wait, i.e. while the store, not the CPU, is the limit.
//
// The bound is soft by design: admission needs the total under the limit,
// not room for the whole request, so a request larger than the budget
// still gets in once everything before it drained.

type memWaiter struct {
	wake chan struct{} // buffered: a wake-up is never lost
}

// admission is what reserve granted; hand it back to unreserve.
type admission struct {
	n      int64
	queued bool // admitted from the queue: the next waiter waits for it
}

// reserve admits a mutation that may add up to n bytes of dirty data. The
// caller must call unreserve once the bytes are in the open batch (or were
// not added). An error means nothing was admitted.
func (f *FS) reserve(ctx context.Context, n int64) (admission, error) {
	if err := f.Err(); err != nil {
		return admission{}, f.writeErr(err)
	}
	if err := ctx.Err(); err != nil {
		return admission{}, canceled(ctx)
	}
	// The fast path takes no lock (no global lock on the data path).
	// Reading the queue length before memDraining pairs with the queue
	// setting memDraining before it shrinks, so a newcomer never slips
	// past a waiter being admitted.
	if f.memQLen.Load() == 0 && !f.memDraining.Load() && f.room() {
		f.reserved.Add(n)
		return admission{n: n}, nil
	}
	f.memMu.Lock()
	w := &memWaiter{wake: make(chan struct{}, 1)}
	f.memQ = append(f.memQ, w)
	f.memQLen.Store(int32(len(f.memQ)))
	f.memWaits.Add(1)
	for {
		if err := f.Err(); err != nil {
			f.leaveQueueLocked(w)
			f.memMu.Unlock()
			return admission{}, f.writeErr(err)
		}
		if f.memQ[0] == w && !f.memDraining.Load() && f.room() {
			f.memDraining.Store(true)
			f.memQ = f.memQ[1:]
			f.memQLen.Store(int32(len(f.memQ)))
			f.reserved.Add(n)
			f.memMu.Unlock()
			return admission{n: n, queued: true}, nil
		}
		f.kickSeal()
		f.memMu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			f.memMu.Lock()
			f.leaveQueueLocked(w)
			f.memMu.Unlock()
			return admission{}, canceled(ctx)
		}
		f.memMu.Lock()
	}
}

// unreserve ends an admission made by reserve.
func (f *FS) unreserve(a admission) {
	f.reserved.Add(-a.n)
	if !a.queued && f.memQLen.Load() == 0 {
		return
	}
	f.memMu.Lock()
	if a.queued {
		f.memDraining.Store(false)
	}
	f.wakeHeadLocked()
	f.memMu.Unlock()
}

// room reports whether dirty memory is under the limit.
func (f *FS) room() bool {
	dirty, _ := f.dirtyBytes()
	return dirty+f.reserved.Load() < f.opts.MaxDirtyBytes
}

// leaveQueueLocked removes w from the queue and wakes whoever is first now.
func (f *FS) leaveQueueLocked(w *memWaiter) {
	for i, x := range f.memQ {
		if x == w {
			f.memQ = append(f.memQ[:i], f.memQ[i+1:]...)
			break
		}
	}
	f.memQLen.Store(int32(len(f.memQ)))
	f.wakeHeadLocked()
}

// wakeHeadLocked asks the first waiter to look again. memMu held.
func (f *FS) wakeHeadLocked() {
	if len(f.memQ) > 0 {
		select {
		case f.memQ[0].wake <- struct{}{}:
		default:
		}
	}
}

// wakeAllLocked asks every waiter to look again (the filesystem failed).
func (f *FS) wakeAllLocked() {
	for _, w := range f.memQ {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// canceled is the error of a request whose context ended before it began.
func canceled(ctx context.Context) error {
	return fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
}
