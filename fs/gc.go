package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"zerofs/store"
	"zerofs/wal"
)

// Garbage collection keeps the bucket close to the size of the live data.
//
// Every data object (WAL record with frames, or segment) has a record with its
// decoded bytes and the decoded bytes still referenced (live), maintained by
// apply. A GC pass:
//
//  1. deletes objects with nothing live — a WAL record only once the
//     checkpoint covers it, since recovery still replays it before that;
//  2. moves the live frames of objects that should not stay as they are into
//     new segments: WAL records smaller than AdoptBytes (many small objects
//     make reads and listing slow), WAL records in a separate WAL store (data
//     must end up in the main store), and objects less than half live.
//     Frames are copied verbatim, the segment is uploaded, and only then are
//     the chunks repointed, in one batch that also registers the segment —
//     so nothing durable ever points into a segment that is not there;
//  3. rewrites chunks whose frame is less than half live (a 64 KiB frame of
//     which 4 KiB are still referenced) through the normal write path, so
//     that repacking does not carry dead bytes along;
//  4. sweeps segments of older epochs that no record names: uploads whose
//     repointing never became durable (a crash, or a fenced writer).
//
// Deleting only what the applied (hence durable) state no longer references,
// and no snapshot holds, is safe: live bytes of an old object only go up
// again when a clone or restore copies chunk pieces (clone.go), and those
// copy pieces of the current state (live) or of a snapshot (pinned), so no
// later state — including the one recovery will rebuild — can reference a
// dead, unpinned object again.

// sweepInterval is how often GC looks for orphan segments after its first
// pass.
const sweepInterval = time.Hour

// GCStats reports what a pass did.
type GCStats struct {
	Deleted        int   // objects deleted
	DeletedBytes   int64 // their size
	Packed         int   // objects whose live frames were moved
	MovedBytes     int64 // encoded bytes moved into segments
	Segments       int   // segments written
	Rewritten      int   // chunks rewritten whole
	OrphansDeleted int
}

