package nfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A minimal NFSv3/MOUNT v3 client for the tests: raw RPC over TCP with
// pipelining (replies matched by xid), AUTH_UNIX or AUTH_NONE credentials,
// and typed wrappers for every procedure. It reuses the package's XDR codec.
// go-nfs-client's nfs package lacks most procedures (MKNOD, LINK, READDIR
// with cookies, SETATTR guards, EXCLUSIVE create...) and any way to send
// malformed calls, so it is not used.

type rpcClient struct {
	nc      net.Conn
	wmu     sync.Mutex
	xid     atomic.Uint32
	pmu     sync.Mutex
	pending map[uint32]chan []byte
	err     error // set when the reader stops
	done    chan struct{}

	cred opaqueAuth
}

func dialRPC(addr string) (*rpcClient, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rpcClient{nc: nc, pending: make(map[uint32]chan []byte), done: make(chan struct{})}
	c.xid.Store(uint32(time.Now().UnixNano()))
	c.cred = unixAuth(0, 0)
	go c.readLoop()
	return c, nil
}

func (c *rpcClient) Close() error { return c.nc.Close() }

func (c *rpcClient) readLoop() {
	defer close(c.done)
	br := bufio.NewReader(c.nc)
	for {
		rec, err := readRecord(br, nil)
		if err != nil {
			c.pmu.Lock()
			c.err = err
			for _, ch := range c.pending {
				close(ch)
			}
			c.pending = nil
			c.pmu.Unlock()
			return
		}
		b := append([]byte(nil), rec...)
		putBuf(rec)
		if len(b) < 4 {
			continue
		}
		xid := binary.BigEndian.Uint32(b)
		c.pmu.Lock()
		ch := c.pending[xid]
		delete(c.pending, xid)
		c.pmu.Unlock()
		if ch != nil {
			ch <- b
		}
	}
}

// unixAuth is an AUTH_UNIX credential.
func unixAuth(uid, gid uint32, groups ...uint32) opaqueAuth {
	var w xdrWriter
	w.uint32(0)
	w.string("test-client")
	w.uint32(uid)
	w.uint32(gid)
	w.uint32(uint32(len(groups)))
	for _, g := range groups {
		w.uint32(g)
	}
	return opaqueAuth{flavor: authSys, body: w.b}
}

// encodeCall builds a call record body (without the record mark).
func encodeCall(xid, prog, vers, proc uint32, cred, verf opaqueAuth, args []byte) []byte {
	var w xdrWriter
	w.uint32(xid)
	w.uint32(msgCall)
	w.uint32(rpcVersion)
	w.uint32(prog)
	w.uint32(vers)
	w.uint32(proc)
	w.uint32(cred.flavor)
	w.opaque(cred.body)
	w.uint32(verf.flavor)
	w.opaque(verf.body)
	w.b = append(w.b, args...)
	return w.b
}

// send writes one record (as one fragment) and returns a channel that gets
// the reply to xid.
func (c *rpcClient) send(xid uint32, rec []byte) (chan []byte, error) {
	ch := make(chan []byte, 1)
	c.pmu.Lock()
	if c.pending == nil {
		c.pmu.Unlock()
		return nil, fmt.Errorf("connection closed: %v", c.err)
	}
	c.pending[xid] = ch
	c.pmu.Unlock()
	mark := binary.BigEndian.AppendUint32(nil, 1<<31|uint32(len(rec)))
	bufs := net.Buffers{mark, rec} // one writev, no copy of a 1 MiB WRITE
	c.wmu.Lock()
	_, err := bufs.WriteTo(c.nc)
	c.wmu.Unlock()
	return ch, err
}

func (c *rpcClient) wait(ch chan []byte) ([]byte, error) {
	select {
	case b, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("connection closed before the reply: %v", c.err)
		}
		return b, nil
	case <-time.After(60 * time.Second):
		return nil, errors.New("no reply within 60s")
	}
}

// rpcReply is a decoded reply header.
type rpcReply struct {
	xid        uint32
	replyStat  uint32
	acceptStat uint32 // MSG_ACCEPTED
	rejectStat uint32 // MSG_DENIED
	authStat   authStat
	low, high  uint32 // PROG_MISMATCH, RPC_MISMATCH
	body       []byte // results of SUCCESS
}

