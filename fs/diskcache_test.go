package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"zerofs/cache"
	"zerofs/store"
)

// TestDiskCacheServesAndSurvivesDamage: reads come from the disk cache once
// the memory cache is gone (a restart, which loads the cache's saved index
// rather than scanning it), and a damaged cache file costs a GET, never
// wrong data.
func TestDiskCacheServesAndSurvivesDamage(t *testing.T) {
	st := store.NewMem()
	dir := t.TempDir()
	opts := testOptions(t, st, dir)
	opts.DiskCacheBytes = 8 << 20
	f := mustOpen(t, opts)
	n := mustCreate(t, f, RootIno, "f", TypeRegular|0o644)
	data := bytes.Repeat([]byte("zerofs disk cache "), 4000)
	mustWrite(t, f, n.Ino, 0, data)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	opts.Cache = cache.NewMemory(0) // every read below the memory tier
	f = mustOpen(t, opts)
	// Closed cleanly: the index was saved and is loaded, not scanned.
	if st := f.Status().DiskCache; st == nil || !st.IndexLoaded || st.ScanEntries == 0 {
		t.Fatalf("disk cache after a clean restart: %+v, want its saved index loaded", st)
	}
	gets := f.Stats().StoreGets.Load()
	if got := mustRead(t, f, n.Ino, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("wrong data from the disk cache")
	}
	if f.Stats().StoreGets.Load() != gets {
		t.Fatalf("%d store reads: written data should come from the disk cache", f.Stats().StoreGets.Load()-gets)
	}
	f.Close()

	// Scribble over the cache file's payloads.
	path := filepath.Join(dir, "frames", "frames.cache")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 100; i < len(b); i += 997 {
		b[i] ^= 0x55
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f = mustOpen(t, opts)
	defer f.Close()
	if got := mustRead(t, f, n.Ino, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("wrong data after the disk cache was damaged")
	}
	if f.Stats().StoreGets.Load() == 0 {
		t.Fatal("damaged cache entries were not refetched from the store")
	}
}
