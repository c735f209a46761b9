package nfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
)

// Fuzz targets over everything that decodes client bytes: the RPC record
// reader, the call header with its credential, the arguments of every
// procedure, and the whole dispatch (decoding and the handlers, against a
// real filesystem). scripts/fuzz.sh finds them by name.

// sampleArgs returns well-formed arguments for each NFS procedure (indexed
// by procedure number), naming fh (a file) and dir (a directory).
func sampleArgs(fh, dir []byte) [][]byte {
	enc := func(fn func(w *xdrWriter)) []byte {
		var w xdrWriter
		fn(&w)
		return w.b
	}
	full := make([][]byte, 22)
	fhOnly := enc(func(w *xdrWriter) { w.opaque(fh) })
	dirop := enc(func(w *xdrWriter) { w.opaque(dir); w.string("name") })
	full[0] = nil
	for _, p := range []int{1, 5, 18, 19, 20} {
		full[p] = fhOnly
	}
	full[2] = enc(func(w *xdrWriter) {
		w.opaque(fh)
		sattrIn{mode: u32(0o600), mtime: &nfstime{1, 2}, atimeNow: true}.encode(w)
		w.bool(true)
		w.uint32(1)
		w.uint32(2)
	})
	full[3] = dirop
	full[4] = enc(func(w *xdrWriter) { w.opaque(fh); w.uint32(0x3f) })
	full[6] = enc(func(w *xdrWriter) { w.opaque(fh); w.uint64(0); w.uint32(10) })
	full[7] = encodeWrite(fh, 0, []byte("hello"), unstable).b
	full[8] = enc(func(w *xdrWriter) {
		w.opaque(dir)
		w.string("n")
		w.uint32(createGuarded)
		sattrIn{size: u64(3)}.encode(w)
	})
	full[9] = enc(func(w *xdrWriter) { w.opaque(dir); w.string("d"); sattrIn{uid: u32(7)}.encode(w) })
	full[10] = enc(func(w *xdrWriter) { w.opaque(dir); w.string("l"); sattrIn{}.encode(w); w.string("target") })
	full[11] = enc(func(w *xdrWriter) {
		w.opaque(dir)
		w.string("dev")
		w.uint32(ftypeChr)
		sattrIn{gid: u32(5)}.encode(w)
		w.uint32(1)
		w.uint32(3)
	})
	full[12], full[13] = dirop, dirop
	full[14] = enc(func(w *xdrWriter) { w.opaque(dir); w.string("a"); w.opaque(dir); w.string("b") })
	full[15] = enc(func(w *xdrWriter) { w.opaque(fh); w.opaque(dir); w.string("b") })
	full[16] = enc(func(w *xdrWriter) { w.opaque(dir); w.uint64(0); w.uint64(0); w.uint32(4096) })
	full[17] = enc(func(w *xdrWriter) { w.opaque(dir); w.uint64(3); w.uint64(0); w.uint32(1024); w.uint32(4096) })
	full[21] = enc(func(w *xdrWriter) { w.opaque(fh); w.uint64(0); w.uint32(0) })
	return full
}

func sampleMountArgs() [][]byte {
	var w xdrWriter
	w.string("/")
	return [][]byte{nil, w.b, nil, w.b, nil, nil}
}

// someHandle is a well-formed handle (of no particular filesystem).
var someHandle = append([]byte{handleVersion}, bytes.Repeat([]byte{1}, handleSize-1)...)

func FuzzReadRecord(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 2, 1, 2, 0x80, 0, 0, 1, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x80, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for {
			rec, err := readRecord(br, nil)
			if err != nil {
				return
			}
			if len(rec) > maxRecord || len(rec) > len(data) {
				t.Fatalf("record of %d bytes from %d bytes of input", len(rec), len(data))
			}
			putBuf(rec)
		}
	})
}

