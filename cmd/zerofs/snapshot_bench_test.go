package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"zerofs/internal/s3proxy"
	"zerofs/internal/testutil"
)

// BenchmarkSnapshotClone measures what a snapshot and a clone of a large
// device cost, through the CLI of a real server on versitygw behind
// internal/s3proxy: a device of ZEROFS_BENCH_DEVICE_GB (default 100) with
// ZEROFS_BENCH_WRITTEN_GB (default 10) of random data written, then with the
// proxy adding ZEROFS_BENCH_LATENCY_MS (default 50) to every request:
//
//	zerofs snapshot create        time, bytes and requests uploaded
//	zerofs nbd clone DEV NEW      the same
//	zerofs nbd clone DEV@SNAP NEW the same
//
// next to the baseline from the same run: the copy a clone replaces,
// nbdcopy of the device into a new one (skipped with
// ZEROFS_BENCH_NO_COPY=1), and the writing of the data itself.
// bench/snapshot.sh runs it; docs/benchmarks.md has the figures.
func BenchmarkSnapshotClone(b *testing.B) {
	need(b, "nbdcopy", "nbdkit")
	env := func(name string, def int) int {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				b.Fatalf("%s=%q: %v", name, v, err)
			}
			return n
		}
		return def
	}
	deviceGB, writtenGB := env("ZEROFS_BENCH_DEVICE_GB", 100), env("ZEROFS_BENCH_WRITTEN_GB", 10)
	latency := time.Duration(env("ZEROFS_BENCH_LATENCY_MS", 50)) * time.Millisecond
	bin := zerofsBinary(b)
	endpoint, ak, sk := testutil.StartS3Server(b)
	url, _ := testutil.CreateBucket(b, endpoint, ak, sk, "snapbench", "fs")
	px, err := s3proxy.Start(endpoint, s3proxy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer px.Close()
	tmpl := s3Config(b, url, px.URL(), ak, sk)
	s := startServer(b, bin, tmpl)
	cli := func(args ...string) string {
		out, err := run(b, bin, "", append(args, "--admin", s.admin)...)
		if err != nil {
			b.Fatalf("zerofs %v: %v\n%s", args, err, out)
		}
		return out
	}
	uri := func(name string) string { return "nbd://" + s.nbd + "/" + name }
	type cost struct {
		elapsed  time.Duration
		uploaded int64 // request bytes the proxy saw
		requests int64
	}
	measure := func(fn func()) cost {
		px.Reset()
		start := time.Now()
		fn()
		c := px.Counts()
		return cost{time.Since(start), c.BytesIn, c.Total()}
	}
	nbdcopy := func(args ...string) {
		if out, err := exec.Command("nbdcopy", args...).CombinedOutput(); err != nil {
			b.Fatalf("nbdcopy %v: %v\n%s", args, err, out)
		}
	}

	cli("nbd", "create", "d", "--size", fmt.Sprintf("%dG", deviceGB))
	write := measure(func() {
		nbdcopy("--", "[", "nbdkit", "random", fmt.Sprintf("size=%dG", writtenGB), "]", uri("d"))
	})
	px.SetLatency(latency, 0)
	snap := measure(func() { cli("snapshot", "create", "s1") })
	clone := measure(func() { cli("nbd", "clone", "d", "c1") })
	cloneSnap := measure(func() { cli("nbd", "clone", "d@s1", "c2") })
	var copied cost
	if os.Getenv("ZEROFS_BENCH_NO_COPY") == "" {
		cli("nbd", "create", "copy", "--size", fmt.Sprintf("%dG", deviceGB))
		copied = measure(func() {
			nbdcopy(uri("d"), uri("copy"))
			cli("status") // nbdcopy flushes at the end
		})
	}
	s.stop(b)

	gib := func(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	fmt.Printf("\n%d GiB device, %d GiB of random data written; the proxy adds %v per request after the write\n\n", deviceGB, writtenGB, latency)
	fmt.Println("| operation | time | uploaded | requests |")
	fmt.Println("|---|---|---|---|")
	row := func(name string, c cost, size func(int64) string) {
		fmt.Printf("| %s | %s | %s | %d |\n", name, c.elapsed.Round(time.Millisecond), size(c.uploaded), c.requests)
	}
	row("zerofs snapshot create s1", snap, mib)
	row("zerofs nbd clone d c1", clone, mib)
	row("zerofs nbd clone d@s1 c2", cloneSnap, mib)
	if copied.elapsed > 0 {
		row("baseline: nbdcopy d to a new device (what a clone replaces)", copied, gib)
	}
	row(fmt.Sprintf("baseline: writing the %d GiB (no added latency)", writtenGB), write, gib)
}
