package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"zerofs/frame"
)

// Fetching frames from the store.
//
// A read needs the frames behind every chunk it touches. On a store that
// answers in 20–100 ms, what a read costs is the number of round trips one
// after another, not the bytes: fetching a 1 MiB read's sixteen 64 KiB
// frames one GET at a time takes sixteen round trips, a third of a second.
// So a read first plans (which frames, where), then fetches every frame it
// lacks at once:
//
//   - frames already in memory (the memory cache, or a batch on its way to
//     it) cost nothing;
//   - a frame another reader is already fetching is waited for, not fetched
//     again (flights);
//   - the rest are looked up in the disk cache, and what is still missing is
//     grouped per object into runs of adjacent frames, one ranged GET each
//     (frames of one chunk range sit next to each other in a WAL record or
//     segment, so a sequential read is a handful of GETs), with runs capped
//     so a large read still spreads over several requests in parallel.
//
// Fetches run detached from the reader that started them (on the FS's
// background context, or a read-ahead stream's): other readers may be
// waiting on the same flights, and one reader giving up (its connection
// died) must not fail theirs. Each waiter stops waiting when its own context
// ends.

const (
	// maxRunBytes caps one GET. Bigger runs save requests (each costs a
	// round trip and is billed) but serialize a large read on one
	// connection's rate (S3 streams a request at 50–100 MB/s): a 16 MiB GET
	// takes about 20 ms to first byte plus 170 ms of streaming, so a 64 MiB
	// read-ahead window keeps four in flight. Measured through a 20 ms /
	// 100 MB/s proxy (docs/benchmarks.md), 16 MiB runs read a cold GiB with
	// 135 GETs at 0.92x what bare GETs deliver; 8 MiB runs took 258 GETs
	// and were no faster.
	maxRunBytes = 16 << 20
	// maxRunGap: frames of one object this close are fetched by one GET that
	// reads the gap too. A gap of 128 KiB costs ~1.3 ms at 100 MB/s, far less
	// than the round trip a second GET would cost.
	maxRunGap = 128 << 10
)

// errFetchAbandoned: a read-ahead fetch was cancelled because its stream
// stopped being sequential. A demand reader that had joined it fetches the
// frame itself.
var errFetchAbandoned = errors.New("read-ahead fetch abandoned")

// frameWant is a frame a read needs, with the chunk it belongs to (bound
// into the frame's authentication).
type frameWant struct {
	ref FrameRef
	id  chunkID
}

// fetchOpts says how fetched frames are treated.
type fetchOpts struct {
	// runCtx is what the GETs run on: f.bgCtx for demand reads, a stream's
	// context for read-ahead (cancelled when the stream turns random).
	runCtx context.Context
	// scan: the frames are for a sequential scan, which must not push the
	// hot set out of the caches: they are looked up and kept as scans do
	// (cache.Cache's GetScan and PutScan).
	scan bool
}

// fetchFrames returns the decoded bytes of every frame in want, keyed by
// frame id. It waits with ctx; the fetches run on o.runCtx.
func (f *FS) fetchFrames(ctx context.Context, want []frameWant, o fetchOpts) (map[uint64][]byte, error) {
	have := make(map[uint64][]byte, len(want))
	var miss []frameWant
	for _, w := range want {
		if _, ok := have[w.ref.ID]; ok {
			continue
		}
		if raw, ok := f.memFrame(w.ref.ID, o.scan); ok {
			have[w.ref.ID] = raw
			continue
		}
		have[w.ref.ID] = nil // seen: a second want of it is a duplicate
		miss = append(miss, w)
	}
	for attempt := 0; len(miss) > 0; attempt++ {
		fls, mine := f.flights.claim(miss)
		var run []frameWant
		for i, w := range miss {
			if mine[i] {
				run = append(run, w)
			}
		}
		if len(run) > 0 {
			go f.fetchRuns(run, fls, mine, o)
		}
		var retry []frameWant
		for i, fl := range fls {
			select {
			case <-fl.done:
			case <-ctx.Done():
				return nil, canceled(ctx)
			}
			switch {
			case fl.err == nil:
				have[miss[i].ref.ID] = fl.val
			case errors.Is(fl.err, errFetchAbandoned) && attempt < 3:
				retry = append(retry, miss[i])
			default:
				return nil, fl.err
			}
		}
		miss = retry
	}
	return have, nil
}

