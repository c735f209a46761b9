package fs

import (
	"context"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Extent is a range of a file that is either data or a hole (reads as zeros
// and takes no space).
type Extent struct {
	Off, Len uint64
	Hole     bool
}

// maxExtentChunks bounds the chunks one Extents call examines, so that a
// status query over a huge, densely written file answers in bounded time
// with a prefix of the range (NBD BLOCK_STATUS allows that).
const maxExtentChunks = 1 << 16

// Extents describes [off, off+length) of regular file ino (clamped to its
// size) as alternating data and hole extents. It may describe only a prefix
// of the range; it always describes at least one byte of a non-empty range.
// Its cost grows with the chunks that hold data, not with the range: holes
// are skipped with one seek.
func (f *FS) Extents(ctx context.Context, ino, off, length uint64) ([]Extent, error) {
	if IsSnapshotIno(ino) {
		var ext []Extent
		err := f.withView(ctx, ino, func(v *view, real uint64) (err error) {
			ext, err = v.fs.Extents(ctx, real, off, length)
			return err
		})
		return ext, err
	}
	chain := f.chain()
	n, err := f.getInode(chain, ino)
	if err != nil {
		return nil, err
	}
	if err := writable(&n); err != nil {
		return nil, err
	}
	end := min(n.Size, off+min(length, MaxFileSize))
	if off >= end {
		return nil, nil
	}
	cs := uint64(f.chunkSize)
	from, to := off/cs, (end+cs-1)/cs

	// Candidate chunks: those with an entry in pebble or a change in a batch.
	cands := map[uint64]bool{}
	for _, b := range chain {
		for i := range b.shards {
			s := &b.shards[i]
			s.mu.Lock()
			for id := range s.m {
				if id.ino == ino && id.idx >= from && id.idx < to {
					cands[id.idx] = true
				}
			}
			s.mu.Unlock()
		}
	}
	start, stop := chunkRangeKeys(ino, from, to)
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: stop})
	if err != nil {
		return nil, fmt.Errorf("extents: %w: %w", ErrIO, err)
	}
	limit := to // chunks at and after limit are not described
	for ok := it.First(); ok; ok = it.Next() {
		_, idx, _ := parseChunkKey(it.Key())
		if len(cands) >= maxExtentChunks {
			limit = idx
			break
		}
		cands[idx] = true
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("extents: %w: %w", ErrIO, err)
	}
	idxs := make([]uint64, 0, len(cands))
	for idx := range cands {
		if idx < limit {
			idxs = append(idxs, idx)
		}
	}
	slices.Sort(idxs)

	var out []Extent
	add := func(a, b uint64, hole bool) {
		a, b = max(a, off), min(b, end, limit*cs)
		if a >= b {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].Hole == hole && out[k].Off+out[k].Len == a {
			out[k].Len += b - a
			return
		}
		out = append(out, Extent{Off: a, Len: b - a, Hole: hole})
	}
	pos := from * cs
	for _, idx := range idxs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		base := idx * cs
		add(pos, base, true)
		id := chunkID{ino, idx}
		mu := f.chunkLock(id)
		mu.Lock()
		dc, pieces, err := f.lookupChunk(chain, id)
		var data spans
		if dc != nil {
			data = slices.Clone(dc.cover)
			pieces = dc.base
		}
		mu.Unlock()
		if err != nil {
			return nil, err
		}
		for _, p := range pieces {
			data = data.add(p.Off, p.end())
		}
		at := base
		for _, s := range data {
			add(at, base+uint64(s.a), true)
			add(base+uint64(s.a), base+uint64(s.b), false)
			at = base + uint64(s.b)
		}
		add(at, base+cs, true)
		pos = base + cs
	}
	add(pos, limit*cs, true)
	if len(out) == 0 {
		// The candidate limit cut before the first byte: describe one chunk
		// the slow way so the caller always makes progress.
		return []Extent{{Off: off, Len: min(end-off, cs-off%cs), Hole: false}}, nil
	}
	return out, nil
}

// Prefetch reads [off, off+length) of ino into the cache (NBD CACHE).
func (f *FS) Prefetch(ctx context.Context, ino, off, length uint64) error {
	buf := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, uint64(len(buf)))
		got, eof, err := f.Read(ctx, Root, ino, off, buf[:n])
		if err != nil {
			return err
		}
		if eof || got == 0 {
			return nil
		}
		off += uint64(got)
		length -= uint64(got)
	}
	return nil
}
