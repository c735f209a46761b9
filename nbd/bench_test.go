package nbd

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/internal/pki"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// BenchmarkNBDFio compares zerofs's NBD server (in process, on a file://
// store with default filesystem settings but a memory cache that holds the
// export) with nbdkit's memory plugin, both
// driven by fio's nbd engine in the same run, and prints a table. Run it
// with bench/nbd.sh (or: go test -run '^$' -bench BenchmarkNBDFio
// -benchtime 1x ./nbd). ZEROFS_BENCH_RUNTIME sets seconds per workload
// (default 5), ZEROFS_BENCH_SIZE the export size in MiB (default 512),
// ZEROFS_BENCH_ONLY (a regular expression) runs only the workloads whose
// names it matches.
//
// The machine is shared and noisy: compare the ratios of one run, not
// absolute numbers across runs.
func BenchmarkNBDFio(b *testing.B) {
	fio := requireTool(b, "fio")
	nbdkit := requireTool(b, "nbdkit")
	runtime := envInt(b, "ZEROFS_BENCH_RUNTIME", 5)
	sizeMiB := envInt(b, "ZEROFS_BENCH_SIZE", 512)
	size := uint64(sizeMiB) << 20

	f := benchFS(b, size)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(f, Options{Logger: benchLogger()})
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	zerofsURI := nbdURI(ln.Addr().String(), "bench")

	// nbdkit memory on a port from the test range.
	port := freePortInRange(b)
	kit := exec.Command(nbdkit, "--foreground", "--exit-with-parent", "--port", strconv.Itoa(port), "--ipaddr", "127.0.0.1", "memory", fmt.Sprintf("%dM", sizeMiB))
	kit.Stderr = os.Stderr
	if err := kit.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		kit.Process.Kill()
		kit.Wait()
	}()
	kitURI := fmt.Sprintf("nbd://127.0.0.1:%d/", port)
	waitListening(b, fmt.Sprintf("127.0.0.1:%d", port))

	type workload struct {
		name string
		args []string
	}
	timed := []string{"--time_based=1", fmt.Sprintf("--runtime=%d", runtime), "--ramp_time=1"}
	workloads := []workload{
		{"4k randread QD1", append([]string{"--rw=randread", "--bs=4k", "--iodepth=1"}, timed...)},
		{"4k randread QD32", append([]string{"--rw=randread", "--bs=4k", "--iodepth=32"}, timed...)},
		{"4k randwrite QD1", append([]string{"--rw=randwrite", "--bs=4k", "--iodepth=1"}, timed...)},
		{"4k randwrite QD32", append([]string{"--rw=randwrite", "--bs=4k", "--iodepth=32"}, timed...)},
		{"1M seq read QD8", append([]string{"--rw=read", "--bs=1M", "--iodepth=8"}, timed...)},
		{"1M seq write QD8", append([]string{"--rw=write", "--bs=1M", "--iodepth=8"}, timed...)},
		{"4k randwrite+FLUSH each QD1", append([]string{"--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1"}, timed...)},
	}
	run := func(uri string, args []string) fioStats { return runFio(b, fio, uri, size, runtime, args) }
	// Fill both exports first so reads return data, not holes.
	fill := []string{"--rw=write", "--bs=1M", "--iodepth=8"}
	run(zerofsURI, fill)
	run(kitURI, fill)

	b.ResetTimer()
	var rows []string
	rows = append(rows, fmt.Sprintf("%-28s %12s %10s %12s %10s %8s", "workload", "zerofs IOPS", "MiB/s", "nbdkit IOPS", "MiB/s", "ratio"))
	only, err := regexp.Compile(os.Getenv("ZEROFS_BENCH_ONLY"))
	if err != nil {
		b.Fatalf("ZEROFS_BENCH_ONLY: %v", err)
	}
	for _, w := range workloads {
		if !only.MatchString(w.name) {
			continue
		}
		z := run(zerofsURI, w.args)
		k := run(kitURI, w.args)
		ratio := 0.0
		if k.iops > 0 {
			ratio = z.iops / k.iops
		}
		rows = append(rows, fmt.Sprintf("%-28s %12.0f %10.1f %12.0f %10.1f %8.2f", w.name, z.iops, z.mibps, k.iops, k.mibps, ratio))
		b.ReportMetric(z.iops, strings.ReplaceAll(w.name, " ", "_")+"_zerofs_iops")
	}
	b.StopTimer()
	table := strings.Join(rows, "\n")
	fmt.Printf("\nNBD over loopback, fio nbd engine, %d MiB export, %ds per workload\n%s\n\n", sizeMiB, runtime, table)
}

// runFio runs one fio job with the nbd engine against uri and returns its
// figures.
func runFio(b *testing.B, fio, uri string, size uint64, runtime int, args []string) fioStats {
	all := append([]string{"--name=bench", "--ioengine=nbd", "--uri=" + uri, "--output-format=json",
		fmt.Sprintf("--size=%d", size), "--randrepeat=0"}, args...)
	out, stderr, err := runToolErr(time.Duration(runtime+120)*time.Second, fio, all...)
	if err != nil {
		b.Fatalf("fio %s: %v\n%s\n%s", strings.Join(all, " "), err, out, stderr)
	}
	return parseFioStats(b, out)
}

