package fs

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
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

// TestPebbleErrorsRateLimited: pebble retries a failing background flush
// at once and logs every try; zerofs logs one line per pebbleErrorEvery,
// counting the rest.
func TestPebbleErrorsRateLimited(t *testing.T) {
	var lines atomic.Int64
	f := &FS{log: slog.New(&countingHandler{Handler: slog.NewTextHandler(io.Discard, nil), match: "pebble", n: &lines})}
	l := pebbleLogger{f}
	for i := range 10000 {
		l.Errorf("background error: creating object %d: no such file or directory", i)
	}
	if n := lines.Load(); n != 1 {
		t.Fatalf("%d lines for 10,000 errors in a burst, want 1", n)
	}
	f.pebbleLog.last = time.Now().Add(-pebbleErrorEvery)
	l.Errorf("background error: again")
	if n, dropped := lines.Load(), f.pebbleLog.dropped; n != 2 || dropped != 0 {
		t.Fatalf("after the interval: %d lines (want 2), %d still counted", n, dropped)
	}
}
