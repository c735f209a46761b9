package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"zerofs/frame"
	"zerofs/store"
	"zerofs/wal"
)

// Read reads up to len(p) bytes at off of regular file ino. It returns the
// bytes read and whether the read reached the end of the file. Unwritten and
// punched ranges read as zeros. Corrupt or missing data is an EIO error for
// the read, never wrong bytes.
//
// Read order: the batch chain (newest first), then the chunk's pieces from
// pebble, whose frames come from the memory cache or one ranged GET each;
// concurrent misses on one frame share the GET.
func (f *FS) Read(ctx context.Context, c *Cred, ino uint64, off uint64, p []byte) (int, bool, error) {
	n, eof, err := f.read(ctx, c, ino, off, p, nil)
	return n, eof, err
}

// ReadShared is Read without copying what is already in memory, which also
// reports where the holes are.
//
// The bytes read are the concatenation of parts, where a part is either a
// piece of p or, for ranges served by a data frame in memory (the memory
// cache, or a batch on its way to it), a slice of that frame itself. Why: a
// cached read otherwise copies every byte once from the cache into p only
// for the protocol to copy it again into the socket; for large reads that
// copy is a quarter of the server's CPU. Decoded frames are never modified
// once they exist (a write makes a new frame; the cache stores and evicts by
// reference, never recycling a buffer), so handing them out is safe for as
// long as the caller keeps them. The caller must not modify any part. Dirty
// chunk data (batches not yet encoded, which writes may still change) is
// always copied into p.
//
// holes are the ranges of the bytes read (absolute offsets, in order) that
// read as zeros because nothing was written there or they were punched.
// Finding them costs nothing extra: holes are exactly what the read did not
// have to fetch. (Zeros written as data are data until their batch is
// sealed, which turns them into holes.)
func (f *FS) ReadShared(ctx context.Context, c *Cred, ino uint64, off uint64, p []byte) (parts [][]byte, n int, eof bool, holes []Extent, err error) {
	var out readOut
	n, eof, err = f.read(ctx, c, ino, off, p, &out)
	if err != nil {
		return nil, 0, false, nil, err
	}
	at := 0
	for _, sp := range out.shared {
		if sp.at > at {
			parts = append(parts, p[at:sp.at])
		}
		parts = append(parts, sp.b)
		at = sp.at + len(sp.b)
	}
	if at < n {
		parts = append(parts, p[at:n])
	}
	return parts, n, eof, out.holes, nil
}

// readOut collects what ReadShared reports besides the bytes it copies: the
// holes it found, and the ranges it did not copy because they can be sent
// from frame memory. Read passes none and copies everything.
type readOut struct {
	holes  []Extent
	shared []sharedPart
	at     int // offset in the read's buffer of the chunk being read
}

// sharedPart is a range of a read, at offset at of its buffer, served by b,
// a slice of an immutable frame.
type sharedPart struct {
	at int
	b  []byte
}

func (f *FS) read(ctx context.Context, c *Cred, ino uint64, off uint64, p []byte, out *readOut) (int, bool, error) {
	chain := f.chain()
	n, err := f.getInode(chain, ino)
	if err != nil {
		return 0, false, err
	}
	if err := writable(&n); err != nil {
		return 0, false, err
	}
	if err := c.access(&n, accessRead); err != nil {
		return 0, false, err
	}
	if off >= n.Size {
		return 0, true, nil
	}
	total := int(min(uint64(len(p)), n.Size-off))
	if err := f.readRange(ctx, chain, ino, off, p[:total], out); err != nil {
		return 0, false, err
	}
	return total, off+uint64(total) >= n.Size, nil
}

// readRange fills p with the file's bytes at off, ignoring the file size,
// reporting to out (which may be nil) what it found.
func (f *FS) readRange(ctx context.Context, chain []*batch, ino, off uint64, p []byte, out *readOut) error {
	cs := uint64(f.chunkSize)
	for done := 0; done < len(p); {
		pos := off + uint64(done)
		id := chunkID{ino, pos / cs}
		a := uint32(pos % cs)
		e := uint32(min(cs, uint64(a)+uint64(len(p)-done)))
		if out != nil {
			out.at = done
		}
		if err := f.readChunk(ctx, chain, id, a, e, p[done:done+int(e-a)], out); err != nil {
			return err
		}
		done += int(e - a)
	}
	return nil
}

