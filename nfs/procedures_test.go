package nfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"zerofs/fs"
)

// The NFSv3 procedures, one by one, through the wire.

func TestMountProtocol(t *testing.T) {
	f := newFixture(t, Options{})
	rc, err := dialRPC(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c := f.client(0, 0)
	c.mustWrite(c.mustCreate(c.mustMkdir(c.root, "srv"), "file"), 0, []byte("x"))
	for _, tc := range []struct {
		name string
		path string
		want mountStat
	}{
		{"root", "/", mnt3OK},
		{"subdirectory", "/srv", mnt3OK},
		{"subdirectory with slashes", "//srv/", mnt3OK},
		{"missing subdirectory", "/export", mnt3ErrNoEnt},
		{"a file", "/srv/file", mnt3ErrNotDir},
		{"empty", "", mnt3ErrNoEnt},
		{"relative", "export", mnt3ErrNoEnt},
		{"too long", "/" + string(bytes.Repeat([]byte("a"), 1100)), mnt3ErrNameLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, fh, flavors, err := rc.mount(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if st != tc.want {
				t.Fatalf("MNT %q: %v, want %v", tc.path, st, tc.want)
			}
			if st == mnt3OK && (len(fh) != handleSize || len(flavors) != 1 || flavors[0] != authSys) {
				t.Fatalf("MNT: handle of %d bytes, flavors %v", len(fh), flavors)
			}
		})
	}

	dump := func() []string {
		r, err := rc.call(progMount, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for r.bool() {
			out = append(out, r.string(mntNameLen)+":"+r.string(mntPathLen))
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		return out
	}
	if got := strings.Join(dump(), " "); got != "127.0.0.1:/ 127.0.0.1://srv/ 127.0.0.1:/srv" {
		t.Fatalf("DUMP after MNT: %q", got)
	}
	for _, p := range []string{"//srv/", "/srv"} {
		var w xdrWriter
		w.string(p)
		if _, err := rc.call(progMount, 3, w.b); err != nil { // UMNT
			t.Fatal(err)
		}
	}
	var w xdrWriter
	w.string("/")
	if _, err := rc.call(progMount, 3, w.b); err != nil { // UMNT
		t.Fatal(err)
	}
	if got := dump(); len(got) != 0 {
		t.Fatalf("DUMP after UMNT: %q", got)
	}
	rc.mount("/")
	if _, err := rc.call(progMount, 4, nil); err != nil { // UMNTALL
		t.Fatal(err)
	}
	if got := dump(); len(got) != 0 {
		t.Fatalf("DUMP after UMNTALL: %q", got)
	}

	r, err := rc.call(progMount, 5, nil) // EXPORT
	if err != nil {
		t.Fatal(err)
	}
	if !r.bool() || r.string(mntPathLen) != "/" {
		t.Fatal("EXPORT does not list /")
	}
	var groups []string
	for r.bool() {
		groups = append(groups, r.string(mntNameLen))
	}
	if more := r.bool(); more || r.err != nil || len(groups) != 2 {
		t.Fatalf("EXPORT: groups %q, more %v, err %v", groups, more, r.err)
	}
}

func TestGetattrSetattr(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "file")
	st, a := c.getattr(fh)
	if st != StatusOK {
		t.Fatal(st)
	}
	_, ra := c.getattr(c.root)
	if a.ftype != ftypeReg || a.mode != 0o644 || a.nlink != 1 || a.size != 0 || a.uid != 0 || a.gid != 0 {
		t.Fatalf("new file attributes %+v", a)
	}
	if a.fsid != ra.fsid || a.fileid == ra.fileid || ra.fileid != 1 || ra.ftype != ftypeDir {
		t.Fatalf("fsid/fileid: file %+v root %+v", a, ra)
	}
	if a.ctime.sec == 0 || a.mtime != a.ctime {
		t.Fatalf("times of a new file: %+v", a)
	}

	tests := []struct {
		name  string
		set   sattrIn
		check func(t *testing.T, before, after fattr)
	}{
		{"mode with setuid", sattrIn{mode: u32(0o4755)}, func(t *testing.T, b, a fattr) {
			if a.mode != 0o4755 {
				t.Fatalf("mode %o", a.mode)
			}
		}},
		{"sticky and setgid", sattrIn{mode: u32(0o3777)}, func(t *testing.T, b, a fattr) {
			if a.mode != 0o3777 {
				t.Fatalf("mode %o", a.mode)
			}
		}},
		{"type bits ignored", sattrIn{mode: u32(0o040644)}, func(t *testing.T, b, a fattr) {
			if a.mode != 0o644 || a.ftype != ftypeReg {
				t.Fatalf("mode %o type %d", a.mode, a.ftype)
			}
		}},
		{"owner", sattrIn{uid: u32(1234), gid: u32(5678)}, func(t *testing.T, b, a fattr) {
			if a.uid != 1234 || a.gid != 5678 {
				t.Fatalf("owner %d:%d", a.uid, a.gid)
			}
		}},
		{"grow", sattrIn{size: u64(1 << 20)}, func(t *testing.T, b, a fattr) {
			if a.size != 1<<20 || a.used != 0 || a.mtime == b.mtime { // sparse: nothing written
				t.Fatalf("size %d used %d mtime %v->%v", a.size, a.used, b.mtime, a.mtime)
			}
		}},
		{"shrink", sattrIn{size: u64(5000)}, func(t *testing.T, b, a fattr) {
			if a.size != 5000 || a.used != 0 {
				t.Fatalf("size %d used %d", a.size, a.used)
			}
		}},
		{"client times with nanoseconds", sattrIn{atime: &nfstime{1_600_000_000, 123_456_789}, mtime: &nfstime{1_500_000_000, 987_654_321}},
			func(t *testing.T, b, a fattr) {
				if a.atime != (nfstime{1_600_000_000, 123_456_789}) || a.mtime != (nfstime{1_500_000_000, 987_654_321}) {
					t.Fatalf("atime %v mtime %v", a.atime, a.mtime)
				}
			}},
		{"server time", sattrIn{atimeNow: true, mtimeNow: true}, func(t *testing.T, b, a fattr) {
			now := uint32(time.Now().Unix())
			if a.mtime.sec+60 < now || a.atime.sec+60 < now { // generous: a loaded machine
				t.Fatalf("atime %v mtime %v, now %d", a.atime, a.mtime, now)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, before := c.getattr(fh)
			time.Sleep(2 * time.Millisecond) // a distinct ctime
			st, wcc := c.setattr(fh, tc.set, nil)
			if st != StatusOK {
				t.Fatalf("SETATTR: %v", st)
			}
			_, after := c.getattr(fh)
			if wcc.pre == nil || wcc.post == nil || wcc.pre.ctime != before.ctime || *wcc.post != after {
				t.Fatalf("wcc %+v does not match GETATTR before %+v / after %+v", wcc, before, after)
			}
			if after.ctime == before.ctime {
				t.Fatal("ctime did not change")
			}
			tc.check(t, before, after)
		})
	}

	t.Run("guard", func(t *testing.T) {
		_, before := c.getattr(fh)
		wrong := before.ctime
		wrong.nsec = (wrong.nsec + 1) % 1e9
		st, wcc := c.setattr(fh, sattrIn{mode: u32(0o600)}, &wrong)
		if st != StatusNotSync {
			t.Fatalf("SETATTR with a stale guard: %v, want NOT_SYNC", st)
		}
		if _, a := c.getattr(fh); a != before || wcc.post == nil || *wcc.post != before {
			t.Fatal("a SETATTR refused by its guard changed the file")
		}
		if st, _ := c.setattr(fh, sattrIn{mode: u32(0o600)}, &before.ctime); st != StatusOK {
			t.Fatalf("SETATTR with the right guard: %v", st)
		}
		if _, a := c.getattr(fh); a.mode != 0o600 {
			t.Fatalf("mode %o after guarded SETATTR", a.mode)
		}
	})
	t.Run("invalid nanoseconds", func(t *testing.T) {
		if st, _ := c.setattr(fh, sattrIn{mtime: &nfstime{1, 1_000_000_000}}, nil); st != StatusInval {
			t.Fatalf("SETATTR with nsec 1e9: %v, want INVAL", st)
		}
	})
	t.Run("size of a directory", func(t *testing.T) {
		d := c.mustMkdir(c.root, "dir")
		if st, _ := c.setattr(d, sattrIn{size: u64(0)}, nil); st != StatusIsDir {
			t.Fatalf("truncate a directory: %v, want ISDIR", st)
		}
	})
}

func TestLookupAndSymlink(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	dir := c.mustMkdir(c.root, "dir")
	file := c.mustCreate(dir, "file")
	_, fa := c.getattr(file)
	_, da := c.getattr(dir)
	_, ra := c.getattr(c.root)

	for _, tc := range []struct {
		name   string
		dir    []byte
		look   string
		st     Status
		fileid uint64
	}{
		{"file", dir, "file", StatusOK, fa.fileid},
		{"dot", dir, ".", StatusOK, da.fileid},
		{"dotdot", dir, "..", StatusOK, ra.fileid},
		{"root dotdot", c.root, "..", StatusOK, ra.fileid},
		{"missing", dir, "nope", StatusNoEnt, 0},
		{"in a file", file, "x", StatusNotDir, 0},
		{"long name", dir, string(bytes.Repeat([]byte("n"), 300)), StatusNameTooLong, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, fh, a := c.lookup(tc.dir, tc.look)
			if st != tc.st {
				t.Fatalf("LOOKUP %q: %v, want %v", tc.look, st, tc.st)
			}
			if st == StatusOK {
				if a.fileid != tc.fileid {
					t.Fatalf("LOOKUP %q: fileid %d, want %d", tc.look, a.fileid, tc.fileid)
				}
				if st, ga := c.getattr(fh); st != StatusOK || ga.fileid != tc.fileid {
					t.Fatalf("GETATTR of the looked-up handle: %v %d", st, ga.fileid)
				}
			}
		})
	}

	for _, target := range []string{"file", "../dir/file", "/absolute/elsewhere", string(bytes.Repeat([]byte("x"), 4000))} {
		name := fmt.Sprintf("link%d", len(target))
		st, res := c.symlink(dir, name, target)
		if st != StatusOK {
			t.Fatalf("SYMLINK -> %q: %v", target[:min(20, len(target))], st)
		}
		if res.attr.ftype != ftypeLnk || res.attr.size != uint64(len(target)) || res.attr.mode != 0o777 {
			t.Fatalf("symlink attributes %+v", res.attr)
		}
		if st, got := c.readlink(res.fh); st != StatusOK || got != target {
			t.Fatalf("READLINK: %v %q", st, got[:min(20, len(got))])
		}
	}
	if st, _ := c.symlink(dir, "toolong", string(bytes.Repeat([]byte("x"), 5000))); st != StatusNameTooLong {
		t.Fatalf("SYMLINK with a 5000-byte target: %v, want NAMETOOLONG", st)
	}
	if st, _ := c.symlink(dir, "empty", ""); st != StatusInval {
		t.Fatalf("SYMLINK with an empty target: %v, want INVAL", st)
	}
	if st, _ := c.readlink(file); st != StatusInval {
		t.Fatalf("READLINK of a file: %v, want INVAL", st)
	}
}

func TestReadWriteCommit(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "file")
	verf := f.fs.Epoch()

	data := make([]byte, 3<<20+123)
	rand.Read(data)
	for off := 0; off < len(data); off += maxIO {
		res := c.mustWrite(fh, uint64(off), data[off:min(off+maxIO, len(data))])
		if res.committed != unstable || res.verf != verf {
			t.Fatalf("UNSTABLE WRITE: committed %d verf %x, want UNSTABLE %x", res.committed, res.verf, verf)
		}
		if res.wcc.pre == nil || res.wcc.post == nil || res.wcc.pre.size != uint64(off) || res.wcc.post.size != uint64(min(off+maxIO, len(data))) {
			t.Fatalf("WRITE wcc %+v", res.wcc)
		}
	}
	if st, v := c.commit(fh); st != StatusOK || v != verf {
		t.Fatalf("COMMIT: %v verf %x", st, v)
	}
	st, res := c.write(fh, uint64(len(data)), []byte("tail"), fileSync)
	if st != StatusOK || res.committed != fileSync {
		t.Fatalf("FILE_SYNC WRITE: %v committed %d", st, res.committed)
	}
	st, res = c.write(fh, uint64(len(data)), []byte("tail"), dataSync)
	if st != StatusOK || res.committed != fileSync {
		t.Fatalf("DATA_SYNC WRITE: %v committed %d", st, res.committed)
	}
	data = append(data, "tail"...)

	var got []byte
	for off := uint64(0); ; {
		st, p, eof := c.read(fh, off, maxIO)
		if st != StatusOK {
			t.Fatalf("READ at %d: %v", off, st)
		}
		got = append(got, p...)
		off += uint64(len(p))
		if eof {
			break
		}
		if len(p) == 0 {
			t.Fatal("READ returned nothing before eof")
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data read back differs")
	}

	for _, tc := range []struct {
		name  string
		off   uint64
		count uint32
		want  []byte
		eof   bool
	}{
		{"middle", 1000, 10, data[1000:1010], false},
		{"to the end", uint64(len(data) - 3), 10, data[len(data)-3:], true},
		{"exactly the end", uint64(len(data) - 3), 3, data[len(data)-3:], true},
		{"past the end", uint64(len(data) + 10), 10, nil, true},
		{"zero bytes", 0, 0, nil, false},
		{"over rtmax", 0, 4 << 20, data[:maxIO], false},
		{"odd length", 1, 5, data[1:6], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, p, eof := c.read(fh, tc.off, tc.count)
			if st != StatusOK || !bytes.Equal(p, tc.want) || eof != tc.eof {
				t.Fatalf("READ [%d,+%d): %v, %d bytes, eof %v; want %d bytes, eof %v", tc.off, tc.count, st, len(p), eof, len(tc.want), tc.eof)
			}
		})
	}

	dir := c.mustMkdir(c.root, "dir")
	if st, _ := c.write(dir, 0, []byte("x"), unstable); st != StatusIsDir {
		t.Fatalf("WRITE to a directory: %v, want ISDIR", st)
	}
	if st, _, _ := c.read(dir, 0, 10); st != StatusIsDir {
		t.Fatalf("READ of a directory: %v, want ISDIR", st)
	}
	_, l := c.symlink(c.root, "link", "file")
	if st, _, _ := c.read(l.fh, 0, 10); st != StatusInval {
		t.Fatalf("READ of a symlink: %v, want INVAL", st)
	}
	if st, _ := c.write(fh, 1<<50, []byte("x"), unstable); st != StatusFBig {
		t.Fatalf("WRITE beyond the maximum file size: %v, want FBIG", st)
	}
}

func TestCreateModes(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)

	t.Run("unchecked", func(t *testing.T) {
		st, res := c.create(c.root, "u", createUnchecked, sattrIn{mode: u32(0o640)}, 0)
		if st != StatusOK || res.attr.mode != 0o640 || res.wcc.pre == nil || res.wcc.post == nil {
			t.Fatalf("CREATE UNCHECKED: %v %+v", st, res)
		}
		c.mustWrite(res.fh, 0, []byte("hello"))
		// Again, with O_TRUNC's size 0 and another mode: same file,
		// truncated, mode kept.
		st, again := c.create(c.root, "u", createUnchecked, sattrIn{mode: u32(0o600), size: u64(0)}, 0)
		if st != StatusOK || !bytes.Equal(again.fh, res.fh) {
			t.Fatalf("CREATE UNCHECKED of an existing file: %v, same handle %v", st, bytes.Equal(again.fh, res.fh))
		}
		if again.attr.size != 0 || again.attr.mode != 0o640 {
			t.Fatalf("existing file after CREATE UNCHECKED: size %d mode %o", again.attr.size, again.attr.mode)
		}
		c.mkdir(c.root, "udir", sattrIn{})
		if st, _ := c.create(c.root, "udir", createUnchecked, sattrIn{}, 0); st != StatusExist {
			t.Fatalf("CREATE UNCHECKED over a directory: %v, want EXIST", st)
		}
	})
	t.Run("default mode", func(t *testing.T) {
		st, res := c.create(c.root, "nomode", createGuarded, sattrIn{}, 0)
		if st != StatusOK || res.attr.mode != defaultFileMode {
			t.Fatalf("CREATE without mode: %v mode %o", st, res.attr.mode)
		}
	})
	t.Run("guarded", func(t *testing.T) {
		st, res := c.create(c.root, "g", createGuarded, sattrIn{mode: u32(0o600), uid: u32(42), gid: u32(43)}, 0)
		if st != StatusOK || res.attr.mode != 0o600 || res.attr.uid != 42 || res.attr.gid != 43 {
			t.Fatalf("CREATE GUARDED: %v %+v", st, res.attr)
		}
		if st, _ := c.create(c.root, "g", createGuarded, sattrIn{}, 0); st != StatusExist {
			t.Fatalf("CREATE GUARDED of an existing name: %v, want EXIST", st)
		}
	})
	t.Run("exclusive", func(t *testing.T) {
		st, res := c.create(c.root, "x", createExclusive, sattrIn{}, 0xfeedface)
		if st != StatusOK || res.fh == nil {
			t.Fatalf("CREATE EXCLUSIVE: %v", st)
		}
		// The client sets attributes after an exclusive create.
		if st, _ := c.setattr(res.fh, sattrIn{mode: u32(0o600)}, nil); st != StatusOK {
			t.Fatal(st)
		}
		c.mustWrite(res.fh, 0, []byte("data"))
		st, again := c.create(c.root, "x", createExclusive, sattrIn{}, 0xfeedface)
		if st != StatusOK || !bytes.Equal(again.fh, res.fh) {
			t.Fatalf("retransmitted CREATE EXCLUSIVE: %v, same handle %v", st, bytes.Equal(again.fh, res.fh))
		}
		if again.attr.size != 4 || again.attr.mode != 0o600 {
			t.Fatalf("retransmitted CREATE EXCLUSIVE touched the file: %+v", again.attr)
		}
		if st, _ := c.create(c.root, "x", createExclusive, sattrIn{}, 0xbadbad); st != StatusExist {
			t.Fatalf("CREATE EXCLUSIVE with another verifier: %v, want EXIST", st)
		}
		if st, _ := c.create(c.root, "g", createExclusive, sattrIn{}, 0xfeedface); st != StatusExist {
			t.Fatalf("CREATE EXCLUSIVE over a file made otherwise: %v, want EXIST", st)
		}
	})
	t.Run("bad names", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			st   Status
		}{
			{"", StatusInval},
			{".", StatusInval},
			{"..", StatusInval},
			{"a/b", StatusInval},
			{string(bytes.Repeat([]byte("n"), 256)), StatusNameTooLong},
		} {
			if st, _ := c.create(c.root, tc.name, createGuarded, sattrIn{}, 0); st != tc.st {
				t.Errorf("CREATE %q: %v, want %v", tc.name[:min(len(tc.name), 10)], st, tc.st)
			}
		}
	})
}

