package nfs

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"zerofs/internal/testutil"
	"zerofs/store/faultstore"
)

// RPC-level behaviour: program, version and procedure dispatch, credentials,
// malformed calls, pipelining.

func TestRPCDispatchErrors(t *testing.T) {
	f := newFixture(t, Options{})
	rc, err := dialRPC(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	root := unixAuth(0, 0)
	tests := []struct {
		name             string
		prog, vers, proc uint32
		replyStat        uint32
		acceptStat       uint32
		low, high        uint32
	}{
		{"nfs null", progNFS, 3, 0, msgAccepted, acceptSuccess, 0, 0},
		{"mount null", progMount, 3, 0, msgAccepted, acceptSuccess, 0, 0},
		{"nfs procedure 99", progNFS, 3, 99, msgAccepted, acceptProcUnavail, 0, 0},
		{"nfs procedure 22", progNFS, 3, 22, msgAccepted, acceptProcUnavail, 0, 0},
		{"mount procedure 99", progMount, 3, 99, msgAccepted, acceptProcUnavail, 0, 0},
		{"nlm program", 100021, 4, 0, msgAccepted, acceptProgUnavail, 0, 0},
		{"portmapper program", 100000, 2, 3, msgAccepted, acceptProgUnavail, 0, 0},
		{"nfs version 2", progNFS, 2, 0, msgAccepted, acceptProgMismatch, 3, 3},
		{"nfs version 4", progNFS, 4, 0, msgAccepted, acceptProgMismatch, 3, 3},
		{"mount version 1", progMount, 1, 0, msgAccepted, acceptProgMismatch, 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := rc.callCred(tc.prog, tc.vers, tc.proc, root, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep.replyStat != tc.replyStat || rep.acceptStat != tc.acceptStat {
				t.Fatalf("reply_stat %d accept_stat %d, want %d %d", rep.replyStat, rep.acceptStat, tc.replyStat, tc.acceptStat)
			}
			if rep.low != tc.low || rep.high != tc.high {
				t.Fatalf("mismatch range %d-%d, want %d-%d", rep.low, rep.high, tc.low, tc.high)
			}
		})
	}
}

func TestRPCVersionMismatch(t *testing.T) {
	f := newFixture(t, Options{})
	rc, err := dialRPC(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var w xdrWriter
	w.uint32(77) // xid
	w.uint32(msgCall)
	w.uint32(3) // RPC version 3
	w.uint32(progNFS)
	w.uint32(3)
	w.uint32(0)
	ch, err := rc.send(77, w.b)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rc.wait(ch)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := parseReply(b)
	if err != nil {
		t.Fatal(err)
	}
	if rep.replyStat != msgDenied || rep.rejectStat != rejectRPCMismatch || rep.low != 2 || rep.high != 2 {
		t.Fatalf("got %+v, want MSG_DENIED RPC_MISMATCH 2-2", rep)
	}
}

func TestRPCAuthentication(t *testing.T) {
	f := newFixture(t, Options{})
	rc, err := dialRPC(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	truncated := unixAuth(0, 0)
	truncated.body = truncated.body[:len(truncated.body)-4]
	tooManyGroups := unixAuth(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)
	trailing := unixAuth(0, 0)
	trailing.body = append(trailing.body, 0, 0, 0, 0)
	tests := []struct {
		name   string
		cred   opaqueAuth
		verf   opaqueAuth
		denied bool
		stat   authStat
	}{
		{"auth_unix", unixAuth(1000, 1000, 5), opaqueAuth{}, false, authOK},
		{"auth_none", opaqueAuth{flavor: authNone}, opaqueAuth{}, false, authOK},
		{"auth_short", opaqueAuth{flavor: authShort, body: []byte{1, 2, 3, 4}}, opaqueAuth{}, true, authRejectedCred},
		{"auth_dh", opaqueAuth{flavor: 3, body: []byte{1, 2, 3, 4}}, opaqueAuth{}, true, authTooWeak},
		{"rpcsec_gss", opaqueAuth{flavor: 6, body: []byte{0, 0, 0, 1}}, opaqueAuth{}, true, authTooWeak},
		{"unknown flavor", opaqueAuth{flavor: 12345}, opaqueAuth{}, true, authTooWeak},
		{"auth_unix truncated", truncated, opaqueAuth{}, true, authBadCred},
		{"auth_unix 17 groups", tooManyGroups, opaqueAuth{}, true, authBadCred},
		{"auth_unix trailing bytes", trailing, opaqueAuth{}, true, authBadCred},
		{"auth_unix with auth_unix verifier", unixAuth(0, 0), unixAuth(0, 0), true, authBadVerf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			xid := rc.xid.Add(1)
			ch, err := rc.send(xid, encodeCall(xid, progNFS, 3, 0, tc.cred, tc.verf, nil))
			if err != nil {
				t.Fatal(err)
			}
			b, err := rc.wait(ch)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := parseReply(b)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.denied {
				if rep.replyStat != msgAccepted || rep.acceptStat != acceptSuccess {
					t.Fatalf("got %+v, want success", rep)
				}
				return
			}
			if rep.replyStat != msgDenied || rep.rejectStat != rejectAuthError || rep.authStat != tc.stat {
				t.Fatalf("got reply_stat %d reject_stat %d auth_stat %v, want AUTH_ERROR %v",
					rep.replyStat, rep.rejectStat, rep.authStat, tc.stat)
			}
		})
	}

	t.Run("credential body over 400 bytes", func(t *testing.T) {
		var w xdrWriter
		xid := rc.xid.Add(1)
		w.uint32(xid)
		w.uint32(msgCall)
		w.uint32(rpcVersion)
		w.uint32(progNFS)
		w.uint32(3)
		w.uint32(0)
		w.uint32(authSys)
		w.opaque(make([]byte, 404))
		w.uint32(authNone)
		w.uint32(0)
		ch, err := rc.send(xid, w.b)
		if err != nil {
			t.Fatal(err)
		}
		b, err := rc.wait(ch)
		if err != nil {
			t.Fatal(err)
		}
		rep, _ := parseReply(b)
		if rep.replyStat != msgDenied || rep.authStat != authBadCred {
			t.Fatalf("got %+v, want AUTH_BADCRED", rep)
		}
	})
}

// TestGarbageArgs sends every procedure truncated or malformed arguments:
// each must be answered GARBAGE_ARGS, and the connection must keep working.
func TestGarbageArgs(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "file")
	full := sampleArgs(fh, c.root) // well-formed arguments, to be truncated
	enc := func(fn func(w *xdrWriter)) []byte {
		var w xdrWriter
		fn(&w)
		return w.b
	}

	garbage := func(t *testing.T, prog, proc uint32, args []byte) {
		t.Helper()
		rep, err := c.callCred(prog, 3, proc, c.cred, args)
		if err != nil {
			t.Fatal(err)
		}
		if rep.replyStat != msgAccepted || rep.acceptStat != acceptGarbageArgs {
			t.Fatalf("proc %d with %d bytes of arguments: reply_stat %d accept_stat %d, want GARBAGE_ARGS",
				proc, len(args), rep.replyStat, rep.acceptStat)
		}
	}
	for proc := 1; proc < 22; proc++ {
		args := full[proc]
		t.Run(nfsProcs[proc].name, func(t *testing.T) {
			// Every strict prefix that cuts a field is garbage. (A prefix
			// ending exactly where the last field ends is the whole call.)
			for _, n := range []int{0, 3, len(args) / 2, len(args) - 1} {
				garbage(t, progNFS, uint32(proc), args[:n])
			}
		})
	}

	malformed := []struct {
		name string
		proc uint32
		args []byte
	}{
		{"handle over 64 bytes", 1, enc(func(w *xdrWriter) { w.opaque(make([]byte, 65)) })},
		{"opaque length beyond the record", 1, enc(func(w *xdrWriter) { w.uint32(1 << 30) })},
		{"bad time_how", 2, enc(func(w *xdrWriter) {
			w.opaque(fh)
			for i := 0; i < 4; i++ {
				w.bool(false)
			}
			w.uint32(7)
			w.uint32(0)
			w.bool(false)
		})},
		{"bad boolean", 2, enc(func(w *xdrWriter) { w.opaque(fh); w.uint32(2) })},
		{"write count disagrees with data", 7, enc(func(w *xdrWriter) {
			w.opaque(fh)
			w.uint64(0)
			w.uint32(10)
			w.uint32(unstable)
			w.opaque([]byte("hello"))
		})},
		{"write stable_how 3", 7, encodeWrite(fh, 0, []byte("x"), 3).b},
		{"create mode 3", 8, enc(func(w *xdrWriter) { w.opaque(c.root); w.string("n"); w.uint32(3) })},
	}
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) { garbage(t, progNFS, tc.proc, tc.args) })
	}
	t.Run("mount MNT", func(t *testing.T) { garbage(t, progMount, 1, []byte{0, 0}) })

	// The connection still works.
	if st, _ := c.getattr(fh); st != StatusOK {
		t.Fatalf("GETATTR after garbage: %v", st)
	}
}

