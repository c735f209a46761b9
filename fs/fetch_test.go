package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/cache"
	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
	"zerofs/wal"
)

// coldFile writes data to a new file of f in flushes of flushEvery bytes
// (each its own WAL record), waits until it is applied and empties the
// memory cache, so that reading it needs the store.
func coldFile(t *testing.T, f *FS, data []byte, flushEvery int) uint64 {
	t.Helper()
	n := mustCreate(t, f, RootIno, "cold", TypeRegular|0o644)
	for off := 0; off < len(data); off += flushEvery {
		mustWrite(t, f, n.Ino, uint64(off), data[off:min(off+flushEvery, len(data))])
		if err := f.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	f.waitApplied()
	f.cache = cache.NewMemory(0)
	return n.Ino
}

// A read fetches the frames it lacks with one GET per run of adjacent
// frames of one object, not one GET per frame.
func TestAdjacentFramesOneGet(t *testing.T) {
	const cs = 4096 // testOptions' chunk size: one frame per chunk
	cases := []struct {
		name       string
		flushEvery int // bytes per WAL record
		off, n     int
		gets       int
	}{
		{"one frame", 256 << 10, 5 * cs, cs, 1},
		{"a run in one record", 256 << 10, 3 * cs, 40 * cs, 1},
		{"unaligned ends", 256 << 10, 3*cs + 100, 40*cs - 200, 1},
		{"the whole record", 256 << 10, 0, 256 << 10, 1},
		{"across two records", 128 << 10, 16 * cs, 32 * cs, 2},
		{"across four records", 64 << 10, 0, 256 << 10, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := faultstore.New(store.NewMem())
			opts := testOptions(t, st, t.TempDir())
			opts.ReadAheadBytes = -1
			f := mustOpen(t, opts)
			defer f.Close()
			data := make([]byte, 256<<10)
			rand.Read(data)
			ino := coldFile(t, f, data, tc.flushEvery)
			before := st.Count(faultstore.OpGet).Calls
			if got := mustRead(t, f, ino, uint64(tc.off), tc.n); !bytes.Equal(got, data[tc.off:tc.off+tc.n]) {
				t.Fatal("read back differs")
			}
			if gets := st.Count(faultstore.OpGet).Calls - before; gets != int64(tc.gets) {
				t.Fatalf("%d GETs, want %d", gets, tc.gets)
			}
		})
	}
}

// Readers of one cold range at once share its GETs: the first fetches, the
// others wait for its flights.
func TestConcurrentReadersShareGets(t *testing.T) {
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.ReadAheadBytes = -1
	f := mustOpen(t, opts)
	defer func() { st.Clear(); f.Close() }()
	data := make([]byte, 128<<10)
	rand.Read(data)
	ino := coldFile(t, f, data, len(data))
	frames := int64(len(data) / int(f.chunkSize))

	gate := st.Hold(faultstore.On(faultstore.OpGet).Prefix("wal/"))
	const readers = 6
	errs := make(chan error, readers)
	read := func() {
		buf := make([]byte, len(data))
		_, _, err := f.Read(context.Background(), Root, ino, 0, buf)
		if err == nil && !bytes.Equal(buf, data) {
			err = errors.New("wrong data")
		}
		errs <- err
	}
	go read()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.HangBound)
	defer cancel()
	if err := gate.WaitBlocked(ctx, 1); err != nil {
		t.Fatal(err)
	}
	joined := f.flights.joined.Load()
	for range readers - 1 {
		go read()
	}
	testutil.Eventually(t, func() bool { return f.flights.joined.Load()-joined == (readers-1)*frames },
		func() string { return "every other reader waiting on the first one's fetch" })
	gate.Release()
	for range readers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := gate.Hits(); got != 1 {
		t.Fatalf("%d GETs for %d readers of one range, want 1", got, readers)
	}
}