func parseReply(b []byte) (rpcReply, error) {
	r := xdrReader{b: b}
	var p rpcReply
	p.xid = r.uint32()
	if mt := r.uint32(); mt != msgReply {
		return p, fmt.Errorf("message type %d", mt)
	}
	p.replyStat = r.uint32()
	switch p.replyStat {
	case msgAccepted:
		r.uint32()
		r.opaque(maxAuthBody)
		p.acceptStat = r.uint32()
		if p.acceptStat == acceptProgMismatch {
			p.low, p.high = r.uint32(), r.uint32()
		}
	case msgDenied:
		p.rejectStat = r.uint32()
		if p.rejectStat == rejectRPCMismatch {
			p.low, p.high = r.uint32(), r.uint32()
		} else {
			p.authStat = authStat(r.uint32())
		}
	}
	p.body = r.b
	return p, r.err
}

// callCred makes a call with an explicit credential and returns the reply.
func (c *rpcClient) callCred(prog, vers, proc uint32, cred opaqueAuth, args []byte) (rpcReply, error) {
	xid := c.xid.Add(1)
	ch, err := c.send(xid, encodeCall(xid, prog, vers, proc, cred, opaqueAuth{}, args))
	if err != nil {
		return rpcReply{}, err
	}
	b, err := c.wait(ch)
	if err != nil {
		return rpcReply{}, err
	}
	return parseReply(b)
}

// call makes a call that must be accepted with SUCCESS and returns a
// reader over its results.
func (c *rpcClient) call(prog, proc uint32, args []byte) (*xdrReader, error) {
	vers := uint32(nfsVers)
	if prog == progMount {
		vers = mountVers
	}
	rep, err := c.callCred(prog, vers, proc, c.cred, args)
	if err != nil {
		return nil, err
	}
	if rep.replyStat != msgAccepted || rep.acceptStat != acceptSuccess {
		return nil, fmt.Errorf("call %d.%d: reply_stat %d accept_stat %d auth_stat %v",
			prog, proc, rep.replyStat, rep.acceptStat, rep.authStat)
	}
	return &xdrReader{b: rep.body}, nil
}

// nfsClient wraps an rpcClient with typed NFS procedures. Failures of the
// transport fail the test; NFS statuses are returned.
type nfsClient struct {
	t testing.TB
	*rpcClient
	root []byte
}

func (c *nfsClient) must(r *xdrReader, err error) *xdrReader {
	c.t.Helper()
	if err != nil {
		c.t.Fatalf("rpc: %v", err)
	}
	return r
}

func (c *nfsClient) nfs(proc uint32, w *xdrWriter) *xdrReader {
	c.t.Helper()
	return c.must(c.call(progNFS, proc, w.b))
}

func (c *nfsClient) checkDecoded(r *xdrReader) {
	c.t.Helper()
	if r.err != nil {
		c.t.Fatalf("decoding reply: %v", r.err)
	}
}

// fattr is a decoded fattr3.
type fattr struct {
	ftype, mode, nlink, uid, gid uint32
	size, used                   uint64
	major, minor                 uint32
	fsid, fileid                 uint64
	atime, mtime, ctime          nfstime
}

func readFattr(r *xdrReader) fattr {
	var a fattr
	a.ftype, a.mode, a.nlink, a.uid, a.gid = r.uint32(), r.uint32(), r.uint32(), r.uint32(), r.uint32()
	a.size, a.used = r.uint64(), r.uint64()
	a.major, a.minor = r.uint32(), r.uint32()
	a.fsid, a.fileid = r.uint64(), r.uint64()
	a.atime, a.mtime, a.ctime = r.nfstime(), r.nfstime(), r.nfstime()
	return a
}

func readPostOp(r *xdrReader) *fattr {
	if !r.bool() {
		return nil
	}
	a := readFattr(r)
	return &a
}

// wccData is decoded wcc_data.
type wccData struct {
	pre *struct {
		size         uint64
		mtime, ctime nfstime
	}
	post *fattr
}

func readWcc(r *xdrReader) wccData {
	var w wccData
	if r.bool() {
		w.pre = &struct {
			size         uint64
			mtime, ctime nfstime
		}{r.uint64(), r.nfstime(), r.nfstime()}
	}
	w.post = readPostOp(r)
	return w
}

