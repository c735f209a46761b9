package store

import "os"

// SetFileWriteHook makes s, a file store, write staged objects through hook,
// so tests can simulate a full disk.
func SetFileWriteHook(s Store, hook func(f *os.File, p []byte) (int, error)) {
	s.(*fileStore).writeHook = hook
}
