// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"errors"
	"fmt"
)

// ONC RPC version 2 (RFC 5531): the call header, authentication, and the
// reply header. Everything here is a pure function of bytes, so the call
// header decoding is fuzzed on its own (FuzzParseCall).

const rpcVersion = 2

// msg_type
const (
	msgCall  = 0
	msgReply = 1
)

// reply_stat
const (
	msgAccepted = 0
	msgDenied   = 1
)

// accept_stat
const (
	acceptSuccess      = 0
	acceptProgUnavail  = 1
	acceptProgMismatch = 2
	acceptProcUnavail  = 3
	acceptGarbageArgs  = 4
	acceptSystemErr    = 5
)

// reject_stat
const (
	rejectRPCMismatch = 0
	rejectAuthError   = 1
)

// auth_flavor
const (
	authNone  = 0
	authSys   = 1 // AUTH_UNIX
	authShort = 2
)

// authStat is an auth_stat: why a credential was refused.
type authStat uint32

const (
	authOK           authStat = 0
	authBadCred      authStat = 1
	authRejectedCred authStat = 2
	authBadVerf      authStat = 3
	authTooWeak      authStat = 5
)

func (a authStat) String() string {
	switch a {
	case authOK:
		return "AUTH_OK"
	case authBadCred:
		return "AUTH_BADCRED"
	case authRejectedCred:
		return "AUTH_REJECTEDCRED"
	case authBadVerf:
		return "AUTH_BADVERF"
	case authTooWeak:
		return "AUTH_TOOWEAK"
	}
	return fmt.Sprintf("auth_stat(%d)", uint32(a))
}

func (a authStat) Error() string { return "rpc: authentication refused: " + a.String() }

// maxAuthBody bounds the body of an opaque_auth (RFC 5531 section 8.2).
const maxAuthBody = 400

// opaqueAuth is a credential or verifier: a flavor and its body.
type opaqueAuth struct {
	flavor uint32
	body   []byte
}

// callHeader is the fixed part of an RPC call message.
type callHeader struct {
	xid     uint32
	rpcvers uint32
	prog    uint32
	vers    uint32
	proc    uint32
	cred    opaqueAuth
	verf    opaqueAuth
}

// Results of parseCall that are not a well-formed call.
var (
	// errNotCall: too short to hold an xid and a message type, or not a
	// CALL. RFC 5531 gives no way to answer it: the record is dropped.
	errNotCall = errors.New("rpc: record is not a call message")
	// errBadHeader: the program, version or procedure is missing. Dropped
	// too: without them the server cannot even say what is unavailable.
	errBadHeader = errors.New("rpc: truncated call header")
)

// parseCall decodes an RPC call header from one record and returns it with
// the procedure's argument bytes. Its errors say how to answer:
//   - errNotCall, errBadHeader: do not answer;
//   - nil with h.rpcvers != 2: deny with RPC_MISMATCH (nothing after the
//     version is parsed, since another RPC version may lay it out otherwise);
//   - authStat: deny with AUTH_ERROR (a malformed or oversized credential
//     or verifier).
func parseCall(rec []byte) (h callHeader, args []byte, err error) {
	r := xdrReader{b: rec}
	h.xid = r.uint32()
	mtype := r.uint32()
	if r.err != nil || mtype != msgCall {
		return h, nil, errNotCall
	}
	h.rpcvers = r.uint32()
	if r.err != nil {
		return h, nil, errBadHeader
	}
	if h.rpcvers != rpcVersion {
		return h, nil, nil
	}
	h.prog = r.uint32()
	h.vers = r.uint32()
	h.proc = r.uint32()
	if r.err != nil {
		return h, nil, errBadHeader
	}
	h.cred.flavor = r.uint32()
	h.cred.body = r.opaque(maxAuthBody)
	if r.err != nil {
		return h, nil, authBadCred
	}
	h.verf.flavor = r.uint32()
	h.verf.body = r.opaque(maxAuthBody)
	if r.err != nil {
		return h, nil, authBadVerf
	}
	return h, r.b, nil
}

