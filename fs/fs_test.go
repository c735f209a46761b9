package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// testOptions returns options for a small, fast filesystem on st with local
// state in dir.
func testOptions(t testing.TB, st store.Store, dir string) Options {
	return Options{
		Main: st, Dir: dir, Password: "test password", KeyParams: crypt.TestParams,
		ChunkSize: 4096, BatchBytes: 256 << 10, BatchAge: 50 * time.Millisecond,
		CheckpointInterval: -1, GCInterval: -1, SegmentBytes: 1 << 20, AdoptBytes: 64 << 10,
		Logger: testutil.Logger(t),
	}
}

func mustOpen(t testing.TB, opts Options) *FS {
	t.Helper()
	f, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return f
}

func mustCreate(t testing.TB, f *FS, dir uint64, name string, mode uint32) Inode {
	t.Helper()
	n, _, err := f.Create(context.Background(), Root, dir, name, NewNode{Mode: mode})
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return n
}

func mustWrite(t testing.TB, f *FS, ino, off uint64, p []byte) {
	t.Helper()
	if _, err := f.Write(context.Background(), Root, ino, off, p); err != nil {
		t.Fatalf("write inode %d [%d,+%d): %v", ino, off, len(p), err)
	}
}

func mustRead(t testing.TB, f *FS, ino, off uint64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	got, _, err := f.Read(context.Background(), Root, ino, off, p)
	if err != nil {
		t.Fatalf("read inode %d [%d,+%d): %v", ino, off, n, err)
	}
	return p[:got]
}

func TestWriteReadReopen(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	dir := t.TempDir()
	f := mustOpen(t, testOptions(t, st, dir))
	n := mustCreate(t, f, RootIno, "file", TypeRegular|0o644)
	data := make([]byte, 100_000)
	rand.Read(data)
	mustWrite(t, f, n.Ino, 1000, data)
	if got := mustRead(t, f, n.Ino, 1000, len(data)); !bytes.Equal(got, data) {
		t.Fatal("read back differs before flush")
	}
	if got := mustRead(t, f, n.Ino, 0, 1000); !bytes.Equal(got, make([]byte, 1000)) {
		t.Fatal("hole does not read as zeros")
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.crash()

	f = mustOpen(t, testOptions(t, st, dir))
	got, err := f.Lookup(ctx, Root, RootIno, "file")
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 101_000 {
		t.Fatalf("size %d after reopen", got.Size)
	}
	if got := mustRead(t, f, n.Ino, 1000, len(data)); !bytes.Equal(got, data) {
		t.Fatal("read back differs after reopen")
	}
	f.Close()

	// A fresh machine: no local state at all.
	f = mustOpen(t, testOptions(t, st, t.TempDir()))
	if got := mustRead(t, f, n.Ino, 1000, len(data)); !bytes.Equal(got, data) {
		t.Fatal("read back differs on a fresh machine")
	}
	f.Close()
}
