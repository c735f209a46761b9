package store

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// lockStripes bounds the number of lock files. Two keys sharing a stripe only
// wait on each other for the short publish step, never for data writes.
const lockStripes = 64

// keyLocks serialises the writers of a key. The flock on the stripe's lock
// file excludes other processes (and other stores opened on the same
// directory in this process: flock locks belong to the open file, and each
// lock call opens its own). The mutex queues this store's own goroutines
// first, so at most one thread per stripe sits blocked in flock.
type keyLocks struct {
	dir string
	mu  [lockStripes]sync.Mutex
}

func (l *keyLocks) lock(key string) (unlock func(), err error) {
	h := fnv.New32a()
	h.Write([]byte(key))
	i := h.Sum32() % lockStripes
	l.mu[i].Lock()
	path := filepath.Join(l.dir, strconv.Itoa(int(i)))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		l.mu[i].Unlock()
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f, syscall.LOCK_EX); err != nil {
		f.Close()
		l.mu[i].Unlock()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		f.Close() // releases the flock
		l.mu[i].Unlock()
	}, nil
}

func flock(f *os.File, how int) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = conn.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}