func readPostOpFH(r *xdrReader) []byte {
	if !r.bool() {
		return nil
	}
	return append([]byte(nil), r.opaque(maxHandleSize)...)
}

// sattrIn is a client-side sattr3.
type sattrIn struct {
	mode, uid, gid *uint32
	size           *uint64
	atime, mtime   *nfstime // nil: don't change
	atimeNow       bool
	mtimeNow       bool
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

func (s sattrIn) encode(w *xdrWriter) {
	for _, v := range []*uint32{s.mode, s.uid, s.gid} {
		w.bool(v != nil)
		if v != nil {
			w.uint32(*v)
		}
	}
	w.bool(s.size != nil)
	if s.size != nil {
		w.uint64(*s.size)
	}
	for _, t := range []struct {
		now bool
		at  *nfstime
	}{{s.atimeNow, s.atime}, {s.mtimeNow, s.mtime}} {
		switch {
		case t.now:
			w.uint32(timeSetServerTime)
		case t.at != nil:
			w.uint32(timeSetClientTime)
			w.uint32(t.at.sec)
			w.uint32(t.at.nsec)
		default:
			w.uint32(timeDontChange)
		}
	}
}

func status(r *xdrReader) Status { return Status(r.uint32()) }

func (c *nfsClient) getattr(fh []byte) (Status, fattr) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	r := c.nfs(1, &w)
	st := status(r)
	var a fattr
	if st == StatusOK {
		a = readFattr(r)
	}
	c.checkDecoded(r)
	return st, a
}

func (c *nfsClient) setattr(fh []byte, sa sattrIn, guard *nfstime) (Status, wccData) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	sa.encode(&w)
	w.bool(guard != nil)
	if guard != nil {
		w.uint32(guard.sec)
		w.uint32(guard.nsec)
	}
	r := c.nfs(2, &w)
	st := status(r)
	wcc := readWcc(r)
	c.checkDecoded(r)
	return st, wcc
}

func (c *nfsClient) lookup(dir []byte, name string) (Status, []byte, fattr) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	r := c.nfs(3, &w)
	st := status(r)
	var fh []byte
	var a fattr
	if st == StatusOK {
		fh = append([]byte(nil), r.opaque(maxHandleSize)...)
		if p := readPostOp(r); p != nil {
			a = *p
		}
	}
	readPostOp(r)
	c.checkDecoded(r)
	return st, fh, a
}

func (c *nfsClient) access(fh []byte, mask uint32) (Status, uint32) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	w.uint32(mask)
	r := c.nfs(4, &w)
	st := status(r)
	readPostOp(r)
	var got uint32
	if st == StatusOK {
		got = r.uint32()
	}
	c.checkDecoded(r)
	return st, got
}

func (c *nfsClient) readlink(fh []byte) (Status, string) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	r := c.nfs(5, &w)
	st := status(r)
	readPostOp(r)
	var target string
	if st == StatusOK {
		target = r.string(unbounded)
	}
	c.checkDecoded(r)
	return st, target
}

func (c *nfsClient) read(fh []byte, off uint64, count uint32) (Status, []byte, bool) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	w.uint64(off)
	w.uint32(count)
	r := c.nfs(6, &w)
	st := status(r)
	readPostOp(r)
	var data []byte
	var eof bool
	if st == StatusOK {
		n := r.uint32()
		eof = r.bool()
		data = append([]byte(nil), r.opaque(unbounded)...)
		if int(n) != len(data) {
			c.t.Fatalf("READ count %d but %d bytes of data", n, len(data))
		}
	}
	c.checkDecoded(r)
	return st, data, eof
}

type writeRes struct {
	count     uint32
	committed uint32
	verf      uint64
	wcc       wccData
}

func encodeWrite(fh []byte, off uint64, data []byte, stable uint32) *xdrWriter {
	var w xdrWriter
	w.opaque(fh)
	w.uint64(off)
	w.uint32(uint32(len(data)))
	w.uint32(stable)
	w.opaque(data)
	return &w
}

func (c *nfsClient) write(fh []byte, off uint64, data []byte, stable uint32) (Status, writeRes) {
	c.t.Helper()
	r := c.nfs(7, encodeWrite(fh, off, data, stable))
	st := status(r)
	var res writeRes
	res.wcc = readWcc(r)
	if st == StatusOK {
		res.count = r.uint32()
		res.committed = r.uint32()
		res.verf = r.uint64()
	}
	c.checkDecoded(r)
	return st, res
}

