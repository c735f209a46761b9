package fs

import (
	"encoding/binary"
	"fmt"
)

// A file is a sequence of fixed-size chunks (Options.ChunkSize, 64 KiB by
// default). A chunk that was never written, or was punched, has no entry and
// reads as zeros: sparse files take no space. A written chunk's entry is a
// sorted list of non-overlapping pieces; each piece maps a byte range of the
// chunk onto a range of one data frame. A write covering a whole chunk makes
// one piece; a small write into a chunk adds a piece and trims the ones it
// overlaps, without reading the old data — no object-store round trip on the
// write path. Garbage collection later rewrites fragmented chunks whole.

// ObjKind says where a data object lives.
type ObjKind uint8

const (
	// objSelf appears only inside a WAL record's delta: "the record this
	// delta is in", whose sequence number is not known when it is encoded.
	objSelf ObjKind = 0
	// ObjWAL is a WAL record in the WAL store; ID is its sequence number.
	ObjWAL ObjKind = 1
	// ObjSeg is a segment in the main store; ID is epoch<<40 | counter.
	ObjSeg ObjKind = 2
)

// ObjRef names a data object.
type ObjRef struct {
	Kind ObjKind
	ID   uint64
}

func (o ObjRef) String() string {
	switch o.Kind {
	case ObjWAL:
		return fmt.Sprintf("wal/%016x", o.ID)
	case ObjSeg:
		return segmentKey(o.ID)
	}
	return fmt.Sprintf("object(%d,%d)", o.Kind, o.ID)
}

// FrameRef locates one encoded frame.
type FrameRef struct {
	ID   uint64 // unique frame id, bound into the frame's AEAD associated data
	Obj  ObjRef
	Off  uint64 // byte offset of the frame in the object
	Size uint32 // encoded length
	Raw  uint32 // decoded length
	// Ino is the inode the frame was sealed for when that is not the
	// chunk's own: a clone or a restored file shares its source's frames
	// (clone.go), and a frame's associated data binds the inode it was
	// written to. Zero means the chunk's own inode. The chunk index is
	// always the same: a clone maps each chunk onto the same chunk.
	Ino uint64
}

// sealedIno is the inode frame r was sealed for, read as chunk of inode ino.
func (r FrameRef) sealedIno(ino uint64) uint64 {
	if r.Ino != 0 {
		return r.Ino
	}
	return ino
}

// Piece maps chunk bytes [Off, Off+Len) to frame bytes [Skip, Skip+Len).
type Piece struct {
	Off, Len, Skip uint32
	Frame          FrameRef
}

func (p Piece) end() uint32 { return p.Off + p.Len }

// trimPieces removes [a, b) from pieces, splitting a piece that straddles it.
// It returns a new slice; pieces is not modified.
func trimPieces(pieces []Piece, a, b uint32) []Piece {
	out := make([]Piece, 0, len(pieces)+1)
	for _, p := range pieces {
		if p.end() <= a || p.Off >= b {
			out = append(out, p)
			continue
		}
		if p.Off < a { // left remainder
			l := p
			l.Len = a - p.Off
			out = append(out, l)
		}
		if p.end() > b { // right remainder
			r := p
			r.Skip += b - p.Off
			r.Len = p.end() - b
			r.Off = b
			out = append(out, r)
		}
	}
	return out
}

// insertPiece adds p to pieces (which must not overlap it), keeping order.
func insertPiece(pieces []Piece, p Piece) []Piece {
	i := len(pieces)
	for i > 0 && pieces[i-1].Off > p.Off {
		i--
	}
	pieces = append(pieces, Piece{})
	copy(pieces[i+1:], pieces[i:])
	pieces[i] = p
	return pieces
}

const maxPieces = 1 << 16

// kindHasIno, set in a piece's object-kind byte, says the frame's sealing
// inode (FrameRef.Ino) follows. Pieces written before clones existed never
// set it, so their bytes read the same (fs/testdata holds such entries).
const kindHasIno = 0x80

