package fs

import (
	"errors"
	"syscall"
)

// The filesystem reports POSIX conditions as syscall.Errno values, wrapped with
// context. Protocol adapters map them to their own codes with errors.As, so
// one error vocabulary serves NBD (EIO, ENOSPC, EINVAL) and NFS (NFS3ERR_*).
var (
	ErrNotExist    = syscall.ENOENT
	ErrExist       = syscall.EEXIST
	ErrNotDir      = syscall.ENOTDIR
	ErrIsDir       = syscall.EISDIR
	ErrNotEmpty    = syscall.ENOTEMPTY
	ErrInvalid     = syscall.EINVAL
	ErrNameTooLong = syscall.ENAMETOOLONG
	ErrPerm        = syscall.EPERM  // operation not permitted (ownership)
	ErrAccess      = syscall.EACCES // permission bits deny it
	ErrIO          = syscall.EIO    // corrupt or unreadable data
	ErrNoSpace     = syscall.ENOSPC
	ErrFileTooBig  = syscall.EFBIG
	ErrReadOnly    = syscall.EROFS // the filesystem stopped accepting writes (fenced)
	ErrStale       = syscall.ESTALE
	ErrTooManyLink = syscall.EMLINK
	ErrXDev        = syscall.EXDEV
	ErrLoop        = syscall.ELOOP
	ErrBusy        = syscall.EBUSY // in use: a snapshot or device a client has attached
	// ErrCanceled: the request's context ended (its connection is gone)
	// before it began to change anything; nothing was done.
	ErrCanceled = syscall.ECANCELED
)

// Errno extracts the POSIX errno from an error returned by this package,
// defaulting to EIO for anything unexpected.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
