package nfs

import (
	"encoding/binary"
	"testing"
)

// TestDuplicateRequestCache: a REMOVE retransmitted with the same xid (its
// reply lost with the connection) gets the original reply, not NOENT; a new
// request with another xid is executed.
func TestDuplicateRequestCache(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	c.mustCreate(c.root, "victim")

	var w xdrWriter
	w.opaque(c.root)
	w.string("victim")
	const xid = 0x5eed1234
	remove := encodeCall(xid, progNFS, nfsVers, 12, unixAuth(0, 0), opaqueAuth{}, w.b)
	call := func(rc *rpcClient, x uint32, body []byte) Status {
		t.Helper()
		binary.BigEndian.PutUint32(body, x)
		ch, err := rc.send(x, body)
		if err != nil {
			t.Fatal(err)
		}
		b, err := rc.wait(ch)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := parseReply(b)
		if err != nil || rep.acceptStat != acceptSuccess {
			t.Fatalf("reply %+v, %v", rep, err)
		}
		return Status(binary.BigEndian.Uint32(rep.body))
	}
	first, err := dialRPC(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if st := call(first, xid, remove); st != StatusOK {
		t.Fatalf("REMOVE: %v", st)
	}
	first.Close()

	again, err := dialRPC(f.addr) // the client reconnects and retransmits
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if st := call(again, xid, remove); st != StatusOK {
		t.Fatalf("retransmitted REMOVE: %v, want the original NFS3_OK", st)
	}
	if st := call(again, xid+1, remove); st != StatusNoEnt {
		t.Fatalf("a new REMOVE of the removed file: %v, want NOENT", st)
	}
}
