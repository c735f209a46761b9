package nfs

import "math"

// Procedure arguments (RFC 1813 section 3 and appendix I). Each decoder is a
// pure function of the argument bytes; a failure is recorded in the reader
// (and answered GARBAGE_ARGS). Bounds: file handles are opaque<64> as XDR
// says; names and paths are unbounded in XDR, so they are limited only by
// the record (maxRecord) and package fs returns NAMETOOLONG for long ones.
// Trailing bytes after the arguments are ignored, as knfsd does.

const unbounded = math.MaxUint32

type fhArgs struct {
	fh []byte
}

func decodeFH(r *xdrReader) fhArgs { return fhArgs{fh: r.opaque(maxHandleSize)} }

// diropArgs is diropargs3: a directory and a name in it.
type diropArgs struct {
	dir  []byte
	name string
}

func (r *xdrReader) dirop() diropArgs {
	return diropArgs{dir: r.opaque(maxHandleSize), name: r.string(unbounded)}
}

func decodeDirop(r *xdrReader) diropArgs { return r.dirop() }

type setattrArgs struct {
	fh      []byte
	attr    sattr
	guard   bool
	guardCt nfstime
}

func decodeSetattr(r *xdrReader) setattrArgs {
	a := setattrArgs{fh: r.opaque(maxHandleSize), attr: r.sattr()}
	if a.guard = r.bool(); a.guard {
		a.guardCt = r.nfstime()
	}
	return a
}

type accessArgs struct {
	fh     []byte
	access uint32
}

func decodeAccess(r *xdrReader) accessArgs {
	return accessArgs{fh: r.opaque(maxHandleSize), access: r.uint32()}
}

type readArgs struct {
	fh    []byte
	off   uint64
	count uint32
}

func decodeRead(r *xdrReader) readArgs {
	return readArgs{fh: r.opaque(maxHandleSize), off: r.uint64(), count: r.uint32()}
}

// stable_how
const (
	unstable = 0
	dataSync = 1
	fileSync = 2
)

type writeArgs struct {
	fh     []byte
	off    uint64
	stable uint32
	data   []byte
}

func decodeWrite(r *xdrReader) writeArgs {
	a := writeArgs{fh: r.opaque(maxHandleSize), off: r.uint64()}
	count := r.uint32()
	a.stable = r.uint32()
	a.data = r.opaque(unbounded)
	if r.err != nil {
		return a
	}
	if a.stable > fileSync {
		r.fail("stable_how %d", a.stable)
	}
	// The count and the opaque's own length must agree (knfsd refuses the
	// call otherwise too): a client that disagrees with itself about how
	// much it is writing should not have either number trusted.
	if count != uint32(len(a.data)) {
		r.fail("WRITE count %d but %d bytes of data", count, len(a.data))
	}
	return a
}

// createhow3 modes
const (
	createUnchecked = 0
	createGuarded   = 1
	createExclusive = 2
)

type createArgs struct {
	where diropArgs
	how   uint32
	attr  sattr  // UNCHECKED, GUARDED
	verf  uint64 // EXCLUSIVE
}

func decodeCreate(r *xdrReader) createArgs {
	a := createArgs{where: r.dirop(), how: r.uint32()}
	switch a.how {
	case createUnchecked, createGuarded:
		a.attr = r.sattr()
	case createExclusive:
		a.verf = r.uint64()
	default:
		r.fail("createmode3 %d", a.how)
	}
	return a
}

type mkdirArgs struct {
	where diropArgs
	attr  sattr
}

func decodeMkdir(r *xdrReader) mkdirArgs { return mkdirArgs{where: r.dirop(), attr: r.sattr()} }

type symlinkArgs struct {
	where  diropArgs
	attr   sattr
	target string
}

func decodeSymlink(r *xdrReader) symlinkArgs {
	return symlinkArgs{where: r.dirop(), attr: r.sattr(), target: r.string(unbounded)}
}

type mknodArgs struct {
	where        diropArgs
	ftype        uint32
	attr         sattr
	major, minor uint32
}

// decodeMknod: mknoddata3 is a union on the file type whose default arm is
// void, so any type decodes; MKNOD answers BADTYPE for the ones it cannot
// make.
func decodeMknod(r *xdrReader) mknodArgs {
	a := mknodArgs{where: r.dirop(), ftype: r.uint32()}
	switch a.ftype {
	case ftypeChr, ftypeBlk:
		a.attr = r.sattr()
		a.major, a.minor = r.uint32(), r.uint32()
	case ftypeSock, ftypeFIFO:
		a.attr = r.sattr()
	}
	return a
}

type renameArgs struct {
	from, to diropArgs
}

func decodeRename(r *xdrReader) renameArgs { return renameArgs{from: r.dirop(), to: r.dirop()} }

type linkArgs struct {
	fh []byte
	to diropArgs
}

func decodeLink(r *xdrReader) linkArgs { return linkArgs{fh: r.opaque(maxHandleSize), to: r.dirop()} }

type readdirArgs struct {
	fh     []byte
	cookie uint64
	verf   uint64
	count  uint32 // READDIR: count; READDIRPLUS: maxcount
	dirMax uint32 // READDIRPLUS: dircount; READDIR: same as count
	plus   bool
}

func decodeReaddir(r *xdrReader) readdirArgs {
	a := readdirArgs{fh: r.opaque(maxHandleSize), cookie: r.uint64(), verf: r.uint64(), count: r.uint32()}
	a.dirMax = a.count
	return a
}

func decodeReaddirplus(r *xdrReader) readdirArgs {
	a := readdirArgs{fh: r.opaque(maxHandleSize), cookie: r.uint64(), verf: r.uint64(), plus: true}
	a.dirMax = r.uint32()
	a.count = r.uint32()
	return a
}

type commitArgs struct {
	fh    []byte
	off   uint64
	count uint32
}

func decodeCommit(r *xdrReader) commitArgs {
	return commitArgs{fh: r.opaque(maxHandleSize), off: r.uint64(), count: r.uint32()}
}

type noArgs struct{}

func decodeNone(r *xdrReader) noArgs { return noArgs{} }

// mountPathArgs is a MOUNT dirpath. MNTPATHLEN (1024) is enforced by MNT
// itself, which has an error code for it (MNT3ERR_NAMETOOLONG).
type mountPathArgs struct {
	path string
}

func decodeMountPath(r *xdrReader) mountPathArgs { return mountPathArgs{path: r.string(unbounded)} }
