//go:build !linux

package cache

import "os"

// preallocate extends f to size bytes. Without fallocate the file is sparse,
// so the disk space is claimed only as slots are first written.
func preallocate(f *os.File, size int64) error {
	return f.Truncate(size)
}
