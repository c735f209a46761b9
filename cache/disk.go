package cache

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Disk is a bounded on-disk cache of encoded frames in one preallocated file
// of fixed-size slots.
//
// It sits between the memory cache and the object store and holds frames as
// they are stored in segments: compressed and then encrypted and
// authenticated. Nothing in plaintext reaches the local disk, and every frame
// read from the cache is authenticated again when the caller decodes it. The
// cache checks its own slots as well (see the slot format in disk_slots.go):
// a torn, damaged, foreign or misplaced slot reads as a miss, and Get never
// returns bytes stored under a different id.
//
// Files, in the directory given to OpenDisk:
//
//	frames.cache  the slots: capacityBytes rounded down to whole slots, preallocated
//	cache.meta    format version, slot size, slot and shard counts
//	index.snap    the index as a clean Close left it (disk_index.go)
//
// The index (id → slot) lives in memory. OpenDisk loads it from index.snap
// when the last Close saved it, else rebuilds it by reading every slot's
// header (see scan in disk_open.go) in the background: until a shard is
// scanned, its Gets miss and its Puts are dropped. Nothing is ever
// fsynced: a slot torn by a crash fails its checksums and is simply empty.
//
// Eviction is CLOCK (second chance) per shard; see disk_clock.go. Each shard
// owns a fixed run of slots and the ids that hash to it, so one shard may
// start evicting slightly before another has filled (with sequential ids the
// hash spreads them within a fraction of a percent). Get, Put and Delete hold
// a shard's lock only for bookkeeping, never across disk I/O. Memory use is
// about 60 bytes per slot (slot table plus index), e.g. 9 MiB for 10 GiB of
// 68 KiB slots.
//
// I/O errors are counted in Stats, logged at most once a minute per kind, and
// turn into misses (Get) or dropped writes (Put); after a failed write, Puts
// are skipped for writeBackoff so a full or failing disk is not hammered.
//
// Differences from Memory worth knowing: Get returns a fresh copy the caller
// owns; Put copies data, so the caller may reuse it; a Put of an id whose Put
// is still in flight is dropped (ids are immutable, so it would store the same
// bytes).
type Disk struct {
	f          *os.File // nil if disabled
	log        *slog.Logger
	slotSize   int
	maxPayload int
	nslots     int64
	shards     []diskShard
	shift      uint // 64 - log2(len(shards))

	seq    atomic.Uint64 // last write sequence number used
	closed atomic.Bool
	bufs   sync.Pool // *[]byte of slotSize bytes, for Put

	noWritesUntil atomic.Int64 // UnixNano; Puts are skipped before it
	oversized     atomic.Uint64
	offMisses     atomic.Uint64 // misses of a disabled or closed cache
	errs          diskErrors

	dir  string // where index.snap is saved at Close
	meta []byte // cache.meta's content, which the saved index must match

	// The index: loaded from index.snap, or rebuilt by a scan that runs in
	// the background (disk_index.go). scanDone is closed when it is whole.
	scanDone    chan struct{}
	scanTime    atomic.Int64 // ns: to load or rebuild the index
	scanEntries atomic.Int64
	indexLoaded bool // from index.snap, not scanned
	scanning    atomic.Bool
}

var _ Cache = (*Disk)(nil)

// writeBackoff is how long Puts are skipped after a write fails.
const writeBackoff = time.Second

// zeroHeader overwrites a slot's header to empty the slot.
var zeroHeader [DiskHeaderSize]byte

// DiskStats is a snapshot of a Disk's counters. The cumulative counters are
// read shard by shard without locking, so a snapshot taken under load is
// approximate but each number is individually sound.
type DiskStats struct {
	Hits      uint64 // Gets that returned data
	Misses    uint64 // Gets that did not, including those that failed a check
	Evictions uint64 // live entries displaced by CLOCK to make room
	Puts      uint64 // frames written and published
	Deletes   uint64 // entries removed by Delete
	Dropped   uint64 // Puts not stored: no slot free to write, write backoff, or one for the same id in flight
	Oversized uint64 // Puts ignored because the frame exceeds the slot payload

	Corrupt     uint64 // reads whose bytes failed their checks (counted in Misses too)
	ReadErrors  uint64 // failed reads (I/O errors)
	WriteErrors uint64 // failed writes (I/O errors, disk full)

	SlotsUsed  int64 // slots holding a live entry
	SlotsTotal int64
	SlotSize   int
	Bytes      int64 // payload bytes in live slots
	Capacity   int64 // size of the data file: SlotsTotal * SlotSize

	ScanTime    time.Duration // how long loading or rebuilding the index took (0 while a scan runs)
	ScanEntries int64         // entries the saved index or the scan found
	IndexLoaded bool          // the index came from index.snap, not a scan
	Scanning    bool          // the scan is rebuilding the index (after a crash)
}

