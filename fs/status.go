package fs

import (
	"encoding/hex"
	"time"

	"zerofs/cache"
	"zerofs/store"
	"zerofs/store/sched"
)

// Status is a snapshot of the filesystem's state for operators.
type Status struct {
	FSID           string `json:"fsid"`
	Epoch          uint64 `json:"epoch"`
	Writable       bool   `json:"writable"`
	Error          string `json:"error,omitempty"` // why it stopped accepting writes
	DirtyBytes     int64  `json:"dirty_bytes"`     // data in batches not yet applied
	OpenBatchBytes int64  `json:"open_batch_bytes"`
	// MemoryWaiters: mutations waiting for dirty memory now (back-pressure:
	// the store is slower than the writers, or down).
	MemoryWaiters int `json:"memory_waiters"`
	// MemoryWaits: mutations that had to wait for dirty memory since start.
	MemoryWaits   int64  `json:"memory_waits"`
	SealedBatches int    `json:"sealed_batches"` // sealed, being written or applied
	WALLastSeq    uint64 `json:"wal_last_seq"`   // newest durable WAL record
	CheckpointSeq uint64 `json:"checkpoint_seq"` // WAL records up to here are in the checkpoint
	WALDepth      uint64 `json:"wal_depth"`      // records recovery would replay
	ChunkSize     int    `json:"chunk_size"`

	Cache     *cache.Stats     `json:"cache,omitempty"`
	DiskCache *cache.DiskStats `json:"disk_cache,omitempty"`

	FlushRecords  int64 `json:"flush_records"`
	StoreGets     int64 `json:"store_gets"`
	StoreGetBytes int64 `json:"store_get_bytes"`
	// StoreErrors: failed data reads plus failed (retried) WAL appends.
	StoreErrors   int64 `json:"store_errors"`
	CorruptFrames int64 `json:"corrupt_frames"`
	// Interrupted lists the files (inodes) that may have lost acknowledged
	// writes when the last run ended, until cleared (marks.go).
	Interrupted []uint64 `json:"interrupted,omitempty"`
	GCDeleted   int64    `json:"gc_deleted"`
	GCPacked    int64    `json:"gc_packed"`
	// Snapshots and the bytes they hold that the current state does not
	// use (snapshot.go): what deleting all of them would free.
	Snapshots     int   `json:"snapshots"`
	SnapshotBytes int64 `json:"snapshot_bytes"`

	// What the object store costs: the requests made since start, by store
	// and operation, against the file data clients read and wrote and the
	// time up. (Only stores behind a store/sched scheduler are counted, as
	// `zerofs run` has them.)
	UptimeSeconds float64                     `json:"uptime_seconds"`
	ReadBytes     int64                       `json:"read_bytes"`
	WrittenBytes  int64                       `json:"written_bytes"`
	ReadAhead     int64                       `json:"read_ahead_bytes"`
	Requests      map[string]map[string]int64 `json:"requests,omitempty"` // store ("main", "wal") → op → count
}

// Status reports the filesystem's state.
func (f *FS) Status() Status {
	dirty, open := f.dirtyBytes()
	f.viewMu.RLock()
	sealed := len(f.sealed)
	f.viewMu.RUnlock()
	last, base := f.wal.Last().Seq, f.wal.Head().Base.Seq
	f.memMu.Lock()
	waiters := len(f.memQ)
	f.memMu.Unlock()
	s := Status{
		MemoryWaiters: waiters, MemoryWaits: f.memWaits.Load(),
		FSID: hex.EncodeToString(f.fsid[:]), Epoch: f.epoch, Writable: f.Err() == nil,
		DirtyBytes: dirty, OpenBatchBytes: open, SealedBatches: sealed,
		WALLastSeq: last, CheckpointSeq: base, ChunkSize: int(f.chunkSize),
		FlushRecords: f.stats.FlushRecords.Load(), StoreGets: f.stats.StoreGets.Load(),
		StoreGetBytes: f.stats.StoreGetBytes.Load(), CorruptFrames: f.stats.CorruptFrames.Load(),
		Interrupted: f.InterruptedFiles(),
		StoreErrors: f.stats.StoreErrors.Load() + f.wal.Retries(),
		GCDeleted:   f.stats.GCDeleted.Load(), GCPacked: f.stats.GCPacked.Load(),
	}
	if last > base {
		s.WALDepth = last - base
	}
	s.Snapshots, s.SnapshotBytes, _ = f.SnapshotBytes()
	if err := f.Err(); err != nil {
		s.Error = err.Error()
	}
	s.UptimeSeconds = time.Since(f.started).Seconds()
	s.ReadBytes, s.WrittenBytes = f.stats.ReadBytes.Load(), f.stats.WrittenBytes.Load()
	s.ReadAhead = f.ra.issued.Load()
	stores := map[string]store.Store{"main": f.main}
	if f.opts.WAL != nil {
		stores["wal"] = f.opts.WAL
	}
	for name, st := range stores {
		sc, ok := st.(*sched.Store)
		if !ok {
			continue
		}
		ops := sc.Stats().Ops
		m := make(map[string]int64, len(ops))
		for op, o := range ops {
			m[sched.Op(op).String()] = o.Requests
		}
		if s.Requests == nil {
			s.Requests = map[string]map[string]int64{}
		}
		s.Requests[name] = m
	}
	if m, ok := f.cache.(interface{ Stats() cache.Stats }); ok {
		cs := m.Stats()
		s.Cache = &cs
	}
	if f.disk != nil {
		ds := f.disk.Stats()
		s.DiskCache = &ds
	}
	return s
}
