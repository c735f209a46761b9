package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// fileStore keeps each object in one file under root, at the key's path
// (segments become directories). Layout:
//
//	root/<key>                object: a fixed header (magic, SHA-256, length), then the bytes
//	root/.zerofs/tmp/*.tmp    objects being written; flock'd by their writer while in use
//	root/.zerofs/locks/<n>    flock stripes serialising the writers of a key across processes
//
// The ETag is the content's SHA-256, computed once at write time and kept in
// the header, so Head and List read 48 bytes instead of hashing the object,
// and the ETag can never disagree with the bytes it describes (one file, one
// atomic rename; a sidecar would need two).
//
// The file system cannot hold both "a" and "a/b" (a is either a file or a
// directory); such a Put fails with a clear error instead of corrupting
// anything. S3 allows it; zerofs's key layout never needs it.
type fileStore struct {
	root   string // absolute
	tmpDir string
	locks  *keyLocks

	// writeHook, when set (tests only), replaces the write of staged bytes so
	// that a full disk can be simulated.
	writeHook func(f *os.File, p []byte) (int, error)
}

// openFile opens (creating if needed) the file store rooted at dir and
// removes temp files left behind by writers that crashed.
func openFile(dir string) (*fileStore, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file store %s: %w", dir, err)
	}
	s := &fileStore{
		root:   root,
		tmpDir: filepath.Join(root, reservedDir, "tmp"),
		locks:  &keyLocks{dir: filepath.Join(root, reservedDir, "locks")},
	}
	for _, d := range []string{root, s.tmpDir, s.locks.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("file store %s: %w", root, err)
		}
	}
	if err := cleanTemps(s.tmpDir); err != nil {
		return nil, fmt.Errorf("file store %s: clean temp files: %w", root, err)
	}
	return s, nil
}

func (s *fileStore) String() string { return "file://" + s.root }

func (s *fileStore) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

func (s *fileStore) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if err := precheck(ctx, key); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	f, hdr, err := openObject(s.path(key))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer f.Close()
	start, end, err := clampRange(hdr.size, off, length)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	buf := make([]byte, end-start)
	if _, err := f.ReadAt(buf, headerLen+start); err != nil { // pread: no shared offset
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("object file %s is shorter than its header says", f.Name())
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return buf, nil
}

func (s *fileStore) Head(ctx context.Context, key string) (Info, error) {
	if err := precheck(ctx, key); err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	f, hdr, err := openObject(s.path(key))
	if err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	f.Close()
	return hdr.info(key), nil
}

func (s *fileStore) Put(ctx context.Context, key string, data []byte) (string, error) {
	return s.write(ctx, "put", key, data, func(tmp, target string) error {
		return os.Rename(tmp, target)
	})
}

func (s *fileStore) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	// link(2) fails with EEXIST if anything is at target: the create-if-absent
	// is atomic in the kernel, whoever the other writer is.
	return s.write(ctx, "put-if-absent", key, data, func(tmp, target string) error {
		err := os.Link(tmp, target)
		if errors.Is(err, fs.ErrExist) {
			if fi, serr := os.Lstat(target); serr == nil && fi.IsDir() {
				return errKeyIsDir(target)
			}
			return ErrExists
		}
		return err
	})
}

func (s *fileStore) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (string, error) {
	// Compare and rename run under the key's lock (held by write), which
	// every writer of the key takes, in this process or another.
	return s.write(ctx, "put-if-match", key, data, func(tmp, target string) error {
		f, hdr, err := openObject(target)
		if err != nil {
			return err
		}
		f.Close()
		if hdr.etag != etag {
			return ErrPrecondition
		}
		return os.Rename(tmp, target)
	})
}

// write stages data in a synced temp file, then, holding the key's lock,
// publishes it at the key's path with publish and syncs the directory. The
// object that was there is untouched unless publish replaced it, so a failure
// at any step (a full disk, a permission error) leaves it intact.
func (s *fileStore) write(ctx context.Context, op, key string, data []byte, publish func(tmp, target string) error) (string, error) {
	if err := precheck(ctx, key); err != nil {
		return "", fmt.Errorf("%s %s: %w", op, key, err)
	}
	tmp, etag, err := s.stage(data)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", op, key, err)
	}
	defer tmp.discard()

	target := s.path(key)
	dir := filepath.Dir(target)
	if err := s.mkdirs(dir); err != nil {
		return "", fmt.Errorf("%s %s: %w", op, key, err)
	}
	unlock, err := s.locks.lock(key)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", op, key, err)
	}
	defer unlock()
	if err := publish(tmp.path, target); err != nil {
		if errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			err = errKeyIsDir(target)
		}
		return "", fmt.Errorf("%s %s: %w", op, key, err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("%s %s: %w", op, key, err)
	}
	return etag, nil
}

func (s *fileStore) Delete(ctx context.Context, key string) error {
	if err := precheck(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	unlock, err := s.locks.lock(key)
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	defer unlock()
	target := s.path(key)
	// unlink, not os.Remove: a directory at the path holds other keys and
	// must not be removed as if it were this object.
	switch err := syscall.Unlink(target); {
	case err == nil:
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR):
		return nil // no object at key
	default:
		return fmt.Errorf("delete %s: %w", key, &fs.PathError{Op: "unlink", Path: target, Err: err})
	}
	if err := syncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

func (s *fileStore) List(ctx context.Context, prefix string) ([]Info, error) {
	// Walk only the directory the prefix's complete segments name; the rest
	// of the prefix filters names inside it.
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if checkKey(prefix[:i]) != nil {
			return []Info{}, nil // no valid key can have this prefix
		}
		start = s.path(prefix[:i])
	}
	infos := []Info{}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // vanished, or the prefix names a file: nothing under it
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == s.root {
				return nil
			}
			if key == reservedDir || !couldHold(key+"/", prefix) {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		f, hdr, err := openObject(p)
		if errors.Is(err, ErrNotFound) {
			return nil // deleted while we walked
		}
		if err != nil {
			return err
		}
		f.Close()
		infos = append(infos, hdr.info(key))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// Walk order is per directory ("a/b" before "a-c"), not key order.
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	return infos, nil
}

// couldHold reports whether keys under directory dir ("x/y/") can start with prefix.
func couldHold(dir, prefix string) bool {
	return strings.HasPrefix(dir, prefix) || strings.HasPrefix(prefix, dir)
}

// mkdirs creates dir and any missing parents below the root, syncing each
// parent that gained an entry so the new path survives a crash.
func (s *fileStore) mkdirs(dir string) error {
	if dir == s.root {
		return nil
	}
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil, errors.Is(err, syscall.ENOTDIR):
		return errKeyIsFile(dir)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) { // a concurrent writer made it
			return s.mkdirs(dir)
		}
		return err
	}
	return syncDir(parent)
}

func errKeyIsDir(path string) error {
	return fmt.Errorf("%s is a directory of other keys, so it cannot also be an object (file backend)", path)
}

func errKeyIsFile(path string) error {
	return fmt.Errorf("a path component of %s is an object, so it cannot also be a directory of keys (file backend)", path)
}
