package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"zerofs/fs"
)

// fsCollector reads the filesystem's state at scrape time.
type fsCollector struct{ f *fs.FS }

var (
	descEpoch      = prometheus.NewDesc("zerofs_epoch", "This writer's epoch (changes on every start).", nil, nil)
	descWritable   = prometheus.NewDesc("zerofs_writable", "1 while the filesystem accepts writes, 0 once it stopped (fenced).", nil, nil)
	descDirty      = prometheus.NewDesc("zerofs_dirty_bytes", "Data in batches not yet applied (open, sealing, in flight).", nil, nil)
	descMemWaiters = prometheus.NewDesc("zerofs_memory_waiters", "Writes waiting for dirty memory now (back-pressure: the store is slower than the writers, or down).", nil, nil)
	descMemWaits   = prometheus.NewDesc("zerofs_memory_waits_total", "Writes that had to wait for dirty memory.", nil, nil)
	descOpenBatch  = prometheus.NewDesc("zerofs_open_batch_bytes", "Data in the open batch.", nil, nil)
	descSealed     = prometheus.NewDesc("zerofs_sealed_batches", "Batches sealed and not yet applied.", nil, nil)
	descWALDepth   = prometheus.NewDesc("zerofs_wal_depth_records", "WAL records after the checkpoint: what recovery would replay.", nil, nil)
	descWALRecords = prometheus.NewDesc("zerofs_wal_records_total", "WAL records written.", nil, nil)
	descWALBytes   = prometheus.NewDesc("zerofs_wal_bytes_total", "Bytes of WAL records written.", nil, nil)
	descCommit     = prometheus.NewDesc("zerofs_commit_duration_seconds", "Time from a batch's seal to its WAL record being durable (what a flush waits for).", nil, nil)
	descCacheHits  = prometheus.NewDesc("zerofs_cache_hits_total", "Frame cache hits by tier.", []string{"tier"}, nil)
	descCacheMiss  = prometheus.NewDesc("zerofs_cache_misses_total", "Frame cache misses by tier.", []string{"tier"}, nil)
	descCacheBytes = prometheus.NewDesc("zerofs_cache_bytes", "Bytes held by each cache tier.", []string{"tier"}, nil)
	descCacheCap   = prometheus.NewDesc("zerofs_cache_capacity_bytes", "Capacity of each cache tier.", []string{"tier"}, nil)
	descStoreGets  = prometheus.NewDesc("zerofs_data_reads_total", "Data frames read from the object store (cache misses).", nil, nil)
	descStoreErr   = prometheus.NewDesc("zerofs_store_errors_total", "Failed data reads and retried WAL appends.", nil, nil)
	descCorrupt    = prometheus.NewDesc("zerofs_corrupt_frames_total", "Data frames that failed authentication or decoding (reads of them fail with EIO).", nil, nil)
	descGCDeleted  = prometheus.NewDesc("zerofs_gc_deleted_objects_total", "Data objects deleted by garbage collection.", nil, nil)
	descGCPacked   = prometheus.NewDesc("zerofs_gc_packed_objects_total", "Data objects whose live data garbage collection moved.", nil, nil)
	descFileBytes  = prometheus.NewDesc("zerofs_file_bytes_total", "File data read and written by clients (NBD and NFS), by direction: what store requests per GiB are reckoned against.", []string{"dir"}, nil)
	descReadAhead  = prometheus.NewDesc("zerofs_read_ahead_bytes_total", "File data read ahead of sequential readers.", nil, nil)
	descSnapshots  = prometheus.NewDesc("zerofs_snapshots", "Snapshots of the filesystem.", nil, nil)
	descSnapBytes  = prometheus.NewDesc("zerofs_snapshot_bytes", "Bytes in the bucket that only snapshots hold (the current state does not use them): what deleting every snapshot would free.", nil, nil)
	descInterrupt  = prometheus.NewDesc("zerofs_interrupted_files", "Files (NBD exports) that may have lost acknowledged writes when the last run ended; NBD I/O on them fails until `zerofs nbd clear`.", nil, nil)
)

func (c *fsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEpoch, descWritable, descDirty, descMemWaiters, descMemWaits, descOpenBatch, descSealed, descWALDepth,
		descWALRecords, descWALBytes, descCommit, descCacheHits, descCacheMiss, descCacheBytes, descCacheCap,
		descStoreGets, descStoreErr, descCorrupt, descGCDeleted, descGCPacked, descFileBytes, descReadAhead, descInterrupt, descSnapshots, descSnapBytes} {
		ch <- d
	}
}

func (c *fsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.f.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descEpoch, float64(s.Epoch))
	w := 0.0
	if s.Writable {
		w = 1
	}
	gauge(descWritable, w)
	gauge(descDirty, float64(s.DirtyBytes))
	gauge(descMemWaiters, float64(s.MemoryWaiters))
	counter(descMemWaits, float64(s.MemoryWaits))
	gauge(descOpenBatch, float64(s.OpenBatchBytes))
	gauge(descSealed, float64(s.SealedBatches))
	gauge(descWALDepth, float64(s.WALDepth))
	counter(descFileBytes, float64(s.ReadBytes), "read")
	counter(descFileBytes, float64(s.WrittenBytes), "write")
	counter(descReadAhead, float64(s.ReadAhead))
	counter(descWALRecords, float64(s.FlushRecords))
	st := c.f.Stats()
	counter(descWALBytes, float64(st.CommitBytes.Load()))
	counts, sum := st.CommitLatency.Snapshot()
	buckets := make(map[float64]uint64, len(fs.LatencyBuckets))
	var cum uint64
	for i, ub := range fs.LatencyBuckets {
		cum += counts[i]
		buckets[ub] = cum
	}
	cum += counts[len(counts)-1]
	ch <- prometheus.MustNewConstHistogram(descCommit, cum, sum, buckets)
	if s.Cache != nil {
		counter(descCacheHits, float64(s.Cache.Hits), "memory")
		counter(descCacheMiss, float64(s.Cache.Misses), "memory")
		gauge(descCacheBytes, float64(s.Cache.Bytes), "memory")
		gauge(descCacheCap, float64(s.Cache.Capacity), "memory")
	}
	if s.DiskCache != nil {
		counter(descCacheHits, float64(s.DiskCache.Hits), "disk")
		counter(descCacheMiss, float64(s.DiskCache.Misses), "disk")
		gauge(descCacheBytes, float64(s.DiskCache.Bytes), "disk")
		gauge(descCacheCap, float64(s.DiskCache.Capacity), "disk")
	}
	counter(descStoreGets, float64(s.StoreGets))
	counter(descStoreErr, float64(s.StoreErrors))
	counter(descCorrupt, float64(s.CorruptFrames))
	gauge(descInterrupt, float64(len(s.Interrupted)))
	gauge(descSnapshots, float64(s.Snapshots))
	gauge(descSnapBytes, float64(s.SnapshotBytes))
	counter(descGCDeleted, float64(s.GCDeleted))
	counter(descGCPacked, float64(s.GCPacked))
}
