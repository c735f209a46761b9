package nfs

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"

	"zerofs/fs"
	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
)

// TestDeadConnectionWriteNeverRevertsCommit is the NFS form of
// docs/durability.md's "Requests of a connection that dies": during a store
// outage with the dirty budget full, a WRITE of old data waits on a
// connection that is then closed; a newer UNSTABLE WRITE and a COMMIT
// arrive on a new connection (as a client retransmitting after a reconnect
// sends them). When the store returns, the newer data must be what the
// file holds — also on a second instance that takes the bucket over, as
// after kill -9 or the loss of the machine.
func TestDeadConnectionWriteNeverRevertsCommit(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 3
	}
	for round := range rounds {
		deadConnectionRound(t, round)
	}
}

func waitMemoryWaiters(t *testing.T, f *fs.FS, n int) {
	t.Helper()
	testutil.Eventually(t, func() bool { return f.Status().MemoryWaiters == n },
		func() string { return fmt.Sprintf("%d writes wait for memory, want %d", f.Status().MemoryWaiters, n) })
}

func deadConnectionRound(t *testing.T, round int) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	opts := testFSOptions(t, st, t.TempDir())
	opts.BatchBytes = 256 << 10
	opts.MaxDirtyBytes = 512 << 10
	f, err := fs.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Clear(); f.Close() }()
	srv := NewServer(f, Options{Logger: testutil.Logger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)
	addr := ln.Addr().String()
	blk := func(v byte) []byte { return bytes.Repeat([]byte{v}, 64<<10) }
	const x = 3 << 20

	c1 := dialNFS(t, addr, 0, 0)
	fh := c1.mustCreate(c1.root, "file")
	filler := c1.mustCreate(c1.root, "filler")
	c1.mustWrite(fh, x, blk(0x11))
	if st, _ := c1.commit(fh); st != StatusOK {
		t.Fatalf("COMMIT: %v", st)
	}
	c1.Close()

	outage := st.Fail(faultstore.Puts(), nil)
	// Connection 2 fills the dirty budget: a write larger than the budget
	// is admitted (the bound is soft) and the next one waits.
	c2 := dialNFS(t, addr, 0, 0)
	c2.mustWrite(filler, 0, bytes.Repeat([]byte{0xf2}, 1<<20))
	wait2 := sendWrite(t, c2, filler, 1<<20, bytes.Repeat([]byte{0xf3}, 4096))
	waitMemoryWaiters(t, f, 1)

	// Connection 3: WRITE A of old data waits, and the connection dies.
	c3 := dialNFS(t, addr, 0, 0)
	sendWrite(t, c3, fh, x, blk(0xaa))
	waitMemoryWaiters(t, f, 2)
	c3.Close()
	waitMemoryWaiters(t, f, 1) // A left without beginning

	// Connection 4: the newer UNSTABLE WRITE B, then COMMIT once B is
	// answered.
	c4 := dialNFS(t, addr, 0, 0)
	waitB := sendWrite(t, c4, fh, x, blk(0xbb))
	waitMemoryWaiters(t, f, 2)
	outage.Remove()
	if st := waitB(); st != StatusOK {
		t.Fatalf("round %d: WRITE B: %v", round, st)
	}
	if st, _ := c4.commit(fh); st != StatusOK {
		t.Fatalf("round %d: COMMIT after B: %v", round, st)
	}
	if st := wait2(); st != StatusOK {
		t.Fatalf("round %d: the waiting write of connection 2: %v", round, st)
	}
	c5 := dialNFS(t, addr, 0, 0)
	if st, got, _ := c5.read(fh, x, 64<<10); st != StatusOK || !bytes.Equal(got, blk(0xbb)) {
		t.Fatalf("round %d: READ of X: %v, %d bytes, want B (0xbb): the dead connection's write overtook a committed one", round, st, len(got))
	}

	// A second instance takes the bucket over with empty local state.
	f2, err := fs.Open(ctx, testFSOptions(t, st.Inner(), t.TempDir()))
	if err != nil {
		t.Fatalf("round %d: take over: %v", round, err)
	}
	defer f2.Close()
	n, err := f2.Lookup(ctx, fs.Root, fs.RootIno, "file")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, _, err := f2.Read(ctx, fs.Root, n.Ino, x, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, blk(0xbb)) {
		t.Fatalf("round %d: after takeover X reads %#x..., want B (0xbb)", round, buf[0])
	}
}

// sendWrite sends an UNSTABLE WRITE without waiting, and returns a function
// that waits for its status.
func sendWrite(t *testing.T, c *nfsClient, fh []byte, off uint64, data []byte) func() Status {
	t.Helper()
	xid := c.xid.Add(1)
	ch, err := c.send(xid, encodeCall(xid, progNFS, nfsVers, 7, c.cred, opaqueAuth{}, encodeWrite(fh, off, data, unstable).b))
	if err != nil {
		t.Fatal(err)
	}
	return func() Status {
		t.Helper()
		b, err := c.wait(ch)
		if err != nil {
			t.Fatalf("WRITE at %d: %v", off, err)
		}
		rep, err := parseReply(b)
		if err != nil {
			t.Fatal(err)
		}
		return status(&xdrReader{b: rep.body})
	}
}