func TestMkdirRmdirRemove(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	_, before := c.getattr(c.root)
	st, res := c.mkdir(c.root, "d", sattrIn{mode: u32(0o2750)})
	if st != StatusOK || res.attr.ftype != ftypeDir || res.attr.mode != 0o2750 || res.attr.nlink != 2 {
		t.Fatalf("MKDIR: %v %+v", st, res.attr)
	}
	if res.wcc.post == nil || res.wcc.post.nlink != before.nlink+1 {
		t.Fatalf("parent nlink %d -> %+v", before.nlink, res.wcc.post)
	}
	d := res.fh
	if st, _ := c.mkdir(c.root, "d", sattrIn{}); st != StatusExist {
		t.Fatalf("MKDIR of an existing name: %v", st)
	}
	c.mustCreate(d, "f")
	sub := c.mustMkdir(d, "sub")
	if _, a := c.getattr(sub); a.gid != 0 || a.mode&0o2000 == 0 {
		t.Fatalf("subdirectory of a setgid directory: %+v", a)
	}
	for _, tc := range []struct {
		name string
		do   func() Status
		want Status
	}{
		{"rmdir non-empty", func() Status { return c.rmdir(c.root, "d") }, StatusNotEmpty},
		{"rmdir a file", func() Status { return c.rmdir(d, "f") }, StatusNotDir},
		{"remove a directory", func() Status { return c.remove(d, "sub") }, StatusIsDir},
		{"remove missing", func() Status { return c.remove(d, "nope") }, StatusNoEnt},
		{"rmdir dot", func() Status { return c.rmdir(d, ".") }, StatusInval},
		{"remove file", func() Status { return c.remove(d, "f") }, StatusOK},
		{"rmdir sub", func() Status { return c.rmdir(d, "sub") }, StatusOK},
		{"rmdir now empty", func() Status { return c.rmdir(c.root, "d") }, StatusOK},
	} {
		if got := tc.do(); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, a := c.getattr(c.root); a.nlink != before.nlink {
		t.Fatalf("root nlink %d after rmdir, want %d", a.nlink, before.nlink)
	}
	if st, _ := c.getattr(d); st != StatusStale {
		t.Fatalf("GETATTR of a removed directory: %v, want STALE", st)
	}
}

func TestMknod(t *testing.T) {
	f := newFixture(t, Options{})
	root := f.client(0, 0)
	user := f.client(1000, 1000)
	dir := root.mustMkdir(root.root, "dev")
	root.setattr(dir, sattrIn{mode: u32(0o777)}, nil)
	for _, tc := range []struct {
		name         string
		c            *nfsClient
		ftype        uint32
		major, minor uint32
		want         Status
	}{
		{"char device", root, ftypeChr, 1, 3, StatusOK},
		{"block device with big numbers", root, ftypeBlk, 259, 1 << 19, StatusOK},
		{"fifo", root, ftypeFIFO, 0, 0, StatusOK},
		{"socket", root, ftypeSock, 0, 0, StatusOK},
		{"fifo by a user", user, ftypeFIFO, 0, 0, StatusOK},
		{"char device by a user", user, ftypeChr, 1, 3, StatusPerm},
		{"regular file", root, ftypeReg, 0, 0, StatusBadType},
		{"directory", root, ftypeDir, 0, 0, StatusBadType},
		{"symlink", root, ftypeLnk, 0, 0, StatusBadType},
		{"unknown type", root, 99, 0, 0, StatusBadType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, res := tc.c.mknod(dir, tc.name, tc.ftype, sattrIn{mode: u32(0o640)}, tc.major, tc.minor)
			if st != tc.want {
				t.Fatalf("MKNOD: %v, want %v", st, tc.want)
			}
			if st != StatusOK {
				return
			}
			a := res.attr
			if a.ftype != tc.ftype || a.mode != 0o640 || a.major != tc.major || a.minor != tc.minor {
				t.Fatalf("attributes %+v", a)
			}
		})
	}
}

