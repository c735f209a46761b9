package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"zerofs/store"
)

// TestWriteFixture writes a small filesystem, as this version stores it,
// into $ZEROFS_WRITE_FIXTURE: the bucket (store/) and the local state
// (state/) as a kill -9 leaves them, with a checkpoint and WAL records after
// it. fs/testdata keeps such trees from older versions; TestReadsOldFormats
// opens them with the current code.
func TestWriteFixture(t *testing.T) {
	dir := os.Getenv("ZEROFS_WRITE_FIXTURE")
	if dir == "" {
		t.Skip("set ZEROFS_WRITE_FIXTURE=DIR to write a fixture")
	}
	ctx := context.Background()
	st, err := store.Open(ctx, "file://"+filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, st, filepath.Join(dir, "state"))
	f := mustOpen(t, opts)
	d, _, err := f.Create(ctx, Root, RootIno, "dir", NewNode{Mode: TypeDir | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	file := mustCreate(t, f, d.Ino, "file", TypeRegular|0o640)
	mustWrite(t, f, file.Ino, 0, bytes.Repeat([]byte("zerofs fixture\n"), 1000))
	if _, _, err := f.Link(ctx, Root, file.Ino, RootIno, "hard"); err != nil {
		t.Fatal(err)
	}
	sparse := mustCreate(t, f, RootIno, "sparse", TypeRegular|0o644)
	size := uint64(1 << 30)
	if _, _, err := f.SetAttr(ctx, Root, sparse.Ino, SetAttrs{Size: &size}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, sparse.Ino, 512<<20, bytes.Repeat([]byte{0x5a}, 64<<10))
	if _, _, err := f.Create(ctx, Root, RootIno, "link", NewNode{Mode: TypeSymlink | 0o777, Target: "dir/file"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	if err := f.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// A snapshot (a kept checkpoint and a record naming its objects) of
	// the state so far, and a clone whose pieces name the inode their frames
	// were sealed for (fs/snapshot.go, fs/clone.go).
	if _, err := f.CreateSnapshot(ctx, "snap", SnapshotOptions{Held: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.CloneFile(ctx, Root, file.Ino, RootIno, "clone"); err != nil {
		t.Fatal(err)
	}
	// After the checkpoint: only in the WAL.
	after := mustCreate(t, f, RootIno, "after", TypeRegular|0o600)
	mustWrite(t, f, after.Ino, 4096, bytes.Repeat([]byte{0xaf}, 8192))
	mustWrite(t, f, sparse.Ino, 512<<20, bytes.Repeat([]byte{0x6b}, 4096)) // overwrite a piece
	// "after" is marked as holding unflushed writes (marks.go): the crash
	// leaves it interrupted.
	done, err := f.MarkUnflushed(ctx, after.Ino)
	if err != nil {
		t.Fatal(err)
	}
	done()
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	f.crash()
}
