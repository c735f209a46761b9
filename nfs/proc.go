// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"

	"zerofs/fs"
)

// The procedure tables and the dispatch of one call: RPC header, credential,
// program, version, procedure, arguments, in the order RFC 5531 (and knfsd)
// check them.

const (
	progNFS   = 100003
	progMount = 100005
	nfsVers   = 3
	mountVers = 3
)

// call is one request being served.
type call struct {
	remote netip.Addr
	xid    uint32
	cred   *fs.Cred
	args   []byte     // the procedure's argument bytes (alias the record)
	w      *xdrWriter // the reply; results are appended after its header
}

// status appends an nfsstat3 and returns it as the procedure's outcome.
func (c *call) status(st Status) error {
	c.w.uint32(uint32(st))
	if st == StatusOK {
		return nil
	}
	return st
}

// errDrop: send no reply at all. Used when the server is being forced down
// while a procedure waits (a COMMIT behind a store outage): an error reply
// would reach the application as EIO, whereas no reply makes the client
// retransmit to the next server, whose new write verifier makes it resend
// its uncommitted writes.
var errDrop = errors.New("reply dropped: server shutting down")

type procedure struct {
	name string
	// serve decodes the arguments and runs the procedure, appending its
	// results to c.w. An error wrapping errGarbage means the arguments did
	// not decode and nothing was appended; a Status is an NFS error result
	// (already appended); errDrop means no reply.
	serve func(s *Server, ctx context.Context, c *call) error
	// decode only decodes (the fuzz target over argument decoding).
	decode func(args []byte) error
}

// proc builds a procedure from a typed decoder and handler.
func proc[A any](name string, dec func(*xdrReader) A, run func(*Server, context.Context, *call, *A) error) procedure {
	return procedure{
		name: name,
		serve: func(s *Server, ctx context.Context, c *call) error {
			r := xdrReader{b: c.args}
			a := dec(&r)
			if r.err != nil {
				return r.err
			}
			return run(s, ctx, c, &a)
		},
		decode: func(args []byte) error {
			r := xdrReader{b: args}
			dec(&r)
			return r.err
		},
	}
}

type program struct {
	name      string
	low, high uint32 // supported versions
	procs     []procedure
}

// nfsProcs is NFS version 3, indexed by procedure number (RFC 1813).
var nfsProcs = []procedure{
	0:  proc("NULL", decodeNone, (*Server).null),
	1:  proc("GETATTR", decodeFH, (*Server).getattr),
	2:  proc("SETATTR", decodeSetattr, (*Server).setattr),
	3:  proc("LOOKUP", decodeDirop, (*Server).lookup),
	4:  proc("ACCESS", decodeAccess, (*Server).access),
	5:  proc("READLINK", decodeFH, (*Server).readlink),
	6:  proc("READ", decodeRead, (*Server).read),
	7:  proc("WRITE", decodeWrite, (*Server).write),
	8:  proc("CREATE", decodeCreate, (*Server).create),
	9:  proc("MKDIR", decodeMkdir, (*Server).mkdir),
	10: proc("SYMLINK", decodeSymlink, (*Server).symlink),
	11: proc("MKNOD", decodeMknod, (*Server).mknod),
	12: proc("REMOVE", decodeDirop, (*Server).remove),
	13: proc("RMDIR", decodeDirop, (*Server).rmdir),
	14: proc("RENAME", decodeRename, (*Server).rename),
	15: proc("LINK", decodeLink, (*Server).link),
	16: proc("READDIR", decodeReaddir, (*Server).readdir),
	17: proc("READDIRPLUS", decodeReaddirplus, (*Server).readdir),
	18: proc("FSSTAT", decodeFH, (*Server).fsstat),
	19: proc("FSINFO", decodeFH, (*Server).fsinfo),
	20: proc("PATHCONF", decodeFH, (*Server).pathconf),
	21: proc("COMMIT", decodeCommit, (*Server).commit),
}

// mountProcs is MOUNT version 3 (RFC 1813 appendix I).
var mountProcs = []procedure{
	0: proc("NULL", decodeNone, (*Server).null),
	1: proc("MNT", decodeMountPath, (*Server).mnt),
	2: proc("DUMP", decodeNone, (*Server).dump),
	3: proc("UMNT", decodeMountPath, (*Server).umnt),
	4: proc("UMNTALL", decodeNone, (*Server).umntall),
	5: proc("EXPORT", decodeNone, (*Server).export),
}

// NFS and MOUNT share one TCP port: clients mount with
// -o vers=3,tcp,port=N,mountport=N,nolock. No portmapper, no NLM (locks
// are client-local with nolock).
var programs = map[uint32]*program{
	progNFS:   {name: "nfs3", low: nfsVers, high: nfsVers, procs: nfsProcs},
	progMount: {name: "mount3", low: mountVers, high: mountVers, procs: mountProcs},
}

