package fs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
	"zerofs/wal"
)

// BenchmarkFlush measures what a flush costs against what it cannot avoid:
// one append to the WAL store. Each iteration does, on the same store and in
// alternation (so noise hits both alike):
//
//   - a bare conditional PUT of an object the size of the WAL record a 4 KiB
//     flush produces (what the WAL does: create-if-absent);
//   - a 4 KiB write plus Flush through the filesystem.
//
// It reports the median latency of each and their ratio ("flush/put"); the
// design aims at 1.2 or less. It also times the WAL's own PUT inside each
// flush ("wal-put-µs"), so that "flush/wal-put" shows the engine's overhead
// apart from how fast the store happened to be. Backends: the file store
// (fsync on local disk) and a real S3 server (versitygw on loopback).
//
//	go test -run '^$' -bench BenchmarkFlush -benchtime 300x ./fs
func BenchmarkFlush(b *testing.B) {
	for _, backend := range []string{"file", "s3"} {
		b.Run(backend, func(b *testing.B) {
			st := faultstore.New(benchStore(b, backend))
			var lastWALPut atomic.Int64 // ns
			timeWALPuts(st, &lastWALPut)
			opts := testOptions(b, st, b.TempDir())
			opts.ChunkSize = 64 << 10
			opts.BatchAge = time.Hour // only flushes seal
			f := mustOpen(b, opts)
			defer f.Close()
			n := mustCreate(b, f, RootIno, "disk", TypeRegular|0o644)
			ctx := context.Background()
			p := make([]byte, 4096)
			for i := range p {
				p[i] = byte(i*31) | 1
			}
			// The record a 4 KiB flush writes: measure it once.
			mustWrite(b, f, n.Ino, 0, p)
			if err := f.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			info, err := f.wal.Records().Head(ctx, wal.Key(f.wal.Last().Seq))
			if err != nil {
				b.Fatal(err)
			}
			obj := make([]byte, info.Size)
			putTimes := make([]time.Duration, 0, b.N)
			flushTimes := make([]time.Duration, 0, b.N)
			walTimes := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := st.PutIfAbsent(ctx, fmt.Sprintf("bench/%d", i), obj); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				mustWrite(b, f, n.Ino, uint64(i%256)*4096, p)
				if err := f.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				putTimes = append(putTimes, t1.Sub(t0))
				flushTimes = append(flushTimes, t2.Sub(t1))
				walTimes = append(walTimes, time.Duration(lastWALPut.Load()))
			}
			b.StopTimer()
			put, flush, walPut := median(putTimes), median(flushTimes), median(walTimes)
			b.ReportMetric(float64(put.Microseconds()), "put-µs")
			b.ReportMetric(float64(flush.Microseconds()), "flush-µs")
			b.ReportMetric(float64(walPut.Microseconds()), "wal-put-µs")
			b.ReportMetric(float64(flush)/float64(put), "flush/put")
			b.ReportMetric(float64(flush)/float64(walPut), "flush/wal-put")
		})
	}
}