// IndexState says how the index came back at open: "rebuilding" (the scan
// after a crash is running), "loaded" (from index.snap), "rebuilt" (the
// scan finished) or "new" (nothing to bring back).
func (s DiskStats) IndexState() string {
	switch {
	case s.Scanning:
		return "rebuilding"
	case s.IndexLoaded:
		return "loaded"
	case s.ScanTime > 0:
		return "rebuilt"
	}
	return "new"
}

// SlotSize is the size of the cache's slots (0 if disabled).
func (d *Disk) SlotSize() int {
	if d.f == nil {
		return 0
	}
	return d.slotSize
}

// MaxValueSize is the largest frame Put will store, or -1 if the cache is
// disabled.
func (d *Disk) MaxValueSize() int64 {
	if d.f == nil {
		return -1
	}
	return int64(d.maxPayload)
}

func (d *Disk) shardFor(id uint64) *diskShard {
	return &d.shards[(id*0x9E3779B97F4A7C15)>>d.shift]
}

func (d *Disk) offset(slot uint32) int64 { return int64(slot) * int64(d.slotSize) }

// Get returns a copy of the frame stored under id and true, or nil and false
// if the cache does not hold it or its slot fails its checks (a slot that
// fails is dropped from the cache).
func (d *Disk) Get(id uint64) ([]byte, bool) { return d.get(id, true) }

// GetScan is Get for a sequential scan: it leaves the entry's CLOCK
// reference bit alone, so a frame only scans read (Put leaves the bit clear)
// is the first the hand evicts, and hot frames outlast a pass over the
// whole cache by one more turn of the hand.
func (d *Disk) GetScan(id uint64) ([]byte, bool) { return d.get(id, false) }

func (d *Disk) get(id uint64, ref bool) ([]byte, bool) {
	if d.f == nil || d.closed.Load() {
		d.offMisses.Add(1)
		return nil, false
	}
	s := d.shardFor(id)
	s.mu.Lock()
	i, ok := s.index[id]
	if !ok {
		s.mu.Unlock()
		s.misses.Add(1)
		return nil, false
	}
	m := &s.slots[i] // s.slots is never reallocated
	if ref {
		m.ref = true
	}
	m.pins++ // no Put reuses the slot until we unpin it
	n := int(m.length)
	s.mu.Unlock()

	slot := s.base + i
	buf := make([]byte, DiskHeaderSize+n)
	_, err := d.f.ReadAt(buf, d.offset(slot))
	good := err == nil && checkSlot(buf, slot, id, n, d.maxPayload)

	drop := false
	s.mu.Lock()
	m.pins--
	if !good {
		// Drop the entry unless a concurrent Delete or replacing Put got to
		// it first.
		if j, ok := s.index[id]; ok && j == i {
			s.unlist(i)
			drop = true
		}
	}
	if m.pins == 0 && m.state == slotDead {
		s.pushFree(i)
	}
	s.mu.Unlock()

	if good {
		s.hits.Add(1)
		return buf[DiskHeaderSize:], true
	}
	s.misses.Add(1)
	if !drop {
		// A Delete or replacing Put unlisted the slot while we read it, and
		// may have cleared its header: a plain miss, not a fault.
		return nil, false
	}
	switch {
	case d.closed.Load():
		// Close raced with the read; nothing is known to be wrong.
	case err != nil:
		d.errs.report(d.log, errRead, err, slot, id)
	default:
		d.errs.report(d.log, errCorrupt, nil, slot, id)
	}
	d.finishClear(s, i, id)
	return nil, false
}

