package fs

import (
	"context"
	"testing"
	"time"

	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
)

// A checkpoint stuck on the store does not stop writes that are never
// flushed from being sealed by age: docs/durability.md bounds their loss by
// BatchAge, whatever the background work is doing.
func TestAgeSealWhileCheckpointStuck(t *testing.T) {
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.CheckpointInterval = 10 * time.Millisecond
	f := mustOpen(t, opts)
	defer func() { st.Clear(); f.Close() }()
	n := mustCreate(t, f, RootIno, "file", TypeRegular|0o644)
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The next checkpoint's uploads hang.
	gate := st.Hold(faultstore.Puts().Prefix(metaPrefix))
	ctx, cancel := context.WithTimeout(context.Background(), testutil.HangBound)
	defer cancel()
	if err := gate.WaitBlocked(ctx, 1); err != nil {
		t.Fatal(err)
	}
	before := f.Status().WALLastSeq
	mustWrite(t, f, n.Ino, 0, []byte("never flushed"))
	testutil.Eventually(t, func() bool { return f.Status().WALLastSeq > before },
		func() string { return "the unflushed write sealed by age while a checkpoint hangs" })
}
