package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
)

// waitMemQueue waits until n mutations are queued for dirty memory.
func waitMemQueue(t *testing.T, f *FS, n int) {
	t.Helper()
	queued := func() int {
		f.memMu.Lock()
		defer f.memMu.Unlock()
		return len(f.memQ)
	}
	testutil.Eventually(t, func() bool { return queued() == n },
		func() string { return fmt.Sprintf("%d mutations queued for memory, want %d", queued(), n) })
}

// fillDirty writes to file ino from a goroutine until the dirty-memory
// budget is exhausted and one write is left waiting, and returns that
// goroutine's result channel.
func fillDirty(t *testing.T, f *FS, ino uint64) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		p := bytes.Repeat([]byte{0xf1}, 64<<10)
		for i := uint64(0); ; i++ {
			if _, err := f.Write(context.Background(), Root, ino, i*uint64(len(p)), p); err != nil {
				done <- err
				return
			}
			if !f.room() {
				// One more write now waits for the store.
				_, err := f.Write(context.Background(), Root, ino, (i+1)*uint64(len(p)), p)
				done <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.memMu.Lock()
		queued := len(f.memQ)
		f.memMu.Unlock()
		if queued == 1 {
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("filling dirty memory: the writer ended (%v) instead of waiting", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("filling dirty memory: no write waits")
		}
		time.Sleep(time.Millisecond)
	}
}

// The reproduction of docs/durability.md's "Requests of a connection that
// dies", at the filesystem's level. During a store outage, with the dirty
// budget full:
//
//	A: a write to block X waits for memory; its connection dies (ctx
//	   canceled).
//	B: a newer write to block X from another connection, then a flush.
//
// When the store returns, B is acknowledged and flushed, and X must read B
// — also after a crash — never A. A variant keeps A's connection alive:
// then A, which arrived first, is applied first, and B still wins.
func TestWaitingWriteOfDeadConnection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cancelA bool
	}{
		{"connection of A dies", true},
		{"A stays, arrival order", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 5 {
				testWaitingWrite(t, tc.cancelA, round)
			}
		})
	}
}

func testWaitingWrite(t *testing.T, cancelA bool, round int) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.BatchBytes = 256 << 10
	opts.MaxDirtyBytes = 512 << 10
	f := mustOpen(t, opts)
	defer func() { st.Clear(); f.Close() }()
	dev := mustCreate(t, f, RootIno, "dev", TypeRegular|0o644)
	filler := mustCreate(t, f, RootIno, "filler", TypeRegular|0o644)
	const x = 300 << 10 // block X
	blk := func(v byte) []byte { return bytes.Repeat([]byte{v}, 64<<10) }
	mustWrite(t, f, dev.Ino, x, blk(0x11))
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Applied too, so that no memory frees up during the outage below.
	f.waitApplied()

	// The store refuses every PUT (as chattr +i on a file store's staging
	// directory does); GETs still work.
	outage := st.Fail(faultstore.Puts(), nil)
	fill := fillDirty(t, f, filler.Ino)

	actx, killA := context.WithCancelCause(ctx)
	defer killA(nil)
	aDone := make(chan error, 1)
	go func() {
		_, err := f.Write(actx, Root, dev.Ino, x, blk(0xaa))
		aDone <- err
	}()
	waitMemQueue(t, f, 2)
	connGone := errors.New("connection gone")
	if cancelA {
		killA(connGone)
		if err := <-aDone; !errors.Is(err, ErrCanceled) || !errors.Is(err, connGone) {
			t.Fatalf("round %d: write A of the dead connection: %v, want ErrCanceled with the cause", round, err)
		}
		waitMemQueue(t, f, 1)
	}
	bDone := make(chan error, 1)
	go func() {
		if _, err := f.Write(ctx, Root, dev.Ino, x, blk(0xbb)); err != nil {
			bDone <- err
			return
		}
		bDone <- f.Flush(ctx)
	}()
	if cancelA {
		waitMemQueue(t, f, 2)
	} else {
		waitMemQueue(t, f, 3)
	}

	outage.Remove()
	for what, ch := range map[string]chan error{"filler": fill, "B and its flush": bDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, what, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: %s did not finish after the store came back", round, what)
		}
	}
	if !cancelA {
		if err := <-aDone; err != nil {
			t.Fatalf("round %d: write A: %v", round, err)
		}
	}
	want := blk(0xbb)
	if got := mustRead(t, f, dev.Ino, x, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("round %d: block X reads %#x..., want B (0xbb): a write overtook a newer flushed one", round, got[0])
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.crash()
	f = mustOpen(t, opts)
	if got := mustRead(t, f, dev.Ino, x, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("round %d: after a crash block X reads %#x..., want B (0xbb)", round, got[0])
	}
}

// Mutations waiting for memory are admitted in arrival order, and a waiter
// whose context ends leaves the queue without holding up the others.
func TestAdmissionOrder(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.BatchBytes = 256 << 10
	opts.MaxDirtyBytes = 512 << 10
	f := mustOpen(t, opts)
	defer func() { st.Clear(); f.Close() }()
	n := mustCreate(t, f, RootIno, "f", TypeRegular|0o644)
	filler := mustCreate(t, f, RootIno, "filler", TypeRegular|0o644)
	// The store refuses every PUT (as chattr +i on a file store's staging
	// directory does); GETs still work.
	outage := st.Fail(faultstore.Puts(), nil)
	fill := fillDirty(t, f, filler.Ino)

	// Ten writers queue in order, each writing its number to the same
	// block; every third one's connection dies while it waits.
	const writers = 10
	results := make([]chan error, writers)
	for i := range writers {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		results[i] = make(chan error, 1)
		go func() {
			_, err := f.Write(wctx, Root, n.Ino, 0, bytes.Repeat([]byte{byte(i + 1)}, 4096))
			results[i] <- err
		}()
		waitMemQueue(t, f, i+2)
		if i%3 == 1 {
			cancel()
			if err := <-results[i]; !errors.Is(err, ErrCanceled) {
				t.Fatalf("writer %d canceled: %v", i, err)
			}
			results[i] = nil
			waitMemQueue(t, f, i+1)
			// Keep the queue length equal to i+2 for the next wait.
			results[i] = make(chan error, 1)
			go func() {
				_, err := f.Write(ctx, Root, n.Ino, 0, bytes.Repeat([]byte{byte(i + 1)}, 4096))
				results[i] <- err
			}()
			waitMemQueue(t, f, i+2)
		}
	}
	outage.Remove()
	if err := <-fill; err != nil {
		t.Fatal(err)
	}
	for i, ch := range results {
		if err := <-ch; err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	// The last to arrive was applied last.
	if got := mustRead(t, f, n.Ino, 0, 4096); got[0] != writers {
		t.Fatalf("block reads writer %d's data, want the last writer's (%d): admission out of order", got[0], writers)
	}
}
