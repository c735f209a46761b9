package cache

import (
	"sync"
	"sync/atomic"
)

// Slot bookkeeping and CLOCK eviction.
//
// The slots are split into shards: shard k owns a contiguous run of slots and
// every id whose hash selects shard k lives in one of them. Each shard has its
// own lock, index and clock hand, so concurrent operations on different
// shards never contend. The shard count is a function of the slot count only
// and is recorded in cache.meta, so a reopened file is sharded identically.
const (
	maxDiskShards = 16
	minShardSlots = 512
)

// slotState is where a slot is in its life cycle:
//
//	free ──alloc──▶ writing ──publish──▶ live ──Delete/replace/bad read──▶ clearing ──▶ free
//	                   │                   │                                  │
//	                   └─write error──▶ free └──evict (alloc)──▶ writing        └─pinned──▶ dead ──last unpin──▶ free
//
// Only live slots are in the index, so Get never reads a slot that is being
// written. A slot is never handed out for writing while a Get holds it
// pinned, so a reader cannot see it rewritten underneath it; the checksums
// re-checked by every read are a second, independent guard.
type slotState uint8

const (
	slotFree     slotState = iota
	slotWriting            // reserved by a Put that is writing it without the lock
	slotLive               // in the index; its on-disk bytes are the entry
	slotClearing           // out of the index; its header is being zeroed without the lock
	slotDead               // out of the index; free once the last reader unpins it
)

type slotMeta struct {
	id     uint64
	length uint32 // payload length of a live slot
	pins   int32  // Gets reading this slot right now
	state  slotState
	ref    bool // CLOCK reference bit: set by Get, cleared by the passing hand
}

type diskShard struct {
	mu      sync.Mutex
	base    uint32              // global number of slots[0]
	slots   []slotMeta          // guarded by mu
	index   map[uint64]uint32   // id → local slot number, live slots only; guarded by mu
	pending map[uint64]struct{} // ids with a Put in flight; guarded by mu
	free    []uint32            // local numbers of free slots (a stack); guarded by mu
	hand    uint32              // CLOCK hand; guarded by mu
	ready   bool                // the index of the shard is whole; guarded by mu

	// Counters: written under mu (except hits/misses, which need not be),
	// read without it by Stats.
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions atomic.Uint64
	puts      atomic.Uint64
	deletes   atomic.Uint64
	dropped   atomic.Uint64 // Puts that found no slot to write (all busy)
	live      atomic.Int64
	bytes     atomic.Int64

	_ [64]byte // keep neighbouring shards' locks off this shard's cache lines
}

// shardCount is the number of shards for a file of n slots: a power of two,
// at most maxDiskShards, with at least minShardSlots slots per shard (or one
// shard for small caches).
func shardCount(n int64) int {
	s := 1
	for s < maxDiskShards && n/int64(2*s) >= minShardSlots {
		s *= 2
	}
	return s
}

// shardBounds is the half-open range of global slot numbers owned by shard k
// of shards over n slots.
func shardBounds(k, shards int, n int64) (lo, hi int64) {
	return int64(k) * n / int64(shards), int64(k+1) * n / int64(shards)
}

// init sets up an empty shard owning global slots [lo, hi).
func (s *diskShard) init(lo, hi int64) {
	s.base = uint32(lo)
	s.slots = make([]slotMeta, hi-lo)
	s.index = make(map[uint64]uint32)
	s.pending = make(map[uint64]struct{})
	s.free = make([]uint32, 0, hi-lo)
}

// pushFree returns local slot i to the free list. Caller holds mu.
func (s *diskShard) pushFree(i uint32) {
	m := &s.slots[i]
	*m = slotMeta{state: slotFree}
	s.free = append(s.free, i)
}

// alloc reserves a slot for writing id, evicting a live entry by CLOCK if no
// slot is free, and returns its local number, or false if every slot is busy
// (being written, cleared or read). Caller holds mu.
//
// The hand sweeps at most two full turns: the first may only clear reference
// bits, the second then finds an unreferenced slot unless all are busy. In
// steady state each eviction clears on average about one reference bit per
// slot passed, so the cost is amortised O(1).
func (s *diskShard) alloc(id uint64) (uint32, bool) {
	var i uint32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		n := uint32(len(s.slots))
		found := false
		for step := uint32(0); step < 2*n; step++ {
			j := s.hand
			if s.hand++; s.hand == n {
				s.hand = 0
			}
			m := &s.slots[j]
			if m.state != slotLive || m.pins > 0 {
				continue
			}
			if m.ref {
				m.ref = false
				continue
			}
			delete(s.index, m.id)
			s.live.Add(-1)
			s.bytes.Add(-int64(m.length))
			s.evictions.Add(1)
			i, found = j, true
			break
		}
		if !found {
			return 0, false
		}
	}
	s.slots[i] = slotMeta{id: id, state: slotWriting}
	return i, true
}

// unlist takes live slot i out of the index and marks it slotClearing: the
// caller must then call Disk.finishClear for it, after releasing mu. Caller
// holds mu.
func (s *diskShard) unlist(i uint32) {
	m := &s.slots[i]
	delete(s.index, m.id)
	s.live.Add(-1)
	s.bytes.Add(-int64(m.length))
	m.state = slotClearing
	m.ref = false
}

// release ends the clearing of slot i: it becomes free, or dead until its last
// reader unpins it. Caller holds mu.
func (s *diskShard) release(i uint32) {
	if s.slots[i].pins > 0 {
		s.slots[i].state = slotDead
		return
	}
	s.pushFree(i)
}