// GC runs one garbage collection pass.
func (f *FS) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	f.gcMu.Lock()
	defer f.gcMu.Unlock()
	if err := f.Err(); err != nil {
		return st, err
	}
	started := time.Now()
	head := f.wal.Head()
	type cand struct {
		obj  ObjRef
		info objInfo
	}
	var move []cand
	var dead []ObjRef
	// Objects a snapshot references stay whole, whatever the current state
	// still uses of them: deleting them would break the snapshot, and
	// moving their live frames would only store those twice (but for
	// records in a local WAL directory, below).
	pins, err := f.snapshotPins()
	if err != nil {
		return st, err
	}
	localWAL := f.wal.Records() != f.main
	err = f.scanObjects(func(obj ObjRef, info objInfo) {
		pinned := pins.objects[obj] > 0
		switch {
		case info.Live <= 0:
			if pinned || obj.Kind == ObjWAL && obj.ID > head.Base.Seq {
				return // a snapshot's, or recovery still replays it (the checkpoint will remove it)
			}
			dead = append(dead, obj)
			st.DeletedBytes += info.Size
		case pinned && !(obj.Kind == ObjWAL && localWAL):
			return
		case f.shouldMove(obj, info):
			// A pinned record in a local WAL directory is still packed: the
			// current state's data must reach the bucket. The record stays
			// for the snapshot.
			move = append(move, cand{obj, info})
		}
	})
	if err != nil {
		return st, err
	}
	for _, obj := range dead {
		if err := f.deleteObject(ctx, obj); err != nil {
			return st, err
		}
	}
	st.Deleted = len(dead)
	f.dropObjects(dead)

	// Move the emptiest objects first: they free the most per byte copied.
	slices.SortFunc(move, func(a, b cand) int {
		return cmpU64(uint64(a.info.Live*1000/max(a.info.Raw, 1)), uint64(b.info.Live*1000/max(b.info.Raw, 1)))
	})
	var seg *segmentBuilder
	var budget int64 = 4 * f.opts.SegmentBytes // bound one pass's work
	for _, c := range move {
		if budget <= 0 {
			break
		}
		budget -= c.info.Size
		frames, data, err := f.objectFrames(ctx, c.obj, c.info)
		if err != nil {
			f.log.Warn("gc: cannot read object; skipping it", "object", c.obj.String(), "err", err)
			continue
		}
		st.Packed++
		for _, fr := range frames {
			users, live, err := f.frameLive(fr)
			if err != nil {
				return st, err
			}
			if live == 0 {
				continue
			}
			if live*2 < int64(fr.ref.Raw) {
				rewrote := 0
				for _, id := range users {
					ok, err := f.rewriteChunk(ctx, id)
					if err != nil {
						return st, err
					}
					if ok {
						rewrote++
						st.Rewritten++
					}
				}
				if rewrote == len(users) {
					continue
				}
			}
			if seg == nil {
				seg = newSegmentBuilder(f.fsid, f.epoch<<40|f.nextSeg.Add(1))
			}
			enc := data[fr.ref.Off : fr.ref.Off+uint64(fr.ref.Size)] // data is the whole object
			seg.add(fr, enc)
			st.MovedBytes += int64(fr.ref.Size)
			if int64(seg.size()) >= f.opts.SegmentBytes {
				if err := f.commitSegment(ctx, seg); err != nil {
					return st, err
				}
				st.Segments++
				seg = nil
			}
		}
	}
	if seg != nil && len(seg.frames) > 0 {
		if err := f.commitSegment(ctx, seg); err != nil {
			return st, err
		}
		st.Segments++
	}
	if st.Segments > 0 || st.Rewritten > 0 {
		// Make the moves durable now, so the next pass can delete the sources.
		if err := f.Flush(ctx); err != nil {
			return st, err
		}
	}
	// Orphan segments are of older epochs: left by the writers before us
	// (a crash between upload and repointing), or uploaded by a fenced one
	// just after we claimed. The first pass finds nearly all of them; after
	// that an hourly sweep is enough, and an idle filesystem does not pay
	// a LIST a minute.
	if f.lastSweep.IsZero() || time.Since(f.lastSweep) >= sweepInterval {
		n, err := f.sweepSegments(ctx)
		if err != nil {
			f.log.Warn("gc: sweeping orphan segments", "err", err)
		} else {
			f.lastSweep = time.Now()
		}
		st.OrphansDeleted = n
	}
	f.stats.GCDeleted.Add(int64(st.Deleted))
	f.stats.GCPacked.Add(int64(st.Packed))
	if st != (GCStats{}) {
		f.log.Info("gc pass", "deleted", st.Deleted, "deleted_bytes", st.DeletedBytes, "packed", st.Packed,
			"moved_bytes", st.MovedBytes, "segments", st.Segments, "rewritten_chunks", st.Rewritten,
			"orphans", st.OrphansDeleted, "elapsed", time.Since(started).Round(time.Millisecond))
	}
	return st, nil
}

func (f *FS) shouldMove(obj ObjRef, info objInfo) bool {
	sparse := info.Live*2 < info.Raw
	if obj.Kind == ObjWAL {
		return f.wal.Records() != f.main || info.Size < f.opts.AdoptBytes || sparse
	}
	return sparse
}

// scanObjects calls fn for every object record in the applied state.
func (f *FS) scanObjects(fn func(ObjRef, objInfo)) error { return scanObjectsOf(f.db, fn) }

// scanObjectsOf calls fn for every object record in db.
func scanObjectsOf(db *pebble.DB, fn func(ObjRef, objInfo)) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindObject}, UpperBound: []byte{kindObject + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		obj, ok := parseObjectKey(it.Key())
		if !ok {
			continue
		}
		info, err := decodeObjInfo(it.Value())
		if err != nil {
			return fmt.Errorf("object %s: %w", obj, err)
		}
		fn(obj, info)
	}
	return it.Error()
}

func (f *FS) deleteObject(ctx context.Context, obj ObjRef) error {
	switch obj.Kind {
	case ObjWAL:
		return f.wal.Delete(ctx, obj.ID)
	case ObjSeg:
		return f.main.Delete(ctx, segmentKey(obj.ID))
	}
	return fmt.Errorf("delete object of unknown kind %d", obj.Kind)
}

