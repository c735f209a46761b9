package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey: the key is not one every backend can store (see checkKey).
// Like the other sentinels it comes back wrapped; test with errors.Is.
var ErrInvalidKey = errors.New("invalid key")

// maxKeyLen is S3's limit; enforcing it everywhere keeps a key that works on
// the local backends from failing only once the data moves to S3.
const maxKeyLen = 1024

// reservedDir is the file backend's private directory at the root (temp files,
// lock files). Keys may not start with it on any backend, so that a store can
// be copied between backends without a key landing on top of it.
const reservedDir = ".zerofs"

// checkKey rejects keys that would be ambiguous or unsafe as file paths: the
// file backend maps segments to directories, and the same rules apply to every
// backend so that code tested on mem:// or file:// behaves the same on S3.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > maxKeyLen:
		return fmt.Errorf("%w: %d bytes long, limit %d", ErrInvalidKey, len(key), maxKeyLen)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%w %q: starts with '/'", ErrInvalidKey, key)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w %q: contains NUL", ErrInvalidKey, key)
	}
	for i, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w %q: empty path segment", ErrInvalidKey, key)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w %q: %q segment", ErrInvalidKey, key, seg)
		case i == 0 && seg == reservedDir:
			return fmt.Errorf("%w %q: %q is reserved", ErrInvalidKey, key, reservedDir)
		}
	}
	return nil
}

// precheck applies the checks every call makes first, so that a cancelled
// context fails the same way on every backend.
func precheck(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return checkKey(key)
}
