package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

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

// TestSnapshotGC overwrites a device round after round, taking snapshots
// and deleting some between rounds. Every snapshot reads back as its round
// left the device, however much GC ran meanwhile; each deletion frees what
// it said only it held; once all are deleted, GC brings the bucket back
// within twice the live data.
func TestSnapshotGC(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	opts := testOptions(t, st, t.TempDir())
	opts.ChunkSize = 16 << 10
	f := mustOpen(t, opts)
	defer func() { f.crash() }()
	n := mustCreate(t, f, RootIno, "disk", TypeRegular|0o644)
	const size = 2 << 20
	sz := uint64(size)
	if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Size: &sz}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(12, 12))
	model := make([]byte, size)
	taken := map[string][]byte{}
	rounds := 10
	if testing.Short() {
		rounds = 5
	}
	for round := range rounds {
		// Overwrite most of the device, in writes of every size.
		for done := 0; done < size*3/4; {
			off := r.IntN(size - 4096)
			l := min(size-off, 1+r.IntN(128<<10))
			p := make([]byte, l)
			for i := range p {
				p[i] = byte(round*31 + i%251)
			}
			mustWrite(t, f, n.Ino, uint64(off), p)
			copy(model[off:], p)
			done += l
		}
		name := fmt.Sprintf("round%d", round)
		if _, err := f.CreateSnapshot(ctx, name, SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
		taken[name] = bytes.Clone(model)
		if round%3 == 2 { // delete an older one
			old := fmt.Sprintf("round%d", round-2)
			list, err := f.Snapshots(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var excl int64
			for _, s := range list {
				if s.Name == old {
					excl = s.ExclusiveBytes
				}
			}
			before, _ := storedBytes(t, st)
			freed, err := f.DeleteSnapshot(ctx, old)
			if err != nil {
				t.Fatal(err)
			}
			if freed != excl {
				t.Errorf("delete %s reports %d bytes freed, the listing said it alone held %d", old, freed, excl)
			}
			delete(taken, old)
			if _, err := f.GC(ctx); err != nil {
				t.Fatal(err)
			}
			after, _ := storedBytes(t, st)
			t.Logf("deleted %s: held alone %d bytes; bucket %d -> %d", old, excl, before, after)
		}
		if err := f.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		for name, want := range taken {
			sn, err := f.SnapshotIno(ctx, name, "disk")
			if err != nil {
				t.Fatal(err)
			}
			if got := mustRead(t, f, sn.Ino, 0, size); !bytes.Equal(got, want) {
				t.Fatalf("round %d: snapshot %s does not read back", round, name)
			}
		}
	}
	withSnaps, _ := storedBytes(t, st)
	_, held, err := f.SnapshotBytes()
	if err != nil {
		t.Fatal(err)
	}
	for name := range taken {
		if _, err := f.DeleteSnapshot(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	total, objects := storedBytes(t, st)
	t.Logf("live %d bytes; bucket with %d snapshots %d (they held %d); after deleting them and GC %d in %d objects",
		size, len(taken), withSnaps, held, total, objects)
	if total > 2*size {
		t.Fatalf("bucket holds %d bytes for %d live", total, size)
	}
	if got := mustRead(t, f, n.Ino, 0, size); !bytes.Equal(got, model) {
		t.Fatal("live data damaged")
	}
}

// TestSnapshotWithLocalWAL: with the WAL in its own store (a local
// directory), GC still packs the current state's data into the main store
// while a snapshot pins the WAL records; the snapshot reads from them until
// it is deleted, and then they go.
func TestSnapshotWithLocalWAL(t *testing.T) {
	ctx := context.Background()
	main, walStore := store.NewMem(), store.NewMem()
	opts := testOptions(t, main, t.TempDir())
	opts.WAL = walStore
	f := mustOpen(t, opts)
	defer func() { f.crash() }()
	n := mustCreate(t, f, RootIno, "f", TypeRegular|0o644)
	data := fill(200<<10, 'x')
	mustWrite(t, f, n.Ino, 0, data)
	if _, err := f.CreateSnapshot(ctx, "s", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	// The live file's data is in the main store now: reading it with the
	// WAL store emptied must work.
	segs, err := main.List(ctx, "seg/")
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment in the main store after GC (%v): the data stayed in the local WAL", err)
	}
	recs, _ := walStore.List(ctx, "wal/")
	if len(recs) == 0 {
		t.Fatal("the snapshot's WAL records were deleted")
	}
	sn, err := f.SnapshotIno(ctx, "s", "f")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, sn.Ino, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("snapshot differs")
	}
	if _, err := f.DeleteSnapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := f.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, n.Ino, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("live file differs")
	}
	var dataRecs int
	recs, _ = walStore.List(ctx, "wal/")
	for _, r := range recs {
		if r.Size > 64<<10 {
			dataRecs++
		}
	}
	if dataRecs != 0 {
		t.Fatalf("%d WAL records with data left after the snapshot was deleted: %v", dataRecs, recs)
	}
}

// TestCloneSurvivesGC: GC moves a frame for every file that shares it, the
// source and its clones alike, so the old object dies (no pass packs it
// again), and with a local WAL the clone's data reaches the main store:
// the clone reads back after the local WAL's data records are lost.
func TestCloneSurvivesGC(t *testing.T) {
	for _, local := range []bool{false, true} {
		t.Run(fmt.Sprintf("local WAL %v", local), func(t *testing.T) {
			ctx := context.Background()
			main, walStore := store.NewMem(), store.NewMem()
			opts := testOptions(t, main, t.TempDir())
			if local {
				opts.WAL = walStore
			}
			f := mustOpen(t, opts)
			n := mustCreate(t, f, RootIno, "src", TypeRegular|0o644)
			data := fill(40<<10, 'q') // a small record: GC packs it
			if local {
				data = fill(200<<10, 'q') // a local record: GC packs it into the main store
			}
			mustWrite(t, f, n.Ino, 0, data)
			if err := f.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			cl, err := f.CloneFile(ctx, Root, n.Ino, RootIno, "clone")
			if err != nil {
				t.Fatal(err)
			}
			// And a clone of the clone: its pieces name the same sealing inode.
			cl2, err := f.CloneFile(ctx, Root, cl.Ino, RootIno, "clone2")
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Compact(ctx); err != nil {
				t.Fatal(err)
			}
			st, err := f.GC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Packed != 0 || st.Segments != 0 {
				t.Fatalf("a GC pass after compaction still packs: %+v", st)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if local {
				// The local disk is lost with its WAL records; the clean
				// close's checkpoint in the main store holds everything.
				recs, _ := walStore.List(ctx, "wal/")
				for _, r := range recs {
					walStore.Delete(ctx, r.Key)
				}
			}
			opts.Dir = t.TempDir()
			f = mustOpen(t, opts)
			defer f.Close()
			for _, ino := range []uint64{n.Ino, cl.Ino, cl2.Ino} {
				if got := mustRead(t, f, ino, 0, len(data)); !bytes.Equal(got, data) {
					t.Fatalf("inode %d differs after GC", ino)
				}
			}
		})
	}
}

// TestDeleteSnapshotWhileReading: a reader racing the deletion never keeps
// the deleted snapshot's view open, and its reads end with an error.
func TestDeleteSnapshotWhileReading(t *testing.T) {
	ctx := context.Background()
	f := mustOpen(t, testOptions(t, store.NewMem(), t.TempDir()))
	defer f.Close()
	n := mustCreate(t, f, RootIno, "f", TypeRegular|0o644)
	mustWrite(t, f, n.Ino, 0, fill(8192, 'a'))
	for i := range 50 {
		name := fmt.Sprintf("s%d", i)
		if _, err := f.CreateSnapshot(ctx, name, SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
		sn, err := f.SnapshotIno(ctx, name, "f")
		if err != nil {
			t.Fatal(err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 100)
			for {
				select {
				case <-stop:
					return
				default:
					f.Read(ctx, Root, sn.Ino, 0, buf)
				}
			}
		}()
		if _, err := f.DeleteSnapshot(ctx, name); err != nil {
			t.Fatal(err)
		}
		close(stop)
		<-done
		if _, _, err := f.Read(ctx, Root, sn.Ino, 0, make([]byte, 100)); err == nil {
			t.Fatalf("%s: a read of the deleted snapshot succeeded", name)
		}
		f.viewsMu.Lock()
		open := len(f.views)
		f.viewsMu.Unlock()
		if open != 0 {
			t.Fatalf("%s: %d views open after the deletion", name, open)
		}
	}
}

// TestIdleViewsClosed: reading many snapshots keeps at most maxOpenViews
// of them open; an evicted one reopens on its next read.
func TestIdleViewsClosed(t *testing.T) {
	defer func(g time.Duration) { viewEvictGrace = g }(viewEvictGrace)
	viewEvictGrace = 0
	ctx := context.Background()
	f := mustOpen(t, testOptions(t, store.NewMem(), t.TempDir()))
	defer f.Close()
	n := mustCreate(t, f, RootIno, "f", TypeRegular|0o644)
	var inos []uint64
	for i := range maxOpenViews + 8 {
		mustWrite(t, f, n.Ino, 0, fill(4096, byte(i)))
		name := fmt.Sprintf("s%d", i)
		if _, err := f.CreateSnapshot(ctx, name, SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
		sn, err := f.SnapshotIno(ctx, name, "f")
		if err != nil {
			t.Fatal(err)
		}
		inos = append(inos, sn.Ino)
	}
	for round := range 2 {
		for i, ino := range inos {
			if got := mustRead(t, f, ino, 0, 4096); !bytes.Equal(got, fill(4096, byte(i))) {
				t.Fatalf("round %d: snapshot %d reads wrong", round, i)
			}
		}
	}
	f.viewsMu.Lock()
	open := len(f.views)
	f.viewsMu.Unlock()
	if open > maxOpenViews {
		t.Fatalf("%d views open, at most %d wanted", open, maxOpenViews)
	}
}
