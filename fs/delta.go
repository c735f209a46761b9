package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"zerofs/crypt"
)

// A delta is what one sealed batch changes in the metadata: the new values of
// every key it touched (not the operations that led there, so a key written a
// thousand times in one batch costs one entry), the chunk ranges it punched,
// and the new pieces of every chunk it wrote. It is the metadata part of a WAL
// record, and applying it is deterministic, so replay after a crash rebuilds
// exactly the state the live process had after the same records.
//
// Apply order within a delta: key-value items, then chunk range deletions,
// then chunk entries. A batch keeps its dirty chunks newer than its punches
// (punching drops the batch's own dirty chunks in the range), so applying the
// punches first is right.
type delta struct {
	kv     []kvItem     // sorted by key
	ranges []chunkRange // punched chunk ranges
	chunks []chunkSet
}

type kvItem struct {
	key string
	val []byte
	del bool
}

// chunkRange is chunks [from, to) of ino; to == math.MaxUint64: to the end.
type chunkRange struct{ ino, from, to uint64 }

// chunkSet is a chunk's new entry; no pieces means the chunk is now a hole.
type chunkSet struct {
	ino, idx uint64
	pieces   []Piece
}

func (d *delta) empty() bool { return len(d.kv) == 0 && len(d.ranges) == 0 && len(d.chunks) == 0 }

const (
	deltaVersion = 1

	opSet        byte = 1
	opDelete     byte = 2
	opChunkRange byte = 3
	opChunk      byte = 4
)

func (d *delta) encode() []byte {
	n := 16
	for _, it := range d.kv {
		n += 12 + len(it.key) + len(it.val)
	}
	n += len(d.ranges)*24 + len(d.chunks)*48
	b := make([]byte, 0, n)
	b = append(b, deltaVersion)
	for _, it := range d.kv {
		if it.del {
			b = append(b, opDelete)
		} else {
			b = append(b, opSet)
		}
		b = binary.AppendUvarint(b, uint64(len(it.key)))
		b = append(b, it.key...)
		if !it.del {
			b = binary.AppendUvarint(b, uint64(len(it.val)))
			b = append(b, it.val...)
		}
	}
	for _, r := range d.ranges {
		b = append(b, opChunkRange)
		b = binary.AppendUvarint(b, r.ino)
		b = binary.AppendUvarint(b, r.from)
		b = binary.AppendUvarint(b, r.to)
	}
	for _, c := range d.chunks {
		b = append(b, opChunk)
		b = binary.AppendUvarint(b, c.ino)
		b = binary.AppendUvarint(b, c.idx)
		b = binary.AppendUvarint(b, uint64(len(c.pieces)))
		for _, p := range c.pieces {
			b = appendPiece(b, p)
		}
	}
	return b
}

var errBadDelta = errors.New("corrupt WAL delta")

// maxKV bounds keys and values in a delta; larger lengths are corruption.
const maxKV = 1 << 20

func decodeDelta(b []byte, chunkSize uint32) (*delta, error) {
	d := decoder{b: b}
	if v := d.byte(); v != deltaVersion {
		return nil, fmt.Errorf("delta version %d: %w", v, errBadDelta)
	}
	out := &delta{}
	for d.err == nil && len(d.b) > 0 {
		switch op := d.byte(); op {
		case opSet, opDelete:
			it := kvItem{key: string(d.bytes(int(d.uvarintMax(maxKV)))), del: op == opDelete}
			if !it.del {
				it.val = d.bytes(int(d.uvarintMax(maxKV)))
			}
			if n := len(out.kv); n > 0 && out.kv[n-1].key >= it.key {
				d.fail(errors.New("keys out of order"))
			}
			out.kv = append(out.kv, it)
		case opChunkRange:
			r := chunkRange{ino: d.uvarint(), from: d.uvarint(), to: d.uvarint()}
			if r.from > r.to {
				d.fail(fmt.Errorf("chunk range [%d, %d)", r.from, r.to))
			}
			out.ranges = append(out.ranges, r)
		case opChunk:
			c := chunkSet{ino: d.uvarint(), idx: d.uvarint()}
			c.pieces = d.pieces(chunkSize)
			out.chunks = append(out.chunks, c)
		default:
			d.fail(fmt.Errorf("unknown op %d", op))
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %w", errBadDelta, d.err)
	}
	return out, nil
}

// sortKV sorts items by key, for a delta built from a map.
func sortKV(items []kvItem) {
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
}

// deltaAAD binds a sealed delta to its filesystem, record and writer, so a
// delta cannot be replayed at another position or in another filesystem.
func deltaAAD(fsid [16]byte, seq, epoch uint64) []byte {
	b := make([]byte, 0, 8+16+16)
	b = append(b, "zfsdelta"...)
	b = append(b, fsid[:]...)
	b = binary.LittleEndian.AppendUint64(b, seq)
	return binary.LittleEndian.AppendUint64(b, epoch)
}

func openDelta(k *crypt.Key, meta []byte, fsid [16]byte, seq, epoch uint64, chunkSize uint32) (*delta, error) {
	plain, err := k.Open(nil, meta, deltaAAD(fsid, seq, epoch))
	if err != nil {
		return nil, fmt.Errorf("WAL record %d: %w: %w", seq, errBadDelta, err)
	}
	d, err := decodeDelta(plain, chunkSize)
	if err != nil {
		return nil, fmt.Errorf("WAL record %d: %w", seq, err)
	}
	return d, nil
}
