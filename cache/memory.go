package cache

import (
	"sync"
	"sync/atomic"
)

const (
	// maxShards bounds lock striping. 32 shards make contention negligible
	// on any machine zerofs is likely to run on.
	maxShards = 32
	// minShardBytes is the smallest share of the capacity a shard gets. Each
	// shard evicts on its own, so a value must fit in one shard; keeping
	// shards at least this big means small caches use fewer shards rather
	// than refusing ordinary frames. Caches of up to minShardBytes are a
	// single shard, i.e. an exact LRU over the whole capacity.
	minShardBytes = 8 << 20
	// EntryOverhead is what each entry is charged on top of len(data): the
	// entry struct, its map slot and list links, rounded up. Without it a
	// flood of tiny values could use far more memory than the capacity says.
	EntryOverhead = 96
)

// Memory is an in-memory LRU cache bounded by bytes. It is split into
// independently locked shards chosen by a hash of the id; each shard holds an
// equal share of the capacity and evicts its own least recently used entries,
// so eviction order is LRU within a shard and approximately LRU overall.
//
// Scan resistance. Frames that a sequential scan reads (PutScan, GetScan) —
// a ZFS resilver or scrub, a backup, read-ahead — are kept in a scan area
// apart from the LRU list: a scan touches each frame about once, and under
// plain LRU one pass over more than the capacity would evict the whole hot
// set. The scan area is a FIFO. It may use whatever room the LRU list leaves
// free, and takes room from the LRU list only up to ScanShare of the
// capacity (enough for read-ahead to land and be read); beyond that a scan
// evicts only its own older frames. A frame the scan area holds becomes hot
// — moves to the LRU list — when an ordinary Get asks for it.
//
// A value is charged len(data) + EntryOverhead bytes. A value whose charge
// exceeds one shard's share of the capacity (MaxValueSize) is ignored by Put.
type Memory struct {
	shards   []shard
	shift    uint  // 64 - log2(len(shards)); selects a shard from the hash's top bits
	capacity int64 // total bytes actually distributed over shards
	misses   atomic.Uint64
}

var _ Cache = (*Memory)(nil)

// shard is one independently locked LRU. Its counters are atomics so Stats
// can read them without taking the lock; they are only written under it.
type shard struct {
	mu       sync.Mutex
	capacity int64
	used     int64 // guarded by mu
	items    map[uint64]*entry
	root     entry // sentinel: root.next is most recently used, root.prev least
	scan     entry // sentinel of the scan area: scan.next newest, scan.prev oldest
	scanUsed int64 // charge of the scan area; guarded by mu
	scanMin  int64 // room the scan area may take from the LRU list

	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions atomic.Uint64
	bytes     atomic.Int64
	entries   atomic.Int64

	_ [64]byte // keep neighbouring shards' locks off this shard's cache lines
}

type entry struct {
	prev, next *entry
	id         uint64
	data       []byte
	charge     int64
	scanned    bool // in the scan area, not the LRU list
}

// ScanShare is the part of the capacity the scan area may take from
// recently used frames: a quarter.
const ScanShare = 4

// NewMemory returns a cache holding at most capacityBytes bytes (counting
// EntryOverhead per entry). A capacity of zero or less disables the cache:
// every Get misses and Put does nothing.
func NewMemory(capacityBytes int64) *Memory {
	m := &Memory{}
	if capacityBytes <= 0 {
		return m
	}
	n, bits := 1, uint(0)
	for n < maxShards && capacityBytes/int64(2*n) >= minShardBytes {
		n *= 2
		bits++
	}
	per := capacityBytes / int64(n)
	m.shards = make([]shard, n)
	m.shift = 64 - bits
	m.capacity = per * int64(n)
	for i := range m.shards {
		s := &m.shards[i]
		s.capacity = per
		s.items = make(map[uint64]*entry)
		s.root.next = &s.root
		s.root.prev = &s.root
		s.scan.next = &s.scan
		s.scan.prev = &s.scan
		s.scanMin = per / ScanShare
	}
	return m
}

// shardFor picks a shard by Fibonacci hashing: frame ids are mostly
// sequential, and multiplying by 2^64/phi spreads consecutive ids evenly over
// the top bits. (A shift by 64 yields 0, which is right for one shard.)
func (m *Memory) shardFor(id uint64) *shard {
	return &m.shards[(id*0x9E3779B97F4A7C15)>>m.shift]
}

// MaxValueSize is the largest len(data) that Put will store, or -1 if the
// cache is disabled.
func (m *Memory) MaxValueSize() int64 {
	if len(m.shards) == 0 {
		return -1
	}
	return m.shards[0].capacity - EntryOverhead
}

// Get implements Cache. A frame in the scan area moves to the LRU list.
func (m *Memory) Get(id uint64) ([]byte, bool) { return m.get(id, false) }

// GetScan is Get for a sequential scan: it leaves the frame where it is, so
// that frames only the scan reads stay first to go.
func (m *Memory) GetScan(id uint64) ([]byte, bool) { return m.get(id, true) }

