package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"zerofs/store"
)

func storedBytes(t *testing.T, st store.Store) (total int64, objects int) {
	t.Helper()
	infos, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		total += in.Size
	}
	return total, len(infos)
}

// TestGCBoundsStoredBytes writes, overwrites and trims a file over and over.
// After garbage collection the bucket holds less than twice the live data,
// and every byte still reads back — also on a fresh machine.
func TestGCBoundsStoredBytes(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	opts := testOptions(t, st, t.TempDir())
	opts.ChunkSize = 16 << 10 // partial overwrites leave frames partly dead
	f := mustOpen(t, opts)
	defer func() { f.crash() }()
	n := mustCreate(t, f, RootIno, "disk", TypeRegular|0o644)
	const size = 4 << 20
	model := make([]byte, size)
	r := rand.New(rand.NewPCG(7, 7))
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	for round := 0; round < rounds; round++ {
		for i := 0; i < 200; i++ {
			off := r.IntN(size - 1)
			l := min(size-off, 1+r.IntN(96<<10))
			switch r.IntN(10) {
			case 0, 1: // trim
				if err := f.Punch(ctx, Root, n.Ino, uint64(off), uint64(l)); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+l])
			default: // random, incompressible data
				p := make([]byte, l)
				for j := range p {
					p[j] = byte(r.Uint32()) | 1 // never zero: zeros are holes
				}
				mustWrite(t, f, n.Ino, uint64(off), p)
				copy(model[off:], p)
			}
			if i%50 == 0 {
				if err := f.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if round%3 == 2 {
			if err := f.Compact(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	var live int64
	for _, c := range model {
		if c != 0 {
			live++
		}
	}
	stored, objects := storedBytes(t, st)
	t.Logf("live %d bytes, stored %d bytes in %d objects: %.2fx", live, stored, objects, float64(stored)/float64(live))
	if stored > 2*live {
		infos, _ := st.List(ctx, "")
		for _, in := range infos {
			t.Logf("  %s %d", in.Key, in.Size)
		}
		t.Fatalf("bucket holds %d bytes for %d live bytes: more than twice", stored, live)
	}
	if got := mustRead(t, f, n.Ino, 0, size); !bytes.Equal(got, model) {
		t.Fatal("data differs after garbage collection")
	}
	f.Close()
	f = mustOpen(t, testOptions(t, st, t.TempDir()))
	if got := mustRead(t, f, n.Ino, 0, size); !bytes.Equal(got, model) {
		t.Fatal("data differs after garbage collection, on a fresh machine")
	}
}

// TestGCDeletesUnlinkedFiles: removing a file leaves nothing of it behind.
func TestGCDeletesUnlinkedFiles(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	f := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer f.Close()
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	empty, _ := storedBytes(t, st)
	n := mustCreate(t, f, RootIno, "big", TypeRegular|0o644)
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i*7) | 1
	}
	for i := 0; i < 8; i++ {
		mustWrite(t, f, n.Ino, uint64(i)<<20, p)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if full, _ := storedBytes(t, st); full < 8<<20 {
		t.Fatalf("stored %d bytes after writing 8 MiB", full)
	}
	if _, err := f.Remove(ctx, Root, RootIno, "big"); err != nil {
		t.Fatal(err)
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after, objects := storedBytes(t, st)
	t.Logf("empty %d bytes, after remove and GC %d bytes in %d objects", empty, after, objects)
	if after > empty+256<<10 {
		t.Fatalf("after removing the file and GC the bucket holds %d bytes (empty: %d)", after, empty)
	}
}

// TestHugeTrimAndUnlink: punching and removing a 2 TiB file costs what its
// written chunks cost, not what its size would (a range deletion, and live
// bytes recomputed from the entries that exist). A linear cost in the size
// (32 million chunks) would not finish within the test's timeout.
func TestHugeTrimAndUnlink(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	f := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer f.Close()
	for _, remove := range []bool{false, true} {
		name := fmt.Sprint("dev", remove)
		n := mustCreate(t, f, RootIno, name, TypeRegular|0o644)
		size := uint64(2 << 40)
		if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Size: &size}); err != nil {
			t.Fatal(err)
		}
		p := bytes.Repeat([]byte{9}, 64<<10)
		for _, off := range []uint64{0, 1 << 30, 1 << 40, size - 64<<10} {
			mustWrite(t, f, n.Ino, off, p)
		}
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if remove {
			if _, err := f.Remove(ctx, Root, RootIno, name); err != nil {
				t.Fatal(err)
			}
		} else if err := f.Punch(ctx, Root, n.Ino, 0, size); err != nil {
			t.Fatal(err)
		}
		if err := f.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		if !remove {
			ext, err := f.Extents(ctx, n.Ino, 0, size)
			if err != nil || len(ext) != 1 || !ext[0].Hole || ext[0].Len != size {
				t.Fatalf("after punching the whole device: %+v, %v", ext, err)
			}
		}
	}
	if stored, _ := storedBytes(t, st); stored > 256<<10 {
		t.Fatalf("after trimming and removing, %d bytes remain stored", stored)
	}
}
