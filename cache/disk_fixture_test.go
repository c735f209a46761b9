package cache

import (
	"os"
	"path/filepath"
	"testing"
)

// Fixtures: disk caches as older versions closed them (cache/testdata).
// The local state outlives the binary: a format change must still open
// them — using the saved index, or at worst scanning — and find the same
// entries.

const fixtureSlot, fixtureSlots = 1024, 8

// TestWriteDiskFixture writes a cache of fixtureSlots slots holding
// frameFor(id, 900) for ids 1..5, closed cleanly, into
// $ZEROFS_WRITE_FIXTURE. Keep it as cache/testdata/disk-COMMIT.
func TestWriteDiskFixture(t *testing.T) {
	dir := os.Getenv("ZEROFS_WRITE_FIXTURE")
	if dir == "" {
		t.Skip("set ZEROFS_WRITE_FIXTURE=DIR to write a fixture")
	}
	d, err := OpenDisk(dir, fixtureSlots*fixtureSlot, fixtureSlot, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 5; id++ {
		d.Put(id, frameFor(id, 900))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDiskReadsOldFormats(t *testing.T) {
	fixtures, err := filepath.Glob("testdata/disk-*")
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no disk cache fixtures: %v", err)
	}
	for _, fx := range fixtures {
		t.Run(filepath.Base(fx), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(fx)); err != nil {
				t.Fatal(err)
			}
			d := openDiskT(t, dir, fixtureSlots*fixtureSlot, fixtureSlot)
			if st := d.Stats(); st.ScanEntries != 5 {
				t.Fatalf("%d entries (index loaded %v), want 5", st.ScanEntries, st.IndexLoaded)
			}
			for id := uint64(1); id <= 5; id++ {
				mustGet(t, d, id, frameFor(id, 900))
			}
		})
	}
}
