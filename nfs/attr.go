// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"math"

	"zerofs/fs"
)

// ftype3 (RFC 1813 section 2.6).
const (
	ftypeReg  = 1
	ftypeDir  = 2
	ftypeBlk  = 3
	ftypeChr  = 4
	ftypeLnk  = 5
	ftypeSock = 6
	ftypeFIFO = 7
)

func ftypeOf(mode uint32) uint32 {
	switch mode & fs.TypeMask {
	case fs.TypeDir:
		return ftypeDir
	case fs.TypeBlock:
		return ftypeBlk
	case fs.TypeChar:
		return ftypeChr
	case fs.TypeSymlink:
		return ftypeLnk
	case fs.TypeSocket:
		return ftypeSock
	case fs.TypeFIFO:
		return ftypeFIFO
	default:
		return ftypeReg
	}
}

// fattr3Size is the encoded size of an fattr3.
const fattr3Size = 84

// putFattr writes n's attributes as an fattr3.
func (s *Server) putFattr(w *xdrWriter, n *fs.Inode) {
	w.uint32(ftypeOf(n.Mode))
	w.uint32(n.Mode & 0o7777) // permissions with setuid, setgid, sticky
	w.uint32(n.Nlink)
	w.uint32(n.Uid)
	w.uint32(n.Gid)
	w.uint64(n.Size)
	// used: the bytes the file's data takes, not its size (fs.UsedBytes:
	// one counter lookup), so du(1) shows a sparse device as what it holds.
	w.uint64(s.fs.UsedBytes(n))
	var major, minor uint32
	if t := n.Mode & fs.TypeMask; t == fs.TypeChar || t == fs.TypeBlock {
		major, minor = devMajor(n.Rdev), devMinor(n.Rdev)
	}
	w.uint32(major)
	w.uint32(minor)
	w.uint64(s.fsid)
	w.uint64(n.Ino) // fileid: the inode number, never reused
	putTime(w, n.Atime)
	putTime(w, n.Mtime)
	putTime(w, n.Ctime)
}

// putPostOpAttr writes a post_op_attr: n's attributes, or none when n is nil.
func (s *Server) putPostOpAttr(w *xdrWriter, n *fs.Inode) {
	if n == nil {
		w.bool(false)
		return
	}
	w.bool(true)
	s.putFattr(w, n)
}

// putWcc writes wcc_data: the pre-operation size and times of the object
// (pre) and its attributes after (post); either may be nil (unknown).
func (s *Server) putWcc(w *xdrWriter, pre, post *fs.Inode) {
	if pre == nil {
		w.bool(false)
	} else {
		w.bool(true)
		w.uint64(pre.Size)
		putTime(w, pre.Mtime)
		putTime(w, pre.Ctime)
	}
	s.putPostOpAttr(w, post)
}

// putPostOpFH writes a post_op_fh3 naming n (none when n is nil).
func (s *Server) putPostOpFH(w *xdrWriter, n *fs.Inode) {
	if n == nil {
		w.bool(false)
		return
	}
	w.bool(true)
	s.putHandle(w, n)
}

// Times: fs keeps nanoseconds since 1970 as int64; nfstime3 is unsigned
// 32-bit seconds and nanoseconds. Times before 1970 are sent as 0 and times
// after 2106 as the largest representable: NFSv3 cannot express them, and
// clamping is better than wrapping to a date a century away.
func putTime(w *xdrWriter, ns int64) {
	sec, nsec := splitTime(ns)
	w.uint32(sec)
	w.uint32(nsec)
}

func splitTime(ns int64) (sec, nsec uint32) {
	if ns <= 0 {
		return 0, 0
	}
	s := ns / 1e9
	if s > math.MaxUint32 {
		return math.MaxUint32, 999_999_999
	}
	return uint32(s), uint32(ns % 1e9)
}

// nfstime is a decoded nfstime3.
type nfstime struct {
	sec, nsec uint32
}