// mustWrite writes data at off, UNSTABLE, and fails the test on an error.
func (c *nfsClient) mustWrite(fh []byte, off uint64, data []byte) writeRes {
	c.t.Helper()
	st, res := c.write(fh, off, data, unstable)
	if st != StatusOK || res.count != uint32(len(data)) {
		c.t.Fatalf("WRITE at %d: %v, count %d", off, st, res.count)
	}
	return res
}

type createRes struct {
	fh   []byte
	attr *fattr
	wcc  wccData
}

func (c *nfsClient) createNode(proc uint32, w *xdrWriter) (Status, createRes) {
	c.t.Helper()
	r := c.nfs(proc, w)
	st := status(r)
	var res createRes
	if st == StatusOK {
		res.fh = readPostOpFH(r)
		res.attr = readPostOp(r)
	}
	res.wcc = readWcc(r)
	c.checkDecoded(r)
	return st, res
}

func (c *nfsClient) create(dir []byte, name string, how uint32, sa sattrIn, verf uint64) (Status, createRes) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	w.uint32(how)
	if how == createExclusive {
		w.uint64(verf)
	} else {
		sa.encode(&w)
	}
	return c.createNode(8, &w)
}

// mustCreate creates a regular file (UNCHECKED, mode 0644) and returns its handle.
func (c *nfsClient) mustCreate(dir []byte, name string) []byte {
	c.t.Helper()
	st, res := c.create(dir, name, createUnchecked, sattrIn{mode: u32(0o644)}, 0)
	if st != StatusOK {
		c.t.Fatalf("CREATE %q: %v", name, st)
	}
	return res.fh
}

func (c *nfsClient) mkdir(dir []byte, name string, sa sattrIn) (Status, createRes) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	sa.encode(&w)
	return c.createNode(9, &w)
}

func (c *nfsClient) mustMkdir(dir []byte, name string) []byte {
	c.t.Helper()
	st, res := c.mkdir(dir, name, sattrIn{mode: u32(0o755)})
	if st != StatusOK {
		c.t.Fatalf("MKDIR %q: %v", name, st)
	}
	return res.fh
}

func (c *nfsClient) symlink(dir []byte, name, target string) (Status, createRes) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	sattrIn{}.encode(&w)
	w.string(target)
	return c.createNode(10, &w)
}

func (c *nfsClient) mknod(dir []byte, name string, ftype uint32, sa sattrIn, major, minor uint32) (Status, createRes) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	w.uint32(ftype)
	switch ftype {
	case ftypeChr, ftypeBlk:
		sa.encode(&w)
		w.uint32(major)
		w.uint32(minor)
	case ftypeSock, ftypeFIFO:
		sa.encode(&w)
	}
	return c.createNode(11, &w)
}

func (c *nfsClient) dirop(proc uint32, dir []byte, name string) (Status, wccData) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.string(name)
	r := c.nfs(proc, &w)
	st := status(r)
	wcc := readWcc(r)
	c.checkDecoded(r)
	return st, wcc
}

func (c *nfsClient) remove(dir []byte, name string) Status {
	c.t.Helper()
	st, _ := c.dirop(12, dir, name)
	return st
}

func (c *nfsClient) rmdir(dir []byte, name string) Status {
	c.t.Helper()
	st, _ := c.dirop(13, dir, name)
	return st
}

func (c *nfsClient) rename(fromDir []byte, fromName string, toDir []byte, toName string) Status {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fromDir)
	w.string(fromName)
	w.opaque(toDir)
	w.string(toName)
	r := c.nfs(14, &w)
	st := status(r)
	readWcc(r)
	readWcc(r)
	c.checkDecoded(r)
	return st
}

func (c *nfsClient) link(fh, dir []byte, name string) (Status, *fattr) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	w.opaque(dir)
	w.string(name)
	r := c.nfs(15, &w)
	st := status(r)
	a := readPostOp(r)
	readWcc(r)
	c.checkDecoded(r)
	return st, a
}

type dirEntry struct {
	fileid uint64
	name   string
	cookie uint64
	attr   *fattr
	fh     []byte
}

func (c *nfsClient) readdir(dir []byte, cookie uint64, count uint32) (Status, []dirEntry, bool) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.uint64(cookie)
	w.uint64(0)
	w.uint32(count)
	return c.readdirReply(c.nfs(16, &w), false)
}

