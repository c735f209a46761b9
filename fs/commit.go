package fs

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/crypt"
	"zerofs/frame"
	"zerofs/wal"
)

// The commit pipeline: three goroutines, each handling batches strictly in
// seal order, so that WAL order, durability order and apply order are one.
//
//	sealer     rotates the open batch when a flush, its size or its age asks
//	           for it — but only once the WAL has room for another record in
//	           flight. That is the group commit: while Options.WALInFlight
//	           records are being written, flushes wait and their writes pile
//	           up in the open batch, and the next rotation takes them all into
//	           one record. It then encodes the batch (frames compressed and
//	           sealed in parallel, the delta sealed under the record's
//	           sequence number) and starts its WAL append without waiting for
//	           it; new writes go on into the next open batch.
//	completer  waits for each append in order. When one is durable it wakes
//	           the batch's flush waiters at once — before applying, which may
//	           take longer — frees its pipeline slot, and hands the batch to
//	           the applier.
//	applier    applies each durable batch's delta to pebble, then drops the
//	           batch from the read chain and releases its memory.
//
// A failed append (fenced, closed) is sticky: the WAL fails every later record
// too, the filesystem stops accepting writes, and flush waiters get the error.

func (f *FS) sealer() {
	defer f.bg.Done()
	for {
		select {
		case <-f.kick:
		case <-f.stop:
			return
		}
		// Wait for room in the pipeline before rotating, so that everything
		// written meanwhile goes into this one batch.
		select {
		case f.slots <- struct{}{}:
		case <-f.stop:
			return
		}
		f.viewMu.Lock()
		b := f.rotateLocked()
		f.viewMu.Unlock()
		if b == nil {
			<-f.slots
			continue
		}
		f.seal(b)
	}
}

// seal encodes b and starts its WAL append, then passes it to the completer.
func (f *FS) seal(b *batch) {
	b.sealedAt = time.Now()
	if err := f.Err(); err != nil {
		b.err = err
		f.doneCh <- b
		return
	}
	rec := f.encodeBatch(b)
	commit, err := f.wal.Append(rec.build)
	if err != nil {
		b.err = err
		f.doneCh <- b
		return
	}
	b.commit = commit
	b.dataOff = int64(wal.HeaderSize + rec.metaLen)
	b.recSize = int64(len(rec.buf))
	b.recBuf = rec.buf
	f.publishEncoded(b)
	f.doneCh <- b
}

// publishEncoded makes b's final chunk pieces available to newer batches
// (see encoded), and its frames readable until the applier caches them.
func (f *FS) publishEncoded(b *batch) {
	self := ObjRef{Kind: ObjWAL, ID: b.commit.Pos.Seq}
	e := &encoded{chunks: make(map[chunkID][]Piece, len(b.delta.chunks))}
	for _, c := range b.delta.chunks {
		ps := slices.Clone(c.pieces)
		for i := range ps {
			if ps[i].Frame.Obj.Kind == objSelf {
				ps[i].Frame.Obj = self
				ps[i].Frame.Off += uint64(b.dataOff)
			}
		}
		e.chunks[chunkID{c.ino, c.idx}] = ps
	}
	for _, fr := range b.frames {
		f.pending.Store(fr.id, fr.raw)
	}
	b.enc.Store(e)
}

// sealedRecord is a batch laid out as a WAL record, its frames already
// encrypted in place, waiting only for its sequence number to seal the delta.
type sealedRecord struct {
	f       *FS
	buf     []byte // the whole record object
	plain   []byte // the delta's plaintext
	metaLen int
}

func (r *sealedRecord) build(seq uint64) ([]byte, int) {
	meta := r.buf[wal.HeaderSize : wal.HeaderSize+r.metaLen]
	copy(meta[crypt.NonceSize:], r.plain)
	r.f.key.SealInPlace(meta, deltaAAD(r.f.fsid, seq, r.f.epoch))
	return r.buf, r.metaLen
}

