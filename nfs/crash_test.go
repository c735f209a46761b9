package nfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"zerofs/fs"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// The durability test runs the server in a child process (this test binary
// re-executed as TestNFSServerProcess with ZEROFS_NFS_CHILD set) on a
// file:// store, so that it can be killed with SIGKILL: no deferred
// function, no Close, no flush runs. The parent is the NFS client.

const (
	childEnv      = "ZEROFS_NFS_CHILD"       // "1": be the server process
	childStoreEnv = "ZEROFS_NFS_CHILD_STORE" // the store directory
	childStateEnv = "ZEROFS_NFS_CHILD_STATE" // the local state directory
	childAddrEnv  = "ZEROFS_NFS_CHILD_ADDR"  // where to listen
	childBenchEnv = "ZEROFS_NFS_CHILD_BENCH" // production filesystem defaults
)

// TestNFSServerProcess is the child: it serves until killed.
func TestNFSServerProcess(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("runs only as the child of TestDurabilityAcrossKill")
	}
	ctx := context.Background()
	st, err := store.Open(ctx, "file://"+os.Getenv(childStoreEnv), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := testFSOptions(t, st, os.Getenv(childStateEnv))
	opts.BatchAge = time.Second // a loss window to lose data in
	if os.Getenv(childBenchEnv) != "" {
		// bench/nfs.sh: the defaults a production server runs with (only
		// the key derivation is cheap, which costs nothing after start).
		opts = fs.Options{Main: st, Dir: opts.Dir, Password: opts.Password, KeyParams: opts.KeyParams,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	}
	f, err := fs.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", os.Getenv(childAddrEnv))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f, Options{Logger: opts.Logger})
	fmt.Printf("listening %s epoch %d\n", ln.Addr(), f.Epoch())
	go srv.Serve(ln)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig // the durability test kills with SIGKILL; bench/nfs.sh stops with SIGTERM
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	srv.Shutdown(sctx)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// freePort picks a free TCP port on loopback in 30000-39999, the range the
// project's tests use for servers in other processes.
func freePort(t testing.TB) string {
	t.Helper()
	for i := 0; i < 100; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 30000+mrand.IntN(10000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port in 30000-39999")
	return ""
}

// child is a running server process.
type child struct {
	*testutil.Proc
	addr string
}

// startChild starts a server process and waits until it listens. It tries
// three ports: another process may take one between freePort and the
// child's listen.
func startChild(t *testing.T, storeDir, stateDir string) *child {
	t.Helper()
	for attempt := 0; ; attempt++ {
		p := testutil.Child{
			Run:  "^TestNFSServerProcess$",
			Args: []string{"-test.v"},
			Env: []string{childEnv + "=1", childStoreEnv + "=" + storeDir,
				childStateEnv + "=" + stateDir, childAddrEnv + "=" + freePort(t)},
		}.Start(t)
		line, err := p.WaitLine(2*time.Minute, func(l string) bool { return strings.HasPrefix(l, "listening ") })
		if err == nil {
			return &child{Proc: p, addr: strings.Fields(line)[1]}
		}
		p.Kill()
		if attempt == 2 {
			t.Fatalf("server process did not start: %v\n%s", err, p.Output())
		}
	}
}

// kill sends SIGKILL and reaps the process.
func (c *child) kill() { c.Kill() }

func TestDurabilityAcrossKill(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child process")
	}
	storeDir, stateDir := t.TempDir(), t.TempDir()
	data := make([]byte, 5<<20+17)
	rand.Read(data)
	readAll := func(c *nfsClient, fh []byte, n int) []byte {
		t.Helper()
		var got []byte
		for off := uint64(0); len(got) < n; {
			st, p, eof := c.read(fh, off, maxIO)
			if st != StatusOK {
				t.Fatalf("READ at %d: %v", off, st)
			}
			got = append(got, p...)
			off += uint64(len(p))
			if eof {
				break
			}
		}
		return got
	}
	writeAll := func(c *nfsClient, fh []byte, data []byte) uint64 {
		t.Helper()
		var verf uint64
		for off := 0; off < len(data); off += 256 << 10 {
			res := c.mustWrite(fh, uint64(off), data[off:min(off+256<<10, len(data))])
			if res.committed != unstable {
				t.Fatalf("UNSTABLE WRITE answered %d", res.committed)
			}
			verf = res.verf
		}
		return verf
	}

	// 1. UNSTABLE writes, COMMIT, SIGKILL: all there after the restart.
	srv := startChild(t, storeDir, stateDir)
	c := dialNFS(t, srv.addr, 0, 0)
	committed := c.mustCreate(c.root, "committed")
	writeVerf := writeAll(c, committed, data)
	st, commitVerf := c.commit(committed)
	if st != StatusOK || commitVerf != writeVerf {
		t.Fatalf("COMMIT: %v, verifier %x (writes had %x)", st, commitVerf, writeVerf)
	}
	srv.kill()

	srv = startChild(t, storeDir, stateDir)
	c = dialNFS(t, srv.addr, 0, 0)
	if got := readAll(c, committed, len(data)); !bytes.Equal(got, data) {
		t.Fatalf("committed data lost across SIGKILL: read %d bytes, want %d (or contents differ)", len(got), len(data))
	}
	_, v := c.commit(committed)
	if v == commitVerf {
		t.Fatal("write verifier unchanged after a restart")
	}

	// 2. UNSTABLE writes without COMMIT, SIGKILL at once: the verifier of
	// the next COMMIT differs from the writes', which tells the client to
	// send them again; after it does and commits, the data is durable.
	uncommitted := c.mustCreate(c.root, "uncommitted")
	if st, _ := c.commit(uncommitted); st != StatusOK { // the empty file itself is durable
		t.Fatal(st)
	}
	data2 := bytes.Repeat([]byte("resend me "), 300_000)
	writeVerf = writeAll(c, uncommitted, data2)
	srv.kill()

	srv = startChild(t, storeDir, stateDir)
	c = dialNFS(t, srv.addr, 0, 0)
	st, commitVerf = c.commit(uncommitted)
	if st != StatusOK {
		t.Fatalf("COMMIT after restart: %v", st)
	}
	if commitVerf == writeVerf {
		t.Fatal("COMMIT after a restart returned the verifier of the lost server's UNSTABLE writes")
	}
	_, a := c.getattr(uncommitted)
	t.Logf("after SIGKILL, %d of %d uncommitted bytes had survived", a.size, len(data2))
	if v := writeAll(c, uncommitted, data2); v != commitVerf {
		t.Fatalf("verifier changed within one server: %x then %x", commitVerf, v)
	}
	if st, v := c.commit(uncommitted); st != StatusOK || v != commitVerf {
		t.Fatalf("COMMIT of the resent writes: %v %x", st, v)
	}
	srv.kill()

	srv = startChild(t, storeDir, stateDir)
	c = dialNFS(t, srv.addr, 0, 0)
	if got := readAll(c, uncommitted, len(data2)); !bytes.Equal(got, data2) {
		t.Fatal("resent and committed data lost across SIGKILL")
	}
	if got := readAll(c, committed, len(data)); !bytes.Equal(got, data) {
		t.Fatal("first file's data lost after the second restart")
	}
	srv.kill()
}
