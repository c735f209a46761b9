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
)

// TestStoreOutage: while the store is unreachable, flushes wait instead of
// failing, writes go on until the memory bound and then wait, reads of
// cached data still work, reads needing the store fail with EIO without
// wedging anything; when the store returns everything completes by itself
// and nothing is lost.
func TestStoreOutage(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	opts := testOptions(t, st, t.TempDir())
	opts.BatchBytes = 64 << 10
	opts.MaxDirtyBytes = 256 << 10
	f := mustOpen(t, opts)
	defer f.Close()
	cold := mustCreate(t, f, RootIno, "cold", TypeRegular|0o644)
	coldData := bytes.Repeat([]byte{7}, 8192)
	mustWrite(t, f, cold.Ino, 0, coldData)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitApplied()
	f.cache = cache.NewMemory(0) // "cold" now needs the store to be read
	n := mustCreate(t, f, RootIno, "hot", TypeRegular|0o644)

	// Every request fails, as an unreachable store's do once its client's
	// retries are exhausted.
	outage := st.Fail(faultstore.On(), nil)
	// Writes are accepted until the memory bound, then wait.
	writes := make(chan error, 1)
	go func() {
		p := bytes.Repeat([]byte{1}, 4096)
		for i := 0; i < 200; i++ { // 800 KiB: well past the 256 KiB bound
			if _, err := f.Write(ctx, Root, n.Ino, uint64(i)*4096, p); err != nil {
				writes <- err
				return
			}
		}
		writes <- nil
	}()
	flushed := make(chan error, 1)
	go func() { flushed <- f.Flush(ctx) }()
	select {
	case err := <-writes:
		t.Fatalf("writes finished during the outage (%v): back-pressure did not hold them", err)
	case err := <-flushed:
		t.Fatalf("flush returned during the outage: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	// Reading what needs the store fails cleanly and does not wedge.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if _, _, err := f.Read(rctx, Root, cold.Ino, 0, make([]byte, 100)); !errors.Is(err, ErrIO) {
		t.Fatalf("read during the outage: %v, want EIO", err)
	}
	cancel()
	// Reading what is in memory works.
	if got := mustRead(t, f, n.Ino, 0, 4096); !bytes.Equal(got, bytes.Repeat([]byte{1}, 4096)) {
		t.Fatal("buffered data unreadable during the outage")
	}
	if s := f.Status(); !s.Writable || s.StoreErrors == 0 {
		t.Fatalf("status during the outage: writable %v, store errors %d", s.Writable, s.StoreErrors)
	}

	outage.Remove() // the store comes back
	for _, ch := range []chan error{writes, flushed} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("did not recover after the store came back")
		}
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, cold.Ino, 0, len(coldData)); !bytes.Equal(got, coldData) {
		t.Fatal("cold data wrong after the outage")
	}
	f.crash()
	f = mustOpen(t, opts)
	if got := mustRead(t, f, n.Ino, 0, 200*4096); !bytes.Equal(got, bytes.Repeat([]byte{1}, 200*4096)) {
		t.Fatal("writes made during the outage lost")
	}
}
