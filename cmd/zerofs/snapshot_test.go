package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"zerofs/internal/testutil"
)

// nbdshWriteErrno writes 4 KiB at offset 0 of uri and prints "OK" or
// "ERRNO n". libnbd refuses a write to a read-only export itself (EPERM);
// the server refuses it too (nbd tests send one raw).
const nbdshWriteErrno = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 4096, 0)
    print("OK")
except nbd.Error as e:
    print("ERRNO %d" % e.errnum)
`

// TestSnapshotsThroughRealClients: with the bucket on a real S3 server, a
// snapshot's devices are read-only exports DEVICE@SNAPSHOT that nbdinfo
// lists as such, qemu-io reads the old content from while the device has
// the new, and a write to which fails; a clone of it copies out (nbdcopy)
// equal to its source; nfs-ls lists the snapshot's tree under /.snapshots.
// All of it again after kill -9 and a restart, and on a fresh machine that
// has only the bucket.
func TestSnapshotsThroughRealClients(t *testing.T) {
	need(t, "nbdinfo", "qemu-io", "nbdcopy", "nfs-ls")
	testutil.RequirePythonNBD(t)
	bin := zerofsBinary(t)
	endpoint, ak, sk := testutil.StartS3Server(t)
	url, _ := testutil.CreateBucket(t, endpoint, ak, sk, "snapshots", "fs")
	tmpl := s3Config(t, url, endpoint, ak, sk)
	s := startServer(t, bin, tmpl)
	cfg := cfgWithPorts(tmpl, s)
	cli := func(s *server, args ...string) string {
		t.Helper()
		out, err := run(t, bin, "", append(args, "--admin", s.admin)...)
		if err != nil {
			t.Fatalf("zerofs %v: %v\n%s", args, err, out)
		}
		return out
	}
	uri := func(s *server, name string) string { return "nbd://" + s.nbd + "/" + name }

	cli(s, "nbd", "create", "d", "--size", "1G")
	// Old content: a pattern over the first 64 MiB, another at 900 MiB.
	qemuIO(t, uri(s, "d"), "-c", "write -P 0x11 0 64M", "-c", "write -P 0x33 900M 16M")
	if out := cli(s, "snapshot", "create", "s1"); !strings.Contains(out, "created snapshot s1") {
		t.Fatalf("snapshot create: %s", out)
	}
	qemuIO(t, uri(s, "d"), "-c", "write -P 0x22 0 64M")
	cli(s, "nbd", "clone", "d@s1", "c1")
	if out := cli(s, "snapshot", "list"); !strings.Contains(out, "s1") {
		t.Fatalf("snapshot list: %s", out)
	}

	check := func(s *server, when string) {
		t.Helper()
		// nbdinfo lists d@s1, read-only; d writable.
		out, err := exec.Command("nbdinfo", "--json", "--list", "nbd://"+s.nbd).Output()
		if err != nil {
			t.Fatalf("%s: nbdinfo --list: %v", when, err)
		}
		var list struct {
			Exports []struct {
				Name     string `json:"export-name"`
				ReadOnly bool   `json:"is_read_only"`
				Size     uint64 `json:"export-size"`
			} `json:"exports"`
		}
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("%s: nbdinfo output: %v\n%s", when, err, out)
		}
		ro := map[string]bool{}
		for _, e := range list.Exports {
			ro[e.Name] = e.ReadOnly
			if e.Size != 1<<30 {
				t.Errorf("%s: export %s has size %d", when, e.Name, e.Size)
			}
		}
		if len(list.Exports) != 3 || !ro["d@s1"] || ro["d"] || ro["c1"] {
			t.Fatalf("%s: nbdinfo lists %+v; want d and c1 writable, d@s1 read-only", when, list.Exports)
		}
		// The snapshot has the old pattern, the device the new one.
		qemuIO(t, uri(s, "d@s1"), "-r", "-c", "read -P 0x11 0 64M", "-c", "read -P 0x33 900M 16M", "-c", "read -P 0 64M 1M")
		qemuIO(t, uri(s, "d"), "-c", "read -P 0x22 0 64M", "-c", "read -P 0x33 900M 16M")
		// A write to the snapshot fails.
		if got := nbdsh(t, nbdshWriteErrno, uri(s, "d@s1")); got != "ERRNO 1" && got != "ERRNO 30" {
			t.Fatalf("%s: write to d@s1: %s, want ERRNO 1 (EPERM) or 30 (EROFS)", when, got)
		}
		// The clone copies out equal to its source.
		dir := t.TempDir()
		a, b := filepath.Join(dir, "c1.img"), filepath.Join(dir, "s1.img")
		for _, cp := range [][2]string{{uri(s, "c1"), a}, {uri(s, "d@s1"), b}} {
			if out, err := exec.Command("nbdcopy", cp[0], cp[1]).CombinedOutput(); err != nil {
				t.Fatalf("%s: nbdcopy %s: %v\n%s", when, cp[0], err, out)
			}
		}
		if sa, sb := testutil.FileSHA256(t, a), testutil.FileSHA256(t, b); sa != sb {
			t.Fatalf("%s: nbdcopy of clone c1 differs from its source d@s1", when)
		}
		os.Remove(a)
		os.Remove(b)
		// nfs-ls lists the snapshot's tree.
		_, port, _ := strings.Cut(s.nfs, ":")
		nfsURL := func(path string) string {
			return fmt.Sprintf("nfs://127.0.0.1%s?nfsport=%s&mountport=%s&version=3", path, port, port)
		}
		out, err = exec.Command("nfs-ls", nfsURL("/.snapshots/s1/.nbd")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), " d\n") {
			t.Fatalf("%s: nfs-ls /.snapshots/s1/.nbd: %v\n%s", when, err, out)
		}
		out, err = exec.Command("nfs-ls", nfsURL("/.snapshots/s1/")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ".nbd") {
			t.Fatalf("%s: nfs-ls /.snapshots/s1/: %v\n%s", when, err, out)
		}
	}
	check(s, "live")

	// kill -9, then a restart on the same machine.
	if err := s.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	s2 := newServer(t)
	s2.dir = s.dir
	s2.nbd, s2.nfs, s2.admin = s.nbd, s.nfs, s.admin
	s2.start(t, bin, cfg)
	check(s2, "after kill -9")

	// kill -9 again; a fresh machine with only the bucket.
	if err := s2.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	fresh := newServer(t)
	fresh.nbd, fresh.nfs, fresh.admin = s.nbd, s.nfs, s.admin
	fresh.start(t, bin, cfg)
	check(fresh, "on a fresh machine")

	// Deleting a snapshot a client has attached fails and names it.
	py := exec.Command(testutil.Python, "-c", `
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("ATTACHED", flush=True)
time.sleep(60)
`, uri(fresh, "d@s1"))
	stdout, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	defer py.Process.Kill()
	buf := make([]byte, 9)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ATTACHED\n" {
		t.Fatalf("libnbd client: %q %v", buf, err)
	}
	out, err := run(t, bin, "", "snapshot", "delete", "s1", "--admin", fresh.admin)
	if err == nil || !strings.Contains(out, "d@s1 attached by 127.0.0.1:") {
		t.Fatalf("delete of an attached snapshot: %v\n%s", err, out)
	}
	py.Process.Kill()
	py.Wait()
	testutil.Eventually(t, func() bool {
		_, err := run(t, bin, "", "snapshot", "delete", "s1", "--admin", fresh.admin)
		return err == nil
	}, func() string { return "the snapshot to be deletable once its client is gone" })
	if out := cli(fresh, "snapshot", "list"); strings.Contains(out, "s1") {
		t.Fatalf("s1 still listed after delete:\n%s", out)
	}
	// The clone outlives its snapshot.
	qemuIO(t, uri(fresh, "c1"), "-c", "read -P 0x11 0 64M", "-c", "read -P 0x33 900M 16M")
	fresh.stop(t)
}

// s3Config is config.example.toml with its store in bucket url on the S3
// server at endpoint.
func s3Config(t testing.TB, url, endpoint, accessKey, secretKey string) string {
	t.Helper()
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		`url = "file://./data/store"`, `url = "`+url+`"`,
		`endpoint = ""`, `endpoint = "`+endpoint+`"`,
		`access_key_id = ""`, `access_key_id = "`+accessKey+`"`,
		`secret_access_key = ""`, `secret_access_key = "`+secretKey+`"`,
		`allow_http = false`, `allow_http = true`,
	).Replace(string(example))
}
