package fs

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"zerofs/cache"
	"zerofs/store"
	"zerofs/store/faultstore"
	"zerofs/wal"
)

// A cold read shared by two requests: the first one's connection dies
// while the GET is held up. That request returns ErrCanceled at once; the
// GET goes on, and the second request gets the data.
func TestSharedGetOutlivesCanceledReader(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	f := mustOpen(t, testOptions(t, st, t.TempDir()))
	defer func() { st.Clear(); f.Close() }()
	n := mustCreate(t, f, RootIno, "cold", TypeRegular|0o644)
	data := bytes.Repeat([]byte{0x5c}, 4096)
	mustWrite(t, f, n.Ino, 0, data)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	f.cache = cache.NewMemory(0) // the next read needs the store

	// The frame is in the newest WAL record; hold GETs of it (and only of
	// it: the head watch reads other keys meanwhile).
	rec := wal.Key(f.Status().WALLastSeq)
	gate := st.Hold(faultstore.On(faultstore.OpGet).Key(rec))
	read := func(rctx context.Context) chan error {
		ch := make(chan error, 1)
		go func() {
			buf := make([]byte, len(data))
			_, _, err := f.Read(rctx, Root, n.Ino, 0, buf)
			if err == nil && !bytes.Equal(buf, data) {
				err = errors.New("wrong data")
			}
			ch <- err
		}()
		return ch
	}
	dctx, die := context.WithCancelCause(ctx)
	first := read(dctx)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := gate.WaitBlocked(wctx, 1); err != nil {
		t.Fatal(err)
	}
	second := read(ctx)
	gone := errors.New("connection gone")
	die(gone)
	select {
	case err := <-first:
		if !errors.Is(err, ErrCanceled) || !errors.Is(err, gone) {
			t.Fatalf("read of the dead connection: %v, want ErrCanceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a canceled read kept waiting for the store")
	}
	gate.Release()
	if err := <-second; err != nil {
		t.Fatalf("the other reader of the shared GET: %v", err)
	}
	if got := gate.Hits(); got != 1 {
		t.Fatalf("%d GETs of %s, want 1 shared", got, rec)
	}
}
