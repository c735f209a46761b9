package fs

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/wal"
)

// TestFencingTwoEngines: a second engine on the same prefix fences the first.
// The first's writes after that fail and never appear; nothing interleaves.
func TestFencingTwoEngines(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	a := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer a.crash()
	n := mustCreate(t, a, RootIno, "disk", TypeRegular|0o644)
	one := bytes.Repeat([]byte("A1"), 2048)
	mustWrite(t, a, n.Ino, 0, one)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	b := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer b.crash()
	if got := mustRead(t, b, n.Ino, 0, len(one)); !bytes.Equal(got, one) {
		t.Fatal("the new writer does not see the old writer's flushed data")
	}

	// The old writer's next flush fails: it is fenced.
	two := bytes.Repeat([]byte("A2"), 2048)
	if _, err := a.Write(ctx, Root, n.Ino, 4096, two); err == nil {
		err = a.Flush(ctx)
		if !errors.Is(err, ErrReadOnly) || !errors.Is(err, wal.ErrFenced) {
			t.Fatalf("flush by the fenced writer: %v, want EROFS wrapping ErrFenced", err)
		}
	} else if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write by the fenced writer: %v", err)
	}
	if _, err := a.Write(ctx, Root, n.Ino, 0, []byte("x")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write after being fenced: %v, want EROFS", err)
	}
	if _, _, err := a.Create(ctx, Root, RootIno, "late", NewNode{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("create after being fenced: %v, want EROFS", err)
	}

	three := bytes.Repeat([]byte("B1"), 2048)
	mustWrite(t, b, n.Ino, 8192, three)
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b.Close()

	c := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer c.Close()
	got := mustRead(t, c, n.Ino, 0, 3*4096)
	want := append(append(append([]byte{}, one...), make([]byte, 4096)...), three...)
	if !bytes.Equal(got, want) {
		t.Fatal("history after fencing is not the first writer's flushed data followed by the second's")
	}
	if _, err := c.Lookup(ctx, Root, RootIno, "late"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("the fenced writer's create is visible: %v", err)
	}
}

// TestFencedWriterNoticesWithoutWriting: a writer that is idle learns of the
// new claim from the head and stops accepting writes.
func TestFencedWriterNoticesWithoutWriting(t *testing.T) {
	st := store.NewMem()
	a := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer a.crash()
	b := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer b.Close()
	deadline := time.Now().Add(time.Minute)
	for a.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, err := a.Create(context.Background(), Root, RootIno, "x", NewNode{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("idle fenced writer: %v, want EROFS", err)
	}
}
