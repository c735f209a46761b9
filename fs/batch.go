package fs

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"

	"zerofs/wal"
)

// A batch collects the changes made between two seals. Life of a batch:
//
//	open     mutations add to it (under FS.viewMu read-locked, so a seal
//	         never splits one request across two batches)
//	sealed   rotated out by a flush, its size or its age; immutable from now
//	         on. The sealer encodes its dirty chunks into frames and its
//	         changes into a delta, and appends both to the WAL as one record;
//	         meanwhile new mutations go into the next open batch.
//	durable  the record and all before it are in the WAL store: flushes
//	         waiting on it return
//	applied  its delta is in the local pebble database; it leaves the chain
//	         and its memory is released
//
// Readers see the newest state by looking through the chain — the open batch,
// then sealed batches newest first — and then pebble. Everything in pebble is
// durable; nothing in pebble points at data that is not (DESIGN.md rule 3).
type batch struct {
	num      uint64 // 1, 2, 3... in seal order
	created  time.Time
	sealedAt time.Time

	mu    sync.Mutex // guards kv and tombs
	kv    *btree.BTreeG[kvItem]
	tombs []chunkRange

	shards [chunkShards]chunkShard

	dataBytes atomic.Int64 // bytes held by dirty chunk buffers
	changes   atomic.Int64 // mutations so far; zero means nothing to seal

	// Set by the sealer and completer.
	delta   *delta
	frames  []sealedFrame
	commit  *wal.Commit
	pos     wal.Position
	dataOff int64 // offset of the record's data area
	recSize int64 // size of the whole record object
	durable chan struct{}
	err     error // valid once durable is closed: nil on success
	once    sync.Once
}

// finish records the batch's outcome and wakes its flush waiters, once.
func (b *batch) finish(err error) {
	b.once.Do(func() {
		b.err = err
		close(b.durable)
	})
}

const chunkShards = 64

type chunkShard struct {
	mu sync.Mutex
	m  map[chunkID]*dirtyChunk
}

type chunkID struct{ ino, idx uint64 }

func (c chunkID) shard() int { return int((c.ino*0x9E3779B97F4A7C15 ^ c.idx) % chunkShards) }

// dirtyChunk is a chunk as changed by one batch. Its bytes are the union of
// data over cover, base pieces elsewhere, and zeros where neither is. base and
// cover never overlap. Guarded by the chunk's lock in FS.chunkLocks while the
// batch is open.
type dirtyChunk struct {
	base  []Piece // pieces of the older state still visible
	data  []byte  // chunk-sized buffer, nil until the first write
	cover spans   // ranges of data holding written bytes
}

// sealedFrame is a frame encoded by the sealer, kept to fill the memory cache
// once it is durable and to serve the packer without a GET.
type sealedFrame struct {
	id       uint64
	ino, idx uint64
	raw      []byte
	enc      []byte
	off      uint64 // offset in the record's data area
}

func newBatch(num uint64) *batch {
	b := &batch{
		num:     num,
		created: time.Now(),
		kv:      btree.NewG(16, func(a, b kvItem) bool { return a.key < b.key }),
		durable: make(chan struct{}),
	}
	for i := range b.shards {
		b.shards[i].m = make(map[chunkID]*dirtyChunk)
	}
	return b
}

func (b *batch) getChunk(id chunkID) *dirtyChunk {
	s := &b.shards[id.shard()]
	s.mu.Lock()
	dc := s.m[id]
	s.mu.Unlock()
	return dc
}

func (b *batch) putChunk(id chunkID, dc *dirtyChunk) {
	s := &b.shards[id.shard()]
	s.mu.Lock()
	s.m[id] = dc
	s.mu.Unlock()
	b.changes.Add(1)
}

// tombCovers reports whether a punch in this batch covers chunk id.
func (b *batch) tombCovers(id chunkID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.tombs {
		if t.ino == id.ino && id.idx >= t.from && id.idx < t.to {
			return true
		}
	}
	return false
}

// punch records that chunks [from, to) of ino are holes as of now: the
// batch's own dirty chunks there are dropped, and the tomb hides older state.
// The caller holds the locks of the chunks it dirtied in the range or
// otherwise excludes writers to it.
func (b *batch) punch(ino, from, to uint64) {
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for id, dc := range s.m {
			if id.ino == ino && id.idx >= from && id.idx < to {
				if dc.data != nil {
					b.dataBytes.Add(-int64(len(dc.data)))
				}
				delete(s.m, id)
			}
		}
		s.mu.Unlock()
	}
	b.mu.Lock()
	b.tombs = append(b.tombs, chunkRange{ino: ino, from: from, to: to})
	b.mu.Unlock()
	b.changes.Add(1)
}

func (b *batch) setKV(key []byte, val []byte) {
	b.mu.Lock()
	b.kv.ReplaceOrInsert(kvItem{key: string(key), val: val})
	b.mu.Unlock()
	b.changes.Add(1)
}

func (b *batch) deleteKV(key []byte) {
	b.mu.Lock()
	b.kv.ReplaceOrInsert(kvItem{key: string(key), del: true})
	b.mu.Unlock()
	b.changes.Add(1)
}

// getKV returns the batch's item for key, if it has one.
func (b *batch) getKV(key []byte) (kvItem, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kv.Get(kvItem{key: string(key)})
}

// scanKV calls fn for the batch's items with start <= key < end, in order.
func (b *batch) scanKV(start, end []byte, fn func(kvItem) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.kv.AscendRange(kvItem{key: string(start)}, kvItem{key: string(end)}, fn)
}

func (b *batch) empty() bool { return b.changes.Load() == 0 }