// memFrame returns frame id if it is in memory: the memory cache, or a
// batch's frame whose record is not yet applied.
func (f *FS) memFrame(id uint64, scan bool) ([]byte, bool) {
	get := f.cache.Get
	if scan {
		get = f.cache.GetScan
	}
	if raw, ok := get(id); ok {
		return raw, true
	}
	if raw, ok := f.pending.Load(id); ok {
		return raw.([]byte), true
	}
	return nil, false
}

// fetchRuns produces the frames in want whose flights the caller claimed
// (mine), completing each flight in fls as its frame is decoded or fails:
// the disk cache first, then one GET per run, runs in parallel.
func (f *FS) fetchRuns(want []frameWant, fls []*flight, mine []bool, o fetchOpts) {
	flightOf := make(map[uint64]*flight, len(want))
	for i, fl := range fls {
		if mine[i] {
			flightOf[fl.id] = fl
		}
	}
	var remote []frameWant
	for _, w := range want {
		if raw, ok := f.diskFrame(w, o.scan); ok {
			f.putFrame(w.ref.ID, raw, o.scan)
			f.flights.finish(flightOf[w.ref.ID], raw, nil)
			continue
		}
		remote = append(remote, w)
	}
	var wg sync.WaitGroup
	for _, run := range planRuns(remote) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.fetchRun(run, flightOf, o)
		}()
	}
	wg.Wait()
}

// planRuns sorts frames by object and offset and cuts them into runs, each
// fetched by one GET: frames of one object at most maxRunGap apart, up to
// maxRunBytes a run.
func planRuns(ws []frameWant) [][]frameWant {
	slices.SortFunc(ws, func(x, y frameWant) int {
		switch {
		case x.ref.Obj.Kind != y.ref.Obj.Kind:
			return int(x.ref.Obj.Kind) - int(y.ref.Obj.Kind)
		case x.ref.Obj.ID != y.ref.Obj.ID:
			return cmpU64(x.ref.Obj.ID, y.ref.Obj.ID)
		}
		return cmpU64(x.ref.Off, y.ref.Off)
	})
	var runs [][]frameWant
	start := 0
	for i := 1; i <= len(ws); i++ {
		if i < len(ws) {
			first, prev, w := ws[start].ref, ws[i-1].ref, ws[i].ref
			prevEnd := prev.Off + uint64(prev.Size)
			if w.Obj == first.Obj && w.Off >= prevEnd && w.Off-prevEnd <= maxRunGap &&
				w.Off+uint64(w.Size)-first.Off <= maxRunBytes {
				continue
			}
		}
		runs = append(runs, ws[start:i:i])
		start = i
	}
	return runs
}

// fetchRun GETs one run of frames of one object and completes their flights.
func (f *FS) fetchRun(run []frameWant, flightOf map[uint64]*flight, o fetchOpts) {
	lo := run[0].ref.Off
	last := run[len(run)-1].ref
	hi := last.Off + uint64(last.Size)
	buf, err := f.readObject(o.runCtx, run[0].ref.Obj, int64(lo), int64(hi-lo))
	if err != nil && o.runCtx.Err() != nil && o.runCtx != f.bgCtx {
		err = fmt.Errorf("%w: %w", errFetchAbandoned, err)
	}
	var toDisk []diskPut
	for _, w := range run {
		fl := flightOf[w.ref.ID]
		if err != nil {
			f.flights.finish(fl, nil, err)
			continue
		}
		enc := buf[w.ref.Off-lo : w.ref.Off-lo+uint64(w.ref.Size)]
		raw, derr := f.decodeFrame(w, enc)
		if derr == nil {
			f.putFrame(w.ref.ID, raw, o.scan)
			toDisk = append(toDisk, diskPut{w.ref.ID, enc})
		}
		f.flights.finish(fl, raw, derr)
	}
	f.cacheOnDisk(toDisk)
}

// diskPut is a frame fetched from the store, encoded, for the disk cache.
type diskPut struct {
	id  uint64
	enc []byte
}

// diskWriters is how many runs may be written to the disk cache in the
// background at once.
const diskWriters = 2