// Sequential reads start read-ahead, which then serves them from memory;
// random reads neither start it nor keep it going.
func TestReadAheadStopsOnRandomAccess(t *testing.T) {
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.ReadAheadBytes = 1 << 20
	f := mustOpen(t, opts)
	defer f.Close()
	data := make([]byte, 8<<20)
	rand.Read(data)
	ino := coldFile(t, f, data, 1<<20)
	f.cache = cache.NewMemory(64 << 20)
	gets := func() int64 { return st.Count(faultstore.OpGet).Calls }
	settle := func() {
		testutil.Eventually(t, func() bool { return f.ra.inflight.Load() == 0 }, func() string { return "read-ahead to finish" })
	}

	// Sequential 16 KiB reads over the first 2 MiB.
	const rs = 16 << 10
	for off := 0; off < 2<<20; off += rs {
		if got := mustRead(t, f, ino, uint64(off), rs); !bytes.Equal(got, data[off:off+rs]) {
			t.Fatalf("sequential read at %d differs", off)
		}
	}
	settle()
	if f.ra.issued.Load() == 0 {
		t.Fatal("2 MiB of sequential reads started no read-ahead")
	}
	// What comes next was read ahead: no GET of its record.
	seqs, err := f.wal.Seqs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	next := wal.Key(seqs[len(seqs)-len(data)>>20+2]) // the record of [2 MiB, 3 MiB)
	var nextGets atomic.Int32
	st.Before(faultstore.On(faultstore.OpGet).Key(next), func(faultstore.Op, string) error {
		nextGets.Add(1)
		return nil
	})
	for off := 2 << 20; off < 2<<20+256<<10; off += rs {
		if got := mustRead(t, f, ino, uint64(off), rs); !bytes.Equal(got, data[off:off+rs]) {
			t.Fatalf("sequential read at %d differs", off)
		}
	}
	if n := nextGets.Load(); n != 0 {
		t.Fatalf("%d GETs for reads read-ahead should have served", n)
	}

	// Random 4 KiB reads past what was read ahead: no read-ahead, at most
	// one GET each.
	settle()
	raBefore, before := f.ra.issued.Load(), gets()
	rng := mrand.New(mrand.NewPCG(1, 2))
	const randomReads = 64
	for range randomReads {
		off := 4<<20 + rng.IntN(4<<20-4096)
		if got := mustRead(t, f, ino, uint64(off), 4096); !bytes.Equal(got, data[off:off+4096]) {
			t.Fatalf("random read at %d differs", off)
		}
	}
	settle()
	if ra := f.ra.issued.Load() - raBefore; ra != 0 {
		t.Fatalf("random reads read %d bytes ahead", ra)
	}
	if n := gets() - before; n > 2*randomReads {
		t.Fatalf("%d GETs for %d random reads (a read spans at most two frames)", n, randomReads)
	}
}

// Replacing a stream cancels its read-ahead: a demand reader that had
// joined a cancelled fetch fetches for itself and gets its data. (A stream
// with read-ahead running is replaced only by another sequential reader,
// once every way of its slot has one.)
func TestAbandonedReadAheadRefetched(t *testing.T) {
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.ReadAheadBytes = 1 << 20
	f := mustOpen(t, opts)
	defer func() { st.Clear(); f.Close() }()
	const rec = 64 << 10 // one WAL record per 64 KiB: one GET each
	data := make([]byte, 24<<20)
	rand.Read(data)
	ino := coldFile(t, f, data, rec)
	f.cache = cache.NewMemory(64 << 20)
	seqs, err := f.wal.Seqs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	first := seqs[len(seqs)-len(data)/rec] // the record of data[0:rec]
	keyAt := func(off int) string { return wal.Key(first + uint64(off/rec)) }

	// Hold the read-ahead GET of the record at 1.25 MiB.
	const held = 1<<20 + 4*rec
	var heldGets atomic.Int32
	st.Before(faultstore.On(faultstore.OpGet).Key(keyAt(held)), func(faultstore.Op, string) error {
		heldGets.Add(1)
		return nil
	})
	gate := st.Hold(faultstore.On(faultstore.OpGet).Key(keyAt(held)).Times(1))
	for off := 0; off <= 1<<20; off += rec {
		mustRead(t, f, ino, uint64(off), rec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.HangBound)
	defer cancel()
	if err := gate.WaitBlocked(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// A reader of the held range joins the read-ahead's fetch.
	joined := f.flights.joined.Load()
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, rec)
		f.Read(context.Background(), Root, ino, held, buf)
		got <- buf
	}()
	testutil.Eventually(t, func() bool { return f.flights.joined.Load() > joined }, func() string { return "the reader joining the read-ahead fetch" })
	// Sequential readers elsewhere, one per way of the slot, each reading
	// until its read-ahead starts: the last one replaces the stream, which
	// cancels its read-ahead.
	for i := range raWays { // 2.5 MiB apart: no stream continues another
		start := 3<<20 + i*(5<<19)
		for off := start; off <= start+1<<20; off += rec {
			mustRead(t, f, ino, uint64(off), rec)
		}
	}
	select {
	case buf := <-got:
		if !bytes.Equal(buf, data[held:held+rec]) {
			t.Fatal("the reader of an abandoned read-ahead got wrong data")
		}
	case <-ctx.Done():
		t.Fatal("the reader of an abandoned read-ahead never got its data")
	}
	if n := heldGets.Load(); n != 2 {
		t.Fatalf("%d GETs of the held record, want 2: the abandoned read-ahead's and the reader's own", n)
	}
}

