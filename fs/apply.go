package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"zerofs/wal"
)

// objInfo is what the metadata knows of one data object, for garbage
// collection: its stored size, the decoded bytes of all its frames, and the
// decoded bytes still referenced by some chunk. Live bytes are maintained by
// apply and nowhere else, so they are a deterministic function of the WAL:
// replay recomputes exactly what the live process had.
type objInfo struct {
	Size int64 // bytes of the object in the store
	Raw  int64 // decoded bytes of all frames in it
	Live int64 // decoded bytes referenced by chunk pieces
}

func (o objInfo) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(o.Size))
	b = binary.AppendUvarint(b, uint64(o.Raw))
	return binary.AppendVarint(b, o.Live)
}

func decodeObjInfo(b []byte) (objInfo, error) {
	d := decoder{b: b}
	o := objInfo{Size: int64(d.uvarint()), Raw: int64(d.uvarint()), Live: d.varint()}
	if d.err != nil || len(d.b) != 0 {
		return o, errors.New("corrupt object record")
	}
	return o, nil
}

const appliedKeyName = "applied"

func encodePosition(p wal.Position) []byte {
	b := binary.LittleEndian.AppendUint64(nil, p.Seq)
	b = binary.LittleEndian.AppendUint64(b, p.Epoch)
	return binary.LittleEndian.AppendUint64(b, p.ID)
}

func decodePosition(b []byte) (wal.Position, error) {
	if len(b) != 24 {
		return wal.Position{}, errors.New("corrupt applied-position record")
	}
	return wal.Position{
		Seq:   binary.LittleEndian.Uint64(b),
		Epoch: binary.LittleEndian.Uint64(b[8:]),
		ID:    binary.LittleEndian.Uint64(b[16:]),
	}, nil
}

// apply writes one durable record's delta into pebble, together with the
// record's position, in one atomic pebble batch. d may be nil (a fence).
// dataOff and recSize locate the record's data area, to resolve the
// "this record" references of its new frames.
func (f *FS) apply(d *delta, pos wal.Position, dataOff, recSize int64) error {
	pb := f.db.NewIndexedBatch()
	defer pb.Close()
	acct := make(map[ObjRef]int64)
	used := make(map[uint64]int64) // per-inode change of used bytes (used.go)
	if d != nil {
		for _, it := range d.kv {
			var err error
			if it.del {
				err = pb.Delete([]byte(it.key), nil)
			} else {
				err = pb.Set([]byte(it.key), it.val, nil)
			}
			if err != nil {
				return fmt.Errorf("apply record %d: %w", pos.Seq, err)
			}
		}
		for _, r := range d.ranges {
			if err := f.applyPunch(pb, r, acct, used); err != nil {
				return fmt.Errorf("apply record %d: %w", pos.Seq, err)
			}
		}
		var selfRaw int64
		seen := make(map[uint64]bool)
		for _, c := range d.chunks {
			key := chunkKey(c.ino, c.idx)
			old, err := f.getPieces(pb, key)
			if err != nil {
				return fmt.Errorf("apply record %d: chunk %d/%d: %w", pos.Seq, c.ino, c.idx, err)
			}
			for _, p := range old {
				acct[p.Frame.Obj] -= int64(p.Len)
			}
			used[c.ino] += piecesLen(c.pieces) - piecesLen(old)
			for i := range c.pieces {
				p := &c.pieces[i]
				if p.Frame.Obj.Kind == objSelf {
					p.Frame.Obj = ObjRef{Kind: ObjWAL, ID: pos.Seq}
					p.Frame.Off += uint64(dataOff)
					if !seen[p.Frame.ID] {
						seen[p.Frame.ID] = true
						selfRaw += int64(p.Frame.Raw)
					}
				}
				acct[p.Frame.Obj] += int64(p.Len)
			}
			if len(c.pieces) == 0 {
				err = pb.Delete(key, nil)
			} else {
				err = pb.Set(key, encodePieces(c.pieces), nil)
			}
			if err != nil {
				return fmt.Errorf("apply record %d: %w", pos.Seq, err)
			}
		}
		if err := f.applyUsed(pb, used, pos.Seq); err != nil {
			return fmt.Errorf("apply record %d: %w", pos.Seq, err)
		}
		if selfRaw > 0 {
			self := ObjRef{Kind: ObjWAL, ID: pos.Seq}
			if err := pb.Set(objectKey(self), objInfo{Size: recSize, Raw: selfRaw}.encode(), nil); err != nil {
				return err
			}
		}
		for obj, n := range acct {
			if n == 0 {
				continue
			}
			key := objectKey(obj)
			v, closer, err := pb.Get(key)
			if errors.Is(err, pebble.ErrNotFound) {
				// Only possible if the metadata was damaged: an object
				// referenced by a piece always has a record.
				f.log.Warn("live-byte accounting for an unknown object", "object", obj.String(), "delta", n, "seq", pos.Seq)
				continue
			}
			if err != nil {
				return err
			}
			info, err := decodeObjInfo(v)
			closer.Close()
			if err != nil {
				return fmt.Errorf("object %s: %w", obj, err)
			}
			info.Live += n
			if info.Live < 0 {
				f.log.Warn("negative live bytes", "object", obj.String(), "live", info.Live, "seq", pos.Seq)
				info.Live = 0
			}
			if err := pb.Set(key, info.encode(), nil); err != nil {
				return err
			}
		}
	}
	if err := pb.Set(metaKey(appliedKeyName), encodePosition(pos), nil); err != nil {
		return err
	}
	// No sync: the WAL in the store is what makes this durable. After a
	// crash pebble recovers a prefix of these batches, and replay redoes the
	// rest from the position recorded with them.
	if err := pb.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("apply record %d to metadata database: %w", pos.Seq, err)
	}
	f.appliedMu.Lock()
	f.applied = pos
	f.appliedMu.Unlock()
	return nil
}

// applyPunch deletes chunk range r, subtracting the pieces it held from their
// objects' live bytes and from the file's used bytes. Its cost grows with the chunks that exist in the
// range, not with the range: punching a 2 TiB device that was never written
// is one range deletion.
func (f *FS) applyPunch(pb *pebble.Batch, r chunkRange, acct map[ObjRef]int64, used map[uint64]int64) error {
	start, end := chunkRangeKeys(r.ino, r.from, r.to)
	it, err := pb.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return err
	}
	var n int
	started := time.Now()
	for ok := it.First(); ok; ok = it.Next() {
		pieces, err := decodePieces(it.Value(), f.chunkSize)
		if err != nil {
			it.Close()
			return fmt.Errorf("chunk key %x: %w", it.Key(), err)
		}
		for _, p := range pieces {
			acct[p.Frame.Obj] -= int64(p.Len)
		}
		used[r.ino] -= piecesLen(pieces)
		if n++; n%(1<<20) == 0 {
			f.log.Info("releasing a large trimmed or removed range", "inode", r.ino, "chunks", n,
				"elapsed", time.Since(started).Round(time.Millisecond))
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	return pb.DeleteRange(start, end, nil)
}

// reader is what pebble.DB and an indexed pebble.Batch have in common.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// getPieces reads a chunk entry from pebble (or an indexed batch over it).
func (f *FS) getPieces(r reader, key []byte) ([]Piece, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return decodePieces(v, f.chunkSize)
}

// appliedPosition is the last record applied to pebble.
func (f *FS) appliedPosition() wal.Position {
	f.appliedMu.Lock()
	defer f.appliedMu.Unlock()
	return f.applied
}