// objectFrames reads a whole data object and lists its frames.
func (f *FS) objectFrames(ctx context.Context, obj ObjRef, info objInfo) ([]segFrame, []byte, error) {
	switch obj.Kind {
	case ObjWAL:
		rec, err := f.wal.ReadMeta(ctx, obj.ID)
		if err != nil {
			return nil, nil, err
		}
		d, err := openDelta(f.key, rec.Meta, f.fsid, rec.Seq, rec.Epoch, f.chunkSize)
		if err != nil {
			return nil, nil, err
		}
		data, err := f.wal.Records().Get(ctx, wal.Key(obj.ID), 0, -1)
		if err != nil {
			return nil, nil, err
		}
		seen := make(map[uint64]bool)
		var frames []segFrame
		for _, c := range d.chunks {
			for _, p := range c.pieces {
				if p.Frame.Obj.Kind != objSelf || seen[p.Frame.ID] {
					continue
				}
				seen[p.Frame.ID] = true
				ref := p.Frame
				ref.Obj = obj
				ref.Off += uint64(rec.DataOffset)
				if ref.Off+uint64(ref.Size) > uint64(len(data)) {
					return nil, nil, fmt.Errorf("WAL record %d: frame beyond its end: %w", obj.ID, errBadDelta)
				}
				frames = append(frames, segFrame{ref: ref, ino: c.ino, idx: c.idx})
			}
		}
		return frames, data, nil
	case ObjSeg:
		data, err := f.main.Get(ctx, segmentKey(obj.ID), 0, -1)
		if err != nil {
			return nil, nil, err
		}
		frames, err := f.parseSegment(obj.ID, data)
		return frames, data, err
	}
	return nil, nil, fmt.Errorf("object of unknown kind %d", obj.Kind)
}

// frameLive returns the chunks that still reference frame fr, and the
// bytes of it they reference together. Those are its own chunk and the
// same chunk of the files cloned from its inode (clone links, clone.go):
// moving a frame must repoint all of them, or the old object stays alive
// for the clone, and is packed again by every pass.
func (f *FS) frameLive(fr segFrame) ([]chunkID, int64, error) {
	chain := f.chain()
	clones, err := f.cloneLinks(chain, fr.ino)
	if err != nil {
		return nil, 0, err
	}
	var users []chunkID
	var live int64
	for _, ino := range append([]uint64{fr.ino}, clones...) {
		id := chunkID{ino, fr.idx}
		mu := f.chunkLock(id)
		mu.Lock()
		dc, pieces, err := f.lookupChunk(chain, id)
		if dc != nil {
			pieces = dc.base
		}
		mu.Unlock()
		if err != nil {
			return nil, 0, err
		}
		var n int64
		for _, p := range pieces {
			if p.Frame.ID == fr.ref.ID {
				n += int64(p.Len)
			}
		}
		if n > 0 {
			users = append(users, id)
			live += n
		}
	}
	return users, live, nil
}

// commitSegment uploads a segment, then registers it and repoints its
// frames' chunks in one batch.
func (f *FS) commitSegment(ctx context.Context, seg *segmentBuilder) error {
	obj := seg.finish(f)
	if _, err := f.main.PutIfAbsent(ctx, segmentKey(seg.id), obj); err != nil {
		return fmt.Errorf("gc: upload %s: %w", segmentKey(seg.id), err)
	}
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	if err := f.Err(); err != nil {
		return err
	}
	b := f.open
	chain := f.chainLocked()
	b.setKV(objectKey(ObjRef{Kind: ObjSeg, ID: seg.id}), objInfo{Size: int64(len(obj)), Raw: seg.raw}.encode())
	for _, fr := range seg.frames {
		clones, err := f.cloneLinks(chain, fr.ino)
		if err != nil {
			return err
		}
		for _, ino := range append([]uint64{fr.ino}, clones...) {
			if err := f.repoint(b, chain, chunkID{ino, fr.idx}, fr.ref); err != nil {
				return err
			}
		}
	}
	return nil
}