func TestRename(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	a := c.mustMkdir(c.root, "a")
	b := c.mustMkdir(c.root, "b")
	src := c.mustCreate(a, "src")
	c.mustWrite(src, 0, []byte("source"))

	t.Run("over an existing file", func(t *testing.T) {
		dst := c.mustCreate(b, "dst")
		c.mustWrite(dst, 0, []byte("old destination"))
		if st := c.rename(a, "src", b, "dst"); st != StatusOK {
			t.Fatalf("RENAME: %v", st)
		}
		if st, _ := c.getattr(dst); st != StatusStale {
			t.Fatalf("the replaced file's handle: %v, want STALE", st)
		}
		// The handle from before the rename still names the file.
		if st, p, _ := c.read(src, 0, 100); st != StatusOK || string(p) != "source" {
			t.Fatalf("READ by the old handle after rename: %v %q", st, p)
		}
		st, fh, _ := c.lookup(b, "dst")
		if st != StatusOK || !bytes.Equal(fh, src) {
			t.Fatalf("LOOKUP of the new name: %v, same handle %v", st, bytes.Equal(fh, src))
		}
		if st, _, _ := c.lookup(a, "src"); st != StatusNoEnt {
			t.Fatalf("old name: %v, want NOENT", st)
		}
	})
	t.Run("directory over an empty directory", func(t *testing.T) {
		d := c.mustMkdir(a, "dir")
		c.mustCreate(d, "inside")
		empty := c.mustMkdir(b, "empty")
		_, aBefore := c.getattr(a)
		_, bBefore := c.getattr(b)
		if st := c.rename(a, "dir", b, "empty"); st != StatusOK {
			t.Fatalf("RENAME over an empty directory: %v", st)
		}
		if st, _ := c.getattr(empty); st != StatusStale {
			t.Fatalf("replaced directory: %v, want STALE", st)
		}
		_, aAfter := c.getattr(a)
		_, bAfter := c.getattr(b)
		if aAfter.nlink != aBefore.nlink-1 || bAfter.nlink != bBefore.nlink {
			t.Fatalf("nlink a %d->%d b %d->%d", aBefore.nlink, aAfter.nlink, bBefore.nlink, bAfter.nlink)
		}
		_, parent, _ := c.lookup(d, "..")
		if !bytes.Equal(parent, b) {
			t.Fatal(`".." of the moved directory is not its new parent`)
		}
	})
	t.Run("directory over an empty directory in the same parent", func(t *testing.T) {
		p := c.mustMkdir(c.root, "p")
		c.mustMkdir(p, "x")
		c.mustMkdir(p, "y")
		_, before := c.getattr(p)
		if st := c.rename(p, "x", p, "y"); st != StatusOK {
			t.Fatalf("RENAME: %v", st)
		}
		if _, after := c.getattr(p); after.nlink != before.nlink-1 {
			t.Fatalf("parent nlink %d -> %d, want %d", before.nlink, after.nlink, before.nlink-1)
		}
	})
	t.Run("over a non-empty directory", func(t *testing.T) {
		c.mustMkdir(a, "x")
		full := c.mustMkdir(b, "full")
		c.mustCreate(full, "f")
		if st := c.rename(a, "x", b, "full"); st != StatusNotEmpty {
			t.Fatalf("RENAME over a non-empty directory: %v, want NOTEMPTY", st)
		}
	})
	for _, tc := range []struct {
		name    string
		fromDir []byte
		from    string
		toDir   []byte
		to      string
		want    Status
	}{
		{"directory over a file", c.root, "a", b, "dst", StatusNotDir},
		{"file over a directory", b, "dst", b, "full", StatusIsDir},
		{"into its own subtree", c.root, "b", b, "inside", StatusInval},
		{"missing source", a, "nope", b, "x", StatusNoEnt},
		{"onto itself", b, "dst", b, "dst", StatusOK},
		{"to dotdot", b, "dst", b, "..", StatusInval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st := c.rename(tc.fromDir, tc.from, tc.toDir, tc.to); st != tc.want {
				t.Fatalf("RENAME: %v, want %v", st, tc.want)
			}
		})
	}
}