// BenchmarkNBDTLS measures what TLS costs: the same zerofs server (tls =
// "on") read in plaintext and over TLS by fio's nbd engine, alternately,
// three times each; the table has the medians and the TLS/plaintext ratio.
// fio's libnbd reads no certificate file from a URI, so the TLS client does
// not verify the server (tls-verify-peer=false): the cost measured is the
// session's encryption, which verification does not change.
func BenchmarkNBDTLS(b *testing.B) {
	fio := requireTool(b, "fio")
	runtime := envInt(b, "ZEROFS_BENCH_RUNTIME", 5)
	sizeMiB := envInt(b, "ZEROFS_BENCH_SIZE", 512)
	size := uint64(sizeMiB) << 20
	f := benchFS(b, size)
	ca := testutil.NewPKI(b, "")
	certs, err := pki.Load(pki.Options{Dir: ca.Dir, Logger: benchLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(f, Options{Logger: benchLogger(), TLSMode: TLSOn, TLS: certs.Config()})
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	plain := nbdURI(ln.Addr().String(), "bench")
	secure := "nbds://" + ln.Addr().String() + "/bench?tls-verify-peer=false"
	runFio(b, fio, plain, size, runtime, []string{"--rw=write", "--bs=1M", "--iodepth=8"})

	// The baseline: nbdkit's memory plugin, TLS optional, with the same
	// certificates (GnuTLS on both ends): what TLS costs a C server with the
	// same client.
	nbdkit := requireTool(b, "nbdkit")
	port := freePortInRange(b)
	kit := exec.Command(nbdkit, "--foreground", "--exit-with-parent", "--port", strconv.Itoa(port), "--ipaddr", "127.0.0.1",
		"--tls=on", "--tls-certificates="+ca.Dir, "memory", fmt.Sprintf("%dM", sizeMiB))
	if err := kit.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		kit.Process.Kill()
		kit.Wait()
	}()
	waitListening(b, fmt.Sprintf("127.0.0.1:%d", port))
	kitPlain := fmt.Sprintf("nbd://127.0.0.1:%d/", port)
	kitSecure := fmt.Sprintf("nbds://127.0.0.1:%d/?tls-verify-peer=false", port)
	runFio(b, fio, kitPlain, size, runtime, []string{"--rw=write", "--bs=1M", "--iodepth=8"})

	timed := []string{"--time_based=1", fmt.Sprintf("--runtime=%d", runtime), "--ramp_time=1"}
	workloads := []struct {
		name string
		args []string
	}{
		{"1M seq read QD8", append([]string{"--rw=read", "--bs=1M", "--iodepth=8"}, timed...)},
		{"4k randread QD32", append([]string{"--rw=randread", "--bs=4k", "--iodepth=32"}, timed...)},
		{"1M seq write QD8", append([]string{"--rw=write", "--bs=1M", "--iodepth=8"}, timed...)},
	}
	median := func(v []float64) float64 {
		slices.Sort(v)
		return v[len(v)/2]
	}
	only, err := regexp.Compile(os.Getenv("ZEROFS_BENCH_ONLY"))
	if err != nil {
		b.Fatalf("ZEROFS_BENCH_ONLY: %v", err)
	}
	b.ResetTimer()
	rows := []string{
		fmt.Sprintf("%-18s | %-29s | %-29s", "", "zerofs MiB/s", "nbdkit memory MiB/s"),
		fmt.Sprintf("%-18s | %10s %10s %7s | %10s %10s %7s", "workload", "plain", "TLS", "ratio", "plain", "TLS", "ratio"),
	}
	for _, w := range workloads {
		if !only.MatchString(w.name) {
			continue
		}
		// Median MiB/s of three alternating runs of each.
		measure := func(plain, secure string) (p, t float64) {
			var ps, ts []float64
			for range 3 {
				ps = append(ps, runFio(b, fio, plain, size, runtime, w.args).mibps)
				ts = append(ts, runFio(b, fio, secure, size, runtime, w.args).mibps)
			}
			return median(ps), median(ts)
		}
		zp, zt := measure(plain, secure)
		kp, kt := measure(kitPlain, kitSecure)
		rows = append(rows, fmt.Sprintf("%-18s | %10.1f %10.1f %7.2f | %10.1f %10.1f %7.2f", w.name, zp, zt, zt/zp, kp, kt, kt/kp))
	}
	b.StopTimer()
	fmt.Printf("\nNBD plaintext vs TLS 1.3, zerofs and nbdkit memory, fio nbd engine, %d MiB export, %ds per run, median of 3\n%s\n\n",
		sizeMiB, runtime, strings.Join(rows, "\n"))
}

func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// benchFS opens a filesystem on a file:// store in a temporary directory
// with an export "bench" of size bytes. Its memory cache holds the whole
// export, so read workloads measure cached reads; writes go through the
// full pipeline to the file store.
func benchFS(b *testing.B, size uint64) *fs.FS {
	ctx := context.Background()
	dir := b.TempDir()
	st, err := store.Open(ctx, "file://"+filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	f, err := fs.Open(ctx, fs.Options{
		Main: st, Dir: filepath.Join(dir, "state"), Password: "bench", KeyParams: crypt.TestParams,
		CacheBytes: int64(2 * size), Logger: benchLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	if err := CreateExport(ctx, f, "bench", size); err != nil {
		b.Fatal(err)
	}
	return f
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// freePortInRange picks a free port in 30000–39999 (the range tests use).
func freePortInRange(b *testing.B) int {
	for range 100 {
		p := 30000 + rand.IntN(10000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	b.Fatal("no free port in 30000-39999")
	return 0
}

func waitListening(b *testing.B, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("nothing listens on %s", addr)
}
