package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Object file header: magic, the ETag (32 bytes), content length. The length
// lets a truncated or foreign file be told from an object.
//
// The ETag is 32 random bytes drawn for each write, not a hash of the content:
// compare-and-swap needs only that every write gets a new one, and hashing
// every WAL record and segment cost a tenth of the write path's CPU. (Files
// written when it was a SHA-256 read back the same way.)
const (
	objMagic  = "ZFSOBJ01"
	magicLen  = 8 // len(objMagic), untyped so that headerLen mixes with int64
	etagLen   = 32
	headerLen = magicLen + etagLen + 8
	tmpSuffix = ".tmp"
)

type objHeader struct {
	etag    string
	size    int64
	modTime time.Time
}

func (h objHeader) info(key string) Info {
	return Info{Key: key, Size: h.size, ETag: h.etag, ModTime: h.modTime}
}

func encodeHeader(data []byte) (hdr [headerLen]byte, etag string) {
	var tag [etagLen]byte
	if _, err := rand.Read(tag[:]); err != nil {
		panic(fmt.Sprintf("store: random etag: %v", err)) // crypto/rand does not fail on Linux
	}
	copy(hdr[:], objMagic)
	copy(hdr[magicLen:], tag[:])
	binary.BigEndian.PutUint64(hdr[magicLen+etagLen:], uint64(len(data)))
	return hdr, hex.EncodeToString(tag[:])
}

// openObject opens the object file at path and reads its header. Nothing
// there, or a directory there, is ErrNotFound.
func openObject(path string) (*os.File, objHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, objHeader{}, ErrNotFound
		}
		return nil, objHeader{}, err
	}
	hdr, err := readHeader(f)
	if err != nil {
		f.Close()
		return nil, objHeader{}, err
	}
	return f, hdr, nil
}

func readHeader(f *os.File) (objHeader, error) {
	fi, err := f.Stat()
	if err != nil {
		return objHeader{}, err
	}
	if fi.IsDir() {
		return objHeader{}, ErrNotFound
	}
	var b [headerLen]byte
	if fi.Size() >= headerLen {
		if _, err := f.ReadAt(b[:], 0); err != nil {
			return objHeader{}, err
		}
	}
	size := fi.Size() - headerLen
	if string(b[:magicLen]) != objMagic || binary.BigEndian.Uint64(b[magicLen+etagLen:]) != uint64(size) {
		return objHeader{}, fmt.Errorf("%s is not a zerofs object file or is truncated (%d bytes)", f.Name(), fi.Size())
	}
	return objHeader{
		etag:    hex.EncodeToString(b[magicLen : magicLen+etagLen]),
		size:    size,
		modTime: fi.ModTime(),
	}, nil
}

// tempFile is an object being written. Its writer holds an exclusive flock on
// it until discard, which is how cleanTemps tells a live writer's file from a
// crashed one's.
type tempFile struct {
	f    *os.File
	path string
}

// stage writes header and data to a new temp file and syncs it, so that the
// publishing rename or link exposes only complete, durable objects.
func (s *fileStore) stage(data []byte) (*tempFile, string, error) {
	tmp, err := createTemp(s.tmpDir)
	if err != nil {
		return nil, "", err
	}
	hdr, etag := encodeHeader(data)
	write := tmp.f.Write
	if s.writeHook != nil {
		write = func(p []byte) (int, error) { return s.writeHook(tmp.f, p) }
	}
	if _, err := write(hdr[:]); err != nil {
		tmp.discard()
		return nil, "", fmt.Errorf("write temp file: %w", err)
	}
	if _, err := write(data); err != nil {
		tmp.discard()
		return nil, "", fmt.Errorf("write temp file: %w", err)
	}
	if err := tmp.f.Sync(); err != nil {
		tmp.discard()
		return nil, "", fmt.Errorf("sync temp file: %w", err)
	}
	return tmp, etag, nil
}

func createTemp(dir string) (*tempFile, error) {
	for range 100 { // each retry is a lost race with another Open's cleanup
		path := filepath.Join(dir, rand.Text()+tmpSuffix)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create temp file: %w", err)
		}
		if err := flock(f, syscall.LOCK_EX); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("lock temp file: %w", err)
		}
		// Another process's cleanTemps may have locked and removed the file
		// between our create and our lock; we would be writing to an
		// unlinked inode. Now that we hold the lock, nobody can remove it.
		if ok, _ := sameFile(f, path); !ok {
			f.Close()
			continue
		}
		return &tempFile{f: f, path: path}, nil
	}
	return nil, fmt.Errorf("create temp file in %s: removed under us 100 times", dir)
}

// discard removes the temp file's name (if a link or rename has not already
// moved it) and closes it, releasing the lock.
func (t *tempFile) discard() {
	os.Remove(t.path)
	t.f.Close()
}

// cleanTemps removes temp files whose writer is gone: a file whose flock can
// be taken belongs to nobody (a crashed process, or a finished one whose
// discard did not complete).
func cleanTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if ok, _ := sameFile(f, path); ok {
				err = os.Remove(path)
			}
		} else if errors.Is(err, syscall.EWOULDBLOCK) {
			err = nil // a live writer's
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func sameFile(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Lstat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// syncDir makes a directory's entries (a rename, link or unlink in it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
