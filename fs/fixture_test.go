package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"zerofs/store"
)

// TestReadsOldFormats opens every fixture in testdata — a bucket and the
// local state exactly as an older zerofs left them at kill -9 (written by
// TestWriteFixture at the commit the directory names) — with this code,
// once with its local state and once as a fresh machine from the bucket
// alone, and checks the whole tree. The bucket outlives the binary: a
// change to what is stored must keep these readable.
func TestReadsOldFormats(t *testing.T) {
	fixtures, err := filepath.Glob("testdata/format*")
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no fixtures in testdata: %v", err)
	}
	for _, fx := range fixtures {
		for _, tc := range []struct {
			name       string
			localState bool
		}{
			{"with its local state", true},
			{"fresh machine", false},
		} {
			t.Run(filepath.Base(fx)+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := os.CopyFS(dir, os.DirFS(fx)); err != nil {
					t.Fatal(err)
				}
				state := filepath.Join(dir, "state")
				if !tc.localState {
					os.RemoveAll(state)
				}
				st, err := store.Open(context.Background(), "file://"+filepath.Join(dir, "store"), store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				f := mustOpen(t, testOptions(t, st, state))
				defer f.Close()
				checkFixtureTree(t, f)
				// Fixtures from before unflushed-write marks have none:
				// nothing is interrupted. Later ones mark "after".
				var want []uint64
				if _, err := os.Stat(filepath.Join(dir, "store", markPrefix)); err == nil {
					after, err := f.Lookup(context.Background(), Root, RootIno, "after")
					if err != nil {
						t.Fatal(err)
					}
					want = []uint64{after.Ino}
				}
				if got := f.InterruptedFiles(); !slices.Equal(got, want) {
					t.Errorf("interrupted files %v, want %v", got, want)
				}
			})
		}
	}
}

// checkFixtureTree checks what TestWriteFixture wrote.
func checkFixtureTree(t *testing.T, f *FS) {
	t.Helper()
	ctx := context.Background()
	lookup := func(dir uint64, name string) Inode {
		t.Helper()
		n, err := f.Lookup(ctx, Root, dir, name)
		if err != nil {
			t.Fatalf("lookup %q: %v", name, err)
		}
		return n
	}
	d := lookup(RootIno, "dir")
	file := lookup(d.Ino, "file")
	want := bytes.Repeat([]byte("zerofs fixture\n"), 1000)
	if got := mustRead(t, f, file.Ino, 0, len(want)+10); !bytes.Equal(got, want) || file.Size != uint64(len(want)) {
		t.Errorf("dir/file: %d bytes, size %d, content differs", len(got), file.Size)
	}
	if hard := lookup(RootIno, "hard"); hard.Ino != file.Ino || hard.Nlink != 2 {
		t.Errorf("hard link: inode %d (want %d), nlink %d (want 2)", hard.Ino, file.Ino, hard.Nlink)
	}
	if file.Mode&0o7777 != 0o640 {
		t.Errorf("dir/file mode %o, want 640", file.Mode&0o7777)
	}
	sparse := lookup(RootIno, "sparse")
	if sparse.Size != 1<<30 {
		t.Errorf("sparse: size %d, want 1 GiB", sparse.Size)
	}
	got := mustRead(t, f, sparse.Ino, 512<<20-4096, 4096+64<<10+4096)
	wantSparse := append(append(append(make([]byte, 4096), bytes.Repeat([]byte{0x6b}, 4096)...), bytes.Repeat([]byte{0x5a}, 60<<10)...), make([]byte, 4096)...)
	if !bytes.Equal(got, wantSparse) {
		t.Error("sparse: the data around 512 MiB differs")
	}
	f.waitApplied()
	if used := f.UsedBytes(&sparse); used != 64<<10 {
		t.Errorf("sparse: used %d, want 64 KiB", used)
	}
	link := lookup(RootIno, "link")
	if link.Target != "dir/file" {
		t.Errorf("link target %q", link.Target)
	}
	after := lookup(RootIno, "after")
	wantAfter := append(make([]byte, 4096), bytes.Repeat([]byte{0xaf}, 8192)...)
	if got := mustRead(t, f, after.Ino, 0, 20000); !bytes.Equal(got, wantAfter) {
		t.Errorf("after (only in the WAL): %d bytes, content differs", len(got))
	}
	// Fixtures from before snapshots have neither the snapshot nor the clone.
	if _, err := f.Lookup(ctx, Root, RootIno, "clone"); errors.Is(err, ErrNotExist) {
		return
	}
	clone := lookup(RootIno, "clone")
	if got := mustRead(t, f, clone.Ino, 0, len(want)+10); !bytes.Equal(got, want) || clone.Ino == file.Ino {
		t.Errorf("clone of dir/file: %d bytes, content differs", len(got))
	}
	snaps, err := f.Snapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "snap" || !snaps[0].Held {
		t.Fatalf("snapshots %+v (%v), want snap, held", snaps, err)
	}
	ssparse, err := f.SnapshotIno(ctx, "snap", "sparse")
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot predates the overwrite at 512 MiB and the file "after".
	got = mustRead(t, f, ssparse.Ino, 512<<20-4096, 4096+64<<10+4096)
	wantSnap := append(append(make([]byte, 4096), bytes.Repeat([]byte{0x5a}, 64<<10)...), make([]byte, 4096)...)
	if !bytes.Equal(got, wantSnap) {
		t.Error("snapshot of sparse: the data around 512 MiB differs")
	}
	if _, err := f.SnapshotIno(ctx, "snap", "after"); !errors.Is(err, ErrNotExist) {
		t.Errorf("snapshot has \"after\": %v", err)
	}
}
