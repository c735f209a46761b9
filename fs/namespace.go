package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Namespace changes (create, link, unlink, rename...) take nsMu, then viewMu
// shared: they are short, touch a few keys, and one lock makes rename's
// multi-directory checks simple and obviously right. The data path never
// takes nsMu.

// MaxNameLen bounds one path component.
const MaxNameLen = 255

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name   string
	Ino    uint64
	Type   uint32 // TypeMask bits
	Cookie uint64 // resume a listing after this entry with this cookie
}

// dirent value: inode (8 bytes) | cookie (8) | type (4).
func encodeDirent(ino, cookie uint64, typ uint32) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint64(b, ino)
	binary.BigEndian.PutUint64(b[8:], cookie)
	binary.BigEndian.PutUint32(b[16:], typ)
	return b
}

func decodeDirent(b []byte) (ino, cookie uint64, typ uint32, err error) {
	if len(b) != 20 {
		return 0, 0, 0, fmt.Errorf("corrupt directory entry: %w", ErrIO)
	}
	return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint32(b[16:]), nil
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q: %w", name, ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes: %w", len(name), ErrNameTooLong)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL: %w", name, ErrInvalid)
	}
	return nil
}

// lookupEntry finds name in dir: its inode, cookie and type; ok false if absent.
func (f *FS) lookupEntry(chain []*batch, dir uint64, name string) (ino, cookie uint64, typ uint32, ok bool, err error) {
	v, ok, err := f.getKV(chain, direntKey(dir, name))
	if err != nil || !ok {
		return 0, 0, 0, false, err
	}
	ino, cookie, typ, err = decodeDirent(v)
	return ino, cookie, typ, err == nil, err
}

