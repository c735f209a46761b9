package nfs

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/faultstore"
)

// fixture is a filesystem on an in-memory store served on a loopback port.
type fixture struct {
	t    testing.TB
	st   *faultstore.Store
	dir  string
	fs   *fs.FS
	srv  *Server
	addr string
	opts Options
	done chan error
}

func testFSOptions(t testing.TB, st store.Store, dir string) fs.Options {
	return fs.Options{
		Main: st, Dir: dir, Password: "test password", KeyParams: crypt.TestParams,
		ChunkSize: 64 << 10, BatchAge: 50 * time.Millisecond,
		CheckpointInterval: -1, GCInterval: -1,
		Logger: testutil.Logger(t),
	}
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, st: faultstore.New(store.NewMem()), dir: t.TempDir(), opts: opts}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	fsys, err := fs.Open(context.Background(), testFSOptions(f.t, f.st, f.dir))
	if err != nil {
		f.t.Fatalf("open fs: %v", err)
	}
	f.fs = fsys
	opts := f.opts
	if opts.Logger == nil {
		opts.Logger = testutil.Logger(f.t)
	}
	f.srv = NewServer(fsys, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.done = make(chan error, 1)
	go func() { f.done <- f.srv.Serve(ln) }()
}

// stop shuts the server down and closes the filesystem.
func (f *fixture) stop() {
	if f.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		f.t.Errorf("shutdown: %v", err)
	}
	if err := <-f.done; err != nil {
		f.t.Errorf("Serve returned %v after Shutdown", err)
	}
	if err := f.fs.Close(); err != nil {
		f.t.Errorf("close fs: %v", err)
	}
	f.srv = nil
}

// restart stops the server and the filesystem and starts both again on
// the same store and state directory (a new port).
func (f *fixture) restart() {
	f.t.Helper()
	f.stop()
	f.start()
}

func (f *fixture) client(uid, gid uint32, groups ...uint32) *nfsClient {
	f.t.Helper()
	return dialNFS(f.t, f.addr, uid, gid, groups...)
}

// holdWrites holds every write to the store until the gate is released: a
// store outage, or a slow store, on demand. The test's cleanup releases it
// before the fixture's stop, which flushes.
func holdWrites(f *fixture) *faultstore.Gate {
	g := f.st.Hold(faultstore.Puts())
	f.t.Cleanup(g.Release)
	return g
}

func mustPrefixes(t testing.TB, s ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, p := range s {
		pp, err := netip.ParsePrefix(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pp)
	}
	return out
}
