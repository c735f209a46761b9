//go:build linux && (amd64 || arm64)

package cache

import (
	"os"
	"syscall"
)

// dropPageCache asks the kernel to drop f's clean pages from the page cache,
// so the next reads go to the device (posix_fadvise POSIX_FADV_DONTNEED).
func dropPageCache(f *os.File) bool {
	const fadvDontNeed = 4
	_, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0)
	return errno == 0
}