// Put stores a copy of data under id. It is best effort: frames longer than
// MaxValueSize are ignored, and so is a Put that finds no slot it can take
// right away (every slot busy), one for an id whose Put is in flight, and
// any Put shortly after a write error. Putting an id that is present replaces
// its entry. The write is a plain pwrite into the page cache; nothing is
// fsynced.
func (d *Disk) Put(id uint64, data []byte) {
	if d.f == nil || d.closed.Load() {
		return
	}
	if len(data) > d.maxPayload {
		d.oversized.Add(1)
		return
	}
	s := d.shardFor(id)
	if until := d.noWritesUntil.Load(); until != 0 {
		if time.Now().UnixNano() < until {
			s.dropped.Add(1)
			return
		}
		d.noWritesUntil.CompareAndSwap(until, 0)
	}
	s.mu.Lock()
	if !s.ready { // still being scanned
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	}
	if _, busy := s.pending[id]; busy {
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	}
	i, ok := s.alloc(id)
	if !ok {
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	}
	s.pending[id] = struct{}{}
	s.mu.Unlock()

	slot := s.base + i
	bp := d.bufs.Get().(*[]byte)
	_, err := d.f.WriteAt(encodeSlot(*bp, slot, id, d.seq.Add(1), data), d.offset(slot))
	d.bufs.Put(bp)

	var old uint32
	replaced := false
	s.mu.Lock()
	delete(s.pending, id)
	if err != nil {
		s.pushFree(i)
	} else {
		if j, ok := s.index[id]; ok {
			s.unlist(j)
			old, replaced = j, true
		}
		s.index[id] = i
		m := &s.slots[i]
		m.state = slotLive
		m.length = uint32(len(data))
		s.live.Add(1)
		s.bytes.Add(int64(len(data)))
		s.puts.Add(1)
	}
	s.mu.Unlock()

	if err != nil {
		if !d.closed.Load() {
			d.noWritesUntil.Store(time.Now().Add(writeBackoff).UnixNano())
			d.errs.report(d.log, errWrite, err, slot, id)
		}
		return
	}
	if replaced {
		d.finishClear(s, old, id)
	}
}

// PutScan is Put: a new entry's reference bit is clear either way, and only
// Get sets it.
func (d *Disk) PutScan(id uint64, data []byte) { d.Put(id, data) }

// Delete drops id from the cache, if present, and empties its slot on disk so
// the entry does not come back when the cache is reopened. A Put of id in
// flight when Delete is called may still publish its entry afterwards.
func (d *Disk) Delete(id uint64) {
	if d.f == nil || d.closed.Load() {
		return
	}
	s := d.shardFor(id)
	s.mu.Lock()
	i, ok := s.index[id]
	if !ok {
		s.mu.Unlock()
		return
	}
	s.unlist(i)
	s.deletes.Add(1)
	s.mu.Unlock()
	d.finishClear(s, i, id)
}

// finishClear zeroes the header of slot i of s, which held id and which the
// caller has unlisted (slotClearing), and then releases the slot. The zeroing only keeps the entry
// from being found again by the next open's scan; if it fails, the slot is
// released anyway.
func (d *Disk) finishClear(s *diskShard, i uint32, id uint64) {
	slot := s.base + i
	if _, err := d.f.WriteAt(zeroHeader[:], d.offset(slot)); err != nil && !d.closed.Load() {
		d.errs.report(d.log, errWrite, err, slot, id)
	}
	s.mu.Lock()
	s.release(i)
	s.mu.Unlock()
}

// Stats returns the cache's counters.
func (d *Disk) Stats() DiskStats {
	st := DiskStats{
		Misses:      d.offMisses.Load(),
		Oversized:   d.oversized.Load(),
		Corrupt:     d.errs.count[errCorrupt].Load(),
		ReadErrors:  d.errs.count[errRead].Load(),
		WriteErrors: d.errs.count[errWrite].Load(),
		ScanTime:    time.Duration(d.scanTime.Load()),
		ScanEntries: d.scanEntries.Load(),
		IndexLoaded: d.indexLoaded,
		Scanning:    d.scanning.Load(),
	}
	if d.f == nil {
		return st
	}
	st.SlotsTotal = d.nslots
	st.SlotSize = d.slotSize
	st.Capacity = d.nslots * int64(d.slotSize)
	for k := range d.shards {
		s := &d.shards[k]
		st.Hits += s.hits.Load()
		st.Misses += s.misses.Load()
		st.Evictions += s.evictions.Load()
		st.Puts += s.puts.Load()
		st.Deletes += s.deletes.Load()
		st.Dropped += s.dropped.Load()
		st.SlotsUsed += s.live.Load()
		st.Bytes += s.bytes.Load()
	}
	return st
}

// Close saves the index (index.snap, so the next OpenDisk need not scan)
// and closes the data file (releasing its lock). A scan still running is
// stopped, and then nothing is saved. Afterwards Get misses and Put and
// Delete do nothing; operations in flight at Close finish harmlessly.
// Closing twice, or closing a disabled cache, returns nil.
func (d *Disk) Close() error {
	if d.f == nil || !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	<-d.scanDone
	if err := d.saveIndex(d.dir, d.meta); err != nil {
		d.log.Warn("disk cache: index not saved; the next start scans the cache", "dir", d.dir, "err", err)
	}
	return d.f.Close()
}

// WaitScan waits until the index is whole: loaded, or rebuilt by the scan
// (or the scan stopped by Close).
func (d *Disk) WaitScan() {
	if d.scanDone != nil {
		<-d.scanDone
	}
}