// readChunk fills dst with bytes [a, e) of chunk id, reporting to out (which
// may be nil) what it found.
func (f *FS) readChunk(ctx context.Context, chain []*batch, id chunkID, a, e uint32, dst []byte, out *readOut) error {
	sharedBefore := 0
	if out != nil {
		sharedBefore = len(out.shared)
	}
	for attempt := 0; ; attempt++ {
		if out != nil {
			out.shared = out.shared[:sharedBefore] // a retry starts over
		}
		var filled [16]span // what was copied, to zero only the holes
		got := filled[:0]
		mu := f.chunkLock(id)
		mu.Lock()
		dc, pieces, err := f.lookupChunk(chain, id)
		if err == nil && dc != nil {
			for _, s := range dc.cover {
				lo, hi := max(s.a, a), min(s.b, e)
				if lo < hi {
					copy(dst[lo-a:hi-a], dc.bytes(lo, hi))
					got = append(got, span{lo, hi})
				}
			}
			pieces = dc.base
		}
		mu.Unlock()
		if err != nil {
			return err
		}
		got, err = f.fillPieces(ctx, id, pieces, a, e, dst, got, out)
		if errors.Is(err, errObjectGone) && attempt < 3 {
			// Garbage collection moved the frame and deleted its old
			// object between our lookup and the GET: look again.
			chain = f.chain()
			continue
		}
		if err != nil {
			return err
		}
		base := id.idx * uint64(f.chunkSize)
		zeroGaps(dst, a, e, got, func(lo, hi uint32) {
			if out == nil {
				return
			}
			if k := len(out.holes) - 1; k >= 0 && out.holes[k].Off+out.holes[k].Len == base+uint64(lo) {
				out.holes[k].Len += uint64(hi - lo)
				return
			}
			out.holes = append(out.holes, Extent{Off: base + uint64(lo), Len: uint64(hi - lo), Hole: true})
		})
		return nil
	}
}

// zeroGaps clears the bytes of dst (chunk bytes [a, e)) outside the spans in
// got, which are disjoint but not sorted, and calls hole for each gap.
func zeroGaps(dst []byte, a, e uint32, got []span, hole func(lo, hi uint32)) {
	slices.SortFunc(got, func(x, y span) int { return int(x.a) - int(y.a) })
	at := a
	for _, s := range got {
		if s.a > at {
			clear(dst[at-a : s.a-a])
			hole(at, s.a)
		}
		at = max(at, s.b)
	}
	if at < e {
		clear(dst[at-a : e-a])
		hole(at, e)
	}
}

// fillPieces copies the parts of pieces that overlap [a, e) into dst and
// appends the spans it filled to got. With out.shared wanted, it records
// slices of the frames instead of copying them (see ReadShared), in offset
// order: pieces are sorted and disjoint (decodePieces checks it).
func (f *FS) fillPieces(ctx context.Context, id chunkID, pieces []Piece, a, e uint32, dst []byte, got []span, out *readOut) ([]span, error) {
	for _, p := range pieces {
		lo, hi := max(p.Off, a), min(p.end(), e)
		if lo >= hi {
			continue
		}
		raw, err := f.frameData(ctx, p.Frame, id)
		if err != nil {
			return got, err
		}
		src := p.Skip + (lo - p.Off)
		if out != nil {
			out.shared = append(out.shared, sharedPart{at: out.at + int(lo-a), b: raw[src : src+(hi-lo) : src+(hi-lo)]})
		} else {
			copy(dst[lo-a:hi-a], raw[src:src+(hi-lo)])
		}
		got = append(got, span{lo, hi})
	}
	return got, nil
}

var errObjectGone = errors.New("data object not found")