func FuzzParseCall(f *testing.F) {
	for _, cred := range []opaqueAuth{unixAuth(0, 0), unixAuth(1000, 100, 1, 2, 3), {flavor: authNone}, {flavor: 6, body: []byte{0, 0, 0, 1}}} {
		f.Add(encodeCall(1, progNFS, 3, 1, cred, opaqueAuth{}, []byte{0, 0, 0, 0}))
	}
	f.Add(encodeCall(2, progMount, 3, 1, unixAuth(0, 0), opaqueAuth{}, sampleMountArgs()[1]))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3})
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, rec []byte) {
		h, args, err := parseCall(rec)
		var as authStat
		switch {
		case err == nil && h.rpcvers != rpcVersion:
			return
		case errors.Is(err, errNotCall), errors.Is(err, errBadHeader), errors.As(err, &as):
			return
		case err != nil:
			t.Fatalf("unexpected error %v", err)
		}
		if len(h.cred.body) > maxAuthBody || len(h.verf.body) > maxAuthBody || len(args) > len(rec) {
			t.Fatalf("bounds: cred %d verf %d args %d of %d", len(h.cred.body), len(h.verf.body), len(args), len(rec))
		}
		for _, squash := range []bool{false, true} {
			cred, st := authenticate(&h, squash)
			if (st == authOK) != (cred != nil) {
				t.Fatalf("authenticate: %v with cred %v", st, cred)
			}
			if st == authOK && (len(cred.Groups) > maxGids || (squash && (cred.Uid == 0 || cred.Gid == 0))) {
				t.Fatalf("credential %+v (squash %v)", cred, squash)
			}
		}
	})
}

func FuzzDecodeArgs(f *testing.F) {
	dir := append([]byte(nil), someHandle...)
	for proc, args := range sampleArgs(someHandle, dir) {
		f.Add(uint32(progNFS), uint32(proc), args)
	}
	for proc, args := range sampleMountArgs() {
		f.Add(uint32(progMount), uint32(proc), args)
	}
	f.Fuzz(func(t *testing.T, prog, proc uint32, args []byte) {
		p := programs[progNFS]
		if prog%2 == 1 {
			p = programs[progMount]
		}
		pr := p.procs[proc%uint32(len(p.procs))]
		err := pr.decode(args)
		if err != nil && !errors.Is(err, errGarbage) {
			t.Fatalf("%s: decode error %v does not wrap errGarbage", pr.name, err)
		}
		if again := pr.decode(args); (again == nil) != (err == nil) {
			t.Fatalf("%s: decoding is not deterministic", pr.name)
		}
	})
}

// FuzzDispatch runs whole call records through the server's dispatch on a
// real (in-memory) filesystem: no input may panic (a recovered panic is
// answered SYSTEM_ERR, which fails here), and every reply is a well-formed
// reply to the call's xid.
func FuzzDispatch(f *testing.F) {
	fx := newFixture(f, Options{})
	c := fx.client(0, 0)
	file := c.mustCreate(c.root, "file")
	c.mustWrite(file, 0, []byte("some data"))
	dir := c.mustMkdir(c.root, "dir")
	for proc, args := range sampleArgs(file, dir) {
		f.Add(encodeCall(uint32(proc), progNFS, 3, uint32(proc), unixAuth(0, 0), opaqueAuth{}, args))
		f.Add(encodeCall(uint32(proc), progNFS, 3, uint32(proc), unixAuth(1000, 1000), opaqueAuth{}, args))
	}
	for proc, args := range sampleMountArgs() {
		f.Add(encodeCall(uint32(proc), progMount, 3, uint32(proc), opaqueAuth{flavor: authNone}, opaqueAuth{}, args))
	}
	remote := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, rec []byte) {
		reply, name, err := fx.srv.dispatch(context.Background(), remote, rec)
		if errors.Is(err, errSystemErr) {
			t.Fatalf("%s: a handler panicked (see the log)", name)
		}
		if reply == nil {
			return
		}
		defer putBuf(reply)
		if len(reply) < 4+12 || len(reply)%4 != 0 {
			t.Fatalf("%s: reply of %d bytes", name, len(reply))
		}
		rep, perr := parseReply(reply[4:])
		if perr != nil {
			t.Fatalf("%s: reply does not parse: %v", name, perr)
		}
		if len(rec) >= 4 && rep.xid != uint32(rec[0])<<24|uint32(rec[1])<<16|uint32(rec[2])<<8|uint32(rec[3]) {
			t.Fatalf("%s: reply to xid %d", name, rep.xid)
		}
	})
}
