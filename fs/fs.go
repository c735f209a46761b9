// Package fs is zerofs's filesystem core: one POSIX-like filesystem kept in an
// object store, served by the NBD and NFS adapters alike.
//
// Where things go (a newcomer's map):
//
//	write.go      WRITE, punch-hole, truncate: the data path into the open batch
//	read.go       READ: open batch → sealed batches → memory cache → store
//	namespace.go  LOOKUP, CREATE, MKDIR, LINK, UNLINK, RENAME, READDIR...
//	attr.go       GETATTR, SETATTR, permission checks
//	batch.go      the in-memory batch of changes not yet applied
//	commit.go     the pipeline: seal a batch, append it to the WAL, apply it
//	apply.go      applying a delta to pebble, with live-byte accounting
//	recover.go    opening: claim, restore the checkpoint, replay the WAL
//	checkpoint.go uploading pebble snapshots so a fresh machine can recover
//	gc.go         packing small objects, repacking sparse ones, deleting dead ones
package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"zerofs/cache"
	"zerofs/crypt"
	"zerofs/frame"
	"zerofs/store"
	"zerofs/store/sched"
	"zerofs/wal"
)

// Options configures a filesystem.
type Options struct {
	// Main is the object store holding the filesystem.
	Main store.Store
	// WAL is where WAL records go; nil means Main. A local directory store
	// makes flushes cost one fsync instead of one PUT, but then flushed data
	// survives only as long as that disk until it is packed into Main.
	WAL store.Store
	// Password unwraps the data key (see package crypt).
	Password  string
	KeyParams crypt.Params
	// Dir holds local state: the pebble metadata database. It is a cache of
	// what the bucket holds; deleting it only costs a longer start.
	Dir string
	// ChunkSize is fixed when a filesystem is created; ignored afterwards.
	ChunkSize int
	// Compression of new data frames.
	Compression frame.Codec
	// Cache holds decoded frames; nil builds a memory cache of CacheBytes.
	Cache      cache.Cache
	CacheBytes int64
	// DiskCacheBytes sizes the disk cache of encoded frames in Dir/frames
	// (what was read from the store or recently written), between the
	// memory cache and the store. Zero disables it.
	DiskCacheBytes int64
	// ReadAheadBytes caps how far ahead of a sequential reader frames are
	// fetched (see readahead.go). Zero means 128 MiB; negative disables
	// read-ahead.
	ReadAheadBytes int64

	// BatchBytes seals the open batch when its dirty data reaches this size.
	BatchBytes int64
	// BatchAge seals the open batch when it is this old: without flushes,
	// at most this much recent work is lost in a crash.
	BatchAge time.Duration
	// MaxDirtyBytes bounds memory held by batches not yet applied; writes
	// wait (back-pressure) beyond it, e.g. while the store is unreachable.
	MaxDirtyBytes int64
	// WALInFlight bounds WAL records being written at once.
	WALInFlight int

	// CheckpointInterval: how often metadata is checkpointed to the bucket
	// (when it changed). Zero means the default; negative disables.
	CheckpointInterval time.Duration
	// GCInterval: how often a garbage collection pass runs; negative disables.
	GCInterval time.Duration
	// SegmentBytes is the target size of packed segments.
	SegmentBytes int64
	// AdoptBytes: WAL records in the main store with at least this much data
	// stay where they are as data objects; smaller ones are packed.
	AdoptBytes int64

	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.ChunkSize == 0 {
		o.ChunkSize = 64 << 10
	}
	if o.KeyParams == (crypt.Params{}) {
		o.KeyParams = crypt.DefaultParams
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 512 << 20
	}
	if o.ReadAheadBytes == 0 {
		o.ReadAheadBytes = 128 << 20
	}
	if o.BatchBytes == 0 {
		o.BatchBytes = 16 << 20
	}
	if o.BatchAge == 0 {
		o.BatchAge = time.Second
	}
	if o.MaxDirtyBytes == 0 {
		o.MaxDirtyBytes = 256 << 20
	}
	if o.MaxDirtyBytes < 2*o.BatchBytes {
		o.MaxDirtyBytes = 2 * o.BatchBytes
	}
	if o.WALInFlight == 0 {
		o.WALInFlight = 4
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = time.Minute
	}
	if o.GCInterval == 0 {
		o.GCInterval = time.Minute
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.AdoptBytes == 0 {
		o.AdoptBytes = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

func (o *Options) validate() error {
	switch {
	case o.Main == nil:
		return errors.New("fs: no main store")
	case o.Dir == "":
		return errors.New("fs: no local state directory")
	case o.Password == "":
		return errors.New("fs: no encryption password")
	case o.ChunkSize < 4096 || o.ChunkSize > 1<<20 || o.ChunkSize&(o.ChunkSize-1) != 0:
		return fmt.Errorf("fs: chunk size %d: want a power of two from 4 KiB to 1 MiB", o.ChunkSize)
	}
	return nil
}

// params are fixed at creation and stored in the WAL head.
type params struct {
	Format    int `json:"format"`
	ChunkSize int `json:"chunk_size"`
}

const formatVersion = 1

// dataKeyObject is where the wrapped data key lives in the main store.
const dataKeyObject = "keys/datakey"

// maxEpoch: ids are epoch<<40 | counter, so epochs must fit in 24 bits.
const maxEpoch = 1<<24 - 1

// FS is an open filesystem. All methods are safe for concurrent use.
type FS struct {
	opts       Options
	log        *slog.Logger
	main       store.Store
	wal        *wal.Log
	key        *crypt.Key
	coder      *frame.Coder
	cache      cache.Cache // decoded frames
	disk       *cache.Disk // encoded frames; nil when disabled
	db         *pebble.DB
	blockCache *pebble.Cache // pebble's block cache, shared by reopenings
	fsid       [16]byte
	epoch      uint64
	chunkSize  uint32

	nextFrame atomic.Uint64 // low 40 bits of new frame ids
	nextSeg   atomic.Uint64 // low 40 bits of new segment ids

	// viewMu pins the open batch: mutations hold it shared for their whole
	// duration, a seal holds it exclusively for the instant of the rotation.
	// Never held across object-store I/O.
	viewMu   sync.RWMutex
	open     *batch
	sealed   []*batch // oldest first; sealed, not yet applied
	batchNum uint64

	// Lock stripes; see write.go for what each guards and their order.
	chunkLocks [4096]sync.Mutex
	inodeRWs   [1024]sync.RWMutex
	attrMus    [1024]sync.Mutex
	nsMu       sync.Mutex // namespace changes: create, link, unlink, rename

	// Dirty memory and back-pressure.
	memMu       sync.Mutex
	memCV       *sync.Cond   // applied batches, for waitApplied
	memQ        []*memWaiter // reserve's queue, in arrival order
	memQLen     atomic.Int32 // len(memQ), for reserve's lock-free fast path
	reserved    atomic.Int64 // bytes admitted by reserve, not yet in a batch
	memDraining atomic.Bool  // a mutation admitted from memQ has not finished yet
	memWaits    atomic.Int64 // mutations that had to wait for memory

	kick    chan struct{} // asks the sealer for a seal
	slots   chan struct{} // WAL records in flight: the sealer takes one per batch
	recBufs *recordBuffers
	doneCh  chan *batch // appended batches, to the completer
	applyCh chan *batch // durable batches, to the applier

	flights flightGroup // concurrent misses on one frame share one GET
	ra      readAhead
	pending sync.Map // frame id → raw bytes of frames encoded, not yet applied

	failed atomic.Pointer[error] // sticky: fenced, closed

	appliedMu sync.Mutex
	applied   wal.Position // last record applied to pebble

	dirLock *os.File // flock on the local state dir

	bg       sync.WaitGroup
	stop     chan struct{}
	closeMu  sync.Mutex
	closed   bool
	started  time.Time
	bgCtx    context.Context // demand work not tied to one request: shared fetches
	raCtx    context.Context // read-ahead: bgCtx in the store scheduler's ReadAhead class
	workCtx  context.Context // GC and checkpoints: bgCtx in its Background class
	bgCancel context.CancelFunc
	// diskWriters holds a token per run being written to the disk cache
	// in the background (fetch.go, cacheOnDisk).
	diskWriters chan struct{}

	marks     marks     // unflushed-write marks (marks.go)
	pebbleLog pebbleLog // rate limit of pebble's error lines (recover.go)

	// Snapshots (snapshot.go, view.go). Lock order: snapMu, gcMu, ckptMu.
	snapMu     sync.Mutex // one snapshot change at a time
	viewOpenMu sync.Mutex // one view opening at a time
	viewsMu    sync.Mutex
	views      map[uint64]*view // open snapshot views by id
	isView     bool             // this FS is a snapshot's view

	ckptMu    sync.Mutex // one checkpoint at a time
	gcMu      sync.Mutex // one GC pass at a time
	lastSweep time.Time  // of orphan segments; guarded by gcMu
	lastCkpt  wal.Position
	prevDesc  *ckptDesc                // the checkpoint the head names, once loaded
	headDesc  atomic.Pointer[ckptDesc] // prevDesc, for readers that must not wait for a checkpoint (Status)
	stats     *Stats                   // shared with snapshot views (view.go)

	statMu   sync.Mutex // StatFS's cached sum of object sizes
	statAt   time.Time
	statUsed uint64
}

// Open opens the filesystem in opts.Main, creating it if the store is empty.
// It claims the filesystem (fencing any other writer), restores metadata from
// the local database or the bucket's checkpoint, and replays the WAL.
func Open(ctx context.Context, opts Options) (*FS, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	key, created, err := crypt.LoadOrCreateKey(ctx, opts.Main, dataKeyObject, opts.Password, opts.KeyParams)
	if err != nil {
		return nil, err
	}
	if created {
		opts.Logger.Info("created data key", "store", opts.Main.String())
	}
	coder, err := frame.NewCoder(key, opts.Compression)
	if err != nil {
		return nil, err
	}
	init, _ := json.Marshal(params{Format: formatVersion, ChunkSize: opts.ChunkSize})
	wlog, err := wal.Open(ctx, wal.Options{
		Main: opts.Main, Records: opts.WAL, Init: init,
		MaxInFlight: opts.WALInFlight, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	var p params
	if err := json.Unmarshal(wlog.Head().Init, &p); err != nil || p.ChunkSize == 0 {
		wlog.Close()
		return nil, fmt.Errorf("filesystem parameters in %s: %v: %w", opts.Main, err, wal.ErrCorrupt)
	}
	if p.Format != formatVersion {
		wlog.Close()
		return nil, fmt.Errorf("filesystem in %s has format %d; this zerofs reads format %d", opts.Main, p.Format, formatVersion)
	}
	if wlog.Epoch() > maxEpoch {
		wlog.Close()
		return nil, fmt.Errorf("filesystem in %s: epoch %d exhausted the 24-bit epoch space", opts.Main, wlog.Epoch())
	}
	c := opts.Cache
	if c == nil {
		c = cache.NewMemory(opts.CacheBytes)
	}
	f := &FS{
		opts: opts, log: opts.Logger, main: opts.Main, wal: wlog, key: key, coder: coder, cache: c,
		fsid: wlog.FSID(), epoch: wlog.Epoch(), chunkSize: uint32(p.ChunkSize),
		kick:    make(chan struct{}, 1),
		slots:   make(chan struct{}, opts.WALInFlight),
		recBufs: newRecordBuffers(opts.WALInFlight+1, opts.BatchBytes),
		doneCh:  make(chan *batch, 1024),
		applyCh: make(chan *batch, 1024),
		stop:    make(chan struct{}),
		stats:   new(Stats),
		views:   make(map[uint64]*view),

		diskWriters: make(chan struct{}, diskWriters),
	}
	f.memCV = sync.NewCond(&f.memMu)
	if opts.ReadAheadBytes > 0 {
		f.ra.max = uint64(opts.ReadAheadBytes)
		f.ra.aheadCap = ReadAheadCap(opts.CacheBytes, opts.ReadAheadBytes)
	}
	f.started = time.Now()
	f.bgCtx, f.bgCancel = context.WithCancel(context.Background())
	f.raCtx = sched.WithClass(f.bgCtx, sched.ReadAhead)
	f.workCtx = sched.WithClass(f.bgCtx, sched.Background)
	err = f.recover(ctx)
	if err == nil {
		err = f.loadMarks(ctx)
	}
	if err == nil {
		if serr := f.removeStaleSnapshotDirs(); serr != nil {
			f.log.Warn("removing stale local snapshot metadata", "err", serr)
		}
	}
	if err == nil && opts.DiskCacheBytes > 0 {
		// One slot holds one encoded frame of a whole chunk.
		slot := (int(f.chunkSize) + frame.Overhead + cache.DiskHeaderSize + 4095) &^ 4095
		f.disk, err = cache.OpenDisk(filepath.Join(opts.Dir, "frames"), opts.DiskCacheBytes, slot, opts.Logger)
	}
	if err != nil {
		f.bgCancel()
		wlog.Close()
		if f.db != nil {
			f.db.Close()
		}
		if f.blockCache != nil {
			f.blockCache.Unref()
		}
		if f.dirLock != nil {
			f.dirLock.Close()
		}
		return nil, err
	}
	f.batchNum = 1
	f.open = newBatch(f.batchNum)
	f.bg.Add(6)
	go f.sealer()
	go f.completer()
	go f.applier()
	go f.ticker()
	go f.maintainer()
	go f.marker()
	if err := f.ensureRoot(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ChunkSize is the filesystem's chunk size in bytes.
func (f *FS) ChunkSize() int { return int(f.chunkSize) }

// Epoch is this writer's epoch; it changes on every start (NFS write verifier).
func (f *FS) Epoch() uint64 { return f.epoch }

// FSID identifies the filesystem.
func (f *FS) FSID() [16]byte { return f.fsid }

// Err returns the error that stopped the filesystem accepting writes, if any.
func (f *FS) Err() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *FS) fail(err error) {
	if f.failed.CompareAndSwap(nil, &err) {
		if !errors.Is(err, errClosed) {
			f.log.Error("filesystem stopped accepting writes", "err", err)
		}
		f.memMu.Lock()
		f.memCV.Broadcast() // writers waiting for memory must see the failure
		f.wakeAllLocked()
		f.memMu.Unlock()
	}
}

var errClosed = errors.New("filesystem closed")

// Flush makes every change that completed before it durable (DESIGN.md rule
// 1): it asks the sealer to seal the open batch, if it holds anything, and
// waits until that batch's WAL record and all before it are in the store.
// The sealer rotates only when the WAL has room for another record, so
// flushes arriving while appends are in flight share the next one (group
// commit); writes go on into the open batch meanwhile.
func (f *FS) Flush(ctx context.Context) error {
	if err := f.Err(); err != nil {
		return f.writeErr(err)
	}
	f.viewMu.RLock()
	target := f.open
	if target.empty() {
		target = nil
		if len(f.sealed) > 0 {
			target = f.sealed[len(f.sealed)-1]
		}
	}
	f.viewMu.RUnlock()
	if target == nil {
		return nil
	}
	f.kickSeal() // a no-op if target is already sealed
	select {
	case <-target.durable:
		if target.err != nil {
			return f.writeErr(target.err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeErr maps a pipeline failure to what a writer is told.
func (f *FS) writeErr(err error) error {
	if errors.Is(err, wal.ErrFenced) {
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return fmt.Errorf("%w: %w", ErrIO, err)
}

// rotateLocked moves the open batch, if it has changes, to the sealed list
// and opens a new one. Only the sealer calls it, holding viewMu exclusively.
func (f *FS) rotateLocked() *batch {
	b := f.open
	if b.empty() {
		return nil
	}
	f.batchNum++
	f.open = newBatch(f.batchNum)
	f.sealed = append(f.sealed, b)
	return b
}

// chain returns the batches a reader must consult, oldest first, ending with
// the open batch.
func (f *FS) chain() []*batch {
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	return f.chainLocked()
}

// Close flushes everything, writes a checkpoint, and stops. After Close the
// FS must not be used.
func (f *FS) Close() error {
	f.closeMu.Lock()
	if f.closed {
		f.closeMu.Unlock()
		return nil
	}
	f.closed = true
	f.closeMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := f.Flush(ctx)
	if err == nil && f.Err() == nil {
		f.waitApplied()
		if cerr := f.checkpoint(ctx); cerr != nil {
			f.log.Warn("checkpoint at close failed; the next start replays the WAL instead", "err", cerr)
		}
		// Nothing is unflushed: this run's marks go (marks.go).
		f.clearAllMarks(ctx)
	}
	f.shutdown()
	return err
}

// crash stops the filesystem as kill -9 would: nothing is flushed, batches not
// yet durable are dropped. For tests of recovery.
func (f *FS) crash() {
	f.closeMu.Lock()
	already := f.closed
	f.closed = true
	f.closeMu.Unlock()
	if !already {
		f.shutdown()
	}
}

func (f *FS) shutdown() {
	f.fail(errClosed)
	f.bgCancel()
	close(f.stop)
	f.wal.Close() // abandons appends in flight; the completer sees them fail
	f.bg.Wait()
	// Flushes still waiting on batches the pipeline will never finish now.
	f.viewMu.Lock()
	for _, b := range f.sealed {
		b.finish(errClosed)
	}
	f.open.finish(errClosed)
	f.viewMu.Unlock()
	f.memMu.Lock()
	f.memCV.Broadcast()
	f.wakeAllLocked()
	f.memMu.Unlock()
	f.closeViews()
	if err := f.db.Close(); err != nil {
		f.log.Warn("closing metadata database", "err", err)
	}
	if f.blockCache != nil {
		f.blockCache.Unref()
	}
	if f.disk != nil {
		f.disk.Close()
	}
	if f.dirLock != nil {
		f.dirLock.Close()
	}
}

// Stats are counters for metrics and tests.
type Stats struct {
	// CommitLatency: from a batch's seal to its WAL record being durable.
	CommitLatency Histogram
	// ReadBytes and WrittenBytes: file data read and written by clients,
	// the denominators of what the store requests cost.
	ReadBytes    atomic.Int64
	WrittenBytes atomic.Int64
	// CommitBytes: bytes of WAL records written.
	CommitBytes   atomic.Int64
	FlushRecords  atomic.Int64
	FrameBytes    atomic.Int64
	StoreGets     atomic.Int64
	StoreGetBytes atomic.Int64
	StoreErrors   atomic.Int64 // data reads that failed (other than a moved object)
	CorruptFrames atomic.Int64
	GCDeleted     atomic.Int64
	GCPacked      atomic.Int64
}

// Stats returns the filesystem's counters.
func (f *FS) Stats() *Stats { return f.stats }

// ChangePassword rewraps the filesystem's data key in main under a new
// password. Data is not touched: the data key itself does not change, so a
// running server keeps working and only the next start needs the new password.
func ChangePassword(ctx context.Context, main store.Store, oldPassword, newPassword string, p crypt.Params) error {
	if p == (crypt.Params{}) {
		p = crypt.DefaultParams
	}
	return crypt.ChangePassword(ctx, main, dataKeyObject, oldPassword, newPassword, p)
}
