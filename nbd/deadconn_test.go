package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"zerofs/fs"
	"zerofs/internal/budget"
	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
)

// waitMemoryWaiters waits until n writes wait for dirty memory in f.
func waitMemoryWaiters(t *testing.T, f *fs.FS, n int) {
	t.Helper()
	testutil.Eventually(t, func() bool { return f.Status().MemoryWaiters == n },
		func() string { return fmt.Sprintf("%d writes wait for memory, want %d", f.Status().MemoryWaiters, n) })
}

// TestDeadConnectionWriteNeverRevertsFlush is the reproduction of
// docs/durability.md's "Requests of a connection that dies" over NBD:
//
//  1. block X is written and flushed;
//  2. the store refuses every PUT; a second connection fills the dirty
//     memory budget, so writes wait;
//  3. a third connection sends WRITE A to X and dies while A waits;
//  4. a fourth connection writes B to X; the store returns; B is
//     acknowledged and the fourth connection flushes.
//
// B and its flush must succeed and X must read B — on a new connection, and
// on a second instance that takes the bucket over as after kill -9 or the
// loss of the machine (recovery from the bucket alone). Before connections
// owned their requests, A was applied after B: flushed data reverted.
func TestDeadConnectionWriteNeverRevertsFlush(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 3
	}
	for round := range rounds {
		deadConnectionRound(t, round)
	}
}