// getDir reads ino and checks it is a directory the caller may search
// (and, with write, modify).
func (f *FS) getDir(chain []*batch, c *Cred, ino uint64, write bool) (Inode, error) {
	d, err := f.getInode(chain, ino)
	if err != nil {
		return d, err
	}
	if !d.IsDir() {
		return d, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	want := uint32(accessExec)
	if write {
		want |= accessWrite
	}
	return d, c.access(&d, want)
}

// Lookup finds name in directory dir ("." and ".." included).
func (f *FS) Lookup(ctx context.Context, c *Cred, dir uint64, name string) (Inode, error) {
	if IsSnapshotIno(dir) {
		return f.lookupInSnapshot(ctx, c, dir, name)
	}
	chain := f.chain()
	d, err := f.getDir(chain, c, dir, false)
	if err != nil {
		return Inode{}, err
	}
	switch name {
	case ".":
		return d, nil
	case "..":
		return f.getInode(chain, d.Parent)
	}
	if len(name) > MaxNameLen {
		return Inode{}, fmt.Errorf("lookup: %w", ErrNameTooLong)
	}
	ino, _, _, ok, err := f.lookupEntry(chain, dir, name)
	if err != nil {
		return Inode{}, err
	}
	if !ok {
		if dir == RootIno && name == SnapshotDirName && !f.isView {
			return f.snapDirAttr(ctx)
		}
		return Inode{}, fmt.Errorf("lookup %q in %d: %w", name, dir, ErrNotExist)
	}
	return f.getInode(chain, ino)
}

// Readlink returns a symbolic link's target.
func (f *FS) Readlink(ctx context.Context, ino uint64) (string, error) {
	n, err := f.GetAttr(ctx, ino)
	if err != nil {
		return "", err
	}
	if !n.IsLink() {
		return "", fmt.Errorf("readlink inode %d: %w", ino, ErrInvalid)
	}
	return n.Target, nil
}

// NewNode describes a node to create.
type NewNode struct {
	Mode   uint32 // type and permission bits; type defaults to regular file
	Rdev   uint64 // character and block devices
	Target string // symbolic links
	// Exclusive fails with ErrExist if name exists, unless Verf is non-zero
	// and equals the existing file's (a retransmitted exclusive create).
	// Without Exclusive, an existing regular file is returned as is.
	Exclusive bool
	Verf      uint64
}

// Create makes a new node in dir (file, directory, symlink, device, FIFO or
// socket, by n.Mode's type bits) and returns it and the directory after.
func (f *FS) Create(ctx context.Context, c *Cred, dir uint64, name string, nn NewNode) (Inode, Inode, error) {
	if err := f.refuseSnapshotName(dir, name, "create"); err != nil {
		return Inode{}, Inode{}, err
	}
	if err := checkName(name); err != nil {
		return Inode{}, Inode{}, err
	}
	typ := nn.Mode & TypeMask
	if typ == 0 {
		typ = TypeRegular
	}
	switch typ {
	case TypeRegular, TypeDir, TypeSymlink, TypeChar, TypeBlock, TypeFIFO, TypeSocket:
	default:
		return Inode{}, Inode{}, fmt.Errorf("create %q: file type %o: %w", name, typ, ErrInvalid)
	}
	if typ == TypeSymlink && (nn.Target == "" || len(nn.Target) > maxTarget) {
		return Inode{}, Inode{}, fmt.Errorf("symlink %q: target of %d bytes: %w", name, len(nn.Target), ErrInvalid)
	}
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	if err := f.Err(); err != nil {
		return Inode{}, Inode{}, f.writeErr(err)
	}
	chain := f.chainLocked()
	d, err := f.getDir(chain, c, dir, true)
	if err != nil {
		return Inode{}, Inode{}, err
	}
	if ino, _, _, ok, err := f.lookupEntry(chain, dir, name); err != nil {
		return Inode{}, Inode{}, err
	} else if ok {
		n, err := f.getInode(chain, ino)
		if err != nil {
			return Inode{}, Inode{}, err
		}
		if nn.Exclusive {
			if nn.Verf != 0 && n.Verf == nn.Verf {
				return n, d, nil
			}
			return n, d, fmt.Errorf("create %q: %w", name, ErrExist)
		}
		if typ != TypeRegular || !n.IsReg() {
			return n, d, fmt.Errorf("create %q: %w", name, ErrExist)
		}
		return n, d, nil
	}
	if typ == TypeDir && d.Nlink >= math.MaxUint32-1 {
		return Inode{}, d, ErrTooManyLink
	}
	ino, err := f.allocIno(chain)
	if err != nil {
		return Inode{}, d, err
	}
	now := time.Now().UnixNano()
	n := Inode{
		Ino: ino, Mode: typ | nn.Mode&0o7777, Uid: c.uid(), Gid: c.gid(), Nlink: 1,
		Atime: now, Mtime: now, Ctime: now, Target: nn.Target, Gen: f.epoch,
	}
	if nn.Exclusive {
		n.Verf = nn.Verf
	}
	if d.Mode&modeSetgid != 0 {
		// BSD group semantics in setgid directories, as Linux.
		n.Gid = d.Gid
		if typ == TypeDir {
			n.Mode |= modeSetgid
		}
	}
	switch typ {
	case TypeSymlink:
		n.Mode = TypeSymlink | 0o777
		n.Size = uint64(len(nn.Target))
	case TypeDir:
		n.Nlink, n.Parent, n.NextCookie = 2, dir, 1
		d.Nlink++
	case TypeChar, TypeBlock:
		n.Rdev = nn.Rdev
	}
	b := f.open
	b.setKV(inodeKey(ino), n.encode())
	f.linkEntry(b, &d, name, ino, typ)
	d.Mtime, d.Ctime = now, now
	b.setKV(inodeKey(dir), d.encode())
	return n, d, nil
}

func (c *Cred) uid() uint32 {
	if c == nil {
		return 0
	}
	return c.Uid
}

func (c *Cred) gid() uint32 {
	if c == nil {
		return 0
	}
	return c.Gid
}

// allocIno takes the next inode number. Inode numbers are never reused.
func (f *FS) allocIno(chain []*batch) (uint64, error) {
	next, err := f.counter(chain, "next_ino", RootIno+1)
	if err != nil {
		return 0, err
	}
	if next > viewInoMask {
		// Numbers above are snapshots' (view.go).
		return 0, fmt.Errorf("all %d inode numbers are used: %w", viewInoMask, ErrNoSpace)
	}
	f.open.setKV(metaKey("next_ino"), binary.BigEndian.AppendUint64(nil, next+1))
	return next, nil
}

// counter reads the counter kept under metaKey(name), first if it was
// never set.
func (f *FS) counter(chain []*batch, name string, first uint64) (uint64, error) {
	v, ok, err := f.getKV(chain, metaKey(name))
	if err != nil || !ok {
		return first, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt counter %s: %w", name, ErrIO)
	}
	return binary.BigEndian.Uint64(v), nil
}

// linkEntry adds name → ino to directory d (updating d.NextCookie; the
// caller writes d).
func (f *FS) linkEntry(b *batch, d *Inode, name string, ino uint64, typ uint32) {
	cookie := d.NextCookie
	if cookie == 0 {
		cookie = 1
	}
	d.NextCookie = cookie + 1
	b.setKV(direntKey(d.Ino, name), encodeDirent(ino, cookie, typ))
	b.setKV(cookieKey(d.Ino, cookie), append(binary.BigEndian.AppendUint64(nil, ino), name...))
}

// unlinkEntry removes name (with its cookie) from directory dir.
func (f *FS) unlinkEntry(b *batch, dir uint64, name string, cookie uint64) {
	b.deleteKV(direntKey(dir, name))
	b.deleteKV(cookieKey(dir, cookie))
}

// Link adds a hard link to ino as dir/name.
func (f *FS) Link(ctx context.Context, c *Cred, ino, dir uint64, name string) (Inode, Inode, error) {
	if IsSnapshotIno(ino) {
		return Inode{}, Inode{}, fmt.Errorf("link inode %#x: it is in a snapshot: %w", ino, ErrXDev)
	}
	if err := f.refuseSnapshotName(dir, name, "link"); err != nil {
		return Inode{}, Inode{}, err
	}
	if err := checkName(name); err != nil {
		return Inode{}, Inode{}, err
	}
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	if err := f.Err(); err != nil {
		return Inode{}, Inode{}, f.writeErr(err)
	}
	chain := f.chainLocked()
	d, err := f.getDir(chain, c, dir, true)
	if err != nil {
		return Inode{}, Inode{}, err
	}
	n, err := f.getInode(chain, ino)
	if err != nil {
		return Inode{}, d, err
	}
	if n.IsDir() {
		return n, d, fmt.Errorf("link to directory %d: %w", ino, ErrPerm)
	}
	if n.Nlink >= math.MaxUint32 {
		return n, d, ErrTooManyLink
	}
	if _, _, _, ok, err := f.lookupEntry(chain, dir, name); err != nil {
		return n, d, err
	} else if ok {
		return n, d, fmt.Errorf("link %q: %w", name, ErrExist)
	}
	now := time.Now().UnixNano()
	b := f.open
	n.Nlink++
	n.Ctime = now
	f.linkEntry(b, &d, name, ino, n.Type())
	d.Mtime, d.Ctime = now, now
	f.putInode(b, &n)
	b.setKV(inodeKey(dir), d.encode())
	return n, d, nil
}

// putInode writes n into b under its attribute lock (so that it does not
// race a concurrent write's size and mtime update).
func (f *FS) putInode(b *batch, n *Inode) {
	mu := f.attrMu(n.Ino)
	mu.Lock()
	b.setKV(inodeKey(n.Ino), n.encode())
	mu.Unlock()
}

// Remove unlinks a non-directory name from dir and returns dir after.
func (f *FS) Remove(ctx context.Context, c *Cred, dir uint64, name string) (Inode, error) {
	return f.remove(c, dir, name, false)
}

// Rmdir removes an empty directory name from dir and returns dir after.
func (f *FS) Rmdir(ctx context.Context, c *Cred, dir uint64, name string) (Inode, error) {
	return f.remove(c, dir, name, true)
}

func (f *FS) remove(c *Cred, dir uint64, name string, wantDir bool) (Inode, error) {
	if IsSnapshotIno(dir) {
		return Inode{}, refuseView("remove from", dir)
	}
	if name == "." || name == ".." {
		return Inode{}, fmt.Errorf("remove %q: %w", name, ErrInvalid)
	}
	if err := checkName(name); err != nil {
		return Inode{}, err
	}
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	if err := f.Err(); err != nil {
		return Inode{}, f.writeErr(err)
	}
	chain := f.chainLocked()
	d, err := f.getDir(chain, c, dir, true)
	if err != nil {
		return Inode{}, err
	}
	ino, cookie, _, ok, err := f.lookupEntry(chain, dir, name)
	if err != nil {
		return d, err
	}
	if !ok {
		return d, fmt.Errorf("remove %q from %d: %w", name, dir, ErrNotExist)
	}
	n, err := f.getInode(chain, ino)
	if err != nil {
		return d, err
	}
	if err := stickyCheck(c, &d, &n); err != nil {
		return d, err
	}
	switch {
	case wantDir && !n.IsDir():
		return d, fmt.Errorf("rmdir %q: %w", name, ErrNotDir)
	case !wantDir && n.IsDir():
		return d, fmt.Errorf("remove %q: %w", name, ErrIsDir)
	}
	if n.IsDir() {
		empty, err := f.dirEmpty(chain, ino)
		if err != nil {
			return d, err
		}
		if !empty {
			return d, fmt.Errorf("rmdir %q: %w", name, ErrNotEmpty)
		}
	}
	now := time.Now().UnixNano()
	b := f.open
	f.unlinkEntry(b, dir, name, cookie)
	f.dropLink(b, chain, &n, now)
	if n.IsDir() {
		d.Nlink--
	}
	d.Mtime, d.Ctime = now, now
	b.setKV(inodeKey(dir), d.encode())
	return d, nil
}

// dropLink decrements n's link count after one of its names went away,
// deleting the inode and all its data when none is left. Deleting a file's
// data is one range deletion however large the file (see applyPunch).
func (f *FS) dropLink(b *batch, chain []*batch, n *Inode, now int64) {
	if n.IsDir() || n.Nlink <= 1 {
		rw := f.inodeRW(n.Ino)
		rw.Lock() // no write to the file may be under way or follow
		b.deleteKV(inodeKey(n.Ino))
		if n.IsReg() {
			b.punch(n.Ino, 0, math.MaxUint64)
		}
		rw.Unlock()
		return
	}
	n.Nlink--
	n.Ctime = now
	f.putInode(b, n)
}

// stickyCheck: in a sticky directory only the owner of the entry, the owner
// of the directory, or root may remove or rename it.
func stickyCheck(c *Cred, d, n *Inode) error {
	if d.Mode&modeSticky == 0 || c.root() || c.Uid == d.Uid || c.Uid == n.Uid {
		return nil
	}
	return fmt.Errorf("sticky directory %d: %w", d.Ino, ErrPerm)
}

func (f *FS) dirEmpty(chain []*batch, dir uint64) (bool, error) {
	empty := true
	err := f.scan(chain, cookiePrefix(dir), prefixEnd(cookiePrefix(dir)), func(k, v []byte) bool {
		empty = false
		return false
	})
	return empty, err
}

// Rename moves srcDir/srcName to dstDir/dstName with POSIX semantics:
// an existing destination is replaced atomically (a file by a file, an empty
// directory by a directory); renaming a name onto another name of the same
// inode does nothing; a directory cannot move into its own subtree.
func (f *FS) Rename(ctx context.Context, c *Cred, srcDir uint64, srcName string, dstDir uint64, dstName string) error {
	if IsSnapshotIno(srcDir) {
		return refuseView("rename from", srcDir)
	}
	if err := f.refuseSnapshotName(dstDir, dstName, "rename to"); err != nil {
		return err
	}
	if err := checkName(srcName); err != nil {
		return err
	}
	if err := checkName(dstName); err != nil {
		return err
	}
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	if err := f.Err(); err != nil {
		return f.writeErr(err)
	}
	chain := f.chainLocked()
	sdv, err := f.getDir(chain, c, srcDir, true)
	if err != nil {
		return err
	}
	// sd and dd alias one value when the directories are the same, so every
	// change to "the destination's parent" is also one to the source's.
	sd, dd := &sdv, &sdv
	if dstDir != srcDir {
		ddv, err := f.getDir(chain, c, dstDir, true)
		if err != nil {
			return err
		}
		dd = &ddv
	}
	ino, cookie, typ, ok, err := f.lookupEntry(chain, srcDir, srcName)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("rename %q: %w", srcName, ErrNotExist)
	}
	n, err := f.getInode(chain, ino)
	if err != nil {
		return err
	}
	if err := stickyCheck(c, sd, &n); err != nil {
		return err
	}
	if srcDir == dstDir && srcName == dstName {
		return nil
	}
	if n.IsDir() && dstDir != srcDir {
		// The destination must not be the directory itself or inside it.
		for p := dstDir; ; {
			if p == ino {
				return fmt.Errorf("rename directory %d into its own subtree: %w", ino, ErrInvalid)
			}
			if p == RootIno {
				break
			}
			pi, err := f.getInode(chain, p)
			if err != nil {
				return err
			}
			p = pi.Parent
		}
		if !c.root() {
			// Moving a directory rewrites its "..": needs write on it.
			if err := c.access(&n, accessWrite); err != nil {
				return err
			}
		}
	}
	now := time.Now().UnixNano()
	b := f.open
	dino, dcookie, _, dexists, err := f.lookupEntry(chain, dstDir, dstName)
	if err != nil {
		return err
	}
	if dexists {
		if dino == ino {
			return nil // two names of one inode: POSIX says do nothing
		}
		dn, err := f.getInode(chain, dino)
		if err != nil {
			return err
		}
		if err := stickyCheck(c, dd, &dn); err != nil {
			return err
		}
		switch {
		case n.IsDir() && !dn.IsDir():
			return fmt.Errorf("rename directory over %q: %w", dstName, ErrNotDir)
		case !n.IsDir() && dn.IsDir():
			return fmt.Errorf("rename over directory %q: %w", dstName, ErrIsDir)
		case dn.IsDir():
			empty, err := f.dirEmpty(chain, dino)
			if err != nil {
				return err
			}
			if !empty {
				return fmt.Errorf("rename over %q: %w", dstName, ErrNotEmpty)
			}
			dd.Nlink--
		}
		f.unlinkEntry(b, dstDir, dstName, dcookie)
		f.dropLink(b, chain, &dn, now)
	}
	f.unlinkEntry(b, srcDir, srcName, cookie)
	f.linkEntry(b, dd, dstName, ino, typ)
	if n.IsDir() && dstDir != srcDir {
		sd.Nlink--
		dd.Nlink++
		n.Parent = dstDir
	}
	sd.Mtime, sd.Ctime = now, now
	dd.Mtime, dd.Ctime = now, now
	b.setKV(inodeKey(srcDir), sd.encode())
	if dstDir != srcDir {
		b.setKV(inodeKey(dstDir), dd.encode())
	}
	n.Ctime = now
	f.putInode(b, &n)
	return nil
}

