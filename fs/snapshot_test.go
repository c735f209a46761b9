package fs

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"zerofs/store"
)

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// TestSnapshotReadCloneRestore: a snapshot reads as the filesystem was,
// through virtual inodes; a clone shares the snapshot's data and is
// writable; a restore puts the old content back; all of it survives a
// restart on a fresh machine (bucket only) and GC.
func TestSnapshotReadCloneRestore(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	f := mustOpen(t, testOptions(t, st, t.TempDir()))
	dir := mustCreate(t, f, RootIno, "d", TypeDir|0o755)
	dev := mustCreate(t, f, dir.Ino, "dev", TypeRegular|0o644)
	mustWrite(t, f, dev.Ino, 0, fill(20000, 'a'))
	if _, err := f.CreateSnapshot(ctx, "s1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, dev.Ino, 4096, fill(8192, 'b'))
	if _, err := f.CreateSnapshot(ctx, "s1", SnapshotOptions{}); !errors.Is(err, ErrExist) {
		t.Fatalf("second s1: %v, want ErrExist", err)
	}
	for _, bad := range []string{"", "a/b", "a@b", ".hidden", string(make([]byte, 65))} {
		if _, err := f.CreateSnapshot(ctx, bad, SnapshotOptions{}); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNameTooLong) {
			t.Errorf("name %q: %v, want ErrInvalid", bad, err)
		}
	}

	check := func(f *FS) {
		t.Helper()
		sn, err := f.SnapshotIno(ctx, "s1", "d", "dev")
		if err != nil {
			t.Fatal(err)
		}
		if !IsSnapshotIno(sn.Ino) || sn.Size != 20000 {
			t.Fatalf("snapshot file: ino %#x size %d", sn.Ino, sn.Size)
		}
		if got := mustRead(t, f, sn.Ino, 0, 20000); !bytes.Equal(got, fill(20000, 'a')) {
			t.Fatal("snapshot content differs from the state at its creation")
		}
		if _, err := f.Write(ctx, Root, sn.Ino, 0, []byte("x")); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("write to a snapshot: %v, want ErrReadOnly", err)
		}
		live, err := f.Lookup(ctx, Root, dir.Ino, "dev")
		if err != nil {
			t.Fatal(err)
		}
		want := fill(20000, 'a')
		copy(want[4096:], fill(8192, 'b'))
		if got := mustRead(t, f, live.Ino, 0, 20000); !bytes.Equal(got, want) {
			t.Fatal("live content wrong")
		}
		snaps, err := f.Snapshots(ctx)
		if err != nil || len(snaps) != 1 || snaps[0].Name != "s1" {
			t.Fatalf("snapshots: %v %v", snaps, err)
		}
		ents, _, err := f.ReadDir(ctx, Root, SnapshotDirIno, 0, 10)
		if err != nil || len(ents) != 1 || ents[0].Name != "s1" {
			t.Fatalf("readdir /.snapshots: %v %v", ents, err)
		}
	}
	check(f)

	sn, err := f.SnapshotIno(ctx, "s1", "d", "dev")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := f.CloneFile(ctx, Root, sn.Ino, dir.Ino, "clone")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, cl.Ino, 0, fill(100, 'c'))
	wantClone := fill(20000, 'a')
	copy(wantClone, fill(100, 'c'))
	if got := mustRead(t, f, cl.Ino, 0, 20000); !bytes.Equal(got, wantClone) {
		t.Fatal("clone content wrong")
	}
	live2, err := f.CloneFile(ctx, Root, dev.Ino, dir.Ino, "clone-live")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check(f)
	f.Close()

	// A fresh machine: only the bucket.
	f = mustOpen(t, testOptions(t, st, t.TempDir()))
	check(f)
	if got := mustRead(t, f, cl.Ino, 0, 20000); !bytes.Equal(got, wantClone) {
		t.Fatal("clone content wrong after recovery")
	}
	wantLive := fill(20000, 'a')
	copy(wantLive[4096:], fill(8192, 'b'))
	if got := mustRead(t, f, live2.Ino, 0, 20000); !bytes.Equal(got, wantLive) {
		t.Fatal("clone of the live file wrong after recovery")
	}
	sn, err = f.SnapshotIno(ctx, "s1", "d", "dev")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.RestoreFile(ctx, Root, dev.Ino, sn.Ino); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, dev.Ino, 0, 30000); !bytes.Equal(got, fill(20000, 'a')) {
		t.Fatalf("restored content wrong (%d bytes)", len(got))
	}
	if _, err := f.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"dev": fill(20000, 'a'), "clone": wantClone, "clone-live": wantLive} {
		n, err := f.Lookup(ctx, Root, dir.Ino, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, f, n.Ino, 0, 20000); !bytes.Equal(got, want) {
			t.Fatalf("%s wrong after deleting the snapshot and GC", name)
		}
	}
	f.Close()
}
