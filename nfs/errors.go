// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"errors"
	"fmt"
	"syscall"

	"zerofs/fs"
)

// Status is an NFSv3 result code (nfsstat3, RFC 1813 section 2.6). Non-OK
// results are reported to Options.Observe as a Status error, so a metrics
// hook can label failures by code.
type Status uint32

// The nfsstat3 values.
const (
	StatusOK          Status = 0
	StatusPerm        Status = 1
	StatusNoEnt       Status = 2
	StatusIO          Status = 5
	StatusNXIO        Status = 6
	StatusAccess      Status = 13
	StatusExist       Status = 17
	StatusXDev        Status = 18
	StatusNoDev       Status = 19
	StatusNotDir      Status = 20
	StatusIsDir       Status = 21
	StatusInval       Status = 22
	StatusFBig        Status = 27
	StatusNoSpc       Status = 28
	StatusROFS        Status = 30
	StatusMLink       Status = 31
	StatusNameTooLong Status = 63
	StatusNotEmpty    Status = 66
	StatusDQuot       Status = 69
	StatusStale       Status = 70
	StatusRemote      Status = 71
	StatusBadHandle   Status = 10001
	StatusNotSync     Status = 10002
	StatusBadCookie   Status = 10003
	StatusNotSupp     Status = 10004
	StatusTooSmall    Status = 10005
	StatusServerFault Status = 10006
	StatusBadType     Status = 10007
	StatusJukebox     Status = 10008
)

var statusNames = map[Status]string{
	StatusOK:          "NFS3_OK",
	StatusPerm:        "NFS3ERR_PERM",
	StatusNoEnt:       "NFS3ERR_NOENT",
	StatusIO:          "NFS3ERR_IO",
	StatusNXIO:        "NFS3ERR_NXIO",
	StatusAccess:      "NFS3ERR_ACCES",
	StatusExist:       "NFS3ERR_EXIST",
	StatusXDev:        "NFS3ERR_XDEV",
	StatusNoDev:       "NFS3ERR_NODEV",
	StatusNotDir:      "NFS3ERR_NOTDIR",
	StatusIsDir:       "NFS3ERR_ISDIR",
	StatusInval:       "NFS3ERR_INVAL",
	StatusFBig:        "NFS3ERR_FBIG",
	StatusNoSpc:       "NFS3ERR_NOSPC",
	StatusROFS:        "NFS3ERR_ROFS",
	StatusMLink:       "NFS3ERR_MLINK",
	StatusNameTooLong: "NFS3ERR_NAMETOOLONG",
	StatusNotEmpty:    "NFS3ERR_NOTEMPTY",
	StatusDQuot:       "NFS3ERR_DQUOT",
	StatusStale:       "NFS3ERR_STALE",
	StatusRemote:      "NFS3ERR_REMOTE",
	StatusBadHandle:   "NFS3ERR_BADHANDLE",
	StatusNotSync:     "NFS3ERR_NOT_SYNC",
	StatusBadCookie:   "NFS3ERR_BAD_COOKIE",
	StatusNotSupp:     "NFS3ERR_NOTSUPP",
	StatusTooSmall:    "NFS3ERR_TOOSMALL",
	StatusServerFault: "NFS3ERR_SERVERFAULT",
	StatusBadType:     "NFS3ERR_BADTYPE",
	StatusJukebox:     "NFS3ERR_JUKEBOX",
}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("nfsstat3(%d)", uint32(s))
}

func (s Status) Error() string { return s.String() }

// statusOf maps an error from package fs to the NFSv3 status a client sees.
// fs reports POSIX conditions as wrapped syscall.Errno values (fs.Errno
// extracts them, defaulting to EIO); the SETATTR guard is its own error.
// ENOENT here means a name was not found: handle lookups map a missing inode
// to STALE themselves (see Server.inode).
func statusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	if errors.Is(err, fs.ErrGuard) {
		return StatusNotSync
	}
	switch fs.Errno(err) {
	case syscall.ENOENT:
		return StatusNoEnt
	case syscall.EEXIST:
		return StatusExist
	case syscall.ENOTDIR:
		return StatusNotDir
	case syscall.EISDIR:
		return StatusIsDir
	case syscall.ENOTEMPTY:
		return StatusNotEmpty
	case syscall.EINVAL:
		return StatusInval
	case syscall.ENAMETOOLONG:
		return StatusNameTooLong
	case syscall.EPERM:
		return StatusPerm
	case syscall.EACCES:
		return StatusAccess
	case syscall.EFBIG:
		return StatusFBig
	case syscall.ENOSPC:
		return StatusNoSpc
	case syscall.EROFS:
		return StatusROFS
	case syscall.EMLINK:
		return StatusMLink
	case syscall.EXDEV:
		return StatusXDev
	case syscall.ESTALE:
		return StatusStale
	case syscall.EDQUOT:
		return StatusDQuot
	default:
		// EIO, and anything fs did not classify: the client can do
		// nothing better with it than report an I/O error.
		return StatusIO
	}
}