// repoint makes the pieces of chunk id that use frame ref.ID point at ref's
// new location, if any still do. The caller holds viewMu shared.
func (f *FS) repoint(b *batch, chain []*batch, id chunkID, ref FrameRef) error {
	rw := f.inodeRW(id.ino)
	rw.RLock()
	defer rw.RUnlock()
	mu := f.chunkLock(id)
	mu.Lock()
	defer mu.Unlock()
	dc, pieces, err := f.lookupChunk(chain, id)
	if err != nil {
		return err
	}
	if dc != nil {
		pieces = dc.base
	}
	if !slices.ContainsFunc(pieces, func(p Piece) bool { return p.Frame.ID == ref.ID }) {
		return nil // overwritten meanwhile: the copy is dead on arrival
	}
	dc, err = f.dirtyFor(b, chain, id, false)
	if err != nil {
		return err
	}
	// Copy on write: readers may hold the old slice.
	base := slices.Clone(dc.base)
	for i := range base {
		if base[i].Frame.ID == ref.ID {
			base[i].Frame.Obj, base[i].Frame.Off = ref.Obj, ref.Off
		}
	}
	dc.base = base
	return nil
}

// rewriteChunk rewrites a chunk whole through the write path, dropping the
// dead parts of the frames it uses. It reads without locks and writes only if
// the chunk did not change meanwhile. It reports whether it rewrote.
func (f *FS) rewriteChunk(ctx context.Context, id chunkID) (bool, error) {
	chain := f.chain()
	mu := f.chunkLock(id)
	mu.Lock()
	dc, pieces, err := f.lookupChunk(chain, id)
	mu.Unlock()
	if err != nil || dc != nil || len(pieces) == 0 {
		return false, err // dirty chunks are rewritten by their own seal
	}
	data := make([]byte, f.chunkSize)
	if _, err := f.fillPieces(ctx, id, pieces, 0, f.chunkSize, data, nil, nil, nil); err != nil {
		if errors.Is(err, errObjectGone) {
			return false, nil
		}
		return false, err
	}
	var cover spans
	for _, p := range pieces {
		cover = cover.add(p.Off, p.end())
	}
	adm, err := f.reserve(ctx, int64(len(data)))
	if err != nil {
		return false, err
	}
	defer f.unreserve(adm)
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	rw := f.inodeRW(id.ino)
	rw.RLock()
	defer rw.RUnlock()
	mu.Lock()
	defer mu.Unlock()
	chain = f.chainLocked()
	dc2, pieces2, err := f.lookupChunk(chain, id)
	if err != nil || dc2 != nil || !slices.Equal(pieces, pieces2) {
		return false, err
	}
	b := f.open
	b.putChunk(id, &dirtyChunk{data: data, cover: cover})
	b.dataBytes.Add(int64(len(data)))
	return true, nil
}

// sweepSegments deletes segments of older epochs that no object record names.
func (f *FS) sweepSegments(ctx context.Context) (int, error) {
	infos, err := f.main.List(ctx, "seg/")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range infos {
		id, ok := parseSegmentKey(in.Key)
		if !ok || id>>40 >= f.epoch {
			continue
		}
		if _, known, err := f.objInfo(ObjRef{Kind: ObjSeg, ID: id}); err != nil {
			return n, err
		} else if known {
			continue
		}
		// Not yet applied does not mean unknown: a registration in a batch
		// still in flight would be in the chain.
		if _, pending, _ := f.getKV(f.chain(), objectKey(ObjRef{Kind: ObjSeg, ID: id})); pending {
			continue
		}
		if err := f.main.Delete(ctx, in.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// Compact runs garbage collection to completion: passes and checkpoints until
// a pass finds nothing left to do. For tests and the admin interface.
func (f *FS) Compact(ctx context.Context) error {
	for i := 0; i < 10; i++ {
		st, err := f.GC(ctx)
		if err != nil {
			return err
		}
		if err := f.Flush(ctx); err != nil {
			return err
		}
		f.waitApplied()
		if err := f.checkpoint(ctx); err != nil {
			return err
		}
		if st.Packed == 0 && st.Deleted == 0 && st.Rewritten == 0 && i > 0 {
			return nil
		}
	}
	return nil
}
