package fs

import (
	"context"
	"errors"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
)

// TestUnflushedMarks walks a file's unflushed-write mark through its life
// (marks.go): one PUT when the file goes from clean to written, none while
// it stays marked, deleted once quiet with its writes durable, kept by a
// crash as an interruption that survives a clean restart and a fresh
// machine, until ClearInterrupted.
func TestUnflushedMarks(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	dir := t.TempDir()
	opts := testOptions(t, st, dir)
	f := mustOpen(t, opts)
	a := mustCreate(t, f, RootIno, "a", TypeRegular|0o644)
	b := mustCreate(t, f, RootIno, "b", TypeRegular|0o644)
	mark := func(ino uint64) {
		t.Helper()
		done, err := f.MarkUnflushed(ctx, ino)
		if err != nil {
			t.Fatalf("mark %d: %v", ino, err)
		}
		mustWrite(t, f, ino, 0, []byte("unflushed"))
		done()
	}
	marked := func(ino uint64) bool {
		_, err := st.Inner().Head(ctx, markKey(ino))
		return err == nil
	}
	st.ResetCounts()
	for range 5 {
		mark(a.Ino)
	}
	if n := st.Count(faultstore.OpPut).Calls; n != 1 || !marked(a.Ino) {
		t.Fatalf("%d PUTs for five writes, marked %v: want one mark", n, marked(a.Ino))
	}

	// Quiet and durable: the mark goes. A write since the flush keeps it.
	f.clearQuietMarks(ctx, time.Now().Add(time.Hour))
	if marked(a.Ino) {
		t.Fatal("a quiet file's mark stayed")
	}
	mark(a.Ino)
	mark(b.Ino)
	f.unmark(ctx, a.Ino, time.Now().Add(-time.Minute)) // written after that flush began
	if !marked(a.Ino) {
		t.Fatal("a mark went though a write came after the flush")
	}

	// Crash with both marked; b's writes were even flushed, but its mark
	// had not gone yet: both are interrupted, after a clean restart too.
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.crash()
	f = mustOpen(t, opts)
	if got := f.InterruptedFiles(); len(got) != 2 || !f.Interrupted(a.Ino) || !f.Interrupted(b.Ino) {
		t.Fatalf("interrupted %v after a crash, want %d and %d", got, a.Ino, b.Ino)
	}
	if _, err := f.MarkUnflushed(ctx, a.Ino); !errors.Is(err, ErrIO) {
		t.Fatalf("marking an interrupted file: %v, want ErrIO", err)
	}
	// The crashed run, fenced but still alive, deletes its marks: the
	// interruptions this run recorded stay.
	for _, ino := range []uint64{a.Ino, b.Ino} {
		if err := st.Inner().Delete(ctx, markKey(ino)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := opts
	fresh.Dir = t.TempDir() // a fresh machine
	f = mustOpen(t, fresh)
	if len(f.InterruptedFiles()) != 2 {
		t.Fatalf("interrupted %v on a fresh machine after a clean restart, want both", f.InterruptedFiles())
	}
	if err := f.ClearInterrupted(ctx, a.Ino); err != nil {
		t.Fatal(err)
	}
	if f.Interrupted(a.Ino) || marked(a.Ino) || !f.Interrupted(b.Ino) {
		t.Fatal("ClearInterrupted cleared the wrong file")
	}

	// A store that refuses the mark holds the write back until it takes it.
	outage := st.Fail(faultstore.Puts(), nil)
	res := make(chan error, 1)
	go func() {
		done, err := f.MarkUnflushed(ctx, a.Ino)
		if err == nil {
			done()
		}
		res <- err
	}()
	select {
	case err := <-res:
		t.Fatalf("marking returned %v during the outage", err)
	case <-time.After(300 * time.Millisecond):
	}
	outage.Remove()
	if err := <-res; err != nil || !marked(a.Ino) {
		t.Fatalf("after the outage: %v, marked %v", err, marked(a.Ino))
	}

	// A clean stop leaves only the interruption.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := st.Inner().Head(ctx, interruptedKey(b.Ino))
	if marked(a.Ino) || err != nil {
		t.Fatalf("after Close: a marked %v (want false), b's interruption: %v (want kept)", marked(a.Ino), err)
	}
}

// TestMarksOfDeletedFiles: a file deleted while marked leaves no
// interruption behind — none that could never be cleared, with no name left
// to clear it by — whether the deleter forgets its marks (as NBD's delete
// does) or not (a removal over NFS, then a crash before the mark went).
func TestMarksOfDeletedFiles(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	f := mustOpen(t, opts)
	a := mustCreate(t, f, RootIno, "a", TypeRegular|0o644)
	b := mustCreate(t, f, RootIno, "b", TypeRegular|0o644)
	for _, n := range []Inode{a, b} {
		done, err := f.MarkUnflushed(ctx, n.Ino)
		if err != nil {
			t.Fatal(err)
		}
		done()
		if _, err := f.Remove(ctx, Root, RootIno, map[uint64]string{a.Ino: "a", b.Ino: "b"}[n.Ino]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.ForgetMarks(ctx, a.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Inner().Head(ctx, markKey(a.Ino)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a's mark after ForgetMarks: %v", err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.crash() // b's mark is still there
	f = mustOpen(t, opts)
	defer f.Close()
	if got := f.InterruptedFiles(); len(got) != 0 {
		t.Fatalf("interrupted %v: deleted files", got)
	}
	for _, key := range []string{markKey(b.Ino), interruptedKey(b.Ino)} {
		if _, err := st.Inner().Head(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s of a deleted file: %v, want it gone", key, err)
		}
	}
	if err := f.ClearInterrupted(ctx, b.Ino); !errors.Is(err, ErrNotInterrupted) {
		t.Fatalf("clearing a file that is not interrupted: %v", err)
	}
}