// BenchmarkFlushConcurrent: 16 writers each write 4 KiB and flush in a loop.
// Group commit lets them share appends: flushes/s should far exceed what one
// PUT at a time allows. Reports flushes/s and WAL records per flush.
//
//	go test -run '^$' -bench BenchmarkFlushConcurrent -benchtime 2000x ./fs
func BenchmarkFlushConcurrent(b *testing.B) {
	for _, backend := range []string{"file", "s3"} {
		b.Run(backend, func(b *testing.B) {
			st := benchStore(b, backend)
			opts := testOptions(b, st, b.TempDir())
			opts.ChunkSize = 64 << 10
			opts.BatchAge = time.Hour
			f := mustOpen(b, opts)
			defer f.Close()
			n := mustCreate(b, f, RootIno, "disk", TypeRegular|0o644)
			ctx := context.Background()
			const writers = 16
			before := f.stats.FlushRecords.Load()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					p := make([]byte, 4096)
					for i := w; i < b.N; i += writers {
						p[0] = byte(i)
						if _, err := f.Write(ctx, Root, n.Ino, uint64(i%1024)*4096, p); err != nil {
							b.Error(err)
							return
						}
						if err := f.Flush(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			records := f.stats.FlushRecords.Load() - before
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "flushes/s")
			b.ReportMetric(float64(records)/float64(b.N), "records/flush")
		})
	}
}

// timeWALPuts records in last how long each WAL record PUT through st took.
func timeWALPuts(st *faultstore.Store, last *atomic.Int64) {
	var started sync.Map // key -> time.Time
	walPuts := faultstore.On(faultstore.OpPutIfAbsent).Prefix("wal/")
	st.Before(walPuts, func(_ faultstore.Op, key string) error {
		started.Store(key, time.Now())
		return nil
	})
	st.After(walPuts, func(_ faultstore.Op, key string, err error) error {
		if t0, ok := started.LoadAndDelete(key); ok {
			last.Store(int64(time.Since(t0.(time.Time))))
		}
		return err
	})
}

func benchStore(b *testing.B, backend string) store.Store {
	ctx := context.Background()
	switch backend {
	case "file":
		st, err := store.Open(ctx, "file://"+b.TempDir(), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return st
	case "s3":
		url, sopts := testutil.S3Bucket(b, "bench")
		st, err := store.Open(ctx, url, sopts)
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	b.Fatalf("unknown backend %q", backend)
	return nil
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// Engine benchmarks: the filesystem core alone, on a file:// store, with
// no protocol in front. They show what NBD and NFS can at best reach.
//
//	go test -run '^$' -bench 'BenchmarkEngine' -benchtime 3s ./fs

func engineFS(b *testing.B) *FS {
	ctx := context.Background()
	st, err := store.Open(ctx, "file://"+b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	opts := testOptions(b, st, b.TempDir())
	opts.ChunkSize = 64 << 10
	opts.BatchBytes = 16 << 20
	opts.BatchAge = time.Second
	opts.CacheBytes = 1 << 30
	opts.MaxDirtyBytes = 256 << 20
	return mustOpen(b, opts)
}

func randomBytes(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
	return p
}

// BenchmarkEngineWriteSeq1M: 1 MiB sequential writes of incompressible data
// (compression, encryption, WAL appends and apply included: each write
// waits only for memory, the pipeline runs behind it).
func BenchmarkEngineWriteSeq1M(b *testing.B) {
	f := engineFS(b)
	defer f.Close()
	n := mustCreate(b, f, RootIno, "d", TypeRegular|0o644)
	p := randomBytes(1 << 20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mustWrite(b, f, n.Ino, uint64(i%512)<<20, p)
	}
	if err := f.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEngineWriteRand4K: 4 KiB random writes from 4 goroutines over 512 MiB.
func BenchmarkEngineWriteRand4K(b *testing.B) {
	f := engineFS(b)
	defer f.Close()
	n := mustCreate(b, f, RootIno, "d", TypeRegular|0o644)
	p := randomBytes(4096)
	b.SetBytes(4096)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/4 + 1
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				mustWrite(b, f, n.Ino, uint64(rand.IntN(131072))*4096, p)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkEngineReadRand4KCached: 4 KiB random reads of 256 MiB held in the
// memory cache.
func BenchmarkEngineReadRand4KCached(b *testing.B) {
	f := engineFS(b)
	defer f.Close()
	n := mustCreate(b, f, RootIno, "d", TypeRegular|0o644)
	p := randomBytes(1 << 20)
	for i := 0; i < 256; i++ {
		mustWrite(b, f, n.Ino, uint64(i)<<20, p)
	}
	if err := f.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	f.waitApplied()
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := f.Read(context.Background(), Root, n.Ino, uint64(rand.IntN(65536))*4096, buf); err != nil {
			b.Fatal(err)
		}
	}
}
