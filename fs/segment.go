package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A segment is a large immutable object in the main store holding data frames
// moved out of WAL records (packing) or out of mostly-dead objects (repacking).
// Frames are copied verbatim: their encryption binds their identity, not
// their location. Layout:
//
//	header    32 bytes: "ZFSSEG" | version (uint16) | fsid (16) | segment id (uint64)
//	frames    concatenated
//	directory sealed with the data key: for each frame its id, inode, chunk
//	          index, offset, size and decoded size, so GC can tell which
//	          frames are still live without any other index
//	footer    32 bytes: directory offset (uint64) | directory length (uint64) |
//	          frame count (uint32) | CRC32C of header and footer[:20] (uint32) |
//	          "ZFSSEGF\x00"
//
// A torn, truncated or foreign segment fails the footer checks; a damaged
// frame fails its own authentication.

const (
	segHeaderSize = 32
	segFooterSize = 32
	segMagic      = "ZFSSEG"
	segFootMagic  = "ZFSSEGF\x00"
	segVersion    = 1
)

var errBadSegment = errors.New("corrupt segment")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func segmentKey(id uint64) string { return fmt.Sprintf("seg/%016x", id) }

func parseSegmentKey(key string) (uint64, bool) {
	var id uint64
	if len(key) != 4+16 || key[:4] != "seg/" {
		return 0, false
	}
	if _, err := fmt.Sscanf(key[4:], "%016x", &id); err != nil {
		return 0, false
	}
	return id, true
}

// segFrame is one frame as a segment directory lists it.
type segFrame struct {
	ref      FrameRef
	ino, idx uint64
}

type segmentBuilder struct {
	id     uint64
	buf    []byte
	frames []segFrame
	raw    int64
}

func newSegmentBuilder(fsid [16]byte, id uint64) *segmentBuilder {
	s := &segmentBuilder{id: id, buf: make([]byte, segHeaderSize, 1<<20)}
	copy(s.buf, segMagic)
	binary.LittleEndian.PutUint16(s.buf[6:], segVersion)
	copy(s.buf[8:24], fsid[:])
	binary.LittleEndian.PutUint64(s.buf[24:], id)
	return s
}

// add appends an encoded frame and returns its new location.
func (s *segmentBuilder) add(old segFrame, enc []byte) FrameRef {
	ref := old.ref
	ref.Obj = ObjRef{Kind: ObjSeg, ID: s.id}
	ref.Off = uint64(len(s.buf))
	s.buf = append(s.buf, enc...)
	s.frames = append(s.frames, segFrame{ref: ref, ino: old.ino, idx: old.idx})
	s.raw += int64(ref.Raw)
	return ref
}

func (s *segmentBuilder) size() int { return len(s.buf) }

func segDirAAD(fsid [16]byte, id uint64) []byte {
	b := append([]byte("zfssegdir"), fsid[:]...)
	return binary.LittleEndian.AppendUint64(b, id)
}

// finish appends the directory and footer and returns the object's bytes.
func (s *segmentBuilder) finish(f *FS) []byte {
	var dir []byte
	for _, fr := range s.frames {
		dir = binary.LittleEndian.AppendUint64(dir, fr.ref.ID)
		dir = binary.AppendUvarint(dir, fr.ino)
		dir = binary.AppendUvarint(dir, fr.idx)
		dir = binary.AppendUvarint(dir, fr.ref.Off)
		dir = binary.AppendUvarint(dir, uint64(fr.ref.Size))
		dir = binary.AppendUvarint(dir, uint64(fr.ref.Raw))
	}
	sealed := f.key.Seal(nil, dir, segDirAAD(f.fsid, s.id))
	dirOff := uint64(len(s.buf))
	s.buf = append(s.buf, sealed...)
	foot := make([]byte, segFooterSize)
	binary.LittleEndian.PutUint64(foot, dirOff)
	binary.LittleEndian.PutUint64(foot[8:], uint64(len(sealed)))
	binary.LittleEndian.PutUint32(foot[16:], uint32(len(s.frames)))
	crc := crc32.Update(crc32.Checksum(s.buf[:segHeaderSize], castagnoli), castagnoli, foot[:20])
	binary.LittleEndian.PutUint32(foot[20:], crc)
	copy(foot[24:], segFootMagic)
	return append(s.buf, foot...)
}

// parseSegment checks a whole segment object and returns its frames.
func (f *FS) parseSegment(id uint64, obj []byte) ([]segFrame, error) {
	fail := func(why string) ([]segFrame, error) {
		return nil, fmt.Errorf("segment %s: %s: %w", segmentKey(id), why, errBadSegment)
	}
	if len(obj) < segHeaderSize+segFooterSize {
		return fail(fmt.Sprintf("%d bytes is too short", len(obj)))
	}
	foot := obj[len(obj)-segFooterSize:]
	if string(obj[:6]) != segMagic || string(foot[24:]) != segFootMagic {
		return fail("bad magic")
	}
	crc := crc32.Update(crc32.Checksum(obj[:segHeaderSize], castagnoli), castagnoli, foot[:20])
	if crc != binary.LittleEndian.Uint32(foot[20:]) {
		return fail("footer checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(obj[6:]); v != segVersion {
		return fail(fmt.Sprintf("format version %d", v))
	}
	if [16]byte(obj[8:24]) != f.fsid || binary.LittleEndian.Uint64(obj[24:]) != id {
		return fail("belongs to another filesystem or id")
	}
	dirOff := binary.LittleEndian.Uint64(foot)
	dirLen := binary.LittleEndian.Uint64(foot[8:])
	count := binary.LittleEndian.Uint32(foot[16:])
	end := uint64(len(obj) - segFooterSize)
	if dirOff < segHeaderSize || dirOff > end || dirLen != end-dirOff {
		return fail("directory out of bounds")
	}
	dir, err := f.key.Open(nil, obj[dirOff:end], segDirAAD(f.fsid, id))
	if err != nil {
		return fail("directory authentication failed")
	}
	d := decoder{b: dir}
	frames := make([]segFrame, 0, min(uint64(count), uint64(len(dir)/13+1)))
	for i := uint32(0); i < count && d.err == nil; i++ {
		var fr segFrame
		fr.ref.ID = d.fixed64()
		fr.ino = d.uvarint()
		fr.idx = d.uvarint()
		fr.ref.Off = d.uvarint()
		fr.ref.Size = d.uint32()
		fr.ref.Raw = d.uint32()
		fr.ref.Obj = ObjRef{Kind: ObjSeg, ID: id}
		if fr.ref.Off < segHeaderSize || fr.ref.Off+uint64(fr.ref.Size) > dirOff {
			return fail(fmt.Sprintf("frame %d out of bounds", i))
		}
		frames = append(frames, fr)
	}
	if d.err != nil || len(d.b) != 0 {
		return fail("directory does not decode")
	}
	return frames, nil
}
