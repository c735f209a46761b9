package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zerofs/config"
	"zerofs/internal/testutil"
)

// The CLI tests build the real binary and run it as users do.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func zerofsBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zerofs-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "zerofs")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // handed out by freePort
)

// freePort returns a free port in 30000-39999, never the same twice in one
// test binary (a server given the same port twice would fail to start).
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 100; i++ {
		p := 30000 + rand.IntN(10000)
		if ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			ports[p] = true
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

type server struct {
	proc  *testutil.Proc
	dir   string
	admin string
	nbd   string
	nfs   string
	// command, if set, makes the command that runs `zerofs run -c
	// zerofs.toml` (the default).
	command func(bin string) *exec.Cmd
}

// startServer runs `zerofs run -c` on the example configuration with only the
// ports changed, in a fresh working directory.
func startServer(t testing.TB, bin, template string) *server {
	t.Helper()
	s := newServer(t)
	s.nbd = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.nfs = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := strings.NewReplacer(`"127.0.0.1:10809"`, `"`+s.nbd+`"`, `"127.0.0.1:2049"`, `"`+s.nfs+`"`,
		`"127.0.0.1:7311"`, `"`+s.admin+`"`, "disk_size_gb = 1.0", "disk_size_gb = 0.05").Replace(template)
	return s.start(t, bin, cfg)
}

func newServer(t testing.TB) *server {
	return &server{dir: t.TempDir()}
}

// start writes cfg as zerofs.toml in the server's directory and runs it.
func (s *server) start(t testing.TB, bin, cfg string) *server {
	t.Helper()
	dir := s.dir
	if err := os.WriteFile(filepath.Join(dir, "zerofs.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-c", "zerofs.toml")
	if s.command != nil {
		cmd = s.command(bin)
	}
	cmd.Dir = dir
	s.proc = testutil.Start(t, cmd) // killed at cleanup if still running
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", s.log())
		}
	})
	if _, err := s.proc.WaitLine(time.Minute, func(l string) bool { return strings.Contains(l, "zerofs is ready") }); err != nil {
		t.Fatalf("server not ready: %v\n%s", err, s.log())
	}
	return s
}

func (s *server) log() string { return s.proc.Output() }

func (s *server) stop(t testing.TB) {
	t.Helper()
	s.proc.Signal(syscall.SIGTERM)
	select {
	case <-s.proc.Exited():
		if err := s.proc.Err(); err != nil {
			t.Fatalf("server exited with %v after SIGTERM:\n%s", err, s.log())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not stop within 60s of SIGTERM:\n%s", s.log())
	}
	if !strings.Contains(s.log(), "msg=stopped") {
		t.Fatalf("no clean stop in the log:\n%s", s.log())
	}
}

func run(t testing.TB, bin string, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-test-deps.sh (make test does)", tool)
		}
	}
}

// TestInitOutputRuns: `zerofs init -` prints a configuration that parses and
// serves unchanged (but for the ports, so tests do not collide).
func TestInitOutputRuns(t *testing.T) {
	bin := zerofsBinary(t)
	out, err := run(t, bin, "", "init", "-")
	if err != nil {
		t.Fatalf("init -: %v\n%s", err, out)
	}
	if _, err := config.Parse("init-output.toml", []byte(out)); err != nil {
		t.Fatalf("init output does not parse: %v", err)
	}
	// Unchanged, when nothing else holds the default ports.
	free := true
	for _, a := range []string{"127.0.0.1:10809", "127.0.0.1:2049", "127.0.0.1:7311"} {
		if ln, err := net.Listen("tcp", a); err != nil {
			free = false
		} else {
			ln.Close()
		}
	}
	var s *server
	if free {
		s = newServer(t)
		s.nbd, s.nfs, s.admin = "127.0.0.1:10809", "127.0.0.1:2049", "127.0.0.1:7311"
		s.start(t, bin, out)
	} else {
		t.Log("a default port is taken on this machine: running the init output with other ports")
		s = startServer(t, bin, out)
	}
	s.stop(t)

	// init FILE writes the file and refuses to overwrite it.
	path := filepath.Join(t.TempDir(), "z.toml")
	if out, err := run(t, bin, "", "init", path); err != nil {
		t.Fatalf("init FILE: %v\n%s", err, out)
	}
	if out, err := run(t, bin, "", "init", path); err == nil || !strings.Contains(out, "exists") {
		t.Fatalf("init over an existing file: %v\n%s", err, out)
	}
}

