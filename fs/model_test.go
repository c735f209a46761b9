package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"zerofs/store"
)

// The model test runs thousands of random operations against the engine and
// against a simple in-memory model of a POSIX filesystem, with crashes
// injected at random points. After each crash the engine recovers, and its
// state must equal the model's state after some operation between the last
// flush and the crash (DESIGN.md rules 1 and 2: everything flushed survives,
// and the state is an atomic prefix). Then the run goes on from that state.
//
// Replay a failing seed with ZEROFS_MODEL_SEED=<seed>; run longer with
// ZEROFS_MODEL_OPS=<n>.

type mNode struct {
	ino     uint64
	typ     uint32
	perm    uint32
	data    []byte
	target  string
	nlink   int
	entries map[string]*mNode // directories
}

type mState struct{ root *mNode }

func (s *mState) clone() *mState {
	seen := map[*mNode]*mNode{}
	var cp func(n *mNode) *mNode
	cp = func(n *mNode) *mNode {
		if c, ok := seen[n]; ok {
			return c
		}
		c := *n
		c.data = slices.Clone(n.data)
		seen[n] = &c
		if n.entries != nil {
			c.entries = make(map[string]*mNode, len(n.entries))
			for k, v := range n.entries {
				c.entries[k] = cp(v)
			}
		}
		return &c
	}
	return &mState{root: cp(s.root)}
}

// lookup resolves a path of the model ("" is the root).
func (s *mState) lookup(p string) (*mNode, *mNode, string) {
	if p == "" {
		return s.root, nil, ""
	}
	dir, name := path.Split(p)
	parent, _, _ := s.lookup(strings.TrimSuffix(dir, "/"))
	if parent == nil || parent.entries == nil {
		return nil, nil, ""
	}
	return parent.entries[name], parent, name
}

// paths lists every path of the model, sorted, with its node.
func (s *mState) paths() []string {
	var out []string
	var walk func(prefix string, n *mNode)
	walk = func(prefix string, n *mNode) {
		for name, c := range n.entries {
			p := path.Join(prefix, name)
			out = append(out, p)
			if c.typ == TypeDir {
				walk(p, c)
			}
		}
	}
	walk("", s.root)
	sort.Strings(out)
	return out
}

// canon renders a state for comparison: every path with its type, mode,
// content hash, link count and which paths share an inode.
func canonOf(entries []canonEntry) string {
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
	first := map[uint64]string{}
	var b strings.Builder
	for _, e := range entries {
		if _, ok := first[e.id]; !ok {
			first[e.id] = e.path
		}
		fmt.Fprintf(&b, "%s %o %o n%d %s =%s\n", e.path, e.typ, e.perm, e.nlink, e.content, first[e.id])
	}
	return b.String()
}

type canonEntry struct {
	path    string
	id      uint64 // identity shared by hard links
	typ     uint32
	perm    uint32
	nlink   int
	content string
}

func contentHash(typ uint32, data []byte, target string) string {
	switch typ {
	case TypeRegular:
		h := sha256.Sum256(data)
		return fmt.Sprintf("%d:%x", len(data), h[:6])
	case TypeSymlink:
		return "->" + target
	}
	return "-"
}

func (s *mState) canon() string {
	// The root itself too: its link count counts its subdirectories.
	entries := []canonEntry{{"/", 0, TypeDir, s.root.perm, s.root.nlink, "-"}}
	ids := map[*mNode]uint64{}
	for _, p := range s.paths() {
		n, _, _ := s.lookup(p)
		if _, ok := ids[n]; !ok {
			ids[n] = uint64(len(ids) + 1)
		}
		entries = append(entries, canonEntry{p, ids[n], n.typ, n.perm, n.nlink, contentHash(n.typ, n.data, n.target)})
	}
	return canonOf(entries)
}

// fsCanon renders the engine's state the same way, walking it through the API.
func fsCanon(t *testing.T, f *FS) string { return fsCanonAt(t, f, RootIno) }