// maxGids bounds the supplementary groups of an AUTH_UNIX credential
// (RFC 5531 appendix A).
const (
	maxGids        = 16
	maxMachineName = 255
)

// unixCred is a decoded AUTH_UNIX (AUTH_SYS) credential.
type unixCred struct {
	stamp   uint32
	machine string
	uid     uint32
	gid     uint32
	gids    []uint32
}

// parseAuthUnix decodes an authsys_parms body. The body must be exactly one
// authsys_parms: trailing bytes mean a client and server disagree about the
// layout, and guessing would risk acting as the wrong user.
func parseAuthUnix(body []byte) (unixCred, error) {
	r := xdrReader{b: body}
	var c unixCred
	c.stamp = r.uint32()
	c.machine = r.string(maxMachineName)
	c.uid = r.uint32()
	c.gid = r.uint32()
	n := r.uint32()
	if r.err == nil && n > maxGids {
		return c, fmt.Errorf("AUTH_UNIX credential with %d groups (at most %d)", n, maxGids)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		c.gids = append(c.gids, r.uint32())
	}
	if r.err != nil {
		return c, fmt.Errorf("AUTH_UNIX credential: %w", r.err)
	}
	if r.remaining() != 0 {
		return c, fmt.Errorf("AUTH_UNIX credential has %d trailing bytes", r.remaining())
	}
	return c, nil
}

// replyHeaderSize is the size of an accepted reply's header, record mark
// included: mark, xid, REPLY, MSG_ACCEPTED, verifier (AUTH_NONE, empty),
// accept_stat. Results follow it.
const replyHeaderSize = 28

// startAccepted writes the header of an accepted reply with accept_stat
// stat, leaving room for the record mark (filled in when sent).
func startAccepted(w *xdrWriter, xid uint32, stat uint32) {
	w.uint32(0) // record mark
	w.uint32(xid)
	w.uint32(msgReply)
	w.uint32(msgAccepted)
	w.uint32(authNone) // our verifier: AUTH_NONE (we authenticate nothing)
	w.uint32(0)
	w.uint32(stat)
}

// setAcceptStat rewrites the accept_stat of a reply started by startAccepted.
func setAcceptStat(w *xdrWriter, stat uint32) { w.putUint32(24, stat) }

// progMismatch answers PROG_MISMATCH with the supported version range.
func progMismatch(w *xdrWriter, xid, low, high uint32) {
	startAccepted(w, xid, acceptProgMismatch)
	w.uint32(low)
	w.uint32(high)
}

// rpcMismatch denies a call of another RPC version.
func rpcMismatch(w *xdrWriter, xid uint32) {
	w.uint32(0)
	w.uint32(xid)
	w.uint32(msgReply)
	w.uint32(msgDenied)
	w.uint32(rejectRPCMismatch)
	w.uint32(rpcVersion)
	w.uint32(rpcVersion)
}

// authError denies a call whose credential was refused.
func authError(w *xdrWriter, xid uint32, why authStat) {
	w.uint32(0)
	w.uint32(xid)
	w.uint32(msgReply)
	w.uint32(msgDenied)
	w.uint32(rejectAuthError)
	w.uint32(uint32(why))
}

// rpcError is what Options.Observe sees for calls that failed at the RPC
// level (no procedure ran, or its arguments did not decode).
type rpcError string

func (e rpcError) Error() string { return "rpc: " + string(e) }

const (
	errProgUnavail  rpcError = "PROG_UNAVAIL"
	errProgMismatch rpcError = "PROG_MISMATCH"
	errProcUnavail  rpcError = "PROC_UNAVAIL"
	errGarbageArgs  rpcError = "GARBAGE_ARGS"
	errSystemErr    rpcError = "SYSTEM_ERR"
	errRPCMismatch  rpcError = "RPC_MISMATCH"
)