func (m *Memory) get(id uint64, scan bool) ([]byte, bool) {
	if len(m.shards) == 0 {
		m.misses.Add(1)
		return nil, false
	}
	s := m.shardFor(id)
	s.mu.Lock()
	e, ok := s.items[id]
	if !ok {
		s.mu.Unlock()
		s.misses.Add(1)
		return nil, false
	}
	if !scan {
		s.moveToFront(e)
	}
	data := e.data
	s.mu.Unlock()
	s.hits.Add(1)
	return data, true
}

// Put implements Cache.
func (m *Memory) Put(id uint64, data []byte) { m.put(id, data, false) }

// PutScan stores a frame a sequential scan read (or read-ahead fetched for
// one) in the scan area, unless the cache already holds it.
func (m *Memory) PutScan(id uint64, data []byte) { m.put(id, data, true) }

func (m *Memory) put(id uint64, data []byte, scan bool) {
	if len(m.shards) == 0 {
		return
	}
	s := m.shardFor(id)
	charge := int64(len(data)) + EntryOverhead
	if charge > s.capacity {
		return
	}
	s.mu.Lock()
	e, ok := s.items[id]
	switch {
	case ok && scan:
		s.used += charge - e.charge
		if e.scanned {
			s.scanUsed += charge - e.charge
		}
		e.data, e.charge = data, charge
	case ok:
		s.used += charge - e.charge
		if e.scanned {
			s.scanUsed += charge - e.charge
		}
		e.data, e.charge = data, charge
		s.moveToFront(e)
	default:
		e = &entry{id: id, data: data, charge: charge, scanned: scan}
		s.items[id] = e
		s.link(e)
		s.used += charge
	}
	var evicted uint64
	for s.used > s.capacity {
		s.remove(s.victim(e))
		evicted++
	}
	if evicted > 0 {
		s.evictions.Add(evicted)
	}
	s.bytes.Store(s.used)
	s.entries.Store(int64(len(s.items)))
	s.mu.Unlock()
}

// victim is the entry to evict to make room for keep, which fits on its
// own: the scan area's oldest while the scan area is over its share (or the
// LRU list has nothing else), else the least recently used. Caller holds
// s.mu.
func (s *shard) victim(keep *entry) *entry {
	scanOldest, lruOldest := s.scan.prev, s.root.prev
	scanOK := scanOldest != &s.scan && scanOldest != keep
	lruOK := lruOldest != &s.root && lruOldest != keep
	if scanOK && (s.scanUsed > s.scanMin || !lruOK) {
		return scanOldest
	}
	if lruOK {
		return lruOldest
	}
	return scanOldest
}

// Delete implements Cache.
func (m *Memory) Delete(id uint64) {
	if len(m.shards) == 0 {
		return
	}
	s := m.shardFor(id)
	s.mu.Lock()
	if e, ok := s.items[id]; ok {
		s.remove(e)
		s.bytes.Store(s.used)
		s.entries.Store(int64(len(s.items)))
	}
	s.mu.Unlock()
}

// remove unlinks e and forgets it. Caller holds s.mu.
func (s *shard) remove(e *entry) {
	s.unlink(e)
	delete(s.items, e.id)
	s.used -= e.charge
}

// unlink takes e out of its list. Caller holds s.mu.
func (s *shard) unlink(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
	if e.scanned {
		s.scanUsed -= e.charge
	}
}

// link puts e at the front of its list: most recently used, or newest in
// the scan area. Caller holds s.mu.
func (s *shard) link(e *entry) {
	root := &s.root
	if e.scanned {
		root = &s.scan
		s.scanUsed += e.charge
	}
	e.prev = root
	e.next = root.next
	root.next.prev = e
	root.next = e
}

// moveToFront marks e most recently used, taking it out of the scan area if
// it was there. Caller holds s.mu.
func (s *shard) moveToFront(e *entry) {
	if s.root.next == e {
		return
	}
	s.unlink(e)
	e.scanned = false
	s.link(e)
}

// Stats is a snapshot of a cache's counters. Hits, Misses and Evictions are
// cumulative; Bytes (charged bytes, including EntryOverhead) and Entries are
// current. Counters are read shard by shard without locking, so a snapshot
// taken under load is approximate but each number is individually sound.
type Stats struct {
	Hits      uint64
	Misses    uint64
	Evictions uint64
	Bytes     int64
	Entries   int64
	Capacity  int64
}

// Stats returns the cache's counters, summed over shards.
func (m *Memory) Stats() Stats {
	st := Stats{Misses: m.misses.Load(), Capacity: m.capacity}
	for i := range m.shards {
		s := &m.shards[i]
		st.Hits += s.hits.Load()
		st.Misses += s.misses.Load()
		st.Evictions += s.evictions.Load()
		st.Bytes += s.bytes.Load()
		st.Entries += s.entries.Load()
	}
	return st
}