// Procedure names carry their program ("nfs3.GETATTR"): what logs and
// Options.Observe show, built once rather than per request.
func init() {
	for _, prog := range programs {
		for i := range prog.procs {
			prog.procs[i].name = prog.name + "." + prog.procs[i].name
		}
	}
}

// errDuplicate: a retransmission of a request still being served (see drc.go).
var errDuplicate = errors.New("duplicate of a request in progress")

// dispatch serves one RPC record and returns the reply (nil: none) and what
// Options.Observe reports. The reply's first four bytes are left for the
// record mark.
func (s *Server) dispatch(ctx context.Context, remote netip.Addr, rec []byte) (reply []byte, name string, err error) {
	h, args, perr := parseCall(rec)
	w := &xdrWriter{b: getBuf(replyHeaderSize + 512)[:0]}
	var as authStat
	switch {
	case errors.Is(perr, errNotCall), errors.Is(perr, errBadHeader):
		putBuf(w.b)
		s.log.Debug("nfs: dropping malformed RPC record", "remote", remote, "len", len(rec), "err", perr)
		return nil, "rpc.malformed", perr
	case errors.As(perr, &as):
		authError(w, h.xid, as)
		return w.b, "rpc.auth", as
	case h.rpcvers != rpcVersion:
		rpcMismatch(w, h.xid)
		return w.b, "rpc.version", errRPCMismatch
	}
	cred, as := authenticate(&h, s.opts.RootSquash)
	if as != authOK {
		authError(w, h.xid, as)
		return w.b, "rpc.auth", as
	}
	prog := programs[h.prog]
	if prog == nil {
		startAccepted(w, h.xid, acceptProgUnavail)
		return w.b, fmt.Sprintf("prog%d", h.prog), errProgUnavail
	}
	if h.vers < prog.low || h.vers > prog.high {
		progMismatch(w, h.xid, prog.low, prog.high)
		return w.b, fmt.Sprintf("%s.v%d", prog.name, h.vers), errProgMismatch
	}
	if h.proc >= uint32(len(prog.procs)) {
		startAccepted(w, h.xid, acceptProcUnavail)
		return w.b, fmt.Sprintf("%s.proc%d", prog.name, h.proc), errProcUnavail
	}
	p := &prog.procs[h.proc]
	name = p.name
	if h.prog == progNFS && nonIdempotent[h.proc] {
		k := drcKeyOf(remote, &h, args)
		if cached, dup := s.drc.begin(k); dup || cached != nil {
			putBuf(w.b)
			if dup {
				return nil, name, errDuplicate // the original's reply is coming
			}
			return cached, name, nil
		}
		defer func() { s.drc.finish(k, reply) }()
	}
	startAccepted(w, h.xid, acceptSuccess)
	c := &call{remote: remote, xid: h.xid, cred: cred, args: args, w: w}
	err = s.run(ctx, p, c)
	if err != nil && ctx.Err() != nil {
		// The connection is gone (or the server is forced down): nobody
		// is there to answer, and a request that failed for it did
		// nothing, so the duplicate cache forgets it and a retransmission
		// on a new connection runs it afresh.
		err = errDrop
	}
	switch {
	case errors.Is(err, errDrop):
		putBuf(w.b)
		return nil, name, err
	case errors.Is(err, errGarbage):
		s.log.Debug("nfs: garbage arguments", "remote", remote, "proc", name, "xid", h.xid, "err", err)
		w.truncate(replyHeaderSize)
		setAcceptStat(w, acceptGarbageArgs)
		return w.b, name, errGarbageArgs
	case errors.Is(err, errSystemErr):
		w.truncate(replyHeaderSize)
		setAcceptStat(w, acceptSystemErr)
		return w.b, name, err
	}
	return c.w.b, name, err
}

// run runs a procedure, turning a panic (a bug: client input must never
// cause one) into a SYSTEM_ERR reply and a logged stack, so one bad request
// cannot take down the server or the connection's other requests.
func (s *Server) run(ctx context.Context, p *procedure, c *call) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("nfs: BUG: panic serving a request; answered SYSTEM_ERR",
				"proc", p.name, "remote", c.remote, "xid", c.xid, "panic", v, "stack", string(debug.Stack()))
			err = errSystemErr
		}
	}()
	return p.serve(s, ctx, c)
}

// logFailure logs a failed call: I/O errors at warning level, since an
// operator should see them; everything else (NOENT, EXIST, ACCES..., and
// ROFS, which fs reports once when it stops accepting writes) at debug
// level, as the client's business.
func (s *Server) logFailure(c *call, op string, err error) {
	lvl := slog.LevelDebug
	if statusOf(err) == StatusIO {
		lvl = slog.LevelWarn
	}
	s.log.Log(context.Background(), lvl, "nfs: "+op+" failed", "remote", c.remote, "xid", c.xid, "err", err)
}