// fsCanonAt is fsCanon of the tree under rootIno (a snapshot's root).
func fsCanonAt(t *testing.T, f *FS, rootIno uint64) string {
	t.Helper()
	ctx := context.Background()
	root, err := f.GetAttr(ctx, rootIno)
	if err != nil {
		t.Fatalf("getattr root: %v", err)
	}
	entries := []canonEntry{{"/", 0, TypeDir, root.Perm(), int(root.Nlink), "-"}}
	var walk func(prefix string, dir uint64)
	walk = func(prefix string, dir uint64) {
		var cookie uint64
		for {
			ents, eof, err := f.ReadDir(ctx, Root, dir, cookie, 7) // small pages: exercise resumption
			if err != nil {
				t.Fatalf("readdir %q: %v", prefix, err)
			}
			for _, e := range ents {
				cookie = e.Cookie
				p := path.Join(prefix, e.Name)
				n, err := f.GetAttr(ctx, e.Ino)
				if err != nil {
					t.Fatalf("getattr %q (inode %d): %v", p, e.Ino, err)
				}
				if e.Type != n.Type() {
					t.Fatalf("%q: directory entry type %o, inode type %o", p, e.Type, n.Type())
				}
				var data []byte
				if n.IsReg() {
					data = make([]byte, n.Size)
					got, _, err := f.Read(ctx, Root, n.Ino, 0, data)
					if err != nil || got != len(data) {
						t.Fatalf("read %q: %d of %d bytes: %v", p, got, len(data), err)
					}
					// The zero-copy read must see the same bytes.
					parts, got, _, _, err := f.ReadShared(ctx, Root, n.Ino, 0, make([]byte, n.Size))
					if err != nil || got != len(data) || !bytes.Equal(bytes.Join(parts, nil), data) {
						t.Fatalf("ReadShared %q: %d of %d bytes, same as Read: %v: %v", p, got, len(data),
							bytes.Equal(bytes.Join(parts, nil), data), err)
					}
				}
				entries = append(entries, canonEntry{p, n.Ino, n.Type(), n.Perm(), int(n.Nlink), contentHash(n.Type(), data, n.Target)})
				if n.IsDir() {
					walk(p, n.Ino)
				}
			}
			if eof {
				return
			}
		}
	}
	walk("", rootIno)
	return canonOf(entries)
}

// mop is one operation with the random choices that define it.
type mop struct {
	kind       string
	a, b       string // paths
	off, n     uint64
	seed       uint64
	perm       uint32
	wantErrno  syscall.Errno // outcome of the live run
	createdIno uint64        // inode the live run created
	src        *mState       // clone, restore: the snapshot's state (nil: the live one)
	snap       string        // and its name
}

func (o mop) String() string {
	return fmt.Sprintf("%s(%q, %q, off=%d n=%d seed=%d) -> %v", o.kind, o.a, o.b, o.off, o.n, o.seed, o.wantErrno)
}

