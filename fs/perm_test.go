package fs

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"zerofs/store"
)

// TestSetAttrPermissions is the SETATTR rule table of perm.go, case by case:
// who (owner, group member, other, root, squashed root) × what (uid, gid,
// mode, size, times) × the errno Linux gives, and the attributes after.
func TestSetAttrPermissions(t *testing.T) {
	ctx := context.Background()
	f := mustOpen(t, testOptions(t, store.NewMem(), t.TempDir()))
	defer f.Close()

	const nobody = 65534
	var (
		owner  = &Cred{Uid: 1000, Gid: 1000, Groups: []uint32{2000}}
		member = &Cred{Uid: 1001, Gid: 1001, Groups: []uint32{1000}} // in the file's group
		other  = &Cred{Uid: 1002, Gid: 1002}
		root   = &Cred{}
		// What nfs makes of uid 0 under root_squash.
		squashed = &Cred{Uid: nobody, Gid: nobody}
	)
	u32 := func(v uint32) *uint32 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	now := &TimeSet{Now: true}
	at := func(ns int64) *TimeSet { return &TimeSet{Time: ns} }

	type file struct {
		typ      uint32
		mode     uint32 // permission bits
		uid, gid uint32
	}
	type want struct {
		errno    syscall.Errno
		mode     uint32 // permission bits after, if checked
		uid, gid uint32 // after, if checked
	}
	cases := []struct {
		name string
		file *file // nil: a regular 0644 file of 1000:1000
		c    *Cred
		s    SetAttrs
		want want
		// check: compare mode (and uid/gid) after a success
		check bool
	}{
		// uid: root only; the owner may name itself (a no-op).
		{name: "other chown to current owner and group (chown_07)", c: other, s: SetAttrs{Uid: u32(1000), Gid: u32(1000)}, want: want{errno: syscall.EPERM}},
		{name: "other chown uid to current owner", c: other, s: SetAttrs{Uid: u32(1000)}, want: want{errno: syscall.EPERM}},
		{name: "other chown uid to itself", c: other, s: SetAttrs{Uid: u32(1002)}, want: want{errno: syscall.EPERM}},
		{name: "other chgrp to current group", c: other, s: SetAttrs{Gid: u32(1000)}, want: want{errno: syscall.EPERM}},
		{name: "group member chgrp to current group", c: member, s: SetAttrs{Gid: u32(1000)}, want: want{errno: syscall.EPERM}},
		{name: "group member chown to current owner", c: member, s: SetAttrs{Uid: u32(1000)}, want: want{errno: syscall.EPERM}},
		{name: "owner chown to another uid", c: owner, s: SetAttrs{Uid: u32(1002)}, want: want{errno: syscall.EPERM}},
		{name: "owner chown to itself", c: owner, s: SetAttrs{Uid: u32(1000)}, check: true, want: want{mode: 0o644, uid: 1000, gid: 1000}},
		{name: "owner chown to itself and current group", c: owner, s: SetAttrs{Uid: u32(1000), Gid: u32(1000)}, check: true, want: want{mode: 0o644, uid: 1000, gid: 1000}},
		{name: "root chown", c: root, s: SetAttrs{Uid: u32(5), Gid: u32(6)}, check: true, want: want{mode: 0o644, uid: 5, gid: 6}},
		{name: "root chown of a symlink", file: &file{TypeSymlink, 0o777, 1000, 1000}, c: root, s: SetAttrs{Uid: u32(5)}, check: true, want: want{mode: 0o777, uid: 5, gid: 1000}},
		{name: "other chown of a symlink to current owner", file: &file{TypeSymlink, 0o777, 1000, 1000}, c: other, s: SetAttrs{Uid: u32(1000), Gid: u32(1000)}, want: want{errno: syscall.EPERM}},

		// gid: the owner, to the current group or one it is in.
		{name: "owner chgrp to supplementary group", c: owner, s: SetAttrs{Gid: u32(2000)}, check: true, want: want{mode: 0o644, uid: 1000, gid: 2000}},
		{name: "owner chgrp to primary group", file: &file{TypeRegular, 0o644, 1000, 3000}, c: owner, s: SetAttrs{Gid: u32(1000)}, check: true, want: want{mode: 0o644, uid: 1000, gid: 1000}},
		{name: "owner chgrp to current group it is not in", file: &file{TypeRegular, 0o644, 1000, 3000}, c: owner, s: SetAttrs{Gid: u32(3000)}, check: true, want: want{mode: 0o644, uid: 1000, gid: 3000}},
		{name: "owner chgrp to a group it is not in", c: owner, s: SetAttrs{Gid: u32(3000)}, want: want{errno: syscall.EPERM}},
		{name: "owner chown to itself, chgrp to a group it is not in", c: owner, s: SetAttrs{Uid: u32(1000), Gid: u32(3000)}, want: want{errno: syscall.EPERM}},

		// root_squash: squashed root is nobody, an ordinary user.
		{name: "squashed root chown of root's file to root", file: &file{TypeRegular, 0o644, 0, 0}, c: squashed, s: SetAttrs{Uid: u32(0), Gid: u32(0)}, want: want{errno: syscall.EPERM}},
		{name: "squashed root chown of root's file to nobody", file: &file{TypeRegular, 0o644, 0, 0}, c: squashed, s: SetAttrs{Uid: u32(nobody)}, want: want{errno: syscall.EPERM}},
		{name: "squashed root chown of nobody's file to root", file: &file{TypeRegular, 0o644, nobody, nobody}, c: squashed, s: SetAttrs{Uid: u32(0)}, want: want{errno: syscall.EPERM}},
		{name: "squashed root chown of nobody's file to nobody", file: &file{TypeRegular, 0o644, nobody, nobody}, c: squashed, s: SetAttrs{Uid: u32(nobody), Gid: u32(nobody)}, check: true, want: want{mode: 0o644, uid: nobody, gid: nobody}},
		{name: "squashed root chmod of root's file", file: &file{TypeRegular, 0o644, 0, 0}, c: squashed, s: SetAttrs{Mode: u32(0o600)}, want: want{errno: syscall.EPERM}},
		{name: "squashed root truncate of root's 0644 file", file: &file{TypeRegular, 0o644, 0, 0}, c: squashed, s: SetAttrs{Size: u64(0)}, want: want{errno: syscall.EACCES}},
		{name: "squashed root touch of root's 0644 file", file: &file{TypeRegular, 0o644, 0, 0}, c: squashed, s: SetAttrs{Mtime: now}, want: want{errno: syscall.EACCES}},

		// mode: owner or root.
		{name: "owner chmod", c: owner, s: SetAttrs{Mode: u32(0o600)}, check: true, want: want{mode: 0o600, uid: 1000, gid: 1000}},
		{name: "group member chmod", file: &file{TypeRegular, 0o664, 1000, 1000}, c: member, s: SetAttrs{Mode: u32(0o666)}, want: want{errno: syscall.EPERM}},
		{name: "other chmod of a 0666 file", file: &file{TypeRegular, 0o666, 1000, 1000}, c: other, s: SetAttrs{Mode: u32(0o666)}, want: want{errno: syscall.EPERM}},
		{name: "root chmod", file: &file{TypeRegular, 0, 1000, 1000}, c: root, s: SetAttrs{Mode: u32(0o7777)}, check: true, want: want{mode: 0o7777, uid: 1000, gid: 1000}},
		{name: "owner setgid, in the group", file: &file{TypeRegular, 0o644, 1000, 2000}, c: owner, s: SetAttrs{Mode: u32(0o2755)}, check: true, want: want{mode: 0o2755, uid: 1000, gid: 2000}},
		{name: "owner setgid, not in the group: dropped", file: &file{TypeRegular, 0o644, 1000, 3000}, c: owner, s: SetAttrs{Mode: u32(0o6755)}, check: true, want: want{mode: 0o4755, uid: 1000, gid: 3000}},
		{name: "owner setgid on a directory, not in the group: dropped", file: &file{TypeDir, 0o755, 1000, 3000}, c: owner, s: SetAttrs{Mode: u32(0o2775)}, check: true, want: want{mode: 0o775, uid: 1000, gid: 3000}},
		{name: "root setgid, not in the group: kept", file: &file{TypeRegular, 0o644, 1000, 3000}, c: root, s: SetAttrs{Mode: u32(0o2755)}, check: true, want: want{mode: 0o2755, uid: 1000, gid: 3000}},
		{name: "owner setgid with chgrp to a group it is in", file: &file{TypeRegular, 0o644, 1000, 3000}, c: owner, s: SetAttrs{Mode: u32(0o2644), Gid: u32(2000)}, check: true, want: want{mode: 0o2644, uid: 1000, gid: 2000}},
		{name: "owner sticky on a regular file", c: owner, s: SetAttrs{Mode: u32(0o1644)}, check: true, want: want{mode: 0o1644, uid: 1000, gid: 1000}},

		// setuid and setgid after chown.
		{name: "owner chgrp clears setuid, and setgid of a group-executable file", file: &file{TypeRegular, 0o6755, 1000, 1000}, c: owner, s: SetAttrs{Gid: u32(2000)}, check: true, want: want{mode: 0o755, uid: 1000, gid: 2000}},
		{name: "owner chgrp keeps setgid of a non-group-executable file in its group", file: &file{TypeRegular, 0o6745, 1000, 1000}, c: owner, s: SetAttrs{Gid: u32(2000)}, check: true, want: want{mode: 0o2745, uid: 1000, gid: 2000}},
		{name: "owner chgrp drops setgid of a file whose group it is not in", file: &file{TypeRegular, 0o2745, 1000, 3000}, c: owner, s: SetAttrs{Gid: u32(2000)}, check: true, want: want{mode: 0o745, uid: 1000, gid: 2000}},
		{name: "owner chown to itself clears setuid", file: &file{TypeRegular, 0o4755, 1000, 1000}, c: owner, s: SetAttrs{Uid: u32(1000)}, check: true, want: want{mode: 0o755, uid: 1000, gid: 1000}},
		{name: "root chown clears setuid and group-executable setgid", file: &file{TypeRegular, 0o6755, 1000, 1000}, c: root, s: SetAttrs{Uid: u32(5), Gid: u32(6)}, check: true, want: want{mode: 0o755, uid: 5, gid: 6}},
		{name: "root chown keeps non-group-executable setgid", file: &file{TypeRegular, 0o6745, 1000, 3000}, c: root, s: SetAttrs{Uid: u32(5)}, check: true, want: want{mode: 0o2745, uid: 5, gid: 3000}},
		{name: "root chown of a directory keeps setuid and setgid", file: &file{TypeDir, 0o6755, 1000, 1000}, c: root, s: SetAttrs{Uid: u32(5)}, check: true, want: want{mode: 0o6755, uid: 5, gid: 1000}},
		{name: "root chown with chmod: the new mode loses setuid and group-executable setgid", c: root, s: SetAttrs{Uid: u32(5), Mode: u32(0o6755)}, check: true, want: want{mode: 0o755, uid: 5, gid: 1000}},
		{name: "root chown with chmod: non-group-executable setgid kept", c: root, s: SetAttrs{Uid: u32(5), Mode: u32(0o6745)}, check: true, want: want{mode: 0o2745, uid: 5, gid: 1000}},

		// size: write permission (owner override for NFS), regular files.
		{name: "owner truncate", c: owner, s: SetAttrs{Size: u64(10)}, check: true, want: want{mode: 0o644, uid: 1000, gid: 1000}},
		{name: "owner truncate of its 0444 file", file: &file{TypeRegular, 0o444, 1000, 1000}, c: owner, s: SetAttrs{Size: u64(10)}, want: want{errno: syscall.EACCES}},
		{name: "owner truncate of its 0444 file with owner override", file: &file{TypeRegular, 0o444, 1000, 1000}, c: owner, s: SetAttrs{Size: u64(10), OwnerOverride: true}, check: true, want: want{mode: 0o444, uid: 1000, gid: 1000}},
		{name: "owner override grants no chown", file: &file{TypeRegular, 0o444, 1000, 1000}, c: owner, s: SetAttrs{Size: u64(0), Uid: u32(1002), OwnerOverride: true}, want: want{errno: syscall.EPERM}},
		{name: "group member truncate of a 0664 file", file: &file{TypeRegular, 0o664, 1000, 1000}, c: member, s: SetAttrs{Size: u64(10)}, check: true, want: want{mode: 0o664, uid: 1000, gid: 1000}},
		{name: "group member truncate of a 0644 file", c: member, s: SetAttrs{Size: u64(10)}, want: want{errno: syscall.EACCES}},
		{name: "other truncate of a 0666 file", file: &file{TypeRegular, 0o666, 1000, 1000}, c: other, s: SetAttrs{Size: u64(10)}, check: true, want: want{mode: 0o666, uid: 1000, gid: 1000}},
		{name: "other truncate of a 0644 file", c: other, s: SetAttrs{Size: u64(10)}, want: want{errno: syscall.EACCES}},
		{name: "other truncate with owner override", c: other, s: SetAttrs{Size: u64(10), OwnerOverride: true}, want: want{errno: syscall.EACCES}},
		{name: "other truncate and chown: EACCES first", c: other, s: SetAttrs{Size: u64(10), Uid: u32(1002)}, want: want{errno: syscall.EACCES}},
		{name: "root truncate of a 0000 file", file: &file{TypeRegular, 0, 1000, 1000}, c: root, s: SetAttrs{Size: u64(10)}, check: true, want: want{mode: 0, uid: 1000, gid: 1000}},
		{name: "truncate a directory", file: &file{TypeDir, 0o777, 1000, 1000}, c: root, s: SetAttrs{Size: u64(0)}, want: want{errno: syscall.EISDIR}},
		{name: "truncate a FIFO", file: &file{TypeFIFO, 0o666, 1000, 1000}, c: root, s: SetAttrs{Size: u64(0)}, want: want{errno: syscall.EINVAL}},
		{name: "truncate beyond the maximum size", c: owner, s: SetAttrs{Size: u64(MaxFileSize + 1)}, want: want{errno: syscall.EFBIG}},

		// times: explicit needs ownership, "now" write permission.
		{name: "owner sets explicit times", c: owner, s: SetAttrs{Atime: at(1e9), Mtime: at(2e9)}},
		{name: "owner sets times to now on its 0444 file", file: &file{TypeRegular, 0o444, 1000, 1000}, c: owner, s: SetAttrs{Atime: now, Mtime: now}},
		{name: "other with write permission sets explicit mtime", file: &file{TypeRegular, 0o666, 1000, 1000}, c: other, s: SetAttrs{Mtime: at(2e9)}, want: want{errno: syscall.EPERM}},
		{name: "other with write permission sets times to now", file: &file{TypeRegular, 0o666, 1000, 1000}, c: other, s: SetAttrs{Atime: now, Mtime: now}},
		{name: "group member with write permission sets times to now", file: &file{TypeRegular, 0o664, 1000, 1000}, c: member, s: SetAttrs{Atime: now, Mtime: now}},
		{name: "other without write permission sets times to now", c: other, s: SetAttrs{Atime: now, Mtime: now}, want: want{errno: syscall.EACCES}},
		{name: "other without write permission sets explicit times", c: other, s: SetAttrs{Atime: at(1e9)}, want: want{errno: syscall.EPERM}},
		{name: "other with write permission: atime now, explicit mtime", file: &file{TypeRegular, 0o666, 1000, 1000}, c: other, s: SetAttrs{Atime: now, Mtime: at(2e9)}, want: want{errno: syscall.EPERM}},
		{name: "root sets explicit times on a 0000 file", file: &file{TypeRegular, 0, 1000, 1000}, c: root, s: SetAttrs{Atime: at(1e9), Mtime: at(2e9)}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fl := file{TypeRegular, 0o644, 1000, 1000}
			if tc.file != nil {
				fl = *tc.file
			}
			mode, uid, gid := fl.mode, fl.uid, fl.gid
			nn := NewNode{Mode: fl.typ | 0o600}
			if fl.typ == TypeSymlink {
				nn.Target = "target"
			}
			n, _, err := f.Create(ctx, Root, RootIno, fmt.Sprintf("f%d", i), nn)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Uid: &uid, Gid: &gid}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.SetAttr(ctx, Root, n.Ino, SetAttrs{Mode: &mode}); err != nil {
				t.Fatal(err)
			}
			before, _ := f.GetAttr(ctx, n.Ino)
			_, after, err := f.SetAttr(ctx, tc.c, n.Ino, tc.s)
			if got := Errno(err); err != nil && got != tc.want.errno || err == nil && tc.want.errno != 0 {
				t.Fatalf("SetAttr: %v (errno %d), want errno %d (%v)", err, got, tc.want.errno, tc.want.errno)
			}
			stored, _ := f.GetAttr(ctx, n.Ino)
			if tc.want.errno != 0 {
				if stored != before {
					t.Fatalf("a refused SetAttr changed the file:\n%+v\n%+v", before, stored)
				}
				return
			}
			if stored != after {
				t.Fatalf("stored attributes differ from those returned:\n%+v\n%+v", stored, after)
			}
			if after.Ctime <= before.Ctime {
				t.Fatalf("ctime %d not after %d", after.Ctime, before.Ctime)
			}
			if tc.check && (after.Perm() != tc.want.mode || after.Uid != tc.want.uid || after.Gid != tc.want.gid) {
				t.Fatalf("after: mode %o uid %d gid %d, want %o %d %d", after.Perm(), after.Uid, after.Gid, tc.want.mode, tc.want.uid, tc.want.gid)
			}
			if after.Type() != before.Type() {
				t.Fatalf("type changed: %o", after.Mode)
			}
			for _, ts := range []struct {
				set *TimeSet
				got int64
			}{{tc.s.Atime, after.Atime}, {tc.s.Mtime, after.Mtime}} {
				switch {
				case ts.set == nil:
				case ts.set.Now && ts.got < after.Ctime-1e9:
					t.Fatalf("time set to now is %d, ctime %d", ts.got, after.Ctime)
				case !ts.set.Now && ts.got != ts.set.Time:
					t.Fatalf("time %d, want %d", ts.got, ts.set.Time)
				}
			}
			if tc.s.Size != nil && after.Size != *tc.s.Size {
				t.Fatalf("size %d, want %d", after.Size, *tc.s.Size)
			}
		})
	}
}