func (c *nfsClient) readdirplus(dir []byte, cookie uint64, dircount, maxcount uint32) (Status, []dirEntry, bool) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(dir)
	w.uint64(cookie)
	w.uint64(0)
	w.uint32(dircount)
	w.uint32(maxcount)
	return c.readdirReply(c.nfs(17, &w), true)
}

func (c *nfsClient) readdirReply(r *xdrReader, plus bool) (Status, []dirEntry, bool) {
	c.t.Helper()
	st := status(r)
	readPostOp(r)
	if st != StatusOK {
		c.checkDecoded(r)
		return st, nil, false
	}
	r.uint64() // cookieverf
	var ents []dirEntry
	for r.bool() {
		e := dirEntry{fileid: r.uint64(), name: r.string(unbounded), cookie: r.uint64()}
		if plus {
			e.attr = readPostOp(r)
			e.fh = readPostOpFH(r)
		}
		ents = append(ents, e)
	}
	eof := r.bool()
	c.checkDecoded(r)
	return st, ents, eof
}

// listAll lists a directory completely with READDIR (or READDIRPLUS) of the
// given count, resuming by cookie.
func (c *nfsClient) listAll(dir []byte, count uint32, plus bool) []dirEntry {
	c.t.Helper()
	return c.listAllPaged(dir, count, plus, nil)
}

// listAllPaged is listAll calling between (if not nil) between pages.
func (c *nfsClient) listAllPaged(dir []byte, count uint32, plus bool, between func()) []dirEntry {
	c.t.Helper()
	var all []dirEntry
	cookie := uint64(0)
	for i := 0; ; i++ {
		var st Status
		var ents []dirEntry
		var eof bool
		if plus {
			st, ents, eof = c.readdirplus(dir, cookie, count/2, count)
		} else {
			st, ents, eof = c.readdir(dir, cookie, count)
		}
		if st != StatusOK {
			c.t.Fatalf("READDIR from cookie %d: %v", cookie, st)
		}
		if len(ents) == 0 && !eof {
			c.t.Fatalf("READDIR from cookie %d: no entries and no eof", cookie)
		}
		all = append(all, ents...)
		if eof {
			return all
		}
		cookie = ents[len(ents)-1].cookie
		if between != nil {
			between()
		}
		if i > 1_000_000 {
			c.t.Fatal("READDIR does not end")
		}
	}
}

func (c *nfsClient) fhProc(proc uint32, fh []byte) (Status, *xdrReader) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	r := c.nfs(proc, &w)
	st := status(r)
	readPostOp(r)
	return st, r
}

func (c *nfsClient) commit(fh []byte) (Status, uint64) {
	c.t.Helper()
	var w xdrWriter
	w.opaque(fh)
	w.uint64(0)
	w.uint32(0)
	r := c.nfs(21, &w)
	st := status(r)
	readWcc(r)
	var verf uint64
	if st == StatusOK {
		verf = r.uint64()
	}
	c.checkDecoded(r)
	return st, verf
}

// mount calls MOUNT MNT.
func (c *rpcClient) mount(path string) (mountStat, []byte, []uint32, error) {
	var w xdrWriter
	w.string(path)
	r, err := c.call(progMount, 1, w.b)
	if err != nil {
		return 0, nil, nil, err
	}
	st := mountStat(r.uint32())
	if st != mnt3OK {
		return st, nil, nil, r.err
	}
	fh := append([]byte(nil), r.opaque(maxHandleSize)...)
	n := r.uint32()
	var flavors []uint32
	for i := uint32(0); i < n && r.err == nil; i++ {
		flavors = append(flavors, r.uint32())
	}
	return st, fh, flavors, r.err
}

// dialNFS connects, mounts "/" and returns a client acting as uid:gid.
func dialNFS(t testing.TB, addr string, uid, gid uint32, groups ...uint32) *nfsClient {
	t.Helper()
	rc, err := dialRPC(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { rc.Close() })
	st, root, _, err := rc.mount("/")
	if err != nil || st != mnt3OK {
		t.Fatalf("MNT /: %v %v", st, err)
	}
	rc.cred = unixAuth(uid, gid, groups...)
	return &nfsClient{t: t, rpcClient: rc, root: root}
}