// ReadDir lists directory dir after cookie (0: from the start), at most max
// entries. "." and ".." are not included; adapters add them. eof reports
// that the listing is complete.
func (f *FS) ReadDir(ctx context.Context, c *Cred, dir uint64, cookie uint64, max int) ([]DirEntry, bool, error) {
	if IsSnapshotIno(dir) {
		return f.readDirInSnapshot(ctx, c, dir, cookie, max)
	}
	chain := f.chain()
	d, err := f.getInode(chain, dir)
	if err != nil {
		return nil, false, err
	}
	if !d.IsDir() {
		return nil, false, fmt.Errorf("readdir inode %d: %w", dir, ErrNotDir)
	}
	if err := c.access(&d, accessRead); err != nil {
		return nil, false, err
	}
	var out []DirEntry
	eof := true
	var scanErr error
	start := cookieKey(dir, cookie+1)
	if cookie == math.MaxUint64 {
		return nil, true, nil
	}
	err = f.scan(chain, start, prefixEnd(cookiePrefix(dir)), func(k, v []byte) bool {
		if len(out) >= max {
			eof = false
			return false
		}
		if len(v) < 8 || len(k) != 17 {
			scanErr = fmt.Errorf("corrupt directory cookie entry: %w", ErrIO)
			return false
		}
		e := DirEntry{Ino: binary.BigEndian.Uint64(v), Name: string(v[8:]), Cookie: binary.BigEndian.Uint64(k[9:])}
		out = append(out, e)
		return true
	})
	if err == nil {
		err = scanErr
	}
	if err != nil {
		return nil, false, err
	}
	// Types come from the name entries (kept with them so listing needs no
	// inode reads).
	for i := range out {
		if _, _, typ, ok, err := f.lookupEntry(chain, dir, out[i].Name); err == nil && ok {
			out[i].Type = typ
		}
	}
	return out, eof, nil
}

