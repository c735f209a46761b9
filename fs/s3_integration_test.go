package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"zerofs/frame"
	"zerofs/internal/s3proxy"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// Integration tests against a real S3 server (versitygw, or MinIO under make
// test-minio): a fresh machine — the local state directory deleted —
// recovers every flushed byte and every flushed namespace change from the
// bucket alone, through a checkpoint and WAL replay after it.
//
// itTree drives the filesystem and a model of what it must hold side by
// side; verify walks the whole filesystem and compares it with the model:
// names, types, modes, sizes, link counts, inode identity of hard links,
// symlink targets, and every byte of every file (holes included).

type itNode struct {
	ino    uint64
	typ    uint32
	perm   uint32
	data   []byte // regular files: the contents, len is the size
	target string // symlinks
}

type itTree struct {
	t     *testing.T
	f     *FS
	nodes map[string]*itNode // path ("a/b") → node; hard links share a node
	seed  uint64
}

func newItTree(t *testing.T, f *FS) *itTree {
	return &itTree{t: t, f: f, nodes: map[string]*itNode{}}
}

// clone copies the model (not the FS), keeping hard links shared.
func (tr *itTree) clone() map[string]*itNode {
	seen := map[*itNode]*itNode{}
	out := make(map[string]*itNode, len(tr.nodes))
	for p, n := range tr.nodes {
		c, ok := seen[n]
		if !ok {
			cp := *n
			cp.data = bytes.Clone(n.data)
			c = &cp
			seen[n] = c
		}
		out[p] = c
	}
	return out
}

// itData returns n deterministic bytes, different for every call.
func (tr *itTree) itData(n int) []byte {
	tr.seed++
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], tr.seed)
	p := make([]byte, n)
	rand.NewChaCha8(key).Read(p)
	return p
}

func (tr *itTree) ino(p string) uint64 {
	tr.t.Helper()
	if p == "" {
		return RootIno
	}
	ino := RootIno
	for _, name := range strings.Split(p, "/") {
		n, err := tr.f.Lookup(context.Background(), Root, ino, name)
		if err != nil {
			tr.t.Fatalf("lookup %q: %v", p, err)
		}
		ino = n.Ino
	}
	return ino
}

func (tr *itTree) create(p string, nn NewNode) *itNode {
	tr.t.Helper()
	dir, name := path.Split(p)
	n, _, err := tr.f.Create(context.Background(), Root, tr.ino(strings.TrimSuffix(dir, "/")), name, nn)
	if err != nil {
		tr.t.Fatalf("create %q: %v", p, err)
	}
	if _, ok := tr.nodes[p]; ok {
		tr.t.Fatalf("model: %q exists", p)
	}
	node := &itNode{ino: n.Ino, typ: n.Type(), perm: nn.Mode & 0o7777, target: nn.Target}
	if node.typ == TypeSymlink {
		node.perm = 0o777
	}
	tr.nodes[p] = node
	return node
}

func (tr *itTree) mkdir(p string, perm uint32) { tr.create(p, NewNode{Mode: TypeDir | perm}) }
func (tr *itTree) file(p string, perm uint32)  { tr.create(p, NewNode{Mode: TypeRegular | perm}) }
func (tr *itTree) symlink(p, target string)    { tr.create(p, NewNode{Mode: TypeSymlink, Target: target}) }

func (tr *itTree) write(p string, off int, data []byte) {
	tr.t.Helper()
	if _, err := tr.f.Write(context.Background(), Root, tr.ino(p), uint64(off), data); err != nil {
		tr.t.Fatalf("write %q [%d,+%d): %v", p, off, len(data), err)
	}
	n := tr.nodes[p]
	if end := off + len(data); end > len(n.data) {
		n.data = append(n.data, make([]byte, end-len(n.data))...)
	}
	copy(n.data[off:], data)
}

func (tr *itTree) punch(p string, off, length int) {
	tr.t.Helper()
	if err := tr.f.Punch(context.Background(), Root, tr.ino(p), uint64(off), uint64(length)); err != nil {
		tr.t.Fatalf("punch %q [%d,+%d): %v", p, off, length, err)
	}
	n := tr.nodes[p]
	if end := min(len(n.data), off+length); off < end {
		clear(n.data[off:end])
	}
}

