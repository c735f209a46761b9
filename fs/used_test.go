package fs

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"zerofs/store"
)

// usedAfterApply is UsedBytes once everything written so far is applied.
func usedAfterApply(t *testing.T, f *FS, ino uint64) uint64 {
	t.Helper()
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	n, err := f.GetAttr(context.Background(), ino)
	if err != nil {
		t.Fatal(err)
	}
	return f.UsedBytes(&n)
}

// TestUsedBytes: a 2 TiB sparse file with 1 MiB written uses 1 MiB, through
// overwrites, punches, truncation, restarts, crash replay and a fresh
// machine; a removed file's counter goes away.
func TestUsedBytes(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	dir := t.TempDir()
	f := mustOpen(t, testOptions(t, st, dir))
	n := mustCreate(t, f, RootIno, "dev", TypeRegular|0o644)
	size := uint64(2 << 40)
	if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Size: &size}); err != nil {
		t.Fatal(err)
	}
	if got := usedAfterApply(t, f, n.Ino); got != 0 {
		t.Fatalf("untouched 2 TiB file uses %d", got)
	}
	const mib = 1 << 20
	data := make([]byte, mib)
	for i := range data {
		data[i] = byte(i%251 + 1)
	}
	off := uint64(1 << 40)
	mustWrite(t, f, n.Ino, off, data)
	if got := usedAfterApply(t, f, n.Ino); got != mib {
		t.Fatalf("2 TiB file with 1 MiB written uses %d", got)
	}
	// Overwriting the same bytes, in pieces across chunk boundaries,
	// changes nothing.
	mustWrite(t, f, n.Ino, off+1000, data[:10000])
	if got := usedAfterApply(t, f, n.Ino); got != mib {
		t.Fatalf("after an overwrite: %d", got)
	}
	// 100 bytes more elsewhere count as 4 KiB (rounded up).
	mustWrite(t, f, n.Ino, 12345, data[:100])
	if got := usedAfterApply(t, f, n.Ino); got != mib+4096 {
		t.Fatalf("after 100 more bytes: %d", got)
	}
	// A punch of a partial and a whole chunk.
	if err := f.Punch(ctx, Root, n.Ino, off+100, 8192); err != nil {
		t.Fatal(err)
	}
	if got := usedAfterApply(t, f, n.Ino); got != mib-8192+4096 {
		t.Fatalf("after punching 8 KiB: %d, want %d", got, mib-8192+4096)
	}
	// The counter as stored, exactly.
	raw, err := f.usedOf(n.Ino)
	if err != nil || raw != mib-8192+100 {
		t.Fatalf("counter %d (%v), want %d", raw, err, mib-8192+100)
	}

	check := func(what string, f *FS) {
		t.Helper()
		if got := usedAfterApply(t, f, n.Ino); got != mib-8192+4096 {
			t.Fatalf("%s: %d", what, got)
		}
	}
	f.Close()
	f = mustOpen(t, testOptions(t, st, dir))
	check("after a restart", f)
	mustWrite(t, f, n.Ino, 0, data[:4096])
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.crash() // the write is replayed from the WAL
	f = mustOpen(t, testOptions(t, st, dir))
	if got := usedAfterApply(t, f, n.Ino); got != mib-8192+8192 {
		t.Fatalf("after crash replay: %d", got)
	}
	f.Close()
	f = mustOpen(t, testOptions(t, st, t.TempDir()))
	if got := usedAfterApply(t, f, n.Ino); got != mib {
		t.Fatalf("on a fresh machine (checkpoint): %d", got)
	}

	// Truncation below the data.
	small := off + 4096
	if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Size: &small}); err != nil {
		t.Fatal(err)
	}
	// Left: 4096 bytes at 0, 100 at 12345, 100 at off (4296, rounded up).
	if got := usedAfterApply(t, f, n.Ino); got != 8192 {
		t.Fatalf("after truncating to the first data chunk: %d, want 8192", got)
	}
	if _, err := f.Remove(ctx, Root, RootIno, "dev"); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	if _, closer, err := f.db.Get(usedKey(n.Ino)); err != pebble.ErrNotFound {
		if err == nil {
			closer.Close()
		}
		t.Fatalf("counter of a removed file: %v", err)
	}
	f.Close()
}

// TestUsedBytesOldMetadata: metadata from before the counters (no counter
// keys, no marker) gets them counted at open, and records replayed after
// that open add to them.
func TestUsedBytesOldMetadata(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	dir := t.TempDir()
	f := mustOpen(t, testOptions(t, st, dir))
	a := mustCreate(t, f, RootIno, "a", TypeRegular|0o644)
	b := mustCreate(t, f, RootIno, "b", TypeRegular|0o644)
	data := make([]byte, 10000)
	for i := range data {
		data[i] = 1
	}
	mustWrite(t, f, a.Ino, 0, data)
	mustWrite(t, f, b.Ino, 1<<30, data[:5000])
	// Close checkpoints, which flushes pebble: this is on disk. What comes
	// next is only in the WAL: the crash loses pebble's unflushed state,
	// and the next open replays it.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = mustOpen(t, testOptions(t, st, dir))
	mustWrite(t, f, b.Ino, 0, data[:3000])
	f.Flush(ctx)
	f.crash()

	// Make the database look like an older version's.
	db, err := pebble.Open(filepath.Join(dir, "meta"), &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest, DisableWAL: true, Logger: pebbleLogger{f},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRange([]byte{kindUsed}, []byte{kindUsed + 1}, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(metaKey(usedMarker), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	f = mustOpen(t, testOptions(t, st, dir))
	defer f.Close()
	if got := usedAfterApply(t, f, a.Ino); got != 12288 {
		t.Fatalf("a: %d, want 12288", got)
	}
	if raw, _ := f.usedOf(a.Ino); raw != 10000 {
		t.Fatalf("a's counter %d, want 10000", raw)
	}
	if raw, _ := f.usedOf(b.Ino); raw != 8000 {
		t.Fatalf("b's counter %d, want 8000", raw)
	}
}
