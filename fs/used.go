package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Used bytes: how much of a file holds data, for NFS fattr3 "used" (du,
// st_blocks). It is the sum of the lengths of the file's chunk pieces —
// the bytes written and not punched — not its size: a 2 TiB device never
// written uses nothing. Spans written as zeros are stored as holes
// (prepareChunk) and count nothing either. The count is of logical bytes
// (before compression and encryption, without frame overhead), exact at
// byte granularity.
//
// One counter per file (key kindUsed ino) is kept by apply, from the old and
// new pieces it already reads for every chunk it changes, and from the
// chunks it deletes for a punch: no extra reads, and a deterministic
// function of the WAL like the objects' live bytes, so replay rebuilds it.
// A GETATTR reads it with one point lookup. Being applied state, it lags
// the newest writes by the time their batch takes to become durable and
// applied (BatchAge, or an NFS COMMIT, plus the WAL append).
//
// Metadata written before the counters existed has none: the first open by
// this version counts every chunk entry once (cost: one scan of the chunk
// entries, which grows with the data written, never with file sizes) and
// records usedMarker, in one pebble batch before anything is applied.

// usedMarker, present in the metadata, says the counters are maintained.
const usedMarker = "used-v1"

// UsedBytes is what n takes in the filesystem, for du: for a regular file
// its data bytes (see above) rounded up to 4 KiB, and never more than its
// size so rounded (the counter may lag a truncation); for other types the
// size rounded up to 4 KiB.
func (f *FS) UsedBytes(n *Inode) uint64 {
	if IsSnapshotIno(n.Ino) {
		if n.Ino == snapDirIno {
			return 0
		}
		var used uint64
		f.withView(context.Background(), n.Ino, func(v *view, real uint64) error {
			m := *n
			m.Ino = real
			used = v.fs.UsedBytes(&m)
			return nil
		})
		return used
	}
	const unit = 4096
	round := func(v uint64) uint64 {
		if v > MaxFileSize {
			return v
		}
		return (v + unit - 1) &^ (unit - 1)
	}
	size := round(n.Size)
	if !n.IsReg() {
		return size
	}
	used, err := f.usedOf(n.Ino)
	if err != nil {
		f.log.Warn("reading a file's used bytes", "inode", n.Ino, "err", err)
		return size
	}
	return min(round(used), size)
}

// usedOf reads ino's counter from the applied metadata.
func (f *FS) usedOf(ino uint64) (uint64, error) {
	return getUsed(f.db, usedKey(ino))
}

func getUsed(r reader, key []byte) (uint64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	u, n := binary.Uvarint(v)
	if n <= 0 || n != len(v) {
		return 0, fmt.Errorf("used-bytes record %x: %w", v, errBadInode)
	}
	return u, nil
}

// applyUsed adds the per-inode changes in delta to the counters, in pb.
func (f *FS) applyUsed(pb *pebble.Batch, delta map[uint64]int64, seq uint64) error {
	for ino, d := range delta {
		if d == 0 {
			continue
		}
		key := usedKey(ino)
		cur, err := getUsed(pb, key)
		if err != nil {
			return err
		}
		v := int64(cur) + d
		if v < 0 {
			// Only possible if the metadata was damaged.
			f.log.Warn("negative used bytes", "inode", ino, "used", v, "seq", seq)
			v = 0
		}
		if v == 0 {
			err = pb.Delete(key, nil)
		} else {
			err = pb.Set(key, binary.AppendUvarint(nil, uint64(v)), nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func piecesLen(pieces []Piece) int64 {
	var n int64
	for _, p := range pieces {
		n += int64(p.Len)
	}
	return n
}

// ensureUsed counts every file's used bytes once, in metadata that predates
// the counters (see above). It runs before any record is applied.
func (f *FS) ensureUsed() error {
	if _, closer, err := f.db.Get(metaKey(usedMarker)); err == nil {
		closer.Close()
		return nil
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	started := time.Now()
	pb := f.db.NewBatch()
	defer pb.Close()
	// Stale counters cannot exist without the marker, but start clean.
	if err := pb.DeleteRange([]byte{kindUsed}, []byte{kindUsed + 1}, nil); err != nil {
		return err
	}
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindChunk}, UpperBound: []byte{kindChunk + 1}})
	if err != nil {
		return err
	}
	var (
		cur, sum    uint64
		files, ents int
	)
	put := func() error {
		if sum == 0 {
			return nil
		}
		files++
		return pb.Set(usedKey(cur), binary.AppendUvarint(nil, sum), nil)
	}
	for ok := it.First(); ok; ok = it.Next() {
		ino, _, okKey := parseChunkKey(it.Key())
		if !okKey {
			continue
		}
		pieces, err := decodePieces(it.Value(), f.chunkSize)
		if err != nil {
			it.Close()
			return fmt.Errorf("counting used bytes: chunk key %x: %w", it.Key(), err)
		}
		if ino != cur {
			if err := put(); err != nil {
				it.Close()
				return err
			}
			cur, sum = ino, 0
		}
		sum += uint64(piecesLen(pieces))
		ents++
	}
	if err := put(); err != nil {
		it.Close()
		return err
	}
	if err := it.Close(); err != nil {
		return err
	}
	if err := pb.Set(metaKey(usedMarker), nil, nil); err != nil {
		return err
	}
	// No sync, as apply: pebble keeps batches in order, so no later apply
	// survives a crash without this one; if it is lost, it runs again.
	if err := pb.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("counting used bytes: %w", err)
	}
	if ents > 0 {
		f.log.Info("counted the used bytes of files written before this version", "files", files,
			"chunks", ents, "elapsed", time.Since(started).Round(time.Millisecond))
	}
	return nil
}
