package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/cache"
)

// Read-ahead.
//
// A cold sequential read on a store 20 ms away is bound by round trips: even
// with one GET per 1 MiB request (fetch.go), a client at queue depth 8 waits
// for the store on every request. Read-ahead keeps GETs for what a
// sequential reader will ask for next in flight before it asks, so its
// requests find the frames in memory (or in flight, which they join).
//
// Streams. Block devices have no file descriptors, so, like the kernel's
// per-file read-ahead, a stream is inferred from the requests: a read that
// starts near where an existing stream of the same inode ended (up to 1 MiB
// or 16 requests either side: pipelined requests, spread by a kernel client
// over several connections, are served out of order) continues it. Any
// other read starts a new stream in a way of the inode's table slot: the
// least recently used way without read-ahead running, so that a random
// reader of a device (whose every read starts a stream) cannot push out the
// sequential reader next to it; only when every way runs read-ahead does
// the least recently used of them go. Several ways per slot let several
// readers of one device (a ZFS resilver, a parallel restore) keep their own.
//
// Each stream must read readAheadMin bytes in a row before it gets any
// read-ahead, so scattered reads that happen to land near each other do
// not trigger it. Then its window starts at 4 MiB and doubles each time it
// is topped up, up to the configured cap. It is topped up in whole steps of
// up to 16 MiB (one GET each, see fetch.go) as soon as a step fits, so that
// the window stays full: a stream reads as fast as its bytes in flight over
// a GET's duration. A stream that is replaced cancels its read-ahead GETs
// still queued or in flight; demand readers that had joined them fetch for
// themselves.
//
// Memory. Read-ahead lands in the memory cache, in its scan area (see
// cache.Memory): frames a sequential stream reads are kept apart from the
// hot set and evicted first, so one big pass cannot flush the hot set out.
// What is read ahead but not read yet — in flight or landed — is capped
// across all streams at the room the scan area is sure to have, a
// ScanShare of the memory cache (ReadAheadCap): past it, read-ahead would
// be evicted before its reader came for it, and fetched or decoded twice.
// That was the cost of four readers of one device each reading 64 MiB
// ahead into a 256 MiB cache: the frames that went were read again from
// the disk cache and decrypted again, and four readers read at half the
// speed of one. Past the cap a stream issues no more until readers catch
// up; streams share the cap as they come, and one that has not been read
// for raIdle no longer holds any of it.

const (
	raSlots      = 64      // table slots, chosen by inode
	raWays       = 8       // streams per slot: a resilver reads with several
	readAheadMin = 1 << 20 // sequential bytes before read-ahead starts
	raFirst      = 4 << 20 // first window: reached only after readAheadMin in a row
	raStep       = maxRunBytes
	raSlack      = 1 << 20 // how far off a stream's end a read may start and continue it
	raIdle       = 2 * time.Second
)

// ReadAheadCap is how many bytes may be read ahead of all readers at once
// (see Memory above), for a memory cache of cacheBytes and a window of at
// most window bytes per stream; zero if read-ahead is off.
func ReadAheadCap(cacheBytes, window int64) int64 {
	switch {
	case window <= 0:
		return 0
	case cacheBytes <= 0:
		// No memory cache: read-ahead lands in the disk cache alone.
		return 2 * window
	}
	return max(cacheBytes/cache.ScanShare, raFirst)
}

type readAhead struct {
	max      uint64       // window cap; 0 disables read-ahead
	aheadCap int64        // ReadAheadCap
	inflight atomic.Int64 // bytes of read-ahead being fetched
	issued   atomic.Int64 // bytes of read-ahead issued, ever
	slots    [raSlots]raSlot
}

type raSlot struct {
	mu      sync.Mutex
	streams [raWays]raStream
	// Each way's bytes read ahead of its reader, and when it was last
	// read (unix ns), published for aheadNow, which sums them over every
	// slot without taking their locks.
	ahead [raWays]atomic.Int64
	used  [raWays]atomic.Int64
}

// aheadNow is the bytes read ahead of the streams that have read ahead
// and were read in the last raIdle, and how many there are, leaving out
// way skip of slot skipSlot.
func (ra *readAhead) aheadNow(now int64, skipSlot *raSlot, skip int) (ahead int64, streams int) {
	for i := range ra.slots {
		sl := &ra.slots[i]
		for w := range sl.ahead {
			if (sl != skipSlot || w != skip) && now-sl.used[w].Load() < int64(raIdle) {
				ahead += sl.ahead[w].Load()
				streams++
			}
		}
	}
	return ahead, streams
}

type raStream struct {
	ino     uint64
	used    time.Time
	next    uint64 // end of the furthest read of the stream
	seq     uint64 // bytes read sequentially so far
	window  uint64
	issued  uint64 // read-ahead issued up to here
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
}

// victim is the way a new stream takes: the least recently used of those
// that have not started read-ahead, or if all have, the least recently used.
// Why: a random reader of a device starts a new stream with every read, and
// those must not push out a sequential reader of the same device (a scrub
// next to a database) whose read-ahead is running. Caller holds sl.mu.
func (sl *raSlot) victim() int {
	lru, lruIdle := -1, -1
	for i := range sl.streams {
		s := &sl.streams[i]
		if lru < 0 || s.used.Before(sl.streams[lru].used) {
			lru = i
		}
		if !s.started && (lruIdle < 0 || s.used.Before(sl.streams[lruIdle].used)) {
			lruIdle = i
		}
	}
	if lruIdle >= 0 {
		return lruIdle
	}
	return lru
}

