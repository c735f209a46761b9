package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
	if IsSnapshotIno(ino) {
		var n int
		var eof bool
		err := f.withView(ctx, ino, func(v *view, real uint64) (err error) {
			n, eof, err = v.fs.read(ctx, c, real, off, p, out)
			return err
		})
		return n, eof, err
	}
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
	var todo [4]raRange
	seq, ra := f.ra.observe(f.raCtx, ino, off, uint64(total), n.Size, todo[:0])
	f.startReadAhead(ra)
	if err := f.readRange(ctx, chain, ino, off, p[:total], out, fetchOpts{runCtx: f.bgCtx, scan: seq}); err != nil {
		return 0, false, err
	}
	f.stats.ReadBytes.Add(int64(total))
	return total, off+uint64(total) >= n.Size, nil
}

// readRange fills p with the file's bytes at off, ignoring the file size,
// reporting to out (which may be nil) what it found.
//
// It works in three steps, so that a read costs one round of store requests
// however many chunks it spans (see fetch.go): plan each chunk (under its
// lock, copy what dirty batches hold and note the pieces the rest comes
// from), fetch every frame not in memory at once, then fill. Should
// garbage collection move a frame between plan and fetch, the read starts
// again chunk by chunk, each chunk looked up afresh.
func (f *FS) readRange(ctx context.Context, chain []*batch, ino, off uint64, p []byte, out *readOut, o fetchOpts) error {
	cs := uint64(f.chunkSize)
	var planBuf [16]chunkPlan
	plans := planBuf[:0]
	var want []frameWant
	for done := 0; done < len(p); {
		pos := off + uint64(done)
		pl := chunkPlan{id: chunkID{ino, pos / cs}, a: uint32(pos % cs), at: done}
		pl.e = uint32(min(cs, uint64(pl.a)+uint64(len(p)-done)))
		pl.dst = p[done : done+int(pl.e-pl.a)]
		if err := f.planChunk(chain, &pl); err != nil {
			return err
		}
		for _, pc := range pl.pieces {
			if max(pc.Off, pl.a) < min(pc.end(), pl.e) {
				want = append(want, frameWant{pc.Frame, pl.id})
			}
		}
		plans = append(plans, pl)
		done += int(pl.e - pl.a)
	}
	var have map[uint64][]byte
	if len(want) > 0 {
		var err error
		have, err = f.fetchFrames(ctx, want, o)
		if errors.Is(err, errObjectGone) {
			return f.readChunks(ctx, ino, off, p, out)
		}
		if err != nil {
			return err
		}
	}
	for i := range plans {
		if err := f.fillChunk(ctx, &plans[i], have, out); err != nil {
			return err
		}
	}
	return nil
}

// readChunks is readRange one chunk at a time, each looked up afresh and
// retried if its frame moves: the slow path after a frame moved under a read.
func (f *FS) readChunks(ctx context.Context, ino, off uint64, p []byte, out *readOut) error {
	cs := uint64(f.chunkSize)
	for done := 0; done < len(p); {
		pos := off + uint64(done)
		id := chunkID{ino, pos / cs}
		a := uint32(pos % cs)
		e := uint32(min(cs, uint64(a)+uint64(len(p)-done)))
		if err := f.readChunk(ctx, id, a, e, p[done:done+int(e-a)], out, done); err != nil {
			return err
		}
		done += int(e - a)
	}
	return nil
}

// chunkPlan is one chunk's part of a read: bytes [a, e) of chunk id, into
// dst at offset at of the read's buffer. Planning copies what dirty batches
// hold into dst (got) and leaves pieces, where the rest is to come from.
type chunkPlan struct {
	id     chunkID
	a, e   uint32
	at     int
	dst    []byte
	got    []span
	pieces []Piece
	buf    [4]span
}