// TestRunServesAndManagesDevices is `make run` as a user sees it: the example
// configuration starts, serves NBD, the CLI manages devices, /metrics shows
// the traffic, SIGTERM stops cleanly and the data is there after a restart.
func TestRunServesAndManagesDevices(t *testing.T) {
	need(t, "nbdinfo", "qemu-io", "nfs-ls", "nfs-cat")
	bin := zerofsBinary(t)
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, string(example))
	adm := []string{"--admin", s.admin}
	if out, err := run(t, bin, "", append([]string{"nbd", "create", "disk0", "--size", "64M"}, adm...)...); err != nil {
		t.Fatalf("nbd create: %v\n%s", err, out)
	}
	if out, err := run(t, bin, "", append([]string{"nbd", "create", "disk0", "--size", "64M"}, adm...)...); err == nil {
		t.Fatalf("creating an existing device succeeded:\n%s", out)
	}
	if out, err := run(t, bin, "", append([]string{"nbd", "resize", "disk0", "--size", "128M"}, adm...)...); err != nil {
		t.Fatalf("nbd resize: %v\n%s", err, out)
	}
	out, err := run(t, bin, "", append([]string{"nbd", "list"}, adm...)...)
	if err != nil || !strings.Contains(out, "disk0") || !strings.Contains(out, "134217728") {
		t.Fatalf("nbd list: %v\n%s", err, out)
	}
	uri := "nbd://" + s.nbd + "/disk0"
	info, err := exec.Command("nbdinfo", "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo: %v", err)
	}
	var parsed struct {
		Exports []struct {
			Size uint64 `json:"export-size"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(info, &parsed); err != nil || len(parsed.Exports) != 1 || parsed.Exports[0].Size != 128<<20 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, info)
	}
	qout, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 4096 1M", "-c", "flush", "-c", "read -P 0x5a 4096 1M", uri).CombinedOutput()
	if err != nil || strings.Contains(string(qout), "failed") {
		t.Fatalf("qemu-io: %v\n%s", err, qout)
	}
	// NFS on the same filesystem: the device is a file in /.nbd.
	host, port, _ := net.SplitHostPort(s.nfs)
	nfsURL := fmt.Sprintf("nfs://%s/.nbd/?nfsport=%s&mountport=%s&auto-traverse-mounts=0", host, port, port)
	ls, err := exec.Command("nfs-ls", nfsURL).CombinedOutput()
	if err != nil || !strings.Contains(string(ls), "disk0") {
		t.Fatalf("nfs-ls of /.nbd: %v\n%s", err, ls)
	}
	status, err := run(t, bin, "", append([]string{"status", "--json"}, adm...)...)
	if err != nil || !strings.Contains(status, `"writable": true`) || !strings.Contains(status, `"put":`) {
		t.Fatalf("status: %v\n%s", err, status)
	}
	// The human form says what the store's requests cost.
	status, err = run(t, bin, "", append([]string{"status"}, adm...)...)
	if err != nil || !strings.Contains(status, "requests (main store)") || !strings.Contains(status, "per GiB") {
		t.Fatalf("status: %v\n%s", err, status)
	}
	// A read right after a flush may be served from the frames of a batch
	// the applier has not reached yet, which is not a cache hit: the frames
	// move to the cache when the batch is applied, asynchronously. Read
	// again until the cache has answered, instead of betting on timing.
	var metrics string
	for deadline := time.Now().Add(time.Minute); ; {
		metrics = scrape(t, "http://"+s.admin+"/metrics")
		if nonZero(metrics, "zerofs_cache_hits_total") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
		if qout, err := exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0x5a 4096 1M", uri).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io read: %v\n%s", err, qout)
		}
	}
	for _, family := range []string{"zerofs_nbd_requests_total", "zerofs_nbd_request_duration_seconds_count",
		"zerofs_nbd_bytes_total", "zerofs_store_requests_total", "zerofs_store_bytes_total", "zerofs_store_max_requests",
		"zerofs_wal_records_total", "zerofs_wal_bytes_total", "zerofs_commit_duration_seconds_count",
		"zerofs_nfs_requests_total", "zerofs_nfs_request_duration_seconds_count", "zerofs_cache_hits_total",
		"zerofs_file_bytes_total"} {
		if !nonZero(metrics, family) {
			t.Errorf("metric family %s has no non-zero sample", family)
		}
	}
	s.stop(t)

	// Restart on the same directory: the device and its data are there.
	cfg, err := os.ReadFile(filepath.Join(s.dir, "zerofs.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s2 := newServer(t)
	s2.dir, s2.nbd, s2.nfs, s2.admin = s.dir, s.nbd, s.nfs, s.admin
	s2.start(t, bin, string(cfg))
	qout, err = exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0x5a 4096 1M", uri).CombinedOutput()
	if err != nil || strings.Contains(string(qout), "failed") {
		t.Fatalf("data after restart: %v\n%s", err, qout)
	}
	s2.stop(t)
}

func scrape(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// nonZero reports whether some sample of the family has a non-zero value.
func nonZero(text, family string) bool {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, family) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := strings.TrimPrefix(line, family)
		if rest != "" && rest[0] != '{' && rest[0] != ' ' {
			continue // a longer name sharing the prefix
		}
		f := strings.Fields(line)
		if v := f[len(f)-1]; v != "0" && v != "0.0" {
			return true
		}
	}
	return false
}

func TestSizes(t *testing.T) {
	cases := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"4096", 4096, true}, {"100G", 100 << 30, true}, {"20GiB", 20 << 30, true}, {"512m", 512 << 20, true},
		{"1T", 1 << 40, true}, {"", 0, false}, {"1.5G", 0, false}, {"-1G", 0, false}, {"ten", 0, false},
		{"99999999999999999999E", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v", tc.in, got, err)
			}
		})
	}
}

func TestErrorsSayWhatToFix(t *testing.T) {
	bin := zerofsBinary(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"run without config", []string{"run"}, "-c FILE is required"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"nbd without subcommand", []string{"nbd"}, "missing subcommand"},
		{"nbd create without size", []string{"nbd", "create", "x"}, "needs --size"},
		{"nbd create with an unaligned size", []string{"nbd", "create", "x", "--size", "1000001", "--admin", "127.0.0.1:1"}, "use 999424 (976K) or 1003520 (980K)"},
		{"nbd resize with an unaligned size", []string{"nbd", "resize", "x", "--size", "1000001", "--admin", "127.0.0.1:1"}, "not a multiple of 4096"},
		{"no server", []string{"nbd", "list", "--admin", "127.0.0.1:1"}, "is zerofs running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, bin, "", tc.args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("zerofs %v: %v\n%s", tc.args, err, out)
			}
		})
	}
	// --help on every command works and exits 0.
	for _, c := range commands {
		if out, err := run(t, bin, "", c.name, "--help"); err != nil && c.name != "version" {
			t.Errorf("zerofs %s --help: %v\n%s", c.name, err, out)
		}
	}
}