// encodeBatch turns a sealed batch into a WAL record: the delta and, after
// it, every new frame. The record is laid out in one buffer and each byte of
// data is copied once: frames are compressed first (so their sizes are
// known), the delta encoded with their offsets, the buffer allocated, and then
// the frames encrypted straight into place.
func (f *FS) encodeBatch(b *batch) *sealedRecord {
	d := &delta{}
	b.kv.Ascend(func(it kvItem) bool {
		d.kv = append(d.kv, it)
		return true
	})
	d.ranges = append(d.ranges, b.tombs...)

	type job struct {
		id     chunkID
		dc     *dirtyChunk
		pieces []Piece
		frames []preparedFrame
	}
	var jobs []*job
	for i := range b.shards {
		for id, dc := range b.shards[i].m {
			jobs = append(jobs, &job{id: id, dc: dc})
		}
	}
	slices.SortFunc(jobs, func(x, y *job) int {
		if x.id.ino != y.id.ino {
			return cmpU64(x.id.ino, y.id.ino)
		}
		return cmpU64(x.id.idx, y.id.idx)
	})
	// Compressing and sealing frames is the CPU-heavy part of a flush:
	// spread both over the cores.
	parallel(len(jobs), func(i int) { jobs[i].pieces, jobs[i].frames = f.prepareChunk(jobs[i].id, jobs[i].dc) })

	var dataLen int
	var frames []sealedFrame
	var preps []*preparedFrame
	for _, j := range jobs {
		for k := range j.frames {
			fr := &j.frames[k]
			fr.off = dataLen
			dataLen += fr.prep.Size()
			preps = append(preps, fr)
		}
		for i := range j.pieces {
			if p := &j.pieces[i]; p.Frame.Obj.Kind == objSelf {
				fr := &j.frames[p.Frame.Off] // prepareChunk put the frame's index there
				p.Frame.Off, p.Frame.Size = uint64(fr.off), uint32(fr.prep.Size())
			}
		}
		d.chunks = append(d.chunks, chunkSet{ino: j.id.ino, idx: j.id.idx, pieces: j.pieces})
	}
	rec := &sealedRecord{f: f, plain: d.encode()}
	rec.metaLen = len(rec.plain) + crypt.Overhead
	start := wal.HeaderSize + rec.metaLen
	rec.buf = f.recBufs.get(start + dataLen)
	parallel(len(preps), func(i int) {
		fr := preps[i]
		f.coder.SealInto(rec.buf[start+fr.off:start+fr.off+fr.prep.Size()], &fr.prep)
	})
	for _, fr := range preps {
		frames = append(frames, sealedFrame{
			id: fr.prep.ID.Frame, ino: fr.prep.ID.Ino, idx: fr.prep.ID.Chunk, raw: fr.raw,
			enc: rec.buf[start+fr.off : start+fr.off+fr.prep.Size()], off: uint64(fr.off),
		})
	}
	b.delta, b.frames = d, frames
	return rec
}

// preparedFrame is a frame compressed and placed, not yet encrypted.
type preparedFrame struct {
	prep frame.Prepared
	raw  []byte
	off  int // in the record's data area
}

