package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"zerofs/store"
)

// TestConcurrentStress runs writers, readers, flushers, punches, namespace
// changes and GC at once (run it with -race). Writers own interleaved
// 512-byte sectors, so all of them hit the same chunks at the same time;
// after a final flush, a crash and recovery every sector holds its owner's
// last acknowledged write, sectors nobody wrote read as zeros, and the size
// is the end of the furthest sector written. (Under load a writer may be
// scheduled so little that the last sectors are never written: the model
// is what was acknowledged, not the whole disk.)
func TestConcurrentStress(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	dir := t.TempDir()
	opts := testOptions(t, st, dir)
	opts.BatchAge = 2 * time.Millisecond
	opts.BatchBytes = 128 << 10
	opts.MaxDirtyBytes = 512 << 10 // exercise back-pressure
	f := mustOpen(t, opts)
	n := mustCreate(t, f, RootIno, "disk", TypeRegular|0o644)
	other := mustCreate(t, f, RootIno, "other", TypeRegular|0o644)

	const writers, sector, size = 8, 512, 256 << 10
	const minWrites = 50 // per writer, however little time it gets
	dur := 2 * time.Second
	if testing.Short() {
		dur = 500 * time.Millisecond
	}
	deadline := time.Now().Add(dur)
	models := make([][]byte, writers)
	ends := make([]int, writers) // the end of each writer's furthest acknowledged write
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < writers; g++ {
		models[g] = make([]byte, size)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < minWrites || time.Now().Before(deadline); i++ {
				// A run of this writer's sectors within one or two chunks.
				s := r.IntN(size/sector/writers)*writers + g
				off := s * sector
				p := bytes.Repeat([]byte{byte(r.IntN(255) + 1)}, sector)
				if _, err := f.Write(ctx, Root, n.Ino, uint64(off), p); err != nil {
					errs <- fmt.Errorf("writer %d: %w", g, err)
					return
				}
				copy(models[g][off:], p)
				ends[g] = max(ends[g], off+sector)
			}
		}(g)
	}
	background := func(name string, fn func(r *rand.Rand) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(len(name)), 2))
			for time.Now().Before(deadline) {
				if err := fn(r); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
			}
		}()
	}
	background("reader", func(r *rand.Rand) error {
		p := make([]byte, 1+r.IntN(64<<10))
		_, _, err := f.Read(ctx, Root, n.Ino, uint64(r.IntN(size)), p)
		return err
	})
	background("flusher", func(r *rand.Rand) error {
		time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
		return f.Flush(ctx)
	})
	background("puncher", func(r *rand.Rand) error {
		if _, err := f.Write(ctx, Root, other.Ino, uint64(r.IntN(size)), make([]byte, 8192)); err != nil {
			return err
		}
		return f.Punch(ctx, Root, other.Ino, uint64(r.IntN(size)), uint64(r.IntN(64<<10)))
	})
	background("namespace", func(r *rand.Rand) error {
		name := fmt.Sprint("tmp", r.IntN(20))
		if _, _, err := f.Create(ctx, Root, RootIno, name, NewNode{Mode: 0o644}); err != nil {
			return err
		}
		if err := f.Rename(ctx, Root, RootIno, name, RootIno, name+"x"); err != nil {
			return err
		}
		_, err := f.Remove(ctx, Root, RootIno, name+"x")
		return err
	})
	background("gc", func(r *rand.Rand) error {
		time.Sleep(50 * time.Millisecond)
		_, err := f.GC(ctx)
		return err
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	end := 0
	for g := range models {
		for s := g; s < size/sector; s += writers {
			copy(want[s*sector:(s+1)*sector], models[g][s*sector:])
		}
		end = max(end, ends[g])
	}
	want = want[:end]
	checkStress(t, f, n.Ino, want, "before the crash")
	f.crash()
	f = mustOpen(t, opts)
	defer f.Close()
	checkStress(t, f, n.Ino, want, "after crash and recovery")
}

// checkStress checks that the file's size is len(want) and its contents want.
func checkStress(t *testing.T, f *FS, ino uint64, want []byte, when string) {
	t.Helper()
	a, err := f.GetAttr(context.Background(), ino)
	if err != nil {
		t.Fatalf("%s: getattr: %v", when, err)
	}
	if a.Size != uint64(len(want)) {
		t.Fatalf("%s: size %d, want %d (the end of the furthest write)", when, a.Size, len(want))
	}
	got := mustRead(t, f, ino, 0, len(want)+1) // +1: nothing past the end
	if len(got) != len(want) {
		t.Fatalf("%s: read %d bytes, want %d", when, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: content differs at byte %d (sector %d): read %#x, want %#x", when, i, i/512, got[i], want[i])
		}
	}
}