func deadConnectionRound(t *testing.T, round int) {
	ctx := context.Background()
	fst, err := store.Open(ctx, "file://"+t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := faultstore.New(fst)
	opts := fsOptions(t, st, t.TempDir())
	opts.BatchBytes = 1 << 20
	opts.MaxDirtyBytes = 2 << 20
	f, err := fs.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Clear(); f.Close() }()
	const size, x = 64 << 20, 48 << 20
	mustCreateExport(t, f, "dev", size)
	srv, addr := startServer(t, f, Options{})
	defer srv.Shutdown(ctx)
	dial := func() *testClient {
		t.Helper()
		c, err := dialClient(addr, "dev", clientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	blk := func(v byte) []byte { return bytes.Repeat([]byte{v}, 64<<10) }

	c1 := dial()
	if err := c1.Write(x, blk(0x11), 0); err != nil {
		t.Fatal(err)
	}
	if err := c1.Flush(); err != nil {
		t.Fatal(err)
	}
	c1.Close()

	outage := st.Fail(faultstore.Puts(), nil)
	// Connection 2 fills the dirty budget: one write larger than the whole
	// budget is admitted (the bound is soft), and the next one waits.
	c2 := dial()
	defer c2.Close()
	if err := c2.Write(0, bytes.Repeat([]byte{0xf2}, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.send(cmdWrite, 0, 4<<20, 4096, bytes.Repeat([]byte{0xf3}, 4096)); err != nil {
		t.Fatal(err)
	}
	waitMemoryWaiters(t, f, 1)
	const waiting = 1
	// Connection 3 sends WRITE A to X, which waits, and dies.
	c3 := dial()
	if _, err := c3.send(cmdWrite, 0, x, 64<<10, blk(0xaa)); err != nil {
		t.Fatal(err)
	}
	waitMemoryWaiters(t, f, waiting+1)
	c3.Close()
	waitMemoryWaiters(t, f, waiting) // A left the queue without beginning
	// Connection 4 writes B to X and flushes.
	c4 := dial()
	defer c4.Close()
	bCookie, err := c4.send(cmdWrite, 0, x, 64<<10, blk(0xbb))
	if err != nil {
		t.Fatal(err)
	}
	waitMemoryWaiters(t, f, waiting+1)

	outage.Remove()
	// B's reply, then the FLUSH: a flush covers the writes completed
	// before it (as the kernel sends them), not ones still waiting.
	c4.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	if res, cookie, err := c4.reply(0, 0); err != nil || res.errno != 0 || cookie != bCookie {
		t.Fatalf("round %d: B: cookie %d errno %d err %v", round, cookie, res.errno, err)
	}
	if err := c4.Flush(); err != nil {
		t.Fatalf("round %d: flush after B: %v", round, err)
	}
	c2.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	if res, _, err := c2.reply(0, 0); err != nil || res.errno != 0 {
		t.Fatalf("round %d: the waiting write of connection 2: errno %d err %v", round, res.errno, err)
	}
	c5 := dial()
	got, err := c5.Read(x, 64<<10)
	c5.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blk(0xbb)) {
		t.Fatalf("round %d: block X reads %#x..., want B (0xbb): the dead connection's write overtook a flushed one", round, got[0])
	}

	// A second instance takes the bucket over with empty local state, as
	// after kill -9 and the loss of the machine; the first is fenced.
	opts2 := fsOptions(t, st.Inner(), t.TempDir())
	f2, err := fs.Open(ctx, opts2)
	if err != nil {
		t.Fatalf("round %d: take over: %v", round, err)
	}
	defer f2.Close()
	dev, err := lookupExportFile(ctx, f2, "dev")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, _, err := f2.Read(ctx, fs.Root, dev.Ino, x, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, blk(0xbb)) {
		t.Fatalf("round %d: after takeover block X reads %#x..., want B (0xbb); old %+v new %+v", round, buf[0], f.Status(), f2.Status())
	}
}

// TestStalledConnectionIsReset: a connection whose reader waits longer than
// MaxReadWait for request memory is reset, and the request it had not read
// is never applied — not even once memory frees. (A client that gave up on
// it closes with a FIN queued behind the unread data, invisible to the
// server: see netserve.ReadWait.)
func TestStalledConnectionIsReset(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	opts := fsOptions(t, st, t.TempDir())
	opts.BatchBytes = 1 << 20
	opts.MaxDirtyBytes = 2 << 20
	f, err := fs.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Clear(); f.Close() }()
	mustCreateExport(t, f, "dev", 64<<20)
	_, addr := startServer(t, f, Options{Requests: budget.New(1 << 20), MaxReadWait: 300 * time.Millisecond})
	dial := func() *testClient {
		t.Helper()
		c, err := dialClient(addr, "dev", clientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const x = 48 << 20
	c1 := dial()
	// A plain write and a flush, not a FUA write: the export gets its
	// unflushed-write mark now (fs/marks.go). A first plain write during
	// the outage would wait for its mark, not for memory.
	if err := c1.Write(x, bytes.Repeat([]byte{0x11}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := c1.Flush(); err != nil {
		t.Fatal(err)
	}

	outage := st.Fail(faultstore.Puts(), nil)
	// Fill dirty memory, then the request budget with a write waiting.
	if err := c1.Write(0, bytes.Repeat([]byte{0xf1}, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.send(cmdWrite, 0, 4<<20, 1<<20, bytes.Repeat([]byte{0xf2}, 1<<20)); err != nil {
		t.Fatal(err)
	}
	waitMemoryWaiters(t, f, 1)
	// Connection 2's write cannot be read: no request memory. It is reset.
	c2 := dial()
	defer c2.Close()
	// On a loaded machine the reset may come before the write is even
	// sent (its reader waited MaxReadWait for memory to read the next
	// request): the send then fails with a reset, which is the point too.
	if _, err := c2.send(cmdWrite, 0, x, 4096, bytes.Repeat([]byte{0xaa}, 4096)); err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatal(err)
	}
	c2.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := c2.reply(0, 0); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled connection: reply read %v, want the connection reset", err)
	}
	outage.Remove()
	c1.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	if res, _, err := c1.reply(0, 0); err != nil || res.errno != 0 {
		t.Fatalf("the waiting write: errno %d, %v", res.errno, err)
	}
	if err := c1.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := c1.Read(x, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 0x11 {
		t.Fatalf("block X reads %#x: the stalled connection's unread write was applied", got[0])
	}
}

// TestHalfSentPayloadIsReset: a client that sends a WRITE header and stops
// half-way through the payload would hold shared request memory for ever;
// after MaxReadWait its connection is reset and the memory comes back.
func TestHalfSentPayloadIsReset(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "dev", 64<<20)
	requests := budget.New(64 << 20)
	_, addr := startServer(t, f, Options{Requests: requests, MaxReadWait: 300 * time.Millisecond})
	c, err := dialClient(addr, "dev", clientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := encodeRequest(request{typ: cmdWrite, cookie: 1, off: 0, length: 32 << 20})
	if _, err := c.nc.Write(append(hdr, 0xab)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, func() bool { return requests.InUse() == 32<<20 },
		func() string { return fmt.Sprintf("request memory in use %d, want the payload's", requests.InUse()) })
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := c.reply(0, 0); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half-sent payload: reply read %v, want the connection reset", err)
	}
	testutil.Eventually(t, func() bool { return requests.InUse() == 0 },
		func() string {
			return fmt.Sprintf("request memory in use %d after the reset, want 0", requests.InUse())
		})
}