// Random reads of a device do not push its sequential reader's stream out:
// a stream with read-ahead running is replaced only by another sequential
// reader.
func TestRandomReadsKeepSequentialStream(t *testing.T) {
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.ReadAheadBytes = 1 << 20
	f := mustOpen(t, opts)
	defer f.Close()
	data := make([]byte, 16<<20)
	rand.Read(data)
	ino := coldFile(t, f, data, 1<<20)
	f.cache = cache.NewMemory(64 << 20)
	const rs = 64 << 10
	for off := 0; off <= 1<<20; off += rs {
		mustRead(t, f, ino, uint64(off), rs)
	}
	stream := func() *raStream {
		sl := &f.ra.slots[(ino*0x9E3779B97F4A7C15)>>58%raSlots]
		sl.mu.Lock()
		defer sl.mu.Unlock()
		for i := range sl.streams {
			if s := &sl.streams[i]; s.ino == ino && s.started && s.next == 1<<20+rs {
				return s
			}
		}
		return nil
	}
	s := stream()
	if s == nil {
		t.Fatal("1 MiB of sequential reads started no read-ahead")
	}
	rng := mrand.New(mrand.NewPCG(3, 4))
	for range 10 * raWays {
		off := 4<<20 + rng.IntN(12<<20-4096)
		mustRead(t, f, ino, uint64(off), 4096)
	}
	if stream() != s || s.ctx.Err() != nil {
		t.Fatal("random reads pushed out the sequential stream and cancelled its read-ahead")
	}
}

// Read-ahead of several streams at once stays within the cap (a quarter of
// the memory cache): beyond it, read-ahead would be evicted before its
// readers came for it. A stream whose reader went away stops holding its
// share. observe alone is driven, so nothing is fetched.
func TestReadAheadSharesCap(t *testing.T) {
	const (
		mib    = 1 << 20
		window = 32 * mib
		size   = 1 << 30
	)
	ra := &readAhead{max: window, aheadCap: ReadAheadCap(64*mib, window)}
	if ra.aheadCap != 16*mib {
		t.Fatalf("cap %d MiB for a 64 MiB cache, want 16", ra.aheadCap/mib)
	}
	ctx := context.Background()
	// Four readers of one file, a quarter each, 1 MiB at a time.
	next := []uint64{0, size / 4, size / 2, 3 * size / 4}
	var issued [4]uint64
	for range 64 {
		for r := range next {
			_, todo := ra.observe(ctx, 7, next[r], mib, size, nil)
			for _, rr := range todo {
				issued[r] = max(issued[r], rr.hi)
			}
			next[r] += mib
		}
		var ahead uint64
		for r := range next {
			ahead += issued[r] - min(issued[r], next[r])
		}
		if now, _ := ra.aheadNow(time.Now().UnixNano(), nil, 0); now != int64(ahead) || now > ra.aheadCap {
			t.Fatalf("read ahead %d MiB (published %d MiB), cap %d MiB", ahead/mib, now/mib, ra.aheadCap/mib)
		}
	}
	for r := range next {
		if issued[r] <= next[r] {
			t.Errorf("reader %d got no read-ahead under the cap", r)
		}
	}
	// The readers stop; once they have been idle for raIdle their share is
	// free for a new reader.
	sl := &ra.slots[(7*0x9E3779B97F4A7C15)>>58%raSlots]
	for w := range sl.used {
		sl.used[w].Store(time.Now().Add(-raIdle).UnixNano())
	}
	if now, _ := ra.aheadNow(time.Now().UnixNano(), nil, 0); now != 0 {
		t.Fatalf("idle streams still hold %d MiB", now/mib)
	}
}