// scan calls fn for every metadata key in [start, end) in order, merging the
// batch chain over pebble (newest value wins, deletions hide).
//
// It works in rounds so that a caller wanting a page of a huge directory
// pays for a page, not for the directory: each round takes at most
// scanWindow items from each batch and merges only up to the point where
// every batch's view is complete (the lowest key a truncated batch reached).
func (f *FS) scan(chain []*batch, start, end []byte, fn func(k, v []byte) bool) error {
	cur := start
	for {
		over := make(map[string]kvItem)
		bound := string(end)      // keys below bound are fully known this round
		for _, b := range chain { // oldest first: newer batches overwrite
			n := 0
			b.scanKV(cur, end, func(it kvItem) bool {
				if n == scanWindow {
					if bound > it.key {
						bound = it.key // everything of this batch below it is in over
					}
					return false
				}
				over[it.key] = it
				n++
				return true
			})
		}
		keys := make([]string, 0, len(over))
		for k := range over {
			if k < bound {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		more, err := f.mergeScan(over, keys, cur, []byte(bound), fn)
		if err != nil || !more || bound == string(end) {
			return err
		}
		cur = []byte(bound)
	}
}

const scanWindow = 256

// mergeScan merges the sorted overlay keys with pebble's keys in [lo, hi)
// and calls fn; it reports whether fn wants more.
func (f *FS) mergeScan(over map[string]kvItem, keys []string, lo, hi []byte, fn func(k, v []byte) bool) (bool, error) {
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, fmt.Errorf("metadata scan: %w: %w", ErrIO, err)
	}
	defer it.Close()
	ok := it.First()
	i := 0
	for ok || i < len(keys) {
		if i < len(keys) && (!ok || bytes.Compare([]byte(keys[i]), it.Key()) <= 0) {
			item := over[keys[i]]
			if ok && keys[i] == string(it.Key()) {
				ok = it.Next() // the batch's value shadows pebble's
			}
			i++
			if !item.del && !fn([]byte(item.key), item.val) {
				return false, nil
			}
			continue
		}
		// pebble's Key and Value are valid only until the iterator moves.
		if !fn(it.Key(), it.Value()) {
			return false, nil
		}
		ok = it.Next()
	}
	return true, it.Error()
}
