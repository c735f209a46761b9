package fs

import (
	"encoding/binary"
	"math"
)

// Metadata key layout. Every key starts with one kind byte; ids follow in big
// endian so that keys of one inode or one directory sort together and range
// scans (a directory listing, a file's chunks) are single pebble iterations.
//
//	kindMeta   name                  singletons: applied WAL position, counters
//	kindInode  ino                   inode attributes
//	kindDirent dir name              directory entry by name (LOOKUP)
//	kindCookie dir cookie            directory entry by cookie (READDIR: stable
//	                                 resumable order, unaffected by other entries)
//	kindChunk  ino index             a file chunk's pieces
//	kindObject object kind, id       a data object's size and live bytes (GC)
//	kindUsed   ino                   bytes a file's chunk pieces map (NFS "used"),
//	                                 absent when zero; see used.go
//	kindSnap   name                  a snapshot's record (snapshot.go)
//	kindSnapObjs id                  the data objects a snapshot references
//	kindCloneLink origin clone       a file whose chunks share frames sealed for
//	                                 inode origin (clone.go): GC repoints both
const (
	kindMeta      byte = 0x01
	kindInode     byte = 0x02
	kindDirent    byte = 0x03
	kindCookie    byte = 0x04
	kindChunk     byte = 0x05
	kindObject    byte = 0x06
	kindUsed      byte = 0x07
	kindSnap      byte = 0x08
	kindSnapObjs  byte = 0x09
	kindCloneLink byte = 0x0a
)

func metaKey(name string) []byte { return append([]byte{kindMeta}, name...) }

func inodeKey(ino uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindInode
	binary.BigEndian.PutUint64(k[1:], ino)
	return k
}

func direntKey(dir uint64, name string) []byte {
	k := make([]byte, 9, 9+len(name))
	k[0] = kindDirent
	binary.BigEndian.PutUint64(k[1:], dir)
	return append(k, name...)
}

func cookieKey(dir, cookie uint64) []byte {
	k := make([]byte, 17)
	k[0] = kindCookie
	binary.BigEndian.PutUint64(k[1:], dir)
	binary.BigEndian.PutUint64(k[9:], cookie)
	return k
}

// cookiePrefix is the prefix of every cookie key of dir.
func cookiePrefix(dir uint64) []byte { return cookieKey(dir, 0)[:9] }

func chunkKey(ino, idx uint64) []byte {
	k := make([]byte, 17)
	k[0] = kindChunk
	binary.BigEndian.PutUint64(k[1:], ino)
	binary.BigEndian.PutUint64(k[9:], idx)
	return k
}

func parseChunkKey(k []byte) (ino, idx uint64, ok bool) {
	if len(k) != 17 || k[0] != kindChunk {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:]), true
}

// chunkRangeKeys returns [start, end) covering chunks from..to-1 of ino.
// to == math.MaxUint64 means "to the end of the file".
func chunkRangeKeys(ino, from, to uint64) (start, end []byte) {
	start = chunkKey(ino, from)
	if to == math.MaxUint64 {
		// One byte longer than, and so sorting after, every chunk key of ino.
		return start, append(chunkKey(ino, math.MaxUint64), 0)
	}
	return start, chunkKey(ino, to)
}

func usedKey(ino uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindUsed
	binary.BigEndian.PutUint64(k[1:], ino)
	return k
}

func objectKey(o ObjRef) []byte {
	k := make([]byte, 10)
	k[0] = kindObject
	k[1] = byte(o.Kind)
	binary.BigEndian.PutUint64(k[2:], o.ID)
	return k
}

func parseObjectKey(k []byte) (ObjRef, bool) {
	if len(k) != 10 || k[0] != kindObject {
		return ObjRef{}, false
	}
	return ObjRef{Kind: ObjKind(k[1]), ID: binary.BigEndian.Uint64(k[2:])}, true
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func cloneLinkKey(origin, clone uint64) []byte {
	k := make([]byte, 17)
	k[0] = kindCloneLink
	binary.BigEndian.PutUint64(k[1:], origin)
	binary.BigEndian.PutUint64(k[9:], clone)
	return k
}
