package fs

import (
	"context"
	"errors"
	"testing"

	"zerofs/store"
)

// TestCheckpointSweepsOrphans: metadata files a writer uploaded for a
// checkpoint it never published (it crashed before moving the head) are
// deleted by the next checkpoint of a later writer; a newer writer's files
// are never touched.
func TestCheckpointSweepsOrphans(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	f := mustOpen(t, testOptions(t, st, t.TempDir()))
	mustCreate(t, f, RootIno, "a", 0o644)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// What a crash between uploading files and moving the head leaves.
	orphans := []string{metaPrefix + "000001/" + "0badc0de", metaPrefix + "000001/ckpt-00000000000000ff"}
	newer := metaPrefix + "ffffff/0badc0de" // a later epoch's: not ours to judge
	for _, k := range append(orphans, newer) {
		if _, err := st.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	f.crash()

	g := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer g.Close()
	mustCreate(t, g, RootIno, "b", 0o644)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range orphans {
		if _, err := st.Head(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("orphan %s after the next checkpoint: %v, want it deleted", k, err)
		}
	}
	if _, err := st.Head(ctx, newer); err != nil {
		t.Errorf("a newer epoch's file: %v, want it kept", err)
	}
	// And the checkpoint in place still restores.
	h := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer h.Close()
	for _, name := range []string{"a", "b"} {
		if _, err := h.Lookup(ctx, Root, RootIno, name); err != nil {
			t.Errorf("%s after restore: %v", name, err)
		}
	}
}