// frameData returns the decoded bytes of frame ref of chunk id.
func (f *FS) frameData(ctx context.Context, ref FrameRef, id chunkID) ([]byte, error) {
	if raw, ok := f.cache.Get(ref.ID); ok {
		return raw, nil
	}
	if raw, ok := f.pending.Load(ref.ID); ok {
		return raw.([]byte), nil // a batch's frame, its record not yet applied
	}
	fid := frame.ID{Frame: ref.ID, Ino: id.ino, Chunk: id.idx}
	return f.flights.do(ctx, ref.ID, func() ([]byte, error) {
		if f.disk != nil {
			if enc, ok := f.disk.Get(ref.ID); ok {
				raw, err := f.coder.Decode(nil, enc, fid)
				if err == nil && len(raw) == int(ref.Raw) {
					f.cache.Put(ref.ID, raw)
					return raw, nil
				}
				// A damaged cache file: drop the entry, read the store.
				f.disk.Delete(ref.ID)
				f.log.Warn("disk cache entry failed authentication; reading the store", "frame", ref.ID, "err", err)
			}
		}
		// Not the caller's context: the GET is shared, and one caller
		// giving up (its connection died) must not fail the others.
		enc, err := f.readObject(f.bgCtx, ref.Obj, int64(ref.Off), int64(ref.Size))
		if err != nil {
			return nil, err
		}
		raw, err := f.coder.Decode(nil, enc, fid)
		if err == nil && len(raw) != int(ref.Raw) {
			err = fmt.Errorf("frame %016x decoded to %d bytes, metadata says %d: %w", ref.ID, len(raw), ref.Raw, frame.ErrCorrupt)
		}
		if err != nil {
			f.stats.CorruptFrames.Add(1)
			f.log.Error("corrupt data frame: reads of this range fail with EIO", "inode", id.ino, "chunk", id.idx,
				"object", ref.Obj.String(), "offset", ref.Off, "err", err)
			return nil, fmt.Errorf("inode %d chunk %d: %w: %w", id.ino, id.idx, ErrIO, err)
		}
		f.cache.Put(ref.ID, raw)
		if f.disk != nil {
			f.disk.Put(ref.ID, enc)
		}
		return raw, nil
	})
}

// readObject reads n bytes at off of a data object.
func (f *FS) readObject(ctx context.Context, o ObjRef, off, n int64) ([]byte, error) {
	var st store.Store
	var key string
	switch o.Kind {
	case ObjWAL:
		st, key = f.wal.Records(), wal.Key(o.ID)
	case ObjSeg:
		st, key = f.main, segmentKey(o.ID)
	default:
		return nil, fmt.Errorf("object of unknown kind %d: %w", o.Kind, ErrIO)
	}
	b, err := st.Get(ctx, key, off, n)
	f.stats.StoreGets.Add(1)
	f.stats.StoreGetBytes.Add(int64(len(b)))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read %s: %w: %w", key, errObjectGone, ErrIO)
	case err != nil:
		f.stats.StoreErrors.Add(1)
		return nil, fmt.Errorf("read %s [%d, +%d): %w: %w", key, off, n, ErrIO, err)
	case int64(len(b)) != n:
		return nil, fmt.Errorf("read %s [%d, +%d): object ends after %d bytes: %w: %w", key, off, n, len(b), ErrIO, frame.ErrCorrupt)
	}
	return b, nil
}

// flightGroup makes concurrent misses on one frame share one GET. The GET
// runs on its own, detached from the callers that wait for it: each caller
// stops waiting when its own context ends (its connection is gone), and
// the GET goes on for the others — and fills the cache — regardless.
type flightGroup struct {
	mu sync.Mutex
	m  map[uint64]*flight
}

type flight struct {
	done chan struct{}
	val  []byte
	err  error
}

func (g *flightGroup) do(ctx context.Context, id uint64, fn func() ([]byte, error)) ([]byte, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[uint64]*flight)
	}
	fl, ok := g.m[id]
	if !ok {
		fl = &flight{done: make(chan struct{})}
		g.m[id] = fl
		go func() {
			fl.val, fl.err = fn()
			g.mu.Lock()
			delete(g.m, id)
			g.mu.Unlock()
			close(fl.done)
		}()
	}
	g.mu.Unlock()
	select {
	case <-fl.done:
		return fl.val, fl.err
	case <-ctx.Done():
		return nil, canceled(ctx)
	}
}
