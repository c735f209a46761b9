package nfs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"zerofs/fs"
)

// File handles are computed, never stored: a handle is
//
//	version (1 byte) | filesystem id (8) | inode number (8) | generation (8)
//
// all big-endian, 25 bytes. The server keeps no handle table, so a handle is
// valid for exactly as long as its inode exists: across server restarts,
// renames, and any amount of cache pressure (go-nfs's LRU of random handles
// went stale on all three).
//
//   - The filesystem id is the first 8 bytes of SHA-256 of fs.FSID(): a
//     handle of another zerofs filesystem (another bucket) is refused with
//     BADHANDLE rather than naming an unrelated file that happens to have
//     the same inode number. The same value is the fsid in attributes.
//   - Inode numbers are never reused (fs.RootIno and allocation only grow).
//     The one exception is a create lost in a crash before it was flushed:
//     its number is allocated again after restart. The generation (the
//     epoch of the server that created the inode, fs.Inode.Gen) tells the
//     two apart, so an old handle to the lost file is STALE instead of
//     naming the new one.
//   - The version byte lets a later format change be recognised (BADHANDLE
//     for versions this server does not know).
const (
	handleVersion = 1
	handleSize    = 1 + 8 + 8 + 8
	maxHandleSize = 64 // NFS3_FHSIZE
)

// fsidOf derives the 64-bit filesystem id used in handles and attributes.
func fsidOf(id [16]byte) uint64 {
	sum := sha256.Sum256(id[:])
	return binary.BigEndian.Uint64(sum[:8])
}

// appendHandle appends the handle of (ino, gen) to b.
func (s *Server) appendHandle(b []byte, ino, gen uint64) []byte {
	b = append(b, handleVersion)
	b = binary.BigEndian.AppendUint64(b, s.fsid)
	b = binary.BigEndian.AppendUint64(b, ino)
	return binary.BigEndian.AppendUint64(b, gen)
}

// putHandle writes n's handle as an nfs_fh3.
func (s *Server) putHandle(w *xdrWriter, n *fs.Inode) {
	var buf [handleSize]byte
	w.opaque(s.appendHandle(buf[:0], n.Ino, n.Gen))
}

// parseHandle checks a handle's form and filesystem and returns what it
// names. It does not look the inode up.
func (s *Server) parseHandle(fh []byte) (ino, gen uint64, st Status) {
	if len(fh) != handleSize || fh[0] != handleVersion {
		return 0, 0, StatusBadHandle
	}
	if binary.BigEndian.Uint64(fh[1:]) != s.fsid {
		return 0, 0, StatusBadHandle
	}
	ino = binary.BigEndian.Uint64(fh[9:])
	gen = binary.BigEndian.Uint64(fh[17:])
	if ino == 0 {
		return 0, 0, StatusBadHandle
	}
	return ino, gen, StatusOK
}

// inode resolves a handle to its inode's current attributes: BADHANDLE for
// a handle that is not one of ours, STALE for a file that no longer exists
// (or a lost file whose number was reused, by its generation).
func (s *Server) inode(ctx context.Context, fh []byte) (fs.Inode, Status) {
	ino, gen, st := s.parseHandle(fh)
	if st != StatusOK {
		return fs.Inode{}, st
	}
	n, err := s.fs.GetAttr(ctx, ino)
	if errors.Is(err, fs.ErrNotExist) {
		return fs.Inode{}, StatusStale
	}
	if err != nil {
		return fs.Inode{}, statusOf(err)
	}
	if n.Gen != gen {
		return fs.Inode{}, StatusStale
	}
	return n, StatusOK
}