func TestLinkCounts(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	d := c.mustMkdir(c.root, "d")
	fh := c.mustCreate(c.root, "f")
	c.mustWrite(fh, 0, []byte("linked"))
	st, a := c.link(fh, d, "f2")
	if st != StatusOK || a == nil || a.nlink != 2 {
		t.Fatalf("LINK: %v %+v", st, a)
	}
	if st, _ := c.link(fh, c.root, "f3"); st != StatusOK {
		t.Fatal(st)
	}
	if _, a := c.getattr(fh); a.nlink != 3 {
		t.Fatalf("nlink %d after two links", a.nlink)
	}
	if st, _ := c.link(fh, d, "f2"); st != StatusExist {
		t.Fatalf("LINK to an existing name: %v, want EXIST", st)
	}
	if st, _ := c.link(d, c.root, "dirlink"); st != StatusPerm {
		t.Fatalf("LINK of a directory: %v, want PERM", st)
	}
	if c.remove(c.root, "f") != StatusOK {
		t.Fatal("REMOVE")
	}
	if _, a := c.getattr(fh); a.nlink != 2 {
		t.Fatalf("nlink %d after unlink", a.nlink)
	}
	st, h2, _ := c.lookup(d, "f2")
	if st != StatusOK || !bytes.Equal(h2, fh) {
		t.Fatal("the other name lost the file")
	}
	if st, p, _ := c.read(h2, 0, 10); st != StatusOK || string(p) != "linked" {
		t.Fatalf("READ through the other name: %v %q", st, p)
	}
	c.remove(d, "f2")
	c.remove(c.root, "f3")
	if st, _ := c.getattr(fh); st != StatusStale {
		t.Fatalf("GETATTR after the last unlink: %v, want STALE", st)
	}
}