// parallel runs fn(0..n-1) on all cores.
func parallel(n int, fn func(int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// prepareChunk computes a dirty chunk's final pieces and prepares one frame
// per written span (compressed, not yet sealed). A span of zeros becomes a
// hole rather than a frame: zeroing (mkfs, WRITE_ZEROES without a punch)
// takes no space. Each new piece's Frame.Off temporarily holds the index of
// its frame in the returned slice.
func (f *FS) prepareChunk(id chunkID, dc *dirtyChunk) ([]Piece, []preparedFrame) {
	pieces := slices.Clone(dc.base)
	var frames []preparedFrame
	for _, s := range dc.cover {
		raw := dc.bytes(s.a, s.b)
		if allZero(raw) {
			continue
		}
		fid := f.newFrameID()
		frames = append(frames, preparedFrame{prep: f.coder.Prepare(raw, frame.ID{Frame: fid, Ino: id.ino, Chunk: id.idx}), raw: raw})
		pieces = insertPiece(pieces, Piece{Off: s.a, Len: s.b - s.a, Frame: FrameRef{
			ID: fid, Obj: ObjRef{Kind: objSelf}, Off: uint64(len(frames) - 1), Raw: uint32(len(raw)),
		}})
	}
	return pieces, frames
}

func (f *FS) newFrameID() uint64 { return f.epoch<<40 | f.nextFrame.Add(1) }

func (f *FS) completer() {
	defer f.bg.Done()
	for {
		var b *batch
		select {
		case b = <-f.doneCh:
		case <-f.stop:
			select {
			case b = <-f.doneCh:
			default:
				return
			}
		}
		if b.err == nil {
			<-b.commit.Done() // the WAL completes every commit, even when closed
			b.err = b.commit.Err()
		}
		<-f.slots
		if b.err != nil {
			f.fail(b.err)
			b.finish(b.err)
			continue
		}
		b.pos = b.commit.Pos
		f.stats.FlushRecords.Add(1)
		f.stats.CommitBytes.Add(b.recSize)
		f.stats.CommitLatency.Observe(time.Since(b.sealedAt))
		b.finish(nil)
		f.applyCh <- b
	}
}

func (f *FS) applier() {
	defer f.bg.Done()
	for {
		select {
		case b := <-f.applyCh:
			// Cache the batch's frames before it leaves the read chain, so
			// reads of fresh data never go to the store. Done here, not in
			// the completer, to keep it off the flush acknowledgement path.
			for _, fr := range b.frames {
				raw := fr.raw
				if len(raw) < cap(raw)/2 {
					raw = slices.Clone(raw) // do not pin a whole chunk buffer in the cache
				}
				f.cache.Put(fr.id, raw)
				if f.disk != nil {
					f.disk.Put(fr.id, fr.enc)
				}
				f.pending.Delete(fr.id)
			}
			if err := f.apply(b.delta, b.pos, b.dataOff, b.recSize); err != nil {
				f.fail(err)
				continue
			}
			b.frames = nil // cached now: the record's memory can go
			f.recBufs.put(b.recBuf)
			b.recBuf = nil
			f.viewMu.Lock()
			if len(f.sealed) > 0 && f.sealed[0] == b {
				f.sealed = f.sealed[1:]
			}
			f.viewMu.Unlock()
			f.memMu.Lock()
			f.memCV.Broadcast() // waitApplied
			f.wakeHeadLocked()  // reserve
			f.memMu.Unlock()
		case <-f.stop:
			return
		}
	}
}

// flushApplied flushes and waits until what it flushed is applied to
// pebble: the batch open when it was called and those sealed before it, not
// every batch sealed since (under a steady stream of writes those never run
// out).
func (f *FS) flushApplied(ctx context.Context) error {
	f.viewMu.RLock()
	b := f.open
	var last *batch // the newest sealed one: an empty b is never sealed
	if n := len(f.sealed); n > 0 {
		last = f.sealed[n-1]
	}
	f.viewMu.RUnlock()
	if err := f.Flush(ctx); err != nil {
		return err
	}
	f.memMu.Lock()
	defer f.memMu.Unlock()
	for f.Err() == nil {
		f.viewMu.RLock()
		pending := slices.Contains(f.sealed, b) || last != nil && slices.Contains(f.sealed, last)
		f.viewMu.RUnlock()
		if !pending {
			return nil
		}
		f.memCV.Wait()
	}
	return f.writeErr(f.Err())
}

// waitApplied waits until every durable batch is applied.
func (f *FS) waitApplied() {
	f.memMu.Lock()
	defer f.memMu.Unlock()
	for f.Err() == nil {
		f.viewMu.RLock()
		n := len(f.sealed)
		f.viewMu.RUnlock()
		if n == 0 {
			return
		}
		f.memCV.Wait()
	}
}

// ticker seals the open batch by age and on request (size). It does
// nothing else: a write that is never flushed is lost in a crash only if it
// is younger than BatchAge (docs/durability.md), and that holds only while
// nothing slow stands between two ticks. Checkpoints and GC, which can take
// minutes of store requests, run in maintainer.
func (f *FS) ticker() {
	defer f.bg.Done()
	tick := time.NewTicker(min(f.opts.BatchAge/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case now := <-tick.C:
			if err := f.wal.Failed(); err != nil && f.Err() == nil {
				f.fail(err) // fenced while idle: refuse writes now, not at the next seal
			}
			f.viewMu.RLock()
			old := !f.open.empty() && now.Sub(f.open.created) >= f.opts.BatchAge
			f.viewMu.RUnlock()
			if old {
				f.kickSeal()
			}
		}
	}
}

// maintainer runs the periodic checkpoint and garbage collection, one after
// the other, apart from the ticker's age-based seals.
func (f *FS) maintainer() {
	defer f.bg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastCkpt, lastGC := time.Now(), time.Now()
	for {
		select {
		case <-f.stop:
			return
		case now := <-tick.C:
			if f.Err() != nil {
				continue
			}
			if f.opts.CheckpointInterval > 0 && now.Sub(lastCkpt) >= f.opts.CheckpointInterval {
				lastCkpt = now
				if err := f.checkpoint(f.workCtx); err != nil && f.workCtx.Err() == nil {
					f.log.Warn("checkpoint failed; will retry", "err", err)
				}
			}
			if f.opts.GCInterval > 0 && now.Sub(lastGC) >= f.opts.GCInterval {
				lastGC = now
				if _, err := f.GC(f.workCtx); err != nil && f.workCtx.Err() == nil {
					f.log.Warn("garbage collection pass failed; will retry", "err", err)
				}
			}
		}
	}
}

// dirtyBytes sums the dirty buffers of unapplied batches and of the open one.
func (f *FS) dirtyBytes() (total, open int64) {
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	for _, b := range f.sealed {
		total += b.dataBytes.Load()
	}
	open = f.open.dataBytes.Load()
	return total + open, open
}

// noteDirty is called after a mutation grew the open batch: it asks for a
// seal once the batch reaches BatchBytes.
func (f *FS) noteDirty(b *batch) {
	if b.dataBytes.Load() >= f.opts.BatchBytes {
		f.kickSeal()
	}
}

func (f *FS) kickSeal() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
