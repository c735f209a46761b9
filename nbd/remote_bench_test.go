package nbd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/fs"
	"zerofs/internal/s3proxy"
	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/sched"
)

// BenchmarkNBDRemoteStore measures zerofs on an object store as far away as
// our users' are: versitygw behind internal/s3proxy, which adds a time to
// first byte to every request and streams each body at a capped rate
// (default 20 ms and 100 MB/s, S3 Standard in-region). Each figure is put
// next to its baseline from the same run:
//
//   - 1 MiB sequential write QD8 with a final FLUSH, against the same on a
//     file:// store;
//   - cold 1 MiB sequential read QD8 (fresh cache, restarted server) and a
//     cold full-device read by 4 readers at once (a resilver), each against
//     the warm re-read of the same data;
//   - cold 4 KiB random read QD32, against the latency bound 32 / latency
//     and against bare GETs (the S3 server's ceiling on this machine), and
//     again with the store 100 ms away, where the ceiling is out of reach;
//   - 4 KiB write + FLUSH at QD1, against a bare 4 KiB PUT through the proxy;
//   - requests per GiB, counted by the proxy.
//
// Each row also says how many cores the machine was busy: where the S3
// server, the proxy, fio and zerofs share two cores, that tells a figure
// bound by the store's latency from one bound by the machine.
//
// Run it with bench/remote.sh. ZEROFS_BENCH_SIZE sets the export in MiB
// (default 256), ZEROFS_BENCH_LATENCY_MS and ZEROFS_BENCH_RATE_MBPS the
// proxy (default 20 and 100), ZEROFS_BENCH_RUNTIME the seconds of the timed
// workloads (default 10), ZEROFS_BENCH_READ_AHEAD_MB `[cache] read_ahead_mb`
// (default 128). Other settings are `zerofs run`'s defaults.
func BenchmarkNBDRemoteStore(b *testing.B) {
	fio := requireTool(b, "fio")
	sizeMiB := envInt(b, "ZEROFS_BENCH_SIZE", 256)
	size := uint64(sizeMiB) << 20
	latency := time.Duration(envInt(b, "ZEROFS_BENCH_LATENCY_MS", 20)) * time.Millisecond
	rate := int64(envInt(b, "ZEROFS_BENCH_RATE_MBPS", 100)) * 1000 * 1000
	runtime := envInt(b, "ZEROFS_BENCH_RUNTIME", 10)
	readAhead := int64(envInt(b, "ZEROFS_BENCH_READ_AHEAD_MB", 128)) << 20
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	endpoint, ak, sk := testutil.StartS3Server(b)
	url, sopts := testutil.CreateBucket(b, endpoint, ak, sk, "zerofs-bench", "")
	px, err := s3proxy.Start(endpoint, s3proxy.Options{Latency: latency, Rate: rate})
	if err != nil {
		b.Fatal(err)
	}
	defer px.Close()
	sopts.Endpoint = px.URL()
	// Both stores behind the scheduler, as `zerofs run` has them.
	rawRemote, err := store.Open(ctx, url, sopts)
	if err != nil {
		b.Fatal(err)
	}
	remote := sched.New(rawRemote, sched.Options{})
	rawLocal, err := store.Open(ctx, "file://"+filepath.Join(b.TempDir(), "store"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	local := sched.New(rawLocal, sched.Options{})

	// The baseline of a flush: a bare 4 KiB PUT through the proxy.
	var puts []time.Duration
	for i := range 40 {
		start := time.Now()
		if _, err := rawRemote.Put(ctx, fmt.Sprintf("bench/put-%d", i), make([]byte, 4096)); err != nil {
			b.Fatal(err)
		}
		puts = append(puts, time.Since(start))
	}
	barePut := median(puts)
	// What the store itself delivers on this machine, through the same
	// proxy: on a 2-core box the S3 server and the proxy share the CPU with
	// zerofs, and this, not the latency, can be the bound.
	bareSeq := bareGets(b, rawRemote, 8<<20, 4)
	bareRandom := bareGets(b, rawRemote, 64<<10, 32)

	fioRun := func(uri string, args ...string) fioStats {
		all := append([]string{"--name=bench", "--ioengine=nbd", "--uri=" + uri, "--output-format=json",
			"--randrepeat=0", "--group_reporting"}, args...)
		cpu0, start := machineCPU(), time.Now()
		out, stderr, err := runToolErr(30*time.Minute, fio, all...)
		if err != nil {
			b.Fatalf("fio %s: %v\n%s\n%s", strings.Join(all, " "), err, out, stderr)
		}
		st := parseFioStats(b, out)
		st.cpu = machineCPU().busySince(cpu0, time.Since(start))
		return st
	}
	sizeArg := fmt.Sprintf("--size=%d", size)
	timed := []string{"--time_based=1", fmt.Sprintf("--runtime=%d", runtime)}
	seqWrite := []string{"--rw=write", "--bs=1M", "--iodepth=8", "--end_fsync=1", sizeArg}
	seqRead := []string{"--rw=read", "--bs=1M", "--iodepth=8", sizeArg}
	quarter := fmt.Sprintf("%d", size/4)
	fourReaders := []string{"--rw=read", "--bs=1M", "--iodepth=8", "--numjobs=4", "--size=" + quarter, "--offset_increment=" + quarter}
	// Each random read in a frame of its own (offsets 64 KiB apart, none
	// twice), so that every read is cold: a time-based run would soon be
	// reading frames earlier reads brought in. The first half of the export
	// is read at the proxy's latency, the second at 100 ms.
	randRead := func(half uint64, ios uint64) []string {
		return []string{"--rw=randread", "--bs=4k", "--blockalign=64k", "--iodepth=32",
			fmt.Sprintf("--number_ios=%d", ios), fmt.Sprintf("--offset=%d", half*size/2), fmt.Sprintf("--size=%d", size/2)}
	}
	frames := size / (64 << 10)
	flushQD1 := append([]string{"--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1", sizeArg}, timed...)

	// Baseline: the same sequential write on a file:// store.
	open := func(st store.Store, dir string, create bool) benchServer {
		return startBenchServer(b, st, dir, log, size, create, readAhead)
	}
	srv := open(local, b.TempDir(), true)
	localWrite := fioRun(srv.uri, seqWrite...)
	srv.stop()

	b.ResetTimer()
	state := b.TempDir()
	srv = open(remote, state, true)
	px.Reset()
	write := fioRun(srv.uri, seqWrite...)
	writeCounts := px.Counts()
	srv.stop()

	// Cold: a fresh cache dir and a restarted server.
	srv = open(remote, b.TempDir(), false)
	px.Reset()
	cold := fioRun(srv.uri, seqRead...)
	readCounts := px.Counts()
	warm := fioRun(srv.uri, seqRead...)
	srv.stop()

	srv = open(remote, b.TempDir(), false)
	px.Reset()
	cold4 := fioRun(srv.uri, fourReaders...)
	read4Counts := px.Counts()
	warm4 := fioRun(srv.uri, fourReaders...)
	srv.stop()

	srv = open(remote, b.TempDir(), false)
	random := fioRun(srv.uri, randRead(0, min(frames/2, 4096))...)
	// The same on a store 100 ms away, where the S3 server's CPU is not
	// the bound (see docs/benchmarks.md).
	px.SetLatency(100*time.Millisecond, 0)
	random100 := fioRun(srv.uri, randRead(1, min(frames/2, 1024))...)
	px.SetLatency(latency, 0)
	px.Reset()
	flush := fioRun(srv.uri, flushQD1...)
	srv.stop()
	b.StopTimer()

	gib := float64(size) / (1 << 30)
	bound := 32 / latency.Seconds()
	flushP50 := flush.writeP50 + flush.syncP50
	var rows []string
	row := func(what string, got, base fioStats, gotV, baseV float64, unit, baseWhat string) {
		rows = append(rows, fmt.Sprintf("| %s | %.1f %s | %.1f %s (%s) | %.2fx | %.1f / %.1f |",
			what, gotV, unit, baseV, unit, baseWhat, gotV/baseV, got.cpu, base.cpu))
	}
	none := fioStats{cpu: math.NaN()}
	row("1 MiB seq write QD8 + final FLUSH", write, localWrite, write.mibps, localWrite.mibps, "MiB/s", "file:// store")
	row("cold 1 MiB seq read QD8", cold, warm, cold.mibps, warm.mibps, "MiB/s", "warm re-read")
	row("cold 1 MiB seq read QD8", cold, bareSeq, cold.mibps, bareSeq.mibps, "MiB/s", "bare 8 MiB GETs, 4 at a time")
	row("cold full-device read, 4 readers", cold4, warm4, cold4.mibps, warm4.mibps, "MiB/s", "warm re-read")
	row("cold 4 KiB random read QD32, a frame each", random, none, random.iops, bound, "IOPS", "32 / latency")
	row("cold 4 KiB random read QD32, a frame each", random, bareRandom, random.iops, bareRandom.iops, "IOPS", "bare 64 KiB GETs, 32 at a time")
	row("cold 4 KiB random read QD32, store 100 ms away", random100, none, random100.iops, 32/0.1, "IOPS", "32 / 100 ms")
	row("4 KiB write + FLUSH QD1, median", flush, none, ms(flushP50), ms(barePut), "ms", "bare 4 KiB PUT")
	fmt.Printf("\nNBD, fio nbd engine, %d MiB export, read-ahead %d MiB, store: %s + s3proxy (%s to first byte, %d MB/s per request)\n\n",
		sizeMiB, readAhead>>20, s3ServerName(), latency, rate/1000/1000)
	fmt.Println("| workload | zerofs | baseline, same run | ratio | CPU busy, cores (zerofs / baseline) |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Println(strings.Join(rows, "\n"))
	fmt.Printf("\nrequests per GiB: sequential write %s; cold sequential read %s; 4 readers %s (%.2f GiB downloaded per GiB read)\n",
		perGiB(writeCounts, gib), perGiB(readCounts, gib), perGiB(read4Counts, gib), float64(read4Counts.BytesOut)/float64(size))
	fmt.Printf("4 KiB write + FLUSH: %.0f flushes, %s\n\n", flush.syncs, countsString(px.Counts()))
}

// bareGets GETs ranges of size bytes of one object from st, conc at a
// time, for three seconds.
func bareGets(b *testing.B, st store.Store, size int64, conc int) fioStats {
	ctx := context.Background()
	const objSize = 64 << 20
	if _, err := st.Put(ctx, "bench/bare", make([]byte, objSize)); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	cpu0, start := machineCPU(), time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 3*time.Second {
				off := n.Add(1) * size % (objSize - size + 1)
				if _, err := st.Get(ctx, "bench/bare", off, size); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	secs := elapsed.Seconds()
	return fioStats{iops: float64(n.Load()) / secs, mibps: float64(n.Load()*size) / (1 << 20) / secs,
		cpu: machineCPU().busySince(cpu0, elapsed)}
}

// benchServer is zerofs's NBD server on a filesystem with `zerofs run`'s
// default settings.
type benchServer struct {
	uri  string
	stop func()
}

func startBenchServer(b *testing.B, st store.Store, dir string, log *slog.Logger, size uint64, create bool, readAhead int64) benchServer {
	b.Helper()
	ctx := context.Background()
	f, err := fs.Open(ctx, fs.Options{
		Main: st, Dir: dir, Password: "bench",
		CacheBytes: 512 << 20, DiskCacheBytes: 1 << 30, ReadAheadBytes: readAhead, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	if create {
		if err := CreateExport(ctx, f, "bench", size); err != nil {
			b.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(f, Options{Logger: log})
	go srv.Serve(ln)
	return benchServer{uri: nbdURI(ln.Addr().String(), "bench"), stop: func() {
		srv.Shutdown(ctx)
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}}
}

// fioStats is what the benchmarks read from fio's JSON output, summed over
// jobs (--group_reporting makes that one).
type fioStats struct {
	iops, mibps       float64
	cpu               float64 // cores the whole machine was busy, on average (machineCPU)
	writeP50, syncP50 time.Duration
	syncs             float64
}

func parseFioStats(b *testing.B, out string) fioStats {
	if i := strings.Index(out, "{"); i > 0 {
		out = out[i:]
	}
	type lat struct {
		Percentile map[string]float64 `json:"percentile"`
	}
	var doc struct {
		Jobs []struct {
			Read  struct{ IOPS, BW float64 } `json:"read"`
			Write struct {
				IOPS, BW float64
				ClatNs   lat `json:"clat_ns"`
			} `json:"write"`
			Sync struct {
				TotalIOs float64 `json:"total_ios"`
				LatNs    lat     `json:"lat_ns"`
			} `json:"sync"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		b.Fatalf("fio JSON: %v\n%s", err, out)
	}
	var s fioStats
	for _, j := range doc.Jobs {
		s.iops += j.Read.IOPS + j.Write.IOPS
		s.mibps += (j.Read.BW + j.Write.BW) / 1024 // fio reports KiB/s
		s.writeP50 = time.Duration(j.Write.ClatNs.Percentile["50.000000"])
		s.syncP50 = time.Duration(j.Sync.LatNs.Percentile["50.000000"])
		s.syncs += j.Sync.TotalIOs
	}
	return s
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func perGiB(c s3proxy.Counts, gib float64) string {
	var parts []string
	for _, op := range []s3proxy.Op{s3proxy.OpPut, s3proxy.OpPost, s3proxy.OpGet, s3proxy.OpHead, s3proxy.OpList, s3proxy.OpDelete} {
		if n := c.Requests[op]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", op, float64(n)/gib))
		}
	}
	return strings.Join(parts, ", ")
}

func countsString(c s3proxy.Counts) string {
	var parts []string
	for _, op := range []s3proxy.Op{s3proxy.OpPut, s3proxy.OpPost, s3proxy.OpGet, s3proxy.OpHead, s3proxy.OpList, s3proxy.OpDelete} {
		if n := c.Requests[op]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", op, n))
		}
	}
	return strings.Join(parts, ", ")
}

// s3ServerName is the S3 server testutil.StartS3Server runs.
func s3ServerName() string {
	if v := os.Getenv(testutil.ServerEnv); v != "" {
		return v
	}
	return "versitygw"
}

// cpuTimes is the machine's CPU time, busy and in all, from /proc/stat: on
// a machine where the S3 server, the proxy, fio and zerofs share a few
// cores, how busy they were says whether a figure is bound by the store's
// latency or by the machine.
type cpuTimes struct{ busy, total float64 }

func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{math.NaN(), math.NaN()}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var t cpuTimes
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

// busySince is how many cores were busy on average since from, over
// elapsed. /proc/stat counts in USER_HZ ticks, 100 a second on Linux.
func (t cpuTimes) busySince(from cpuTimes, elapsed time.Duration) float64 {
	return (t.busy - from.busy) / 100 / elapsed.Seconds()
}
