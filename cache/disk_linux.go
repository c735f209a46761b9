package cache

import (
	"errors"
	"os"
	"syscall"
)

// preallocate makes f size bytes long with its blocks allocated, so the cache
// owns its disk space from the start and later writes cannot fail for lack of
// it. Where the filesystem cannot allocate ahead (EOPNOTSUPP), the file is
// extended sparse instead.
func preallocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), 0, 0, size)
			if !errors.Is(ferr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(ferr, syscall.EOPNOTSUPP) || errors.Is(ferr, syscall.ENOSYS) {
		return f.Truncate(size)
	}
	return ferr
}
