package cache

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestDiskSavedIndex: a clean Close saves the index and the next open loads
// it instead of scanning, with each entry's CLOCK bit; the file is used
// once. A saved index that does not fit (another configuration, damaged,
// stale) is never trusted over the slots themselves.
func TestDiskSavedIndex(t *testing.T) {
	const slot, slots = 1024, 64
	fill := func(t *testing.T, dir string) {
		d := openDiskT(t, dir, slots*slot, slot)
		for id := uint64(1); id <= 40; id++ {
			d.Put(id, frameFor(id, 900))
		}
		mustGet(t, d, 7, frameFor(7, 900)) // sets 7's reference bit
		d.Close()
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
		loaded bool
	}{
		{"clean close", func(*testing.T, string) {}, true},
		{"crash (no index)", func(t *testing.T, dir string) { dropIndex(t, dir) }, false},
		{"index damaged", func(t *testing.T, dir string) {
			p := filepath.Join(dir, diskIndexName)
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			os.WriteFile(p, b, 0o600)
		}, false},
		{"index truncated", func(t *testing.T, dir string) {
			p := filepath.Join(dir, diskIndexName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-20], 0o600)
		}, false},
		{"index of another cache size", func(t *testing.T, dir string) {
			other := t.TempDir()
			d := openDiskT(t, other, 2*slots*slot, slot)
			d.Close()
			b, _ := os.ReadFile(filepath.Join(other, diskIndexName))
			os.WriteFile(filepath.Join(dir, diskIndexName), b, 0o600)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir)
			tc.change(t, dir)
			d := openDiskT(t, dir, slots*slot, slot)
			st := d.Stats()
			if st.IndexLoaded != tc.loaded || st.ScanEntries != 40 || st.SlotsUsed != 40 {
				t.Fatalf("loaded %v (want %v), %d entries, %d slots used; want 40", st.IndexLoaded, tc.loaded, st.ScanEntries, st.SlotsUsed)
			}
			if _, err := os.Stat(filepath.Join(dir, diskIndexName)); err == nil {
				t.Fatal("the saved index is still there after open: a crash now would trust it")
			}
			for id := uint64(1); id <= 40; id++ {
				mustGet(t, d, id, frameFor(id, 900))
			}
			if tc.loaded {
				s := d.shardFor(7)
				s.mu.Lock()
				ref := s.slots[s.index[7]].ref
				s.mu.Unlock()
				if !ref {
					t.Error("the reference bit of a read entry was not kept")
				}
			}
			// The sequence numbers go on: a Put after open is newer
			// than anything before.
			d.Put(41, frameFor(41, 900))
			mustGet(t, d, 41, frameFor(41, 900))
		})
	}

	// A stale index — saved, then the slots changed behind it, as when its
	// removal at open was lost to a power cut — gives misses, never the
	// wrong frame.
	dir := t.TempDir()
	fill(t, dir)
	saved, _ := os.ReadFile(filepath.Join(dir, diskIndexName))
	d := openDiskT(t, dir, slots*slot, slot)
	for id := uint64(1); id <= 40; id++ {
		d.Delete(id)
	}
	for id := uint64(100); id < 100+slots; id++ {
		d.Put(id, frameFor(id, 900))
	}
	d.Close()
	os.WriteFile(filepath.Join(dir, diskIndexName), saved, 0o600)
	d = openDiskT(t, dir, slots*slot, slot)
	for id := uint64(1); id <= 40; id++ {
		mustMiss(t, d, id)
	}
}

// TestDiskScanInBackground: after a crash OpenDisk returns at once and the
// index is rebuilt behind it; until a shard is scanned its Gets miss and
// its Puts are dropped, and Gets, Puts and Close may run alongside the scan.
func TestDiskScanInBackground(t *testing.T) {
	const slot, slots = 512, 4 * minShardSlots
	dir := t.TempDir()
	d := openDiskT(t, dir, slots*slot, slot)
	for id := uint64(0); id < slots/2; id++ {
		d.Put(id, frameFor(id, 400))
	}
	d.Close()
	dropIndex(t, dir)

	d, err := OpenDisk(dir, slots*slot, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for id := uint64(w); id < slots/2; id += 4 {
				if got, ok := d.Get(id); ok && string(got) != string(frameFor(id, 400)) {
					t.Errorf("Get(%d) during the scan: wrong bytes", id)
				}
				if id%8 == 0 { // an eighth more: no shard fills up
					d.Put(slots+id, frameFor(slots+id, 400))
				}
			}
		})
	}
	wg.Wait()
	d.WaitScan()
	if st := d.Stats(); st.IndexLoaded || st.ScanEntries != slots/2 {
		t.Fatalf("scan found %d entries (loaded %v), want %d", st.ScanEntries, st.IndexLoaded, slots/2)
	}
	for id := uint64(0); id < slots/2; id++ {
		mustGet(t, d, id, frameFor(id, 400))
	}
	d.Close()

	// Close during the scan stops it and saves nothing.
	dropIndex(t, dir)
	d, err = OpenDisk(dir, slots*slot, slot, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d = openDiskT(t, dir, slots*slot, slot)
	if st := d.Stats(); st.ScanEntries < slots/4 {
		t.Fatalf("after a Close during the scan, the next open found %d entries", st.ScanEntries)
	}
}
