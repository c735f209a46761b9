package fs

import (
	"slices"
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

	// enc is published by the sealer once the batch is encoded and its WAL
	// append started: see encoded.
	enc atomic.Pointer[encoded]

	// Set by the sealer and completer.
	delta   *delta
	frames  []sealedFrame
	commit  *wal.Commit
	pos     wal.Position
	dataOff int64  // offset of the record's data area
	recSize int64  // size of the whole record object
	recBuf  []byte // the record, until the applier hands it back to FS.recBufs
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

// encoded is what a batch became once the sealer encoded it and gave it a
// WAL sequence number: each chunk's final pieces, with the references to the
// record itself resolved. A newer batch changing one of those chunks takes
// these pieces as its base, instead of copying the older batch's data (and
// writing it to the WAL a second time). Until the record is durable, its
// frames are read from FS.pending.
type encoded struct {
	chunks map[chunkID][]Piece
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
//
// The buffer holds only the part of the chunk written so far (from dataOff):
// a 4 KiB write into a 64 KiB chunk costs 4 KiB of memory, not 64, which also
// keeps the batch size (what seals it, and what back-pressure counts) honest.
type dirtyChunk struct {
	base    []Piece // pieces of the older state still visible
	data    []byte  // chunk bytes [dataOff, dataOff+len(data)); nil until the first write
	dataOff uint32
	cover   spans // ranges of the chunk holding written bytes, within data
}

// bytes returns the buffer for chunk bytes [a, e), which cover must include.
func (dc *dirtyChunk) bytes(a, e uint32) []byte {
	return dc.data[a-dc.dataOff : e-dc.dataOff]
}

// grow makes the buffer cover chunk bytes [a, e) and returns how many bytes
// it grew by. Once more than a quarter of the chunk is written the buffer
// becomes the whole chunk, so small sequential writes do not copy it over
// and over.
func (dc *dirtyChunk) grow(a, e, chunkSize uint32) int64 {
	end := dc.dataOff + uint32(len(dc.data))
	if dc.data != nil && a >= dc.dataOff && e <= end {
		return 0
	}
	lo, hi := a, e
	if dc.data != nil {
		lo, hi = min(a, dc.dataOff), max(e, end)
	}
	if hi-lo > chunkSize/4 {
		lo, hi = 0, chunkSize
	}
	nd := make([]byte, hi-lo)
	for _, s := range dc.cover { // only covered bytes are meaningful
		copy(nd[s.a-lo:s.b-lo], dc.bytes(s.a, s.b))
	}
	grew := int64(len(nd) - len(dc.data))
	dc.data, dc.dataOff = nd, lo
	return grew
}

// clone copies the chunk's state for a newer batch.
func (dc *dirtyChunk) clone() *dirtyChunk {
	return &dirtyChunk{base: slices.Clone(dc.base), data: slices.Clone(dc.data), dataOff: dc.dataOff, cover: slices.Clone(dc.cover)}
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
