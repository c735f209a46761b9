package fs

import (
	"runtime"
	"slices"
	"sync"
	"time"

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
	d, frames, data := f.encodeBatch(b)
	b.delta, b.frames = d, frames
	var metaLen int
	commit, err := f.wal.Append(func(seq uint64) ([]byte, []byte) {
		meta := sealDelta(f.key, d, f.fsid, seq, f.epoch)
		metaLen = len(meta)
		return meta, data
	})
	if err != nil {
		b.err = err
		f.doneCh <- b
		return
	}
	b.commit = commit
	b.dataOff = int64(wal.HeaderSize + metaLen)
	b.recSize = b.dataOff + int64(len(data))
	f.doneCh <- b
}

// encodeBatch turns a sealed batch into a delta and the record's data area.
func (f *FS) encodeBatch(b *batch) (*delta, []sealedFrame, []byte) {
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
		frames []sealedFrame
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
	// spread it over the cores.
	work := make(chan *job)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.pieces, j.frames = f.encodeChunk(j.id, j.dc)
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()

	// Lay the frames out one after another in the data area.
	var size int
	for _, j := range jobs {
		for _, fr := range j.frames {
			size += len(fr.enc)
		}
	}
	data := make([]byte, 0, size)
	var frames []sealedFrame
	for _, j := range jobs {
		offs := make(map[uint64]uint64, len(j.frames))
		for _, fr := range j.frames {
			fr.off = uint64(len(data))
			offs[fr.id] = fr.off
			data = append(data, fr.enc...)
			frames = append(frames, fr)
		}
		for i := range j.pieces {
			if p := &j.pieces[i]; p.Frame.Obj.Kind == objSelf {
				p.Frame.Off = offs[p.Frame.ID]
			}
		}
		d.chunks = append(d.chunks, chunkSet{ino: j.id.ino, idx: j.id.idx, pieces: j.pieces})
	}
	return d, frames, data
}

// encodeChunk computes a dirty chunk's final pieces, encoding one frame per
// written span. A span of zeros becomes a hole rather than a frame: zeroing
// (mkfs, WRITE_ZEROES without a punch) takes no space.
func (f *FS) encodeChunk(id chunkID, dc *dirtyChunk) ([]Piece, []sealedFrame) {
	pieces := slices.Clone(dc.base)
	var frames []sealedFrame
	for _, s := range dc.cover {
		raw := dc.data[s.a:s.b]
		if allZero(raw) {
			continue
		}
		fid := f.newFrameID()
		enc := f.coder.Encode(nil, raw, frame.ID{Frame: fid, Ino: id.ino, Chunk: id.idx})
		frames = append(frames, sealedFrame{id: fid, ino: id.ino, idx: id.idx, raw: raw, enc: enc})
		pieces = insertPiece(pieces, Piece{Off: s.a, Len: s.b - s.a, Frame: FrameRef{
			ID: fid, Obj: ObjRef{Kind: objSelf}, Size: uint32(len(enc)), Raw: uint32(len(raw)),
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
			}
			if err := f.apply(b.delta, b.pos, b.dataOff, b.recSize); err != nil {
				f.fail(err)
				continue
			}
			f.viewMu.Lock()
			if len(f.sealed) > 0 && f.sealed[0] == b {
				f.sealed = f.sealed[1:]
			}
			f.viewMu.Unlock()
			f.memMu.Lock()
			f.memCV.Broadcast()
			f.memMu.Unlock()
		case <-f.stop:
			return
		}
	}
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

// ticker seals the open batch by age and on request (size), and runs the
// periodic checkpoint and garbage collection.
func (f *FS) ticker() {
	defer f.bg.Done()
	tick := time.NewTicker(min(f.opts.BatchAge/4, 250*time.Millisecond))
	defer tick.Stop()
	lastCkpt, lastGC := time.Now(), time.Now()
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
			if f.Err() != nil {
				continue
			}
			if f.opts.CheckpointInterval > 0 && now.Sub(lastCkpt) >= f.opts.CheckpointInterval {
				lastCkpt = now
				if err := f.checkpoint(f.bgCtx); err != nil {
					f.log.Warn("checkpoint failed; will retry", "err", err)
				}
			}
			if f.opts.GCInterval > 0 && now.Sub(lastGC) >= f.opts.GCInterval {
				lastGC = now
				if _, err := f.GC(f.bgCtx); err != nil {
					f.log.Warn("garbage collection pass failed; will retry", "err", err)
				}
			}
		}
	}
}

// reserve applies back-pressure before a mutation that adds dirty data: it
// waits while unapplied batches hold more than MaxDirtyBytes, asking for a
// seal so the memory drains. The fast path takes no global lock.
func (f *FS) reserve() error {
	if err := f.Err(); err != nil {
		return f.writeErr(err)
	}
	if dirty, _ := f.dirtyBytes(); dirty < f.opts.MaxDirtyBytes {
		return nil
	}
	f.memMu.Lock()
	defer f.memMu.Unlock()
	for {
		if err := f.Err(); err != nil {
			return f.writeErr(err)
		}
		dirty, _ := f.dirtyBytes()
		if dirty < f.opts.MaxDirtyBytes {
			return nil
		}
		f.kickSeal()
		f.memCV.Wait() // the applier broadcasts after each batch, fail() too
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