// ns converts t to fs's nanoseconds; ok is false for nanoseconds of a
// second or more, which no correct client sends.
func (t nfstime) ns() (int64, bool) {
	if t.nsec >= 1e9 {
		return 0, false
	}
	return int64(t.sec)*1e9 + int64(t.nsec), true
}

func (r *xdrReader) nfstime() nfstime {
	return nfstime{sec: r.uint32(), nsec: r.uint32()}
}

// time_how of sattr3.
const (
	timeDontChange    = 0
	timeSetServerTime = 1
	timeSetClientTime = 2
)

// sattr is a decoded sattr3: the attributes SETATTR, CREATE, MKDIR,
// SYMLINK and MKNOD may set.
type sattr struct {
	mode, uid, gid *uint32
	size           *uint64
	atimeHow       uint32
	atime          nfstime
	mtimeHow       uint32
	mtime          nfstime
}

func (r *xdrReader) sattr() sattr {
	var a sattr
	if r.bool() {
		v := r.uint32()
		a.mode = &v
	}
	if r.bool() {
		v := r.uint32()
		a.uid = &v
	}
	if r.bool() {
		v := r.uint32()
		a.gid = &v
	}
	if r.bool() {
		v := r.uint64()
		a.size = &v
	}
	a.atimeHow, a.atime = r.timeHow()
	a.mtimeHow, a.mtime = r.timeHow()
	return a
}

// timeHow decodes a set_atime or set_mtime union; an unknown discriminant
// is malformed XDR.
func (r *xdrReader) timeHow() (uint32, nfstime) {
	how := r.uint32()
	switch how {
	case timeDontChange, timeSetServerTime:
		return how, nfstime{}
	case timeSetClientTime:
		return how, r.nfstime()
	default:
		r.fail("time_how %d", how)
		return timeDontChange, nfstime{}
	}
}

// empty reports whether a sets nothing.
func (a *sattr) empty() bool {
	return a.mode == nil && a.uid == nil && a.gid == nil && a.size == nil &&
		a.atimeHow == timeDontChange && a.mtimeHow == timeDontChange
}

// toFS converts a to fs.SetAttrs. Mode keeps only the permission bits (and
// setuid, setgid, sticky): sattr3 cannot change a file's type.
func (a *sattr) toFS() (fs.SetAttrs, Status) {
	var s fs.SetAttrs
	if a.mode != nil {
		m := *a.mode & 0o7777
		s.Mode = &m
	}
	s.Uid, s.Gid, s.Size = a.uid, a.gid, a.size
	var ok bool
	if s.Atime, ok = toTimeSet(a.atimeHow, a.atime); !ok {
		return s, StatusInval
	}
	if s.Mtime, ok = toTimeSet(a.mtimeHow, a.mtime); !ok {
		return s, StatusInval
	}
	return s, StatusOK
}

func toTimeSet(how uint32, t nfstime) (*fs.TimeSet, bool) {
	switch how {
	case timeSetServerTime:
		return &fs.TimeSet{Now: true}, true
	case timeSetClientTime:
		ns, ok := t.ns()
		return &fs.TimeSet{Time: ns}, ok
	}
	return nil, true
}

// Device numbers: fs keeps a character or block device's number as one
// uint64, in Linux's dev_t encoding (glibc's gnu_dev_makedev), so that the
// value means the same as st_rdev on the Linux machines zerofs serves.
func makeDev(major, minor uint32) uint64 {
	return uint64(major&0xfffff000)<<32 | uint64(major&0xfff)<<8 |
		uint64(minor&0xffffff00)<<12 | uint64(minor&0xff)
}

func devMajor(dev uint64) uint32 {
	return uint32(dev>>32&0xfffff000 | dev>>8&0xfff)
}

func devMinor(dev uint64) uint32 {
	return uint32(dev>>12&0xffffff00 | dev&0xff)
}