func opData(seed, n uint64) []byte {
	p := make([]byte, n)
	if seed%5 == 0 {
		return p // zeros: exercises zero detection
	}
	r := rand.New(rand.NewPCG(seed, n))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// applyModel applies o to the model and returns the errno POSIX gives.
func (s *mState) apply(o *mop) syscall.Errno {
	switch o.kind {
	case "create", "mkdir", "symlink":
		dir, name := path.Split(o.a)
		parent, _, _ := s.lookup(strings.TrimSuffix(dir, "/"))
		if parent == nil || parent.typ != TypeDir {
			return syscall.ENOENT
		}
		if parent.entries[name] != nil {
			return syscall.EEXIST
		}
		n := &mNode{ino: o.createdIno, perm: o.perm, nlink: 1}
		switch o.kind {
		case "create":
			n.typ = TypeRegular
		case "mkdir":
			n.typ, n.nlink, n.entries = TypeDir, 2, map[string]*mNode{}
			parent.nlink++
		case "symlink":
			n.typ, n.perm, n.target = TypeSymlink, 0o777, o.b
		}
		parent.entries[name] = n
	case "clone":
		from := s
		if o.src != nil {
			from = o.src
		}
		src, _, _ := from.lookup(o.a)
		dir, name := path.Split(o.b)
		parent, _, _ := s.lookup(strings.TrimSuffix(dir, "/"))
		switch {
		case src == nil && o.src != nil:
			return syscall.ENOENT // the snapshot's path is resolved first
		case parent == nil || parent.typ != TypeDir:
			return syscall.ENOENT
		case parent.entries[name] != nil:
			return syscall.EEXIST
		case src == nil:
			return syscall.ENOENT
		case src.typ != TypeRegular:
			return syscall.EINVAL
		}
		parent.entries[name] = &mNode{ino: o.createdIno, typ: TypeRegular, perm: src.perm, nlink: 1, data: slices.Clone(src.data)}
	case "restore":
		src, _, _ := o.src.lookup(o.a)
		dst, _, _ := s.lookup(o.a)
		switch {
		case src == nil || dst == nil:
			return syscall.ENOENT
		case dst.typ == TypeDir:
			return syscall.EISDIR
		case dst.typ != TypeRegular || src.typ != TypeRegular:
			return syscall.EINVAL
		}
		dst.data = slices.Clone(src.data)
	case "write":
		n, _, _ := s.lookup(o.a)
		if n == nil || n.typ != TypeRegular {
			return syscall.EISDIR
		}
		end := o.off + o.n
		if uint64(len(n.data)) < end {
			n.data = append(n.data, make([]byte, end-uint64(len(n.data)))...)
		}
		copy(n.data[o.off:end], opData(o.seed, o.n))
	case "truncate":
		n, _, _ := s.lookup(o.a)
		if n == nil || n.typ != TypeRegular {
			return syscall.EISDIR
		}
		if o.n < uint64(len(n.data)) {
			n.data = n.data[:o.n]
		} else {
			n.data = append(n.data, make([]byte, o.n-uint64(len(n.data)))...)
		}
	case "punch":
		n, _, _ := s.lookup(o.a)
		if n == nil || n.typ != TypeRegular {
			return syscall.EISDIR
		}
		end := min(o.off+o.n, uint64(len(n.data)))
		if o.off < end {
			clear(n.data[o.off:end])
		}
	case "unlink", "rmdir":
		n, parent, name := s.lookup(o.a)
		if n == nil {
			return syscall.ENOENT
		}
		if o.kind == "unlink" && n.typ == TypeDir {
			return syscall.EISDIR
		}
		if o.kind == "rmdir" {
			if n.typ != TypeDir {
				return syscall.ENOTDIR
			}
			if len(n.entries) > 0 {
				return syscall.ENOTEMPTY
			}
			parent.nlink--
		}
		delete(parent.entries, name)
		n.nlink--
	case "link":
		src, _, _ := s.lookup(o.a)
		dir, name := path.Split(o.b)
		parent, _, _ := s.lookup(strings.TrimSuffix(dir, "/"))
		if src == nil || parent == nil {
			return syscall.ENOENT
		}
		if src.typ == TypeDir {
			return syscall.EPERM
		}
		if parent.entries[name] != nil {
			return syscall.EEXIST
		}
		parent.entries[name] = src
		src.nlink++
	case "rename":
		src, sparent, sname := s.lookup(o.a)
		ddir, dname := path.Split(o.b)
		dparent, _, _ := s.lookup(strings.TrimSuffix(ddir, "/"))
		if src == nil || dparent == nil {
			return syscall.ENOENT
		}
		if o.a == o.b {
			return 0
		}
		if src.typ == TypeDir && (o.b == o.a || strings.HasPrefix(o.b, o.a+"/")) {
			return syscall.EINVAL
		}
		dst := dparent.entries[dname]
		if dst == src {
			return 0
		}
		if dst != nil {
			switch {
			case src.typ == TypeDir && dst.typ != TypeDir:
				return syscall.ENOTDIR
			case src.typ != TypeDir && dst.typ == TypeDir:
				return syscall.EISDIR
			case dst.typ == TypeDir && len(dst.entries) > 0:
				return syscall.ENOTEMPTY
			}
			if dst.typ == TypeDir {
				dparent.nlink--
			}
			dst.nlink--
		}
		delete(sparent.entries, sname)
		dparent.entries[dname] = src
		if src.typ == TypeDir && sparent != dparent {
			sparent.nlink--
			dparent.nlink++
		}
	}
	return 0
}

// runFS performs o on the engine, resolving paths through the model state s
// (which must equal the engine's), and returns the errno.
func runFS(f *FS, s *mState, o *mop) syscall.Errno {
	ctx := context.Background()
	inSnapshot := func(snap, p string) (uint64, error) {
		n, err := f.SnapshotIno(ctx, snap, strings.Split(p, "/")...)
		return n.Ino, err
	}
	inoOf := func(p string) uint64 {
		if n, _, _ := s.lookup(p); n != nil {
			return n.ino
		}
		return 1 << 60 // no such inode
	}
	split := func(p string) (uint64, string) {
		dir, name := path.Split(p)
		return inoOf(strings.TrimSuffix(dir, "/")), name
	}
	var err error
	switch o.kind {
	case "create", "mkdir", "symlink":
		dir, name := split(o.a)
		nn := NewNode{Mode: TypeRegular | o.perm, Exclusive: true}
		switch o.kind {
		case "mkdir":
			nn.Mode = TypeDir | o.perm
		case "symlink":
			nn.Mode, nn.Target = TypeSymlink, o.b
		}
		var n Inode
		n, _, err = f.Create(ctx, Root, dir, name, nn)
		if err == nil {
			o.createdIno = n.Ino
		}
	case "clone":
		src := inoOf(o.a)
		if o.src != nil {
			if src, err = inSnapshot(o.snap, o.a); err != nil {
				break
			}
		}
		dir, name := split(o.b)
		var n Inode
		if n, err = f.CloneFile(ctx, Root, src, dir, name); err == nil {
			o.createdIno = n.Ino
		}
	case "restore":
		var src uint64
		if src, err = inSnapshot(o.snap, o.a); err == nil {
			_, err = f.RestoreFile(ctx, Root, inoOf(o.a), src)
		}
	case "write":
		_, err = f.Write(ctx, Root, inoOf(o.a), o.off, opData(o.seed, o.n))
	case "truncate":
		size := o.n
		_, _, err = f.SetAttr(ctx, Root, inoOf(o.a), SetAttrs{Size: &size})
	case "punch":
		err = f.Punch(ctx, Root, inoOf(o.a), o.off, o.n)
	case "unlink":
		dir, name := split(o.a)
		_, err = f.Remove(ctx, Root, dir, name)
	case "rmdir":
		dir, name := split(o.a)
		_, err = f.Rmdir(ctx, Root, dir, name)
	case "link":
		dir, name := split(o.b)
		_, _, err = f.Link(ctx, Root, inoOf(o.a), dir, name)
	case "rename":
		sdir, sname := split(o.a)
		ddir, dname := split(o.b)
		err = f.Rename(ctx, Root, sdir, sname, ddir, dname)
	}
	return Errno(err)
}

func TestModelRandomCrashes(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	ops := 2500
	if testing.Short() {
		seeds, ops = seeds[:1], 600
	}
	if s := os.Getenv("ZEROFS_MODEL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seeds = []uint64{seed}
	} else if os.Getenv("ZEROFS_MODEL_RANDOM") != "" {
		seeds = []uint64{uint64(time.Now().UnixNano())}
	}
	if s := os.Getenv("ZEROFS_MODEL_OPS"); s != "" {
		ops, _ = strconv.Atoi(s)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("replay with ZEROFS_MODEL_SEED=%d", seed)
			runModel(t, seed, ops)
		})
	}
}