// TestMalformedRecords: records that are not calls are dropped without a
// reply, and the connection goes on; an oversized record closes it.
func TestMalformedRecords(t *testing.T) {
	f := newFixture(t, Options{})
	rc, err := dialRPC(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw := func(b []byte) {
		hdr := binary.BigEndian.AppendUint32(nil, 1<<31|uint32(len(b)))
		if _, err := rc.nc.Write(append(hdr, b...)); err != nil {
			t.Fatal(err)
		}
	}
	raw(nil)                                        // empty record
	raw([]byte{1, 2, 3})                            // shorter than an xid
	raw([]byte{0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0}) // a REPLY
	raw([]byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2}) // call header cut after the RPC version
	// Two fragments making one NULL call.
	xid := rc.xid.Add(1)
	call := encodeCall(xid, progNFS, 3, 0, unixAuth(0, 0), opaqueAuth{}, nil)
	ch := make(chan []byte, 1)
	rc.pmu.Lock()
	rc.pending[xid] = ch
	rc.pmu.Unlock()
	first := binary.BigEndian.AppendUint32(nil, uint32(10))
	first = append(first, call[:10]...)
	second := binary.BigEndian.AppendUint32(nil, 1<<31|uint32(len(call)-10))
	second = append(second, call[10:]...)
	if _, err := rc.nc.Write(append(first, second...)); err != nil {
		t.Fatal(err)
	}
	b, err := rc.wait(ch)
	if err != nil {
		t.Fatal(err)
	}
	if rep, _ := parseReply(b); rep.acceptStat != acceptSuccess {
		t.Fatalf("fragmented NULL: %+v", rep)
	}

	// A record larger than the limit closes the connection.
	hdr := binary.BigEndian.AppendUint32(nil, 1<<31|uint32(maxRecord+1))
	if _, err := rc.nc.Write(hdr); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rc.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after an oversized record")
	}
}