// planChunk looks pl's chunk up in chain and copies its dirty bytes.
func (f *FS) planChunk(chain []*batch, pl *chunkPlan) error {
	pl.got = pl.buf[:0]
	mu := f.chunkLock(pl.id)
	mu.Lock()
	defer mu.Unlock()
	dc, pieces, err := f.lookupChunk(chain, pl.id)
	if err != nil {
		return err
	}
	if dc != nil {
		for _, s := range dc.cover {
			lo, hi := max(s.a, pl.a), min(s.b, pl.e)
			if lo < hi {
				copy(pl.dst[lo-pl.a:hi-pl.a], dc.bytes(lo, hi))
				pl.got = append(pl.got, span{lo, hi})
			}
		}
		pieces = dc.base
	}
	pl.pieces = pieces
	return nil
}

// fillChunk copies pl's pieces into its buffer, from have (frames fetched
// for the read) or memory, zeroes the rest and reports holes to out.
func (f *FS) fillChunk(ctx context.Context, pl *chunkPlan, have map[uint64][]byte, out *readOut) error {
	if out != nil {
		out.at = pl.at
	}
	got, err := f.fillPieces(ctx, pl.id, pl.pieces, pl.a, pl.e, pl.dst, pl.got, out, have)
	if err != nil {
		return err
	}
	base := pl.id.idx * uint64(f.chunkSize)
	zeroGaps(pl.dst, pl.a, pl.e, got, func(lo, hi uint32) {
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

// readChunk fills dst, at offset at of the read's buffer, with bytes [a, e)
// of chunk id, reporting to out (which may be nil) what it found. It looks
// the chunk up again if garbage collection moves its frame meanwhile.
func (f *FS) readChunk(ctx context.Context, id chunkID, a, e uint32, dst []byte, out *readOut, at int) error {
	sharedBefore, holesBefore := 0, 0
	if out != nil {
		sharedBefore, holesBefore = len(out.shared), len(out.holes)
	}
	for attempt := 0; ; attempt++ {
		if out != nil {
			// A retry starts over.
			out.shared, out.holes = out.shared[:sharedBefore], out.holes[:holesBefore]
		}
		pl := chunkPlan{id: id, a: a, e: e, at: at, dst: dst}
		if err := f.planChunk(f.chain(), &pl); err != nil {
			return err
		}
		err := f.fillChunk(ctx, &pl, nil, out)
		if errors.Is(err, errObjectGone) && attempt < 3 {
			// Garbage collection moved the frame and deleted its old
			// object between our lookup and the GET: look again.
			continue
		}
		return err
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
// appends the spans it filled to got, taking frames from have (may be nil)
// or else from frameData. With out.shared wanted, it records
// slices of the frames instead of copying them (see ReadShared), in offset
// order: pieces are sorted and disjoint (decodePieces checks it).
func (f *FS) fillPieces(ctx context.Context, id chunkID, pieces []Piece, a, e uint32, dst []byte, got []span, out *readOut, have map[uint64][]byte) ([]span, error) {
	for _, p := range pieces {
		lo, hi := max(p.Off, a), min(p.end(), e)
		if lo >= hi {
			continue
		}
		raw := have[p.Frame.ID]
		if raw == nil {
			var err error
			if raw, err = f.frameData(ctx, p.Frame, id); err != nil {
				return got, err
			}
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
	if raw, ok := f.memFrame(ref.ID, false); ok {
		return raw, nil
	}
	have, err := f.fetchFrames(ctx, []frameWant{{ref, id}}, fetchOpts{runCtx: f.bgCtx})
	if err != nil {
		return nil, err
	}
	return have[ref.ID], nil
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
		if ctx.Err() == nil {
			// A read-ahead abandoned, or the filesystem closing, is not
			// the store failing: zerofs_store_errors_total is for alerts.
			f.stats.StoreErrors.Add(1)
		}
		return nil, fmt.Errorf("read %s [%d, +%d): %w: %w", key, off, n, ErrIO, err)
	case int64(len(b)) != n:
		return nil, fmt.Errorf("read %s [%d, +%d): object ends after %d bytes: %w: %w", key, off, n, len(b), ErrIO, frame.ErrCorrupt)
	}
	return b, nil
}
