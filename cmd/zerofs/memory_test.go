package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAbandonedConnectionsDuringOutage: during a store outage, 50 clients
// connect, send writes, and vanish with the writes in flight. The server's
// memory must stay within the budgets plus the fixed overhead that
// docs/operations.md documents ("Memory"), and once the store is back every
// flushed block verifies — also after kill -9 and a restart. Before
// requests belonged to their connections and payloads to one budget, the
// resident set grew by the abandoned connections' buffers (98 to 471 MiB
// over 24 connections).
func TestAbandonedConnectionsDuringOutage(t *testing.T) {
	need(t, "qemu-io", "chattr")
	if os.Getuid() != 0 {
		t.Skip("the outage is made with chattr +i, which needs root")
	}
	bin := zerofsBinary(t)
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"max_dirty_mb = 256", "max_dirty_mb = 16",
		"batch_size_mb = 16", "batch_size_mb = 4",
		"max_request_mb = 128", "max_request_mb = 16",
		"memory_size_gb = 0.5", "memory_size_gb = 0.03125",
		// Connections stalled this long are reset: the clients below
		// vanish with writes still unsent, whose FIN the server cannot see.
		`max_read_wait = "20s"`, `max_read_wait = "3s"`,
	).Replace(string(example))
	s := startServer(t, bin, cfg)
	adm := []string{"--admin", s.admin}
	if out, err := run(t, bin, "", append([]string{"nbd", "create", "dev", "--size", "512M"}, adm...)...); err != nil {
		t.Fatalf("nbd create: %v\n%s", err, out)
	}
	uri := "nbd://" + s.nbd + "/dev"

	// Flushed before the outage: 32 blocks of 64 KiB, block i filled with i+1.
	var cmds []string
	for i := range 32 {
		cmds = append(cmds, "-c", fmt.Sprintf("write -P %d %d 64k", i+1, i<<20))
	}
	// Plain writes (writeback), not FUA ones: they give the device its
	// unflushed-write mark (fs/marks.go) before the outage, as a device in
	// use has one. A first plain write during the outage would wait for
	// its mark, not for memory.
	qemuIO(t, uri, append(append([]string{"-t", "writeback"}, cmds...), "-c", "flush")...)
	before := vmHWM(t, s.proc.Pid())

	// The outage: the file store can no longer create objects (every PUT
	// fails, GETs still work).
	staging := filepath.Join(s.dir, "data", "store", ".zerofs", "tmp")
	if out, err := exec.Command("chattr", "+i", staging).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s: %v %s (needs a filesystem with the immutable flag)", staging, err, out)
	}
	outageOver := false
	endOutage := func() {
		if !outageOver {
			outageOver = true
			if out, err := exec.Command("chattr", "-i", staging).CombinedOutput(); err != nil {
				t.Errorf("chattr -i: %v %s", err, out)
			}
		}
	}
	t.Cleanup(endOutage)

	// A client writes block Y and flushes during the outage; its flush is
	// answered once the store is back.
	survivor := make(chan error, 1)
	go func() {
		// writeback: a plain WRITE, then a FLUSH (not a FUA write).
		out, err := exec.Command("qemu-io", "-f", "raw", "-t", "writeback", "-c", fmt.Sprintf("write -P 0xee %d 64k", 100<<20), "-c", "flush", uri).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		survivor <- err
	}()
	// Its write is done (and its flush waits) before the others come.
	deadline := time.Now().Add(30 * time.Second)
	for metricValue(t, scrape(t, "http://"+s.admin+"/metrics"), `zerofs_nbd_requests_total{op="write",result="ok"}`) < 33 {
		if time.Now().After(deadline) {
			t.Fatalf("the surviving client's write was not answered:\n%s", scrape(t, "http://"+s.admin+"/metrics"))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// 50 clients send 8 MiB of writes each and vanish with them in flight.
	var wg sync.WaitGroup
	for c := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			abandonWrites(t, s.nbd, "dev", uint64(200+c)<<20, 8)
		}()
	}
	wg.Wait()
	// Their requests leave with them, while the store is still down: the
	// request memory goes back to (at most) the surviving client's write.
	deadline = time.Now().Add(30 * time.Second)
	for {
		held := metricValue(t, scrape(t, "http://"+s.admin+"/metrics"), "zerofs_request_bytes")
		if held <= 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			s.proc.Signal(syscall.SIGQUIT)
			time.Sleep(2 * time.Second)
			t.Fatalf("%v bytes of request memory still held 30 s after the clients vanished", held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	peakOutage := vmHWM(t, s.proc.Pid())
	endOutage()
	select {
	case err := <-survivor:
		if err != nil {
			t.Fatalf("write + flush across the outage: %v", err)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("the flush across the outage did not finish after the store came back")
	}
	peak := vmHWM(t, s.proc.Pid())
	// docs/operations.md, "Memory": the budgets, the memory cache, and a
	// fixed overhead (runtime, pebble, buffers and garbage) of 160 MiB.
	const mib = 1 << 20
	bound := int64(16+16+32)*mib + 160*mib
	t.Logf("peak RSS %d MiB before the outage, %d MiB during it, %d MiB overall; bound %d MiB (budgets 16+16, memory cache 32, overhead 160)",
		before/mib, peakOutage/mib, peak/mib, bound/mib)
	if peak > bound {
		t.Errorf("peak RSS %d MiB exceeds the documented bound %d MiB", peak/mib, bound/mib)
	}

	// kill -9 and restart: everything flushed is there.
	if err := s.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	s2 := newServer(t)
	s2.dir = s.dir
	s2.nbd, s2.nfs, s2.admin = s.nbd, s.nfs, s.admin
	s2.start(t, bin, cfgWithPorts(cfg, s))
	// The abandoned clients' writes were acknowledged and never flushed:
	// the device is interrupted (fs/marks.go) until cleared.
	if out, err := run(t, bin, "", "nbd", "clear", "dev", "--admin", s2.admin); err != nil || !strings.Contains(s2.log(), "NBD device interrupted") {
		t.Fatalf("nbd clear: %v\n%s\nserver log:\n%s", err, out, s2.log())
	}
	uri = "nbd://" + s2.nbd + "/dev"
	cmds = cmds[:0]
	for i := range 32 {
		cmds = append(cmds, "-c", fmt.Sprintf("read -P %d %d 64k", i+1, i<<20))
	}
	qemuIO(t, uri, append(cmds, "-c", fmt.Sprintf("read -P 0xee %d 64k", 100<<20))...)
}

// cfgWithPorts is cfg with the ports startServer chose for s.
func cfgWithPorts(cfg string, s *server) string {
	return strings.NewReplacer(`"127.0.0.1:10809"`, `"`+s.nbd+`"`, `"127.0.0.1:2049"`, `"`+s.nfs+`"`,
		`"127.0.0.1:7311"`, `"`+s.admin+`"`, "disk_size_gb = 1.0", "disk_size_gb = 0.05").Replace(cfg)
}

func qemuIO(t testing.TB, uri string, cmds ...string) {
	t.Helper()
	out, err := exec.Command("qemu-io", append(append([]string{"-f", "raw"}, cmds...), uri)...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("Pattern verification failed")) || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
	}
}

// metricValue is the value of an unlabelled sample in a /metrics text.
func metricValue(t testing.TB, text, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// vmHWM is the peak resident set of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// abandonWrites connects to export name, sends n 1 MiB WRITEs starting at
// off without reading a reply, and closes the connection while they are in
// flight (the server stops reading once its budgets are full, so the last
// sends block until the close).
func abandonWrites(t *testing.T, addr, name string, off uint64, n int) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Error(err)
		return
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	// Fixed newstyle handshake with NBD_OPT_EXPORT_NAME (NetworkBlockDevice
	// doc/proto.md): greeting, client flags, the option, the export's size
	// and flags (and 124 zero bytes, as NO_ZEROES is not asked for).
	greet := make([]byte, 18)
	if _, err := io.ReadFull(nc, greet); err != nil {
		t.Error(err)
		return
	}
	req := binary.BigEndian.AppendUint32(nil, 1) // NBD_FLAG_C_FIXED_NEWSTYLE
	req = binary.BigEndian.AppendUint64(req, 0x49484156454F5054)
	req = binary.BigEndian.AppendUint32(req, 1) // NBD_OPT_EXPORT_NAME
	req = binary.BigEndian.AppendUint32(req, uint32(len(name)))
	req = append(req, name...)
	if _, err := nc.Write(req); err != nil {
		t.Error(err)
		return
	}
	if _, err := io.ReadFull(nc, make([]byte, 8+2+124)); err != nil {
		t.Error(err)
		return
	}
	nc.SetDeadline(time.Time{})
	payload := bytes.Repeat([]byte{0xab}, 1<<20)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			h := binary.BigEndian.AppendUint32(nil, 0x25609513)
			h = binary.BigEndian.AppendUint16(h, 0) // flags
			h = binary.BigEndian.AppendUint16(h, 1) // NBD_CMD_WRITE
			h = binary.BigEndian.AppendUint64(h, uint64(i+1))
			h = binary.BigEndian.AppendUint64(h, off+uint64(i)<<20)
			h = binary.BigEndian.AppendUint32(h, 1<<20)
			if _, err := nc.Write(append(h, payload...)); err != nil {
				return // closed under us: abandoned mid-send
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(2 * time.Second):
	}
	nc.Close()
	<-sent
}