// TestPipelining: requests on one connection are served concurrently and
// answered out of order. A FILE_SYNC WRITE waits for its flush, which the
// gated store holds back; GETATTRs sent after it on the same connection are
// answered meanwhile.
func TestPipelining(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "file")
	gate := holdWrites(f)
	xid := c.xid.Add(1)
	writeCh, err := c.send(xid, encodeCall(xid, progNFS, 3, 7, c.cred, opaqueAuth{},
		encodeWrite(fh, 0, []byte("durable"), fileSync).b))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 32; i++ {
		if st, _ := c.getattr(fh); st != StatusOK {
			t.Fatalf("GETATTR while a flush is held: %v", st)
		}
	}
	select {
	case <-writeCh:
		t.Fatal("FILE_SYNC WRITE answered while its flush could not reach the store")
	default:
	}
	gate.Release()
	b, err := c.wait(writeCh)
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := parseReply(b)
	r := &xdrReader{b: rep.body}
	if st := status(r); st != StatusOK {
		t.Fatalf("WRITE: %v", st)
	}
	readWcc(r)
	if n, committed := r.uint32(), r.uint32(); n != 7 || committed != fileSync {
		t.Fatalf("WRITE count %d committed %d, want 7 FILE_SYNC", n, committed)
	}
}