func TestStaleAndBadHandles(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "f")
	c.remove(c.root, "f")

	wrongGen := bytes.Clone(c.root)
	wrongGen[handleSize-1] ^= 1
	other := bytes.Clone(c.root)
	other[1] ^= 0xff // another filesystem
	version := bytes.Clone(c.root)
	version[0] = 2
	inoZero := bytes.Clone(c.root)
	copy(inoZero[9:17], make([]byte, 8))
	for _, tc := range []struct {
		name string
		fh   []byte
		want Status
	}{
		{"deleted file", fh, StatusStale},
		{"generation mismatch", wrongGen, StatusStale},
		{"never allocated inode", append(bytes.Clone(c.root[:9]), 0, 0, 0, 0, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), StatusStale},
		{"empty", nil, StatusBadHandle},
		{"short", c.root[:handleSize-1], StatusBadHandle},
		{"long", append(bytes.Clone(c.root), 0), StatusBadHandle},
		{"other filesystem", other, StatusBadHandle},
		{"unknown version", version, StatusBadHandle},
		{"inode zero", inoZero, StatusBadHandle},
		{"random", []byte("garbage handle!!garbage!"), StatusBadHandle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, _ := c.getattr(tc.fh); st != tc.want {
				t.Errorf("GETATTR: %v, want %v", st, tc.want)
			}
			if st, _, _ := c.read(tc.fh, 0, 1); st != tc.want {
				t.Errorf("READ: %v, want %v", st, tc.want)
			}
			if st, _ := c.write(tc.fh, 0, []byte("x"), unstable); st != tc.want {
				t.Errorf("WRITE: %v, want %v", st, tc.want)
			}
			if st, _, _ := c.lookup(tc.fh, "x"); st != tc.want {
				t.Errorf("LOOKUP: %v, want %v", st, tc.want)
			}
			if st, _ := c.create(tc.fh, "x", createGuarded, sattrIn{}, 0); st != tc.want {
				t.Errorf("CREATE: %v, want %v", st, tc.want)
			}
			if st, _, _ := c.readdir(tc.fh, 0, 4096); st != tc.want {
				t.Errorf("READDIR: %v, want %v", st, tc.want)
			}
			if st, _ := c.commit(tc.fh); st != tc.want {
				t.Errorf("COMMIT: %v, want %v", st, tc.want)
			}
			if st := c.rename(tc.fh, "a", c.root, "b"); st != tc.want {
				t.Errorf("RENAME: %v, want %v", st, tc.want)
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	f := newFixture(t, Options{})
	root := f.client(0, 0)
	alice := f.client(1000, 1000)
	bob := f.client(1001, 1001, 1000) // in alice's group

	private := root.mustCreate(root.root, "private")
	root.setattr(private, sattrIn{mode: u32(0o600)}, nil)
	shared := root.mustMkdir(root.root, "shared")
	root.setattr(shared, sattrIn{mode: u32(0o1777)}, nil)

	if st, _ := alice.create(alice.root, "x", createGuarded, sattrIn{}, 0); st != StatusAccess {
		t.Fatalf("CREATE in a root-owned 0755 directory: %v, want ACCES", st)
	}
	if st, _, _ := alice.read(private, 0, 10); st != StatusAccess {
		t.Fatalf("READ of root's 0600 file: %v, want ACCES", st)
	}
	if st, _ := alice.write(private, 0, []byte("x"), unstable); st != StatusAccess {
		t.Fatalf("WRITE to root's 0600 file: %v, want ACCES", st)
	}
	if st, _ := alice.setattr(private, sattrIn{mode: u32(0o666)}, nil); st != StatusPerm {
		t.Fatalf("chmod of root's file: %v, want PERM", st)
	}
	if st, _ := alice.setattr(private, sattrIn{size: u64(0)}, nil); st != StatusAccess {
		t.Fatalf("truncate of root's 0600 file: %v, want ACCES", st)
	}

	st, res := alice.create(shared, "mine", createGuarded, sattrIn{mode: u32(0o640)}, 0)
	if st != StatusOK || res.attr.uid != 1000 || res.attr.gid != 1000 {
		t.Fatalf("CREATE in a 1777 directory: %v %+v", st, res.attr)
	}
	mine := res.fh
	if st, _ := alice.setattr(mine, sattrIn{uid: u32(1001)}, nil); st != StatusPerm {
		t.Fatalf("chown to another user: %v, want PERM", st)
	}
	if st, _ := bob.write(mine, 0, []byte("x"), unstable); st != StatusAccess {
		t.Fatalf("WRITE by the group to a 0640 file: %v, want ACCES", st)
	}
	if st, _, _ := bob.read(mine, 0, 1); st != StatusOK {
		t.Fatalf("READ by the group of a 0640 file: %v", st)
	}
	if st := bob.remove(shared, "mine"); st != StatusPerm {
		t.Fatalf("REMOVE of another's file in a sticky directory: %v, want PERM", st)
	}

	t.Run("access", func(t *testing.T) {
		all := uint32(access3Read | access3Lookup | access3Modify | access3Extend | access3Delete | access3Execute)
		for _, tc := range []struct {
			name string
			c    *nfsClient
			fh   []byte
			want uint32
		}{
			{"owner of 0640 file", alice, mine, access3Read | access3Modify | access3Extend},
			{"group of 0640 file", bob, mine, access3Read},
			{"other of 0600 file", alice, private, 0},
			{"root of 0600 file", root, private, access3Read | access3Modify | access3Extend},
			{"user in 1777 dir", alice, shared, access3Read | access3Lookup | access3Modify | access3Extend | access3Delete},
			{"user in root 0755 dir", alice, alice.root, access3Read | access3Lookup},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st, got := tc.c.access(tc.fh, all)
				if st != StatusOK || got != tc.want {
					t.Fatalf("ACCESS: %v %#x, want %#x", st, got, tc.want)
				}
				if st, got := tc.c.access(tc.fh, access3Read); st != StatusOK || got != tc.want&access3Read {
					t.Fatalf("ACCESS READ only: %#x", got)
				}
			})
		}
	})

	t.Run("owner override", func(t *testing.T) {
		// A file its owner made read-only while writing it (git objects,
		// cp -p, tar): the owner's WRITE and truncate still work, others'
		// do not, and ACCESS tells the truth.
		st, res := alice.create(shared, "ro", createGuarded, sattrIn{mode: u32(0o444)}, 0)
		if st != StatusOK {
			t.Fatal(st)
		}
		if st, _ := alice.write(res.fh, 0, []byte("still writing"), unstable); st != StatusOK {
			t.Fatalf("owner WRITE to its 0444 file: %v", st)
		}
		if st, _ := alice.setattr(res.fh, sattrIn{size: u64(5)}, nil); st != StatusOK {
			t.Fatalf("owner truncate of its 0444 file: %v", st)
		}
		if st, _ := bob.write(res.fh, 0, []byte("x"), unstable); st != StatusAccess {
			t.Fatalf("WRITE by another to a 0444 file: %v, want ACCES", st)
		}
		if _, got := alice.access(res.fh, access3Modify); got != 0 {
			t.Fatalf("ACCESS MODIFY for the owner of a 0444 file: %#x", got)
		}
		if st, _ := alice.setattr(res.fh, sattrIn{size: u64(0), uid: u32(1001)}, nil); st != StatusPerm {
			t.Fatalf("owner override must not extend to chown: %v", st)
		}
	})

	t.Run("auth none", func(t *testing.T) {
		anon := f.client(0, 0)
		anon.cred = opaqueAuth{flavor: authNone}
		st, res := anon.create(shared, "anon", createGuarded, sattrIn{}, 0)
		if st != StatusOK || res.attr.uid != nobody || res.attr.gid != nobody {
			t.Fatalf("CREATE with AUTH_NONE: %v %+v", st, res.attr)
		}
	})
}

