package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"zerofs/store"
)

func TestExtents(t *testing.T) {
	ctx := context.Background()
	f := mustOpen(t, testOptions(t, store.NewMem(), t.TempDir()))
	defer f.Close()
	n := mustCreate(t, f, RootIno, "sparse", TypeRegular|0o644)
	size := uint64(1 << 40) // a 1 TiB file: holes must cost nothing
	if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Size: &size}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 6000)
	for i := range data {
		data[i] = 1
	}
	mustWrite(t, f, n.Ino, 4096*10+100, data)  // chunks 10 and 11, partly
	mustWrite(t, f, n.Ino, 1<<39, data[:4096]) // chunk 2^27, whole
	check := func(stage string) {
		t.Helper()
		var got []Extent
		for off := uint64(0); off < size; {
			ext, err := f.Extents(ctx, n.Ino, off, size-off)
			if err != nil {
				t.Fatal(err)
			}
			if len(ext) == 0 || ext[0].Off != off {
				t.Fatalf("%s: extents at %d: %+v", stage, off, ext)
			}
			for _, e := range ext {
				if k := len(got) - 1; k >= 0 && got[k].Hole == e.Hole {
					got[k].Len += e.Len
				} else {
					got = append(got, e)
				}
				off = e.Off + e.Len
			}
		}
		want := []Extent{
			{0, 4096*10 + 100, true},
			{4096*10 + 100, 6000, false},
			{4096*10 + 6100, 1<<39 - 4096*10 - 6100, true},
			{1 << 39, 4096, false},
			{1<<39 + 4096, size - 1<<39 - 4096, true},
		}
		if len(got) != len(want) {
			t.Fatalf("%s: extents %+v, want %+v", stage, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: extent %d is %+v, want %+v", stage, i, got[i], want[i])
			}
		}
	}
	check("in memory")
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	check("applied")
	// Punching turns data into a hole.
	if err := f.Punch(ctx, Root, n.Ino, 1<<39, 4096); err != nil {
		t.Fatal(err)
	}
	ext, err := f.Extents(ctx, n.Ino, 1<<39, 4096)
	if err != nil || len(ext) != 1 || !ext[0].Hole {
		t.Fatalf("after punch: %+v, %v", ext, err)
	}
}

func TestReadSharedReportsHoles(t *testing.T) {
	ctx := context.Background()
	f := mustOpen(t, testOptions(t, store.NewMem(), t.TempDir()))
	defer f.Close()
	n := mustCreate(t, f, RootIno, "s", TypeRegular|0o644)
	mustWrite(t, f, n.Ino, 5000, []byte("data"))            // chunk 1
	mustWrite(t, f, n.Ino, 4096*3, make([]byte, 4096)[:10]) // zeros as data, not yet sealed
	size := uint64(4096 * 6)
	f.SetAttr(ctx, Root, n.Ino, SetAttrs{Size: &size})
	p := make([]byte, size)
	parts, got, _, holes, err := f.ReadShared(ctx, Root, n.Ino, 0, p)
	if err != nil || got != int(size) {
		t.Fatal(got, err)
	}
	p = bytes.Join(parts, nil)
	want := []Extent{{0, 5000, true}, {5004, 4096*3 - 5004, true}, {4096*3 + 10, size - 4096*3 - 10, true}}
	if len(holes) != len(want) {
		t.Fatalf("holes %+v, want %+v", holes, want)
	}
	for i := range want {
		if holes[i] != want[i] {
			t.Fatalf("hole %d: %+v, want %+v", i, holes[i], want[i])
		}
	}
	if string(p[5000:5004]) != "data" {
		t.Fatal("data wrong")
	}
}

// TestReadSharedMatchesRead: the zero-copy read returns the bytes Read does,
// from every place data can be (open batch, sealed batches, memory cache,
// the store, holes), and what it hands out does not change when the file is
// written afterwards.
func TestReadSharedMatchesRead(t *testing.T) {
	ctx := context.Background()
	opts := testOptions(t, store.NewMem(), t.TempDir())
	opts.CacheBytes = 64 << 10 // small: older frames come from the store
	f := mustOpen(t, opts)
	defer f.Close()
	n := mustCreate(t, f, RootIno, "s", TypeRegular|0o644)
	r := rand.New(rand.NewPCG(1, 2))
	const size = 256 << 10
	model := make([]byte, size)
	write := func() {
		off, l := r.IntN(size), 1+r.IntN(20000)
		l = min(l, size-off)
		p := make([]byte, l)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		mustWrite(t, f, n.Ino, uint64(off), p)
		copy(model[off:], p)
	}
	shared := 0
	check := func(label string) [][]byte {
		t.Helper()
		off, l := r.IntN(size), 1+r.IntN(size)
		buf := make([]byte, l)
		parts, got, _, holes, err := f.ReadShared(ctx, Root, n.Ino, uint64(off), buf)
		if err != nil {
			t.Fatalf("%s: ReadShared: %v", label, err)
		}
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
		for _, p := range parts {
			if at := uintptr(unsafe.Pointer(unsafe.SliceData(p))); at < lo || at >= lo+uintptr(len(buf)) {
				shared++
			}
		}
		attr, err := f.GetAttr(ctx, n.Ino)
		if err != nil {
			t.Fatal(err)
		}
		fileSize := attr.Size
		want := model[min(uint64(off), fileSize):min(uint64(off+l), fileSize)]
		if got != len(want) || !bytes.Equal(bytes.Join(parts, nil), want) {
			t.Fatalf("%s: ReadShared [%d,+%d) differs from the model (%d bytes, %d parts)", label, off, l, got, len(parts))
		}
		for _, h := range holes {
			if !allZero(model[h.Off : h.Off+h.Len]) {
				t.Fatalf("%s: hole %+v over data", label, h)
			}
		}
		return parts
	}
	for round := range 60 {
		for range 1 + r.IntN(8) {
			write()
		}
		label := fmt.Sprintf("round %d", round)
		switch round % 3 {
		case 1:
			if err := f.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		case 2:
			f.waitApplied()
		}
		parts := check(label)
		snapshot := bytes.Join(parts, nil)
		// Overwrite everything and make it durable and applied: the
		// parts handed out before must still hold what they held.
		for range 4 {
			write()
		}
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		f.waitApplied()
		if !bytes.Equal(bytes.Join(parts, nil), snapshot) {
			t.Fatalf("%s: parts returned by ReadShared changed after later writes", label)
		}
		if round%10 == 9 {
			punch := uint64(r.IntN(size / 2))
			if err := f.Punch(ctx, Root, n.Ino, punch, size/4); err != nil {
				t.Fatal(err)
			}
			clear(model[punch : punch+size/4])
		}
	}
	if shared == 0 {
		t.Fatal("no part was served from frame memory: the test does not test sharing")
	}
	t.Logf("%d parts shared", shared)
}