func encodePieces(pieces []Piece) []byte {
	b := make([]byte, 0, 1+len(pieces)*32)
	b = binary.AppendUvarint(b, uint64(len(pieces)))
	for _, p := range pieces {
		b = appendPiece(b, p)
	}
	return b
}

func appendPiece(b []byte, p Piece) []byte {
	b = binary.AppendUvarint(b, uint64(p.Off))
	b = binary.AppendUvarint(b, uint64(p.Len))
	b = binary.AppendUvarint(b, uint64(p.Skip))
	b = binary.LittleEndian.AppendUint64(b, p.Frame.ID)
	if p.Frame.Ino != 0 {
		b = append(b, byte(p.Frame.Obj.Kind)|kindHasIno)
		b = binary.AppendUvarint(b, p.Frame.Ino)
	} else {
		b = append(b, byte(p.Frame.Obj.Kind))
	}
	b = binary.AppendUvarint(b, p.Frame.Obj.ID)
	b = binary.AppendUvarint(b, p.Frame.Off)
	b = binary.AppendUvarint(b, uint64(p.Frame.Size))
	return binary.AppendUvarint(b, uint64(p.Frame.Raw))
}

func (d *decoder) piece() Piece {
	var p Piece
	p.Off = d.uint32()
	p.Len = d.uint32()
	p.Skip = d.uint32()
	p.Frame.ID = d.fixed64()
	kind := d.byte()
	if kind&kindHasIno != 0 {
		kind &^= kindHasIno
		if p.Frame.Ino = d.uvarint(); p.Frame.Ino == 0 {
			d.fail(fmt.Errorf("piece of frame %016x names inode 0", p.Frame.ID))
		}
	}
	p.Frame.Obj.Kind = ObjKind(kind)
	p.Frame.Obj.ID = d.uvarint()
	p.Frame.Off = d.uvarint()
	p.Frame.Size = d.uint32()
	p.Frame.Raw = d.uint32()
	return p
}

func (d *decoder) pieces(chunkSize uint32) []Piece {
	n := d.uvarintMax(maxPieces)
	if d.err != nil {
		return nil
	}
	out := make([]Piece, 0, min(n, uint64(len(d.b)/12+1)))
	var prevEnd uint32
	for i := uint64(0); i < n && d.err == nil; i++ {
		p := d.piece()
		if d.err != nil {
			break
		}
		if p.Len == 0 || p.Off < prevEnd || uint64(p.Off)+uint64(p.Len) > uint64(chunkSize) ||
			uint64(p.Skip)+uint64(p.Len) > uint64(p.Frame.Raw) {
			d.fail(fmt.Errorf("piece %d [%d,+%d) skip %d of frame %d bytes: out of order or out of bounds", i, p.Off, p.Len, p.Skip, p.Frame.Raw))
			break
		}
		prevEnd = p.end()
		out = append(out, p)
	}
	return out
}

func decodePieces(b []byte, chunkSize uint32) ([]Piece, error) {
	d := decoder{b: b}
	p := d.pieces(chunkSize)
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, fmt.Errorf("chunk entry: %w", d.err)
	}
	return p, nil
}

// span is a byte range [a, b) of a chunk.
type span struct{ a, b uint32 }

// spans is a sorted set of disjoint, non-adjacent spans.
type spans []span

// add returns s with [a, b) added, merging overlapping and adjacent spans.
func (s spans) add(a, b uint32) spans {
	out := make(spans, 0, len(s)+1)
	i := 0
	for ; i < len(s) && s[i].b < a; i++ {
		out = append(out, s[i])
	}
	for ; i < len(s) && s[i].a <= b; i++ {
		a, b = min(a, s[i].a), max(b, s[i].b)
	}
	out = append(out, span{a, b})
	return append(out, s[i:]...)
}

// remove returns s without [a, b).
func (s spans) remove(a, b uint32) spans {
	out := make(spans, 0, len(s)+1)
	for _, x := range s {
		if x.b <= a || x.a >= b {
			out = append(out, x)
			continue
		}
		if x.a < a {
			out = append(out, span{x.a, a})
		}
		if x.b > b {
			out = append(out, span{b, x.b})
		}
	}
	return out
}
