package metrics

import "syscall"

var errnoNames = map[syscall.Errno]string{
	syscall.ENOENT: "ENOENT", syscall.EEXIST: "EEXIST", syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR",
	syscall.ENOTEMPTY: "ENOTEMPTY", syscall.EINVAL: "EINVAL", syscall.ENAMETOOLONG: "ENAMETOOLONG",
	syscall.EPERM: "EPERM", syscall.EACCES: "EACCES", syscall.EIO: "EIO", syscall.ENOSPC: "ENOSPC",
	syscall.EFBIG: "EFBIG", syscall.EROFS: "EROFS", syscall.ESTALE: "ESTALE", syscall.EMLINK: "EMLINK",
	syscall.EXDEV: "EXDEV", syscall.EOVERFLOW: "EOVERFLOW", syscall.ENOTSUP: "ENOTSUP",
}

// errnoName keeps label values to a small fixed set.
func errnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return "error"
}
