package nfs

import (
	"container/list"
	"hash/crc32"
	"net/netip"
	"sync"
	"time"
)

// The duplicate request cache. A client that lost a reply (a connection
// reset, a zerofs restart seen as one) retransmits the request with the same
// xid. For idempotent procedures that is harmless; for REMOVE, RENAME,
// CREATE and the like the second execution fails (NOENT, EXIST) although the
// first succeeded, and the application sees an error for an operation that
// was done. Like knfsd, the server remembers recent non-idempotent requests:
// a duplicate of one still running is dropped (the client gets the
// original's reply), a duplicate of one done gets the recorded reply again.
//
// Requests are matched by client address, xid, program, version, procedure
// and a checksum of the arguments, so that a recycled xid of another request
// never hits. The cache is memory only: bounded in entries and age.

const (
	drcEntries = 8192
	drcTTL     = 2 * time.Minute
)

// nonIdempotent lists the NFSv3 procedures whose repetition is not harmless.
var nonIdempotent = map[uint32]bool{
	2: true, 8: true, 9: true, 10: true, 11: true, 12: true, 13: true, 14: true, 15: true,
	// SETATTR, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK
}

type drcKey struct {
	addr             netip.Addr
	xid              uint32
	prog, vers, proc uint32
	sum              uint32 // CRC32 of the arguments
}

type drcEntry struct {
	key   drcKey
	reply []byte // nil while the original request runs
	at    time.Time
	elem  *list.Element
}

type drc struct {
	mu    sync.Mutex
	m     map[drcKey]*drcEntry
	order list.List // oldest first
}

func newDRC() *drc { return &drc{m: make(map[drcKey]*drcEntry)} }

func drcKeyOf(addr netip.Addr, h *callHeader, args []byte) drcKey {
	return drcKey{addr: addr, xid: h.xid, prog: h.prog, vers: h.vers, proc: h.proc, sum: crc32.ChecksumIEEE(args)}
}

// begin looks a request up. It returns a copy of the recorded reply for a
// finished duplicate, dup=true for a duplicate still running (drop it), or
// neither for a new request, which is then recorded as running.
func (d *drc) begin(k drcKey) (reply []byte, dup bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if e, ok := d.m[k]; ok && now.Sub(e.at) < drcTTL {
		if e.reply == nil {
			return nil, true
		}
		out := getBuf(len(e.reply))
		copy(out, e.reply)
		return out, false
	}
	for d.order.Len() >= drcEntries || (d.order.Len() > 0 && now.Sub(d.order.Front().Value.(*drcEntry).at) >= drcTTL) {
		old := d.order.Remove(d.order.Front()).(*drcEntry)
		delete(d.m, old.key)
	}
	e := &drcEntry{key: k, at: now}
	e.elem = d.order.PushBack(e)
	d.m[k] = e
	return nil, false
}

// finish records the reply of a request begun with begin (a copy: the caller
// keeps its buffer). A nil reply (the request was dropped) forgets it.
func (d *drc) finish(k drcKey, reply []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.m[k]
	if !ok {
		return
	}
	if reply == nil {
		d.order.Remove(e.elem)
		delete(d.m, k)
		return
	}
	e.reply = append([]byte(nil), reply...)
}
