package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// fsOptions returns options for a small, fast filesystem for NBD tests.
func fsOptions(t testing.TB, st store.Store, dir string) fs.Options {
	return fs.Options{
		Main: st, Dir: dir, Password: "test password", KeyParams: crypt.TestParams,
		ChunkSize: 64 << 10, BatchAge: 50 * time.Millisecond,
		CheckpointInterval: -1, GCInterval: -1,
		Logger: testutil.Logger(t),
	}
}

// openTestFS opens a filesystem on an in-memory store, closed at cleanup.
func openTestFS(t testing.TB) *fs.FS {
	t.Helper()
	f, err := fs.Open(context.Background(), fsOptions(t, store.NewMem(), t.TempDir()))
	if err != nil {
		t.Fatalf("open fs: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// startServer serves f on 127.0.0.1 and returns the server and its address.
// At cleanup it shuts down and checks that Serve returned nil.
func startServer(t testing.TB, f *fs.FS, opts Options) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testutil.Logger(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := NewServer(f, opts)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return s, ln.Addr().String()
}

func mustCreateExport(t testing.TB, f *fs.FS, name string, size uint64) {
	t.Helper()
	if err := CreateExport(context.Background(), f, name, size); err != nil {
		t.Fatalf("create export: %v", err)
	}
}

// requireTool returns the path of a client binary the tests drive, failing
// (not skipping) when it is missing.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run scripts/install-test-deps.sh (make test does): %v", name, err)
	}
	return p
}

// python is the interpreter with the libnbd module.
const python = testutil.Python

func requirePythonNBD(t testing.TB) { testutil.RequirePythonNBD(t) }

// runTool runs a command with a timeout and returns its stdout; it fails the
// test with stderr on error.
func runTool(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, stderr, err := runToolErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func runToolErr(timeout time.Duration, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, errors.Join(err, ctx.Err()))
	}
	return stdout.String(), stderr.String(), err
}

func nbdURI(addr, name string) string { return "nbd://" + addr + "/" + name }

// opCounter counts commands and bytes through Options.Observe.
type opCounter struct {
	mu    sync.Mutex
	count map[string]int
	bytes map[string]int64
	errs  map[string]int
}

func newOpCounter() *opCounter {
	return &opCounter{count: map[string]int{}, bytes: map[string]int64{}, errs: map[string]int{}}
}

func (o *opCounter) observe(cmd string, n int, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.count[cmd]++
	o.bytes[cmd] += int64(n)
	if err != nil {
		o.errs[cmd]++
	}
}

func (o *opCounter) get(cmd string) (count int, bytes int64, errs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count[cmd], o.bytes[cmd], o.errs[cmd]
}

// seen waits until Observe has reported a cmd request and says whether it
// did. Observe runs after the reply is sent, so a client (nbdcopy's last
// FLUSH) may have got its reply and exited before the count moves.
func (o *opCounter) seen(cmd string) bool {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n, _, _ := o.get(cmd); n > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func (o *opCounter) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.count)
	clear(o.bytes)
	clear(o.errs)
}