func TestRootSquash(t *testing.T) {
	f := newFixture(t, Options{RootSquash: true})
	c := f.client(0, 0)
	if st, _ := c.create(c.root, "x", createGuarded, sattrIn{}, 0); st != StatusAccess {
		t.Fatalf("squashed root CREATE in root's 0755 directory: %v, want ACCES", st)
	}
	if st, _ := c.access(c.root, access3Modify); st != StatusOK {
		t.Fatal(st)
	}
	if st, got := c.access(c.root, access3Modify|access3Read); st != StatusOK || got != access3Read {
		t.Fatalf("ACCESS for squashed root: %#x", got)
	}
}

// TestSetattrOwnership runs pjdfstest chown/07's cases over NFS, with and
// without root_squash: a chown naming the file's current owner and group is
// still a chown, which only root may do (EPERM for anyone else, not a
// silent no-op), and the permission errors keep their NFS codes (EPERM is
// NFS3ERR_PERM, EACCES NFS3ERR_ACCES).
func TestSetattrOwnership(t *testing.T) {
	for _, squash := range []bool{false, true} {
		t.Run(fmt.Sprintf("root_squash=%v", squash), func(t *testing.T) {
			testSetattrOwnership(t, squash)
		})
	}
}

func testSetattrOwnership(t *testing.T, squash bool) {
	ctx := context.Background()
	f := newFixture(t, Options{RootSquash: squash})
	const nb, other = 65534, 65533 // pjdfstest's users, nobody among them
	// The tree, made as root through fs (a squashed client could not):
	// /d owned by nobody, and in it one node of each type owned by nobody.
	mk := func(dir uint64, name string, nn fs.NewNode) uint64 {
		t.Helper()
		n, _, err := f.fs.Create(ctx, fs.Root, dir, name, nn)
		if err != nil {
			t.Fatal(err)
		}
		uid, gid := uint32(nb), uint32(nb)
		if _, _, err := f.fs.SetAttr(ctx, fs.Root, n.Ino, fs.SetAttrs{Uid: &uid, Gid: &gid}); err != nil {
			t.Fatal(err)
		}
		return n.Ino
	}
	d := mk(fs.RootIno, "d", fs.NewNode{Mode: fs.TypeDir | 0o755})
	types := []struct {
		name string
		node fs.NewNode
	}{
		{"regular", fs.NewNode{Mode: fs.TypeRegular | 0o644}},
		{"dir", fs.NewNode{Mode: fs.TypeDir | 0o755}},
		{"fifo", fs.NewNode{Mode: fs.TypeFIFO | 0o644}},
		{"socket", fs.NewNode{Mode: fs.TypeSocket | 0o644}},
		{"symlink", fs.NewNode{Mode: fs.TypeSymlink | 0o777, Target: "regular"}},
	}
	for _, ty := range types {
		mk(d, ty.name, ty.node)
	}

	nobodyC := f.client(nb, nb)
	otherC := f.client(other, other)
	rootC := f.client(0, 0)
	_, dfh, _ := rootC.lookup(rootC.root, "d")
	// Root is nobody under root_squash: the owner, so allowed what the
	// owner is, and refused what root alone may do.
	rootChown := StatusOK
	if squash {
		rootChown = StatusPerm
	}
	for _, ty := range types {
		t.Run(ty.name, func(t *testing.T) {
			st, fh, _ := nobodyC.lookup(dfh, ty.name)
			if st != StatusOK {
				t.Fatalf("LOOKUP: %v", st)
			}
			for _, tc := range []struct {
				name string
				c    *nfsClient
				set  sattrIn
				want Status
			}{
				{"owner chown to another user", nobodyC, sattrIn{uid: u32(other), gid: u32(other)}, StatusPerm},
				{"other chown to the current owner and group", otherC, sattrIn{uid: u32(nb), gid: u32(nb)}, StatusPerm},
				{"other chown to the current owner", otherC, sattrIn{uid: u32(nb)}, StatusPerm},
				{"other chgrp to the current group", otherC, sattrIn{gid: u32(nb)}, StatusPerm},
				{"other chown to itself", otherC, sattrIn{uid: u32(other), gid: u32(other)}, StatusPerm},
				{"owner chgrp to a group it is not in", nobodyC, sattrIn{gid: u32(other)}, StatusPerm},
				{"owner chown to itself", nobodyC, sattrIn{uid: u32(nb), gid: u32(nb)}, StatusOK},
				{"root chown to the current owner", rootC, sattrIn{uid: u32(nb), gid: u32(nb)}, StatusOK},
				{"root chown to another user", rootC, sattrIn{uid: u32(other), gid: u32(other)}, rootChown},
				{"other chmod", otherC, sattrIn{mode: u32(0o600)}, StatusPerm},
				{"other sets an explicit mtime", otherC, sattrIn{mtime: &nfstime{sec: 1}}, StatusPerm},
			} {
				_, before := tc.c.getattr(fh)
				st, _ := tc.c.setattr(fh, tc.set, nil)
				if st != tc.want {
					t.Errorf("%s: %v, want %v", tc.name, st, tc.want)
				}
				_, after := tc.c.getattr(fh)
				if st != StatusOK && (after.uid != before.uid || after.gid != before.gid || after.mode != before.mode) {
					t.Errorf("%s: refused, yet %d:%d %o became %d:%d %o", tc.name, before.uid, before.gid, before.mode, after.uid, after.gid, after.mode)
				}
				if st == StatusOK && (tc.set.uid != nil && after.uid != *tc.set.uid || tc.set.gid != nil && after.gid != *tc.set.gid) {
					t.Errorf("%s: owner %d:%d after", tc.name, after.uid, after.gid)
				}
				// Back to nobody's for the next case.
				uid, gid := uint32(nb), uint32(nb)
				n, _ := f.fs.Lookup(ctx, fs.Root, d, ty.name)
				if _, _, err := f.fs.SetAttr(ctx, fs.Root, n.Ino, fs.SetAttrs{Uid: &uid, Gid: &gid}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	// EACCES stays NFS3ERR_ACCES: a truncation or a touch needs write
	// permission, which nobody's 0644 file denies others.
	_, fh, _ := otherC.lookup(dfh, "regular")
	if st, _ := otherC.setattr(fh, sattrIn{size: u64(0)}, nil); st != StatusAccess {
		t.Errorf("other truncate of a 0644 file: %v, want ACCES", st)
	}
	if st, _ := otherC.setattr(fh, sattrIn{atimeNow: true, mtimeNow: true}, nil); st != StatusAccess {
		t.Errorf("other touch of a 0644 file: %v, want ACCES", st)
	}
	if st, _ := nobodyC.setattr(fh, sattrIn{atimeNow: true, mtimeNow: true}, nil); st != StatusOK {
		t.Errorf("owner touch: %v", st)
	}
}

// TestUsedSparse: fattr3 used is the data a file holds, not its size: a
// 2 TiB file with 1 MiB written uses 1 MiB, also after a restart.
func TestUsedSparse(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	fh := c.mustCreate(c.root, "dev")
	const size, mib = 2 << 40, 1 << 20
	if st, _ := c.setattr(fh, sattrIn{size: u64(size)}, nil); st != StatusOK {
		t.Fatal(st)
	}
	if _, a := c.getattr(fh); a.size != size || a.used != 0 {
		t.Fatalf("untouched: size %d used %d", a.size, a.used)
	}
	data := bytes.Repeat([]byte{7}, mib)
	if st, _ := c.write(fh, 1<<40, data, fileSync); st != StatusOK {
		t.Fatal(st)
	}
	// used counts applied data, which follows the durable write shortly.
	var a fattr
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, a = c.getattr(fh); a.used == mib {
			break
		}
	}
	if a.size != size || a.used != mib {
		t.Fatalf("1 MiB written: size %d used %d", a.size, a.used)
	}
	f.restart()
	c = f.client(0, 0)
	if _, a := c.getattr(fh); a.size != size || a.used != mib {
		t.Fatalf("after restart: size %d used %d", a.size, a.used)
	}
}

func TestFSInfoFSStatPathconf(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)

	st, r := c.fhProc(19, c.root) // FSINFO
	if st != StatusOK {
		t.Fatal(st)
	}
	rtmax, rtpref, rtmult := r.uint32(), r.uint32(), r.uint32()
	wtmax, wtpref, wtmult := r.uint32(), r.uint32(), r.uint32()
	dt := r.uint32()
	maxfile := r.uint64()
	delta := r.nfstime()
	props := r.uint32()
	if r.err != nil || rtmax != 1<<20 || rtpref != 1<<20 || rtmult != 4096 || wtmax != 1<<20 || wtpref != 1<<20 ||
		wtmult != 64<<10 || dt != dtpref || maxfile != 1<<50 || delta != (nfstime{0, 1}) ||
		props != fsfLink|fsfSymlink|fsfHomogeneous|fsfCanSetTime {
		t.Fatalf("FSINFO: rt %d/%d/%d wt %d/%d/%d dt %d max %d delta %v props %#x",
			rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dt, maxfile, delta, props)
	}

	st, r = c.fhProc(18, c.root) // FSSTAT
	if st != StatusOK {
		t.Fatal(st)
	}
	tb, fb, ab, tf, ff, af := r.uint64(), r.uint64(), r.uint64(), r.uint64(), r.uint64(), r.uint64()
	r.uint32()
	if r.err != nil || tb == 0 || fb > tb || ab != fb || tf == 0 || ff > tf || af != ff {
		t.Fatalf("FSSTAT: bytes %d/%d/%d files %d/%d/%d", tb, fb, ab, tf, ff, af)
	}

	st, r = c.fhProc(20, c.root) // PATHCONF
	if st != StatusOK {
		t.Fatal(st)
	}
	linkmax, namemax := r.uint32(), r.uint32()
	noTrunc, chownRestricted, caseInsensitive, casePreserving := r.bool(), r.bool(), r.bool(), r.bool()
	if r.err != nil || linkmax == 0 || namemax != 255 || !noTrunc || !chownRestricted || caseInsensitive || !casePreserving {
		t.Fatalf("PATHCONF: %d %d %v %v %v %v", linkmax, namemax, noTrunc, chownRestricted, caseInsensitive, casePreserving)
	}
}

// TestObserve: the metrics hook sees every request with its outcome.
func TestObserve(t *testing.T) {
	type obs struct {
		proc string
		err  error
	}
	ch := make(chan obs, 100)
	f := newFixture(t, Options{Observe: func(proc string, d time.Duration, err error) {
		ch <- obs{proc, err}
	}})
	c := f.client(0, 0)
	<-ch // MNT
	c.getattr(c.root)
	if o := <-ch; o.proc != "nfs3.GETATTR" || o.err != nil {
		t.Fatalf("observed %+v", o)
	}
	c.lookup(c.root, "missing")
	if o := <-ch; o.proc != "nfs3.LOOKUP" || o.err != StatusNoEnt {
		t.Fatalf("observed %+v", o)
	}
	c.callCred(progNFS, 3, 99, c.cred, nil)
	if o := <-ch; o.proc != "nfs3.proc99" || o.err != errProcUnavail {
		t.Fatalf("observed %+v", o)
	}
}