func (tr *itTree) truncate(p string, size int) {
	tr.t.Helper()
	sz := uint64(size)
	if _, _, err := tr.f.SetAttr(context.Background(), Root, tr.ino(p), SetAttrs{Size: &sz}); err != nil {
		tr.t.Fatalf("truncate %q to %d: %v", p, size, err)
	}
	n := tr.nodes[p]
	if size <= len(n.data) {
		n.data = n.data[:size]
	} else {
		n.data = append(n.data, make([]byte, size-len(n.data))...)
	}
}

func (tr *itTree) chmod(p string, perm uint32) {
	tr.t.Helper()
	if _, _, err := tr.f.SetAttr(context.Background(), Root, tr.ino(p), SetAttrs{Mode: &perm}); err != nil {
		tr.t.Fatalf("chmod %q: %v", p, err)
	}
	tr.nodes[p].perm = perm
}

func (tr *itTree) link(old, p string) {
	tr.t.Helper()
	dir, name := path.Split(p)
	if _, _, err := tr.f.Link(context.Background(), Root, tr.ino(old), tr.ino(strings.TrimSuffix(dir, "/")), name); err != nil {
		tr.t.Fatalf("link %q → %q: %v", p, old, err)
	}
	tr.nodes[p] = tr.nodes[old]
}

func (tr *itTree) rename(old, p string) {
	tr.t.Helper()
	odir, oname := path.Split(old)
	ndir, nname := path.Split(p)
	if err := tr.f.Rename(context.Background(), Root, tr.ino(strings.TrimSuffix(odir, "/")), oname,
		tr.ino(strings.TrimSuffix(ndir, "/")), nname); err != nil {
		tr.t.Fatalf("rename %q → %q: %v", old, p, err)
	}
	for q, n := range tr.nodes { // the node and, for a directory, everything under it
		if q == old {
			delete(tr.nodes, q)
			tr.nodes[p] = n
		} else if rest, ok := strings.CutPrefix(q, old+"/"); ok {
			delete(tr.nodes, q)
			tr.nodes[p+"/"+rest] = n
		}
	}
}

func (tr *itTree) remove(p string) {
	tr.t.Helper()
	dir, name := path.Split(p)
	var err error
	if tr.nodes[p].typ == TypeDir {
		_, err = tr.f.Rmdir(context.Background(), Root, tr.ino(strings.TrimSuffix(dir, "/")), name)
	} else {
		_, err = tr.f.Remove(context.Background(), Root, tr.ino(strings.TrimSuffix(dir, "/")), name)
	}
	if err != nil {
		tr.t.Fatalf("remove %q: %v", p, err)
	}
	delete(tr.nodes, p)
}

func (tr *itTree) flush() {
	tr.t.Helper()
	if err := tr.f.Flush(context.Background()); err != nil {
		tr.t.Fatalf("flush: %v", err)
	}
}

// checkpoint forces a metadata checkpoint of everything flushed so far.
func (tr *itTree) checkpoint() {
	tr.t.Helper()
	tr.flush()
	tr.f.waitApplied()
	if err := tr.f.checkpoint(context.Background()); err != nil {
		tr.t.Fatalf("checkpoint: %v", err)
	}
	if h := tr.f.wal.Head(); h.Checkpoint == "" || h.Base.Seq == 0 {
		tr.t.Fatalf("checkpoint did not move the head: %+v", h)
	}
}

// verify compares the whole filesystem with the model.
func (tr *itTree) verify(when string) {
	tr.t.Helper()
	verifyItTree(tr.t, tr.f, tr.nodes, when)
}