func runModel(t *testing.T, seed uint64, nops int) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	st := store.NewMem()
	dir := t.TempDir()
	opts := testOptions(t, st, dir)
	opts.BatchAge = 5 * time.Millisecond // background seals at arbitrary points
	opts.BatchBytes = 64 << 10
	if seed%2 == 1 {
		opts.DiskCacheBytes = 1 << 20 // half the seeds read through a (small, evicting) disk cache
	}
	f := mustOpen(t, opts)
	defer func() { f.crash() }()

	m := &mState{root: &mNode{ino: RootIno, typ: TypeDir, perm: 0o755, nlink: 2, entries: map[string]*mNode{}}}
	flushed := m.clone()          // the state as of the last flush
	var since []mop               // operations since the last flush
	snaps := map[string]*mState{} // the model at each snapshot's creation
	snapNames := []string{"s1", "s2", "s3"}
	// checkSnapshots compares every snapshot with the model's state at its
	// creation, and the list of snapshots with the model's.
	checkSnapshots := func(when string) {
		t.Helper()
		list, err := f.Snapshots(ctx)
		if err != nil {
			t.Fatalf("%s: list snapshots: %v", when, err)
		}
		var got, want []string
		for _, sn := range list {
			got = append(got, sn.Name)
		}
		for name := range snaps {
			want = append(want, name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: snapshots %v, model %v", when, got, want)
		}
		for name, ms := range snaps {
			root, err := f.SnapshotIno(ctx, name)
			if err != nil {
				t.Fatalf("%s: snapshot %s: %v", when, name, err)
			}
			if got, want := fsCanonAt(t, f, root.Ino), ms.canon(); got != want {
				t.Fatalf("%s: snapshot %s differs from the model at its creation\nsnapshot:\n%s\nmodel:\n%s", when, name, got, want)
			}
		}
	}
	snapPath := func(ms *mState) string {
		ps := ms.paths()
		if len(ps) == 0 {
			return ""
		}
		return ps[r.IntN(len(ps))]
	}
	anySnap := func() string {
		names := slices.Sorted(maps.Keys(snaps))
		if len(names) == 0 {
			return ""
		}
		return names[r.IntN(len(names))]
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	crashes, checks, lost := 0, 0, 0
	kinds := map[string]int{} // operations that succeeded, by kind

	pick := func(filter func(*mNode) bool) string {
		var cands []string
		for _, p := range m.paths() {
			if n, _, _ := m.lookup(p); filter(n) {
				cands = append(cands, p)
			}
		}
		if len(cands) == 0 {
			return ""
		}
		return cands[r.IntN(len(cands))]
	}
	anyPath := func() string {
		if p := pick(func(*mNode) bool { return true }); p != "" && r.IntN(8) > 0 {
			return p
		}
		return names[r.IntN(len(names))]
	}
	newPath := func() string {
		d := pick(func(n *mNode) bool { return n.typ == TypeDir })
		if r.IntN(3) == 0 {
			d = ""
		}
		return path.Join(d, names[r.IntN(len(names))])
	}
	file := func() string { return pick(func(n *mNode) bool { return n.typ == TypeRegular }) }

	for i := 0; i < nops; i++ {
		var o mop
		switch x := r.IntN(100); {
		case x < 10:
			o = mop{kind: "create", a: newPath(), perm: 0o600 + uint32(r.IntN(0o100))}
		case x < 15:
			o = mop{kind: "mkdir", a: newPath(), perm: 0o755}
		case x < 17:
			o = mop{kind: "symlink", a: newPath(), b: "target-" + strconv.Itoa(r.IntN(100))}
		case x < 45:
			if o.a = file(); o.a == "" {
				continue
			}
			o.kind = "write"
			o.off = uint64(r.IntN(160 << 10))
			o.n = uint64(1 + r.IntN(24<<10))
			if r.IntN(4) == 0 { // chunk aligned
				o.off &^= 4095
				o.n = uint64(4096 * (1 + r.IntN(6)))
			}
			o.seed = r.Uint64()
		case x < 51:
			if o.a = file(); o.a == "" {
				continue
			}
			o.kind, o.n = "truncate", uint64(r.IntN(200<<10))
		case x < 58:
			if o.a = file(); o.a == "" {
				continue
			}
			o.kind, o.off, o.n = "punch", uint64(r.IntN(180<<10)), uint64(r.IntN(64<<10))
		case x < 65:
			o = mop{kind: "unlink", a: anyPath()}
		case x < 68:
			o = mop{kind: "rmdir", a: anyPath()}
		case x < 73:
			o = mop{kind: "link", a: anyPath(), b: newPath()}
		case x < 82:
			o = mop{kind: "rename", a: anyPath(), b: newPath()}
			if r.IntN(3) == 0 {
				o.b = anyPath() // over an existing entry: replace, or an error
			}
		case x < 88:
			if err := f.Flush(ctx); err != nil {
				t.Fatalf("op %d: flush: %v", i, err)
			}
			flushed, since = m.clone(), nil
			continue
		case x < 90:
			if _, err := f.GC(ctx); err != nil {
				t.Fatalf("op %d: gc: %v", i, err)
			}
			continue
		case x < 91:
			f.waitApplied()
			if err := f.checkpoint(ctx); err != nil {
				t.Fatalf("op %d: checkpoint: %v", i, err)
			}
			continue
		case x >= 93 && x < 95:
			name := snapNames[r.IntN(len(snapNames))]
			_, err := f.CreateSnapshot(ctx, name, SnapshotOptions{})
			want := syscall.Errno(0)
			if snaps[name] != nil {
				want = syscall.EEXIST
			}
			if Errno(err) != want {
				t.Fatalf("op %d: create snapshot %s: %v, want %v", i, name, err, want)
			}
			if err == nil {
				kinds["snapshot"]++
				snaps[name] = m.clone()
				flushed, since = m.clone(), nil // it flushed
			}
			continue
		case x >= 93 && x < 96:
			name := snapNames[r.IntN(len(snapNames))]
			_, err := f.DeleteSnapshot(ctx, name)
			want := syscall.Errno(0)
			if snaps[name] == nil {
				want = syscall.ENOENT
			}
			if Errno(err) != want {
				t.Fatalf("op %d: delete snapshot %s: %v, want %v", i, name, err, want)
			}
			if err == nil {
				kinds["delete-snapshot"]++
				delete(snaps, name)
				flushed, since = m.clone(), nil
			}
			continue
		case x >= 93 && x < 98:
			o = mop{kind: "clone", b: newPath()}
			if o.snap = anySnap(); o.snap != "" && r.IntN(2) == 0 {
				o.src = snaps[o.snap]
				if o.a = snapPath(o.src); o.a == "" {
					continue
				}
			} else if o.snap, o.a = "", file(); o.a == "" {
				continue
			}
		case x >= 93 && x < 99:
			if o.snap = anySnap(); o.snap == "" {
				continue
			}
			o.kind, o.src = "restore", snaps[o.snap]
			if o.a = snapPath(o.src); o.a == "" {
				continue
			}
		case x < 93:
			// Crash, sometimes losing the local state too (a new machine),
			// sometimes a clean close.
			kind := []string{"kill", "kill", "new-machine", "close"}[r.IntN(4)]
			if r.IntN(3) == 0 {
				time.Sleep(time.Duration(r.IntN(10)) * time.Millisecond) // let seals get in flight
			}
			if kind == "close" {
				if err := f.Close(); err != nil {
					t.Fatalf("op %d: close: %v", i, err)
				}
				flushed, since = m.clone(), nil
			} else {
				f.crash()
			}
			if kind == "new-machine" {
				opts.Dir = t.TempDir()
			}
			f = mustOpen(t, opts)
			crashes++
			got := fsCanon(t, f)
			// Candidate states: the flushed one, then after each later op.
			cand := flushed.clone()
			var match *mState
			matchAt := -1
			if cand.canon() == got {
				match = cand.clone()
			}
			for j := range since {
				if e := cand.apply(&since[j]); e != since[j].wantErrno {
					t.Fatalf("model replay diverged at %v: %v", since[j], e)
				}
				if cand.canon() == got {
					match, matchAt = cand.clone(), j
				}
			}
			if match != nil && matchAt < len(since)-1 {
				lost++
			}
			if match == nil {
				t.Fatalf("op %d: after %s the recovered state matches no state between the last flush and the crash.\nrecovered:\n%s\nflushed:\n%s\nlatest:\n%s\nops since flush: %v",
					i, kind, got, flushed.canon(), m.canon(), since)
			}
			checks++
			m, flushed, since = match, match.clone(), nil
			checkSnapshots(fmt.Sprintf("op %d: after %s", i, kind))
			continue
		default:
			continue
		}
		got := runFS(f, m, &o) // resolves paths in the state before the op
		want := m.apply(&o)    // learns the inode a create made from o
		if want != got {
			t.Fatalf("op %d %v: engine errno %v, model %v", i, o, got, want)
		}
		o.wantErrno = want
		since = append(since, o)
		if want == 0 {
			kinds[o.kind]++
		}
		if i%250 == 0 {
			if got, want := fsCanon(t, f), m.canon(); got != want {
				t.Fatalf("op %d: engine and model differ without a crash\nengine:\n%s\nmodel:\n%s", i, got, want)
			}
		}
	}
	if got, want := fsCanon(t, f), m.canon(); got != want {
		t.Fatalf("final: engine and model differ\nengine:\n%s\nmodel:\n%s", got, want)
	}
	checkSnapshots("final")
	t.Logf("seed %d: %d ops, %d crashes checked, %d of them lost unflushed operations; done: %v", seed, nops, checks, lost, kinds)
	_ = crashes
}