// cacheOnDisk writes frames fetched from the store to the disk cache, off
// the readers' path: their flights are finished, so readers waiting for
// them go on, and the reader that fetched them does not wait either. The
// page cache writes of a cold sequential read cost as much CPU as
// decrypting it, and on a machine reclaiming memory several times that
// (docs/benchmarks.md): a reader that waited for them read at half speed.
// At most diskWriters runs are written in the background, holding their
// GET buffers; past that the fetching reader writes its own, which bounds
// the memory and slows fetching to what the disk takes.
func (f *FS) cacheOnDisk(puts []diskPut) {
	if len(puts) == 0 || f.disk == nil {
		return
	}
	write := func() {
		for _, p := range puts {
			f.disk.Put(p.id, p.enc) // a new disk entry starts cold either way
		}
	}
	select {
	case f.diskWriters <- struct{}{}:
	default:
		write()
		return
	}
	f.closeMu.Lock()
	if f.closed {
		f.closeMu.Unlock()
		<-f.diskWriters
		return
	}
	f.bg.Add(1)
	f.closeMu.Unlock()
	go func() {
		defer f.bg.Done()
		defer func() { <-f.diskWriters }()
		write()
	}()
}

// diskFrame returns frame w from the disk cache, dropping an entry that
// fails authentication (a damaged cache file: the store has the frame).
func (f *FS) diskFrame(w frameWant, scan bool) ([]byte, bool) {
	if f.disk == nil {
		return nil, false
	}
	get := f.disk.Get
	if scan {
		get = f.disk.GetScan
	}
	enc, ok := get(w.ref.ID)
	if !ok {
		return nil, false
	}
	fid := frame.ID{Frame: w.ref.ID, Ino: w.ref.sealedIno(w.id.ino), Chunk: w.id.idx}
	raw, err := f.coder.Decode(nil, enc, fid)
	if err == nil && len(raw) == int(w.ref.Raw) {
		return raw, true
	}
	f.disk.Delete(w.ref.ID)
	f.log.Warn("disk cache entry failed authentication; reading the store", "frame", w.ref.ID, "err", err)
	return nil, false
}

// decodeFrame authenticates and decodes frame w as read from the store.
func (f *FS) decodeFrame(w frameWant, enc []byte) ([]byte, error) {
	fid := frame.ID{Frame: w.ref.ID, Ino: w.ref.sealedIno(w.id.ino), Chunk: w.id.idx}
	raw, err := f.coder.Decode(nil, enc, fid)
	if err == nil && len(raw) != int(w.ref.Raw) {
		err = fmt.Errorf("frame %016x decoded to %d bytes, metadata says %d: %w", w.ref.ID, len(raw), w.ref.Raw, frame.ErrCorrupt)
	}
	if err != nil {
		f.stats.CorruptFrames.Add(1)
		f.log.Error("corrupt data frame: reads of this range fail with EIO", "inode", w.id.ino, "chunk", w.id.idx,
			"object", w.ref.Obj.String(), "offset", w.ref.Off, "err", err)
		return nil, fmt.Errorf("inode %d chunk %d: %w: %w", w.id.ino, w.id.idx, ErrIO, err)
	}
	return raw, nil
}

// putFrame keeps a decoded frame in the memory cache.
func (f *FS) putFrame(id uint64, raw []byte, scan bool) {
	if scan {
		f.cache.PutScan(id, raw)
	} else {
		f.cache.Put(id, raw)
	}
}

// flightGroup makes concurrent misses on one frame share one fetch. A
// reader claims the frames it lacks: for each it gets either a flight some
// other reader already runs, or a new one it must run and finish.
type flightGroup struct {
	mu     sync.Mutex
	m      map[uint64]*flight
	joined atomic.Int64 // frames a reader waited for instead of fetching
}

type flight struct {
	id   uint64
	done chan struct{}
	val  []byte
	err  error
}

// claim returns the flight of each frame in ws and, in mine, which of them
// are new: the caller must finish those.
func (g *flightGroup) claim(ws []frameWant) (fls []*flight, mine []bool) {
	fls, mine = make([]*flight, len(ws)), make([]bool, len(ws))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = make(map[uint64]*flight)
	}
	for i, w := range ws {
		fl, ok := g.m[w.ref.ID]
		if !ok {
			fl = &flight{id: w.ref.ID, done: make(chan struct{})}
			g.m[w.ref.ID] = fl
			mine[i] = true
		} else {
			g.joined.Add(1)
		}
		fls[i] = fl
	}
	return fls, mine
}

// finish publishes a flight's result and forgets it, so that a later miss
// (after a failure, or after the cache dropped the frame) fetches afresh.
func (g *flightGroup) finish(fl *flight, val []byte, err error) {
	fl.val, fl.err = val, err
	g.mu.Lock()
	if g.m[fl.id] == fl {
		delete(g.m, fl.id)
	}
	g.mu.Unlock()
	close(fl.done)
}