// TestManyConcurrentRequests: many requests in flight on a few connections,
// more than the worker pool, all answered correctly.
func TestManyConcurrentRequests(t *testing.T) {
	f := newFixture(t, Options{Workers: 4})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "file")
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	c.mustWrite(fh, 0, data)
	var chans []chan []byte
	for i := 0; i < 200; i++ {
		xid := c.xid.Add(1)
		var w xdrWriter
		w.opaque(fh)
		w.uint64(uint64(i % 4096))
		w.uint32(64)
		ch, err := c.send(xid, encodeCall(xid, progNFS, 3, 6, c.cred, opaqueAuth{}, w.b))
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	for i, ch := range chans {
		b, err := c.wait(ch)
		if err != nil {
			t.Fatal(err)
		}
		rep, _ := parseReply(b)
		r := &xdrReader{b: rep.body}
		if st := status(r); st != StatusOK {
			t.Fatalf("READ %d: %v", i, st)
		}
		readPostOp(r)
		r.uint32()
		r.bool()
		got := r.opaque(unbounded)
		off := i % 4096
		want := data[off:min(off+64, len(data))]
		if string(got) != string(want) {
			t.Fatalf("READ %d at %d: wrong data", i, off)
		}
	}
}

// TestAllowedNetworks: a client outside the allowed networks is refused at
// accept (the connection is closed without a reply).
func TestAllowedNetworks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed []string
		ok      bool
	}{
		{"default loopback", nil, true},
		{"loopback listed", []string{"127.0.0.0/8"}, true},
		{"other network only", []string{"10.0.0.0/8"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{AllowedNetworks: mustPrefixes(t, tc.allowed...)})
			rc, err := dialRPC(f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			_, err = rc.callCred(progNFS, 3, 0, unixAuth(0, 0), nil)
			if tc.ok && err != nil {
				t.Fatalf("NULL: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("NULL answered for a refused network")
			}
		})
	}
}

// TestShutdown: Shutdown answers the requests in progress before it
// returns; when its context ends first, it drops them (no reply: the client
// retransmits to the next server) and closes the connections.
func TestShutdown(t *testing.T) {
	f := newFixture(t, Options{})
	serve := func() (*Server, string, chan error) {
		srv := NewServer(f.fs, Options{Logger: testutil.Logger(t)})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		return srv, ln.Addr().String(), done
	}
	// heldCommit sends a COMMIT that waits for the store, and returns once
	// the server is at work on it.
	heldCommit := func(c *nfsClient, fh []byte) (chan []byte, *faultstore.Gate) {
		// Held before the write: its batch must not become durable (after
		// BatchAge) before the COMMIT, which would then not wait.
		gate := holdWrites(f)
		c.mustWrite(fh, 0, []byte("data"))
		xid := c.xid.Add(1)
		var w xdrWriter
		w.opaque(fh)
		w.uint64(0)
		w.uint32(0)
		ch, err := c.send(xid, encodeCall(xid, progNFS, 3, 21, c.cred, opaqueAuth{}, w.b))
		if err != nil {
			t.Fatal(err)
		}
		// The connection reads requests in order and hands each to a worker
		// before it reads the next: once a GETATTR sent after the COMMIT is
		// answered, the COMMIT is in progress.
		if st, _ := c.getattr(fh); st != StatusOK {
			t.Fatalf("GETATTR behind the COMMIT: %v", st)
		}
		return ch, gate
	}

	t.Run("graceful", func(t *testing.T) {
		srv, addr, done := serve()
		c := dialNFS(t, addr, 0, 0)
		fh := c.mustCreate(c.root, "graceful")
		ch, gate := heldCommit(c, fh)
		shut := make(chan error, 1)
		go func() { shut <- srv.Shutdown(context.Background()) }()
		// Shutdown closes the listener first; on a loaded machine it may
		// take a while to get there.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			nc, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				break
			}
			nc.Close()
			if time.Now().After(deadline) {
				t.Error("still accepting connections a minute into Shutdown")
				break
			}
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) while a COMMIT was in progress", err)
		default:
		}
		gate.Release()
		b, err := c.wait(ch)
		if err != nil {
			t.Fatalf("COMMIT in progress at Shutdown got no reply: %v", err)
		}
		if rep, _ := parseReply(b); status(&xdrReader{b: rep.body}) != StatusOK {
			t.Fatal("COMMIT failed")
		}
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		srv, addr, done := serve()
		c := dialNFS(t, addr, 0, 0)
		fh := c.mustCreate(c.root, "forced")
		ch, gate := heldCommit(c, fh)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want the context's deadline", err)
		}
		if b, err := c.wait(ch); err == nil {
			t.Fatalf("a COMMIT cut off by Shutdown was answered: %x", b)
		}
		gate.Release()
		if err := <-done; err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	})
}
