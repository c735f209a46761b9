package nbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"zerofs/fs"
)

// reqError is a request's failure as the client sees it: one of the error
// values the spec allows, and a message for humans (sent in structured error
// chunks). It wraps the underlying cause, if any, for logs and Observe.
type reqError struct {
	code uint32
	msg  string
	err  error
}

func (e *reqError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s (%s): %v", e.msg, errnoName(e.code), e.err)
	}
	return fmt.Sprintf("%s (%s)", e.msg, errnoName(e.code))
}

func (e *reqError) Unwrap() error { return e.err }

// newReqError is a request error with no underlying cause: the request itself
// was wrong (bad range, bad flag...).
func newReqError(code uint32, format string, args ...any) *reqError {
	return &reqError{code: code, msg: fmt.Sprintf(format, args...)}
}

// fsError wraps a filesystem error for command cmd, mapping its errno.
func fsError(cmd uint16, err error, format string, args ...any) *reqError {
	return &reqError{code: errnoFor(cmd, err), msg: fmt.Sprintf(format, args...), err: err}
}

// errnoFor maps an error from package fs to an NBD error value.
//
//   - EIO (corrupt or unreadable data) stays EIO.
//   - ENOSPC, EFBIG and EDQUOT become ENOSPC, as the spec asks.
//   - EROFS (the filesystem stopped accepting writes: fenced by a newer
//     writer, or closed) becomes EPERM for writes, the spec's error for
//     writing a read-only export; for FLUSH it is EIO, because what the
//     client must learn is that its data is not known to be durable.
//   - EPERM and EACCES become EPERM.
//   - EINVAL stays EINVAL.
//   - A cancelled context (forced server shutdown) is ESHUTDOWN.
//   - Anything else, including ENOENT/ESTALE when the export file was deleted
//     under a connected client, is EIO: the client cannot fix it by asking
//     differently.
func errnoFor(cmd uint16, err error) uint32 {
	if err == nil {
		return 0
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errShutdown
	}
	switch fs.Errno(err) {
	case syscall.EIO:
		return errIO
	case syscall.ENOSPC, syscall.EFBIG, syscall.EDQUOT:
		return errNoSpc
	case syscall.EROFS:
		if cmd == cmdFlush {
			return errIO
		}
		return errPerm
	case syscall.EPERM, syscall.EACCES:
		return errPerm
	case syscall.EINVAL:
		return errInval
	default:
		return errIO
	}
}

// errnoName names an NBD error value for messages.
func errnoName(code uint32) string {
	switch code {
	case 0:
		return "success"
	case errPerm:
		return "EPERM"
	case errIO:
		return "EIO"
	case errNoMem:
		return "ENOMEM"
	case errInval:
		return "EINVAL"
	case errNoSpc:
		return "ENOSPC"
	case errOverflow:
		return "EOVERFLOW"
	case errNotSup:
		return "ENOTSUP"
	case errShutdown:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("error %d", code)
}