func verifyItTree(t *testing.T, f *FS, want map[string]*itNode, when string) {
	t.Helper()
	ctx := context.Background()
	got := map[string]Inode{}
	var walk func(dir uint64, prefix string)
	walk = func(dir uint64, prefix string) {
		var cookie uint64
		for {
			// Small pages, so resuming from cookies is exercised too.
			ents, eof, err := f.ReadDir(ctx, Root, dir, cookie, 3)
			if err != nil {
				t.Fatalf("%s: readdir %q: %v", when, prefix, err)
			}
			for _, e := range ents {
				p := path.Join(prefix, e.Name)
				if _, dup := got[p]; dup {
					t.Fatalf("%s: %q listed twice", when, p)
				}
				n, err := f.Lookup(ctx, Root, dir, e.Name)
				if err != nil {
					t.Fatalf("%s: lookup %q: %v", when, p, err)
				}
				if n.Ino != e.Ino || n.Type() != e.Type {
					t.Fatalf("%s: %q: listing says inode %d type %o, lookup says inode %d type %o", when, p, e.Ino, e.Type, n.Ino, n.Type())
				}
				got[p] = n
				if n.IsDir() {
					if dd, err := f.Lookup(ctx, Root, n.Ino, ".."); err != nil || dd.Ino != dir {
						t.Fatalf("%s: %q/..: inode %d (%v), want %d", when, p, dd.Ino, err, dir)
					}
					walk(n.Ino, p)
				}
				cookie = e.Cookie
			}
			if eof {
				return
			}
		}
	}
	walk(RootIno, "")

	if gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(gk, wk) {
		t.Fatalf("%s: names differ\ngot:  %q\nwant: %q", when, gk, wk)
	}
	links := map[*itNode]uint32{}
	subdirs := map[string]uint32{}
	for p, n := range want {
		links[n]++
		if n.typ == TypeDir {
			subdirs[path.Dir(p)]++
		}
	}
	root, err := f.GetAttr(ctx, RootIno)
	if err != nil {
		t.Fatal(err)
	}
	if root.Nlink != 2+subdirs["."] {
		t.Errorf("%s: root has nlink %d, want %d", when, root.Nlink, 2+subdirs["."])
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		w, n := want[p], got[p]
		wantNlink := links[w]
		if w.typ == TypeDir {
			wantNlink = 2 + subdirs[p]
		}
		var wantSize uint64
		switch w.typ {
		case TypeRegular:
			wantSize = uint64(len(w.data))
		case TypeSymlink:
			wantSize = uint64(len(w.target))
		}
		if n.Ino != w.ino || n.Type() != w.typ || n.Perm() != w.perm || n.Nlink != wantNlink ||
			n.Target != w.target || (w.typ != TypeDir && n.Size != wantSize) {
			t.Errorf("%s: %q: inode %d type %o perm %o nlink %d size %d target %q; want inode %d type %o perm %o nlink %d size %d target %q",
				when, p, n.Ino, n.Type(), n.Perm(), n.Nlink, n.Size, n.Target, w.ino, w.typ, w.perm, wantNlink, wantSize, w.target)
			continue
		}
		switch w.typ {
		case TypeSymlink:
			if target, err := f.Readlink(ctx, n.Ino); err != nil || target != w.target {
				t.Errorf("%s: readlink %q: %q, %v; want %q", when, p, target, err, w.target)
			}
		case TypeRegular:
			buf := make([]byte, len(w.data)+100) // asks past the end: the read stops at the size
			m, eof, err := f.Read(ctx, Root, n.Ino, 0, buf)
			if err != nil {
				t.Errorf("%s: read %q: %v", when, p, err)
				continue
			}
			if m != len(w.data) || !eof {
				t.Errorf("%s: read %q: %d bytes, eof %v; want %d bytes and eof", when, p, m, eof, len(w.data))
			}
			if i := itFirstDiff(buf[:m], w.data); i >= 0 {
				t.Errorf("%s: %q differs from byte %d (chunk %d): read %x, want %x", when, p, i, i/4096,
					buf[i:min(m, i+8)], w.data[i:min(len(w.data), i+8)])
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func itFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// checkHole checks that [off, off+n) of p reads as zeros, in the model and
// in the filesystem.
func (tr *itTree) checkHole(p string, off, n int) {
	tr.t.Helper()
	if !bytes.Equal(tr.nodes[p].data[off:off+n], make([]byte, n)) {
		tr.t.Fatalf("test bug: model has data in the hole [%d,+%d) of %q", off, n, p)
	}
	buf := make([]byte, n)
	buf[0] = 0xff
	if m, _, err := tr.f.Read(context.Background(), Root, tr.ino(p), uint64(off), buf); err != nil || m != n {
		tr.t.Fatalf("read hole of %q: %d bytes, %v", p, m, err)
	}
	if !bytes.Equal(buf, make([]byte, n)) {
		tr.t.Fatalf("hole [%d,+%d) of %q does not read as zeros", off, n, p)
	}
}

const itMiB = 1 << 20

// buildBeforeCheckpoint makes the first part of the tree: directories,
// files of several sizes (one over 1 MiB, one sparse), symlinks, a hard
// link, a FIFO, and files that later get renamed and removed.
func (tr *itTree) buildBeforeCheckpoint() {
	tr.mkdir("docs", 0o755)
	tr.mkdir("docs/sub", 0o700)
	tr.mkdir("empty", 0o711)

	tr.file("docs/small.txt", 0o644)
	tr.write("docs/small.txt", 0, []byte(strings.Repeat("hello, zerofs\n", 7)[:98]+"!\n"))
	tr.file("docs/sub/medium.bin", 0o600)
	tr.write("docs/sub/medium.bin", 0, tr.itData(50_001))

	tr.file("big.bin", 0o644) // 1.5 MiB + 123 bytes, written in unaligned pieces
	tr.write("big.bin", 0, tr.itData(700_000))
	tr.write("big.bin", 700_000, tr.itData(3*itMiB/2+123-700_000))

	tr.file("sparse.img", 0o640)
	tr.write("sparse.img", 0, tr.itData(5000))
	tr.write("sparse.img", itMiB, tr.itData(4096))
	tr.write("sparse.img", 3*itMiB+17, tr.itData(10))
	tr.truncate("sparse.img", 5*itMiB) // a hole at the end
	tr.punch("sparse.img", 1000, 2000)

	tr.file("zeros.bin", 0o644) // written zeros are stored as holes
	tr.write("zeros.bin", 0, make([]byte, 3*4096))
	tr.write("zeros.bin", 6000, []byte{42})

	tr.symlink("link", "docs/small.txt")
	tr.symlink("docs/abs-link", "/nonexistent/"+strings.Repeat("long-name/", 30)+"target")
	tr.link("big.bin", "docs/big-hardlink")
	tr.create("pipe", NewNode{Mode: TypeFIFO | 0o620})
	tr.file("empty.txt", 0o600)
	tr.file("exec.sh", 0o755)
	tr.write("exec.sh", 0, []byte("#!/bin/sh\necho hi\n"))
	tr.file("tmpname.txt", 0o644)
	tr.write("tmpname.txt", 0, tr.itData(9000))
	tr.file("gone.txt", 0o644)
	tr.write("gone.txt", 0, tr.itData(10_000))
}

// buildAfterCheckpoint changes the tree after the checkpoint, so these
// changes are only in the WAL: overwrites, appends, renames of a file and
// of a directory, removal, truncation down and up, punching, chmod, links.
func (tr *itTree) buildAfterCheckpoint() {
	tr.write("big.bin", 4000, tr.itData(70_000))
	tr.write("big.bin", 3*itMiB/2+123, tr.itData(300_000))
	tr.write("docs/big-hardlink", 0, []byte("written through the hard link"))
	tr.rename("tmpname.txt", "docs/renamed.txt")
	tr.remove("gone.txt")
	tr.rename("docs/sub", "docs/sub2")
	tr.mkdir("newdir", 0o755)
	tr.rename("docs/sub2", "newdir/sub3") // a directory changes parent
	tr.truncate("docs/small.txt", 50)
	tr.truncate("docs/small.txt", 200)  // zeros beyond 50, not the old bytes
	tr.punch("sparse.img", itMiB, 4096) // a whole chunk
	tr.chmod("exec.sh", 0o700)
	tr.link("docs/small.txt", "docs/small-link2")
	tr.remove("docs/small.txt") // the other name stays, nlink back to 1
	tr.write("docs/renamed.txt", 8999, tr.itData(5))
}

// buildAfterRecovery changes the recovered tree.
func (tr *itTree) buildAfterRecovery() {
	tr.file("after-recovery.bin", 0o644)
	tr.write("after-recovery.bin", 0, tr.itData(200_000))
	tr.write("sparse.img", 2*itMiB+100, tr.itData(8192))
	tr.remove("link")
	tr.write("big.bin", itMiB-10, tr.itData(20))
	tr.rename("docs/renamed.txt", "renamed-again.txt")
	tr.mkdir("newdir/sub3/deeper", 0o755)
	tr.file("newdir/sub3/deeper/f", 0o644)
	tr.write("newdir/sub3/deeper/f", 4096, tr.itData(4096))
}

func (tr *itTree) checkHoles() {
	tr.checkHole("sparse.img", 1000, 2000)
	tr.checkHole("sparse.img", 5000, itMiB-5000)
	tr.checkHole("sparse.img", 3*itMiB+27, 2*itMiB-27)
	tr.checkHole("zeros.bin", 0, 6000)
}

func openITBucket(t *testing.T, endpoint, accessKey, secretKey, bucket string) store.Store {
	t.Helper()
	url, sopts := testutil.CreateBucket(t, endpoint, accessKey, secretKey, bucket, "fs")
	st, err := store.Open(context.Background(), url, sopts)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return st
}

// TestS3IntegrationFreshMachine builds a tree, checkpoints midway, changes it
// further (those changes only in the WAL), and stops: "close" flushes and
// checkpoints at Close, so the fresh machine restores a checkpoint covering
// everything; "crash" stops after a Flush, so the fresh machine restores the
// midway checkpoint and replays the WAL records after it. Either way it must
// see everything. It then goes on, packs data into segments, crashes, and a
// second fresh machine must see that too.
func TestS3IntegrationFreshMachine(t *testing.T) {
	endpoint, ak, sk := testutil.StartS3Server(t)
	for _, stop := range []string{"close", "crash"} {
		t.Run(stop, func(t *testing.T) {
			ctx := context.Background()
			st := openITBucket(t, endpoint, ak, sk, "fresh-"+stop)
			opts := testOptions(t, st, t.TempDir())
			if stop == "crash" {
				opts.Compression = frame.Zstd
			}
			f := mustOpen(t, opts)
			tr := newItTree(t, f)
			defer func() { tr.f.crash() }() // crash is a no-op after Close

			tr.buildBeforeCheckpoint()
			tr.checkpoint()
			tr.buildAfterCheckpoint()
			tr.flush()
			tr.verify("before stopping")
			if h, last := f.wal.Head(), f.wal.Last(); last.Seq <= h.Base.Seq {
				t.Fatalf("nothing in the WAL after the checkpoint (base %d, last %d): recovery would not replay", h.Base.Seq, last.Seq)
			}
			switch stop {
			case "close":
				if err := f.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
			case "crash":
				f.crash()
			}

			// A fresh machine: no local state, the same bucket.
			if err := os.RemoveAll(opts.Dir); err != nil {
				t.Fatal(err)
			}
			opts.Dir = t.TempDir()
			opts.Compression = frame.None
			tr.f = mustOpen(t, opts)
			tr.verify("on a fresh machine")
			tr.checkHoles()

			// Go on from the recovered state, with a GC pass packing data
			// into segments, then crash and recover on yet another machine.
			tr.buildAfterRecovery()
			if err := tr.f.Compact(ctx); err != nil {
				t.Fatalf("compact: %v", err)
			}
			tr.write("big.bin", 10, tr.itData(5000))
			tr.truncate("empty.txt", 3)
			tr.flush()
			tr.f.crash()
			if err := os.RemoveAll(opts.Dir); err != nil {
				t.Fatal(err)
			}
			opts.Dir = t.TempDir()
			tr.f = mustOpen(t, opts)
			tr.verify("on a second fresh machine")
			tr.checkHoles()
			if err := tr.f.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// TestS3IntegrationLocalWAL: Main is the S3 bucket, the WAL a local
// directory store (Options.WAL). Flushes are durable in that directory:
//
//   - after a crash, restarting with the same WAL directory (with the same
//     local state dir or a new one) recovers everything flushed;
//   - a fresh machine WITHOUT that WAL directory gets only what was packed
//     into the bucket and checkpointed: the state as of the last checkpoint
//     (data moved into segments by GC), not the flushes after it. Flushed
//     data lives only on that disk until it is packed and checkpointed.
func TestS3IntegrationLocalWAL(t *testing.T) {
	ctx := context.Background()
	endpoint, ak, sk := testutil.StartS3Server(t)
	st := openITBucket(t, endpoint, ak, sk, "local-wal")
	walURL := "file://" + t.TempDir()
	wst, err := store.Open(ctx, walURL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, st, t.TempDir())
	opts.WAL = wst
	tr := newItTree(t, mustOpen(t, opts))
	defer func() { tr.f.crash() }() // crash is a no-op after Close

	tr.buildBeforeCheckpoint()
	tr.checkpoint()
	tr.buildAfterCheckpoint()
	tr.flush()
	tr.f.crash()

	// Restart: same WAL dir, same state dir.
	tr.f = mustOpen(t, opts)
	tr.verify("after restart with the same WAL and state dirs")
	tr.checkHoles()
	tr.buildAfterRecovery()
	tr.flush()
	tr.f.crash()

	// Same WAL dir, new state dir: the checkpoint from the bucket and the
	// records from the local WAL dir.
	opts.Dir = t.TempDir()
	tr.f = mustOpen(t, opts)
	tr.verify("after restart with the same WAL dir and a new state dir")

	// Pack everything into the bucket and checkpoint; then flush more,
	// which is only in the local WAL dir.
	if err := tr.f.Compact(ctx); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if _, err := tr.f.GC(ctx); err != nil {
		t.Fatalf("gc: %v", err)
	}
	tr.checkpoint()
	var inWAL []string
	if err := tr.f.scanObjects(func(o ObjRef, info objInfo) {
		if o.Kind == ObjWAL && info.Live > 0 {
			inWAL = append(inWAL, fmt.Sprintf("%v (%d live bytes)", o, info.Live))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(inWAL) > 0 {
		t.Fatalf("after Compact, live data is still only in the local WAL: %v", inWAL)
	}
	packed := tr.clone()
	tr.write("big.bin", 0, tr.itData(10_000))
	tr.file("only-in-local-wal", 0o644)
	tr.write("only-in-local-wal", 0, tr.itData(3000))
	tr.remove("exec.sh")
	tr.flush()
	tr.f.crash()

	// The machine is gone with its disk: new state dir, new (empty) WAL dir.
	// What is in the bucket is the packed, checkpointed state.
	opts.Dir = t.TempDir()
	if opts.WAL, err = store.Open(ctx, "file://"+t.TempDir(), store.Options{}); err != nil {
		t.Fatal(err)
	}
	tr.f = mustOpen(t, opts)
	tr.nodes = packed
	tr.verify("on a fresh machine without the WAL dir")
	tr.checkHoles()
	if err := tr.f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// TestS3ReadsUnderFaults reads cold data through a proxy that fails GETs
// with 503s, 500s, resets and bodies cut in half: sequential reads (with
// read-ahead, several frames per GET) and random reads must all return the
// right bytes, the store's retries absorbing every fault.
func TestS3ReadsUnderFaults(t *testing.T) {
	endpoint, ak, sk := testutil.StartS3Server(t)
	url, sopts := testutil.CreateBucket(t, endpoint, ak, sk, "faulty-reads", "fs")
	px, err := s3proxy.Start(endpoint, s3proxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	sopts.Endpoint = px.URL()
	sopts.MaxBackoff = 20 * time.Millisecond
	st, err := store.Open(context.Background(), url, sopts)
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, st, t.TempDir())
	opts.ReadAheadBytes = 1 << 20
	f := mustOpen(t, opts)
	defer f.Close()
	data := make([]byte, 6<<20)
	rand.NewChaCha8([32]byte{9}).Read(data)
	ino := coldFile(t, f, data, 1<<20)

	gets := s3proxy.Ops(s3proxy.OpGet)
	px.SetRule(s3proxy.Chain(
		s3proxy.When(gets, s3proxy.Chance(0.1, s3proxy.Unavailable, 1)),
		s3proxy.When(gets, s3proxy.Chance(0.05, s3proxy.InternalError, 2)),
		s3proxy.When(gets, s3proxy.Chance(0.05, s3proxy.Reset, 3)),
		s3proxy.When(gets, s3proxy.Chance(0.05, s3proxy.TruncateBody, 4)),
	))
	for off := 0; off < 3<<20; off += 64 << 10 {
		if got := mustRead(t, f, ino, uint64(off), 64<<10); !bytes.Equal(got, data[off:off+64<<10]) {
			t.Fatalf("sequential read at %d returned wrong data", off)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		off := 3<<20 + rng.IntN(3<<20-8192)
		if got := mustRead(t, f, ino, uint64(off), 8192); !bytes.Equal(got, data[off:off+8192]) {
			t.Fatalf("random read at %d returned wrong data", off)
		}
	}
	px.SetRule(nil)
	if c := px.Counts(); c.TotalFaults() == 0 {
		t.Fatal("no fault was injected: the test tested nothing")
	} else {
		t.Logf("faults injected: %v over %d GETs", c.Faults, c.Requests[s3proxy.OpGet])
	}
}
