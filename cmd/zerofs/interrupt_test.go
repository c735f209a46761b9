package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"zerofs/internal/testutil"
)

// nbdshProbe reads 64 KiB at offset 0 of uri with libnbd and prints either
// "ERRNO n" (the request failed with errno n) or "BYTE b" (the first byte
// of a block that is all b) or "TORN".
const nbdshProbe = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    buf = h.pread(65536, 0)
    print("BYTE %d" % buf[0] if buf == bytes([buf[0]]) * len(buf) else "TORN")
except nbd.Error as e:
    print("ERRNO %d" % e.errnum)
h.shutdown()
`

// nbdshWriteNoFlush writes 64 KiB of byte argv[2] at offset 0 of uri and
// disconnects without a FLUSH.
const nbdshWriteNoFlush = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes([int(sys.argv[2])]) * 65536, 0)
print("WRITTEN")
`

func nbdsh(t testing.TB, script string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.py")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testutil.Python, append([]string{path}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 libnbd script %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestCrashInterruptsUnflushedExports: an export written without a flush
// and then cut off by kill -9 is interrupted — its I/O fails with EIO, on
// this machine and on a fresh one, across clean restarts — until `zerofs
// nbd clear`; an export whose writes were all flushed is not; after a
// clean stop nothing is interrupted and nothing is lost (fs/marks.go).
func TestCrashInterruptsUnflushedExports(t *testing.T) {
	need(t, "nbdsh", "qemu-io")
	testutil.RequirePythonNBD(t)
	bin := zerofsBinary(t)
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, string(example))
	cfg := cfgWithPorts(string(example), s)
	adm := func(s *server) []string { return []string{"--admin", s.admin} }
	cli := func(s *server, args ...string) string {
		t.Helper()
		out, err := run(t, bin, "", append(args, adm(s)...)...)
		if err != nil {
			t.Fatalf("zerofs %v: %v\n%s", args, err, out)
		}
		return out
	}
	uri := func(s *server, name string) string { return "nbd://" + s.nbd + "/" + name }
	for _, name := range []string{"dirty", "clean"} {
		cli(s, "nbd", "create", name, "--size", "64M")
	}
	marks := filepath.Join(s.dir, "data", "store", "marks")

	// clean: written (plain writes, not FUA: it gets a mark) and flushed,
	// then left until its mark is gone.
	qemuIO(t, uri(s, "clean"), "-t", "writeback", "-c", "write -P 0x11 0 64k", "-c", "flush")
	if ents, _ := os.ReadDir(marks); len(ents) != 1 {
		t.Fatalf("%d marks after a plain write, want 1", len(ents))
	}
	testutil.Eventually(t, func() bool {
		ents, _ := os.ReadDir(marks)
		return len(ents) == 0
	}, func() string { return "the mark of a flushed, quiet export to go" })
	// dirty: written, never flushed; the server dies at once.
	if out := nbdsh(t, nbdshWriteNoFlush, uri(s, "dirty"), "34"); out != "WRITTEN" {
		t.Fatalf("write: %s", out)
	}
	if ents, _ := os.ReadDir(marks); len(ents) != 1 {
		t.Fatalf("%d marks after an unflushed write, want 1", len(ents))
	}
	if err := s.proc.Kill(); err != nil {
		t.Fatal(err)
	}

	// A fresh machine: empty local state, the same bucket.
	fresh := newServer(t)
	fresh.nbd, fresh.nfs, fresh.admin = s.nbd, s.nfs, s.admin
	fresh.start(t, bin, strings.Replace(cfg, `url = "file://./data/store"`, `url = "file://`+filepath.Join(s.dir, "data", "store")+`"`, 1))
	checkInterrupted := func(s *server) {
		t.Helper()
		if got := nbdsh(t, nbdshProbe, uri(s, "dirty")); got != "ERRNO 5" {
			t.Fatalf("read of the interrupted export: %s, want ERRNO 5 (EIO)", got)
		}
		if got := nbdsh(t, nbdshProbe, uri(s, "clean")); got != "BYTE 17" {
			t.Fatalf("read of the flushed export: %s, want BYTE 17", got)
		}
		if out := cli(s, "nbd", "list"); !strings.Contains(out, "interrupted (zerofs nbd clear dirty)") || strings.Count(out, "interrupted") != 1 {
			t.Fatalf("nbd list:\n%s", out)
		}
		if out := cli(s, "status"); !strings.Contains(out, "interrupted") || !strings.Contains(out, "dirty") {
			t.Fatalf("status names no interrupted export:\n%s", out)
		}
		if v := metricValue(t, scrape(t, "http://"+s.admin+"/metrics"), "zerofs_interrupted_files"); v != 1 {
			t.Fatalf("zerofs_interrupted_files %v, want 1", v)
		}
	}
	checkInterrupted(fresh)
	if !strings.Contains(fresh.log(), "interrupted") {
		t.Fatalf("the log does not say an export is interrupted:\n%s", fresh.log())
	}
	// A clean stop keeps the interruption.
	fresh.stop(t)
	s2 := newServer(t)
	s2.dir = s.dir
	s2.nbd, s2.nfs, s2.admin = s.nbd, s.nfs, s.admin
	s2.start(t, bin, cfg)
	checkInterrupted(s2)

	cli(s2, "nbd", "clear", "dirty")
	// What was durable: the unflushed write whole, or not at all.
	if got := nbdsh(t, nbdshProbe, uri(s2, "dirty")); got != "BYTE 34" && got != "BYTE 0" {
		t.Fatalf("read after clear: %s, want BYTE 34 or BYTE 0", got)
	}

	// A clean stop with unflushed writes on both: nothing interrupted, nothing lost.
	nbdsh(t, nbdshWriteNoFlush, uri(s2, "dirty"), "51")
	nbdsh(t, nbdshWriteNoFlush, uri(s2, "clean"), "68")
	s2.stop(t)
	if ents, _ := os.ReadDir(marks); len(ents) != 0 {
		t.Fatalf("%d marks left after a clean stop", len(ents))
	}
	s3 := newServer(t)
	s3.dir = s.dir
	s3.nbd, s3.nfs, s3.admin = s.nbd, s.nfs, s.admin
	s3.start(t, bin, cfg)
	for name, want := range map[string]string{"dirty": "BYTE 51", "clean": "BYTE 68"} {
		if got := nbdsh(t, nbdshProbe, uri(s3, name)); got != want {
			t.Fatalf("%s after a clean restart: %s, want %s", name, got, want)
		}
	}
	if out := cli(s3, "nbd", "list"); strings.Contains(out, "interrupted") {
		t.Fatalf("interrupted after a clean stop:\n%s", out)
	}
}