// raRange is read-ahead to fetch: bytes [lo, hi) of ino.
type raRange struct {
	ctx    context.Context
	ino    uint64
	lo, hi uint64
}

// observe notes a read of [off, off+n) of ino, whose size is size, and
// returns whether it continues a sequential stream, and what to read ahead
// now (appended to todo).
func (ra *readAhead) observe(parent context.Context, ino, off, n, size uint64, todo []raRange) (bool, []raRange) {
	if ra.max == 0 || n == 0 {
		return false, todo
	}
	sl := &ra.slots[(ino*0x9E3779B97F4A7C15)>>58%raSlots]
	sl.mu.Lock()
	defer sl.mu.Unlock()
	now := time.Now()
	end := off + n
	way := -1
	for i := range sl.streams {
		s := &sl.streams[i]
		if s.ino != ino || s.next == 0 {
			continue
		}
		// Pipelined requests are served out of order: a read may start
		// behind the stream's end (within its window) or some requests
		// past it (a kernel client spreads a deep queue of 128 KiB reads
		// over several connections).
		back, fwd := max(s.window, 16*n, raSlack), max(16*n, raSlack)
		if off+back >= s.next && off <= s.next+fwd {
			way = i
			break
		}
	}
	if way < 0 {
		way = sl.victim()
		st := &sl.streams[way]
		if st.cancel != nil {
			st.cancel()
		}
		*st = raStream{ino: ino, used: now, next: end, seq: n}
		sl.ahead[way].Store(0)
		sl.used[way].Store(0)
		return false, todo
	}
	st := &sl.streams[way]
	st.used = now
	defer func() {
		if st.started {
			sl.ahead[way].Store(int64(st.issued - min(st.issued, st.next)))
			sl.used[way].Store(now.UnixNano())
		}
	}()
	if end > st.next {
		st.seq += min(end-st.next, n) // a jump forward is not bytes read
		st.next = end
	}
	if st.seq < readAheadMin {
		return false, todo
	}
	if !st.started {
		st.started = true
		st.window = min(raFirst, ra.max)
		st.issued = st.next
		st.ctx, st.cancel = context.WithCancel(parent)
	}
	if st.issued < st.next {
		st.issued = st.next // the reader overtook read-ahead
	}
	// Top up in whole steps, as soon as one fits in the window: what a
	// stream reads per second is what it has in flight over how long a GET
	// takes, so the window is kept full, not refilled when half empty.
	step := min(raStep, st.window/2)
	if st.issued+step > st.next+st.window && st.issued < size {
		return true, todo
	}
	// The cap is shared: this stream may hold what the others leave, but
	// no more than its share once there are several, so that the first
	// streams do not starve later ones. Steps shrink to half a share, so
	// that a stream keeps reads in flight while its reader catches up.
	others, streams := ra.aheadNow(now.UnixNano(), sl, way)
	share := ra.aheadCap / int64(streams+1)
	room := min(ra.aheadCap-others, share) - int64(st.issued-st.next)
	st.window = min(2*st.window, ra.max) // the reader keeps up: reach further
	step = min(raStep, st.window/2, uint64(max(share/2, 1<<20)))
	target := min(st.next+st.window, size)
	for st.issued < target {
		if st.issued+step > target && target < size {
			break // only whole steps, but the file's end
		}
		hi := min(st.issued+step, target)
		if int64(hi-st.issued) > room {
			break
		}
		room -= int64(hi - st.issued)
		ra.inflight.Add(int64(hi - st.issued))
		ra.issued.Add(int64(hi - st.issued))
		todo = append(todo, raRange{ctx: st.ctx, ino: ino, lo: st.issued, hi: hi})
		st.issued = hi
	}
	return true, todo
}

// startReadAhead fetches rs in the background. Close waits for them (they
// read metadata), and cancels their fetches.
func (f *FS) startReadAhead(rs []raRange) {
	if len(rs) == 0 {
		return
	}
	f.closeMu.Lock()
	if f.closed {
		f.closeMu.Unlock()
		for _, r := range rs {
			f.ra.inflight.Add(-int64(r.hi - r.lo))
		}
		return
	}
	f.bg.Add(len(rs))
	f.closeMu.Unlock()
	for _, r := range rs {
		go func() {
			defer f.bg.Done()
			f.readAheadRange(r)
		}()
	}
}

// readAheadRange fetches [lo, hi) of ino into the memory cache's scan area.
func (f *FS) readAheadRange(r raRange) {
	defer f.ra.inflight.Add(-int64(r.hi - r.lo))
	if r.ctx.Err() != nil {
		return
	}
	chain := f.chain()
	cs := uint64(f.chunkSize)
	var want []frameWant
	for idx := r.lo / cs; idx*cs < r.hi; idx++ {
		id := chunkID{r.ino, idx}
		mu := f.chunkLock(id)
		mu.Lock()
		dc, pieces, err := f.lookupChunk(chain, id)
		mu.Unlock()
		if err != nil {
			return
		}
		if dc != nil {
			pieces = dc.base
		}
		for _, p := range pieces {
			if _, ok := f.memFrame(p.Frame.ID, true); !ok {
				want = append(want, frameWant{p.Frame, id})
			}
		}
	}
	if len(want) == 0 {
		return
	}
	f.fetchFrames(r.ctx, want, fetchOpts{runCtx: r.ctx, scan: true})
}
