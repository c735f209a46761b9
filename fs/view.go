package fs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"zerofs/crypt"
)

// Snapshots are served read-only through the same FS methods as the live
// filesystem, under virtual inode numbers, so that the protocol adapters need
// no snapshot logic of their own: NFS hands out handles of virtual inodes as
// of any other, and an NBD export DEVICE@SNAPSHOT is the virtual inode of
// the device's file in that snapshot.
//
//	bit 63       set: virtual
//	bits 40..62  the snapshot id (0: the /.snapshots directory itself)
//	bits 0..39   the inode number inside the snapshot
//
// Live inode numbers stay below 2^40 (allocIno refuses more), a trillion
// files. /.snapshots is looked up in the root but not listed in it (like
// ZFS's hidden .zfs): tools walking the tree do not descend into every
// snapshot. A real /.snapshots made before this existed wins over it.
//
// Each snapshot read goes to a view: a read-only FS over the snapshot's
// pebble checkpoint (opened on first use, downloaded from the bucket if this
// machine lacks it) sharing the live FS's caches, store and fetch machinery.
// Frames are immutable and their ids unique, so the caches need not know
// which view a frame was read for.

const (
	viewBit     = uint64(1) << 63
	viewShift   = 40
	viewInoMask = uint64(1)<<viewShift - 1
	maxSnapID   = uint64(1)<<23 - 1
	snapDirIno  = viewBit | RootIno
)

// SnapshotDirIno is the inode number of /.snapshots.
const SnapshotDirIno = snapDirIno

func viewIno(id, ino uint64) uint64 { return viewBit | id<<viewShift | ino }

// IsSnapshotIno reports whether ino is inside a snapshot (or is /.snapshots):
// read-only.
func IsSnapshotIno(ino uint64) bool { return ino&viewBit != 0 }

func splitViewIno(ino uint64) (id, real uint64) {
	return (ino &^ viewBit) >> viewShift, ino & viewInoMask
}

// view serves one snapshot.
type view struct {
	mu   sync.RWMutex // readers hold it shared; closing takes it
	id   uint64
	fs   *FS          // nil once closed
	used atomic.Int64 // last use, unix ns: the least recently used is closed first
}

// maxOpenViews bounds the snapshot views kept open (each holds a pebble
// database's files and block cache entries). Listing every snapshot's
// devices opens each in turn; the idle ones beyond this are closed, and
// reopened on the next use.
const maxOpenViews = 16

// viewEvictGrace: a view used more recently is not closed (a variable so
// that a test can make it zero).
var viewEvictGrace = time.Second

// viewOf returns the open view of snapshot id, opening it if needed, with
// its lock held shared: the caller must call v.mu.RUnlock.
func (f *FS) viewOf(ctx context.Context, id uint64) (*view, error) {
	for range 3 {
		f.viewsMu.Lock()
		v := f.views[id]
		f.viewsMu.Unlock()
		if v == nil {
			var err error
			if v, err = f.openView(ctx, id); err != nil {
				return nil, err
			}
		}
		v.mu.RLock()
		if v.fs != nil {
			v.used.Store(time.Now().UnixNano())
			return v, nil
		}
		v.mu.RUnlock() // closed meanwhile (deleted, or idle and evicted): look again
	}
	return nil, fmt.Errorf("snapshot %d: %w", id, ErrStale)
}

// openView opens snapshot id's metadata, fetching it from the bucket when
// the local copy is missing or belongs to another history.
func (f *FS) openView(ctx context.Context, id uint64) (*view, error) {
	f.viewOpenMu.Lock()
	defer f.viewOpenMu.Unlock()
	f.viewsMu.Lock()
	v := f.views[id]
	f.viewsMu.Unlock()
	if v != nil {
		return v, nil
	}
	recs, err := f.snapshotRecords(f.chain())
	if err != nil {
		return nil, err
	}
	var rec *snapRecord
	for _, r := range recs {
		if r.ID == id {
			rec = r
		}
	}
	if rec == nil {
		return nil, fmt.Errorf("snapshot %d: %w", id, ErrStale)
	}
	dir := f.snapshotDir(id)
	db, err := f.openSnapshotDB(dir, rec)
	if err != nil {
		f.log.Info("fetching snapshot metadata from the bucket", "snapshot", rec.Name, "reason", err)
		if err := f.fetchSnapshot(ctx, rec, dir); err != nil {
			return nil, fmt.Errorf("snapshot %q: %w", rec.Name, err)
		}
		if db, err = f.openSnapshotDB(dir, rec); err != nil {
			return nil, fmt.Errorf("snapshot %q: %w: %w", rec.Name, ErrIO, err)
		}
	}
	vf := &FS{
		opts: f.opts, log: f.log.With("snapshot", rec.Name), main: f.main, wal: f.wal, key: f.key,
		coder: f.coder, cache: f.cache, disk: f.disk, db: db, blockCache: f.blockCache,
		fsid: f.fsid, epoch: f.epoch, chunkSize: f.chunkSize, stats: f.stats,
		stop: make(chan struct{}), started: f.started, bgCtx: f.bgCtx, raCtx: f.raCtx, workCtx: f.workCtx,
		diskWriters: f.diskWriters,
	}
	vf.memCV = sync.NewCond(&vf.memMu)
	vf.ra.max, vf.ra.aheadCap = f.ra.max, f.ra.aheadCap
	vf.open = newBatch(0)
	vf.isView = true
	ro := fmt.Errorf("snapshot %q is read-only: %w", rec.Name, ErrReadOnly)
	vf.failed.Store(&ro)
	v = &view{id: id, fs: vf}
	v.used.Store(time.Now().UnixNano())
	f.viewsMu.Lock()
	f.views[id] = v
	var idle []*view
	if len(f.views) > maxOpenViews {
		for _, o := range f.views {
			if o != v {
				idle = append(idle, o)
			}
		}
	}
	f.viewsMu.Unlock()
	// Close the least recently used views that nobody is reading.
	slices.SortFunc(idle, func(a, b *view) int { return cmp.Compare(a.used.Load(), b.used.Load()) })
	recent := time.Now().Add(-viewEvictGrace).UnixNano()
	for _, o := range idle[:max(0, len(idle)+1-maxOpenViews)] {
		// One used in the last second may be about to be read by whoever
		// opened it (viewOf takes its lock after openView returns).
		if o.used.Load() < recent && o.mu.TryLock() {
			f.viewsMu.Lock()
			delete(f.views, o.id)
			f.viewsMu.Unlock()
			o.closeLocked()
			o.mu.Unlock()
		}
	}
	return v, nil
}

// openSnapshotDB opens a snapshot's local pebble checkpoint, checking it is
// the one rec names.
func (f *FS) openSnapshotDB(dir string, rec *snapRecord) (*pebble.DB, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Cache: f.blockCache, Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	pos, err := readApplied(db)
	if err == nil && pos != rec.Pos {
		err = fmt.Errorf("local copy holds record %d, the snapshot %d", pos.Seq, rec.Pos.Seq)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// fetchSnapshot downloads a snapshot's metadata files into dir.
func (f *FS) fetchSnapshot(ctx context.Context, rec *snapRecord, dir string) error {
	tmp := dir + ".fetch"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	for _, cf := range rec.Files {
		blob, err := f.main.Get(ctx, cf.Key, 0, -1)
		if err != nil {
			return fmt.Errorf("fetch %s: %w", cf.Key, err)
		}
		data, err := crypt.OpenBlob(f.key, blob, f.blobAAD(cf.Key))
		if err != nil {
			return fmt.Errorf("fetch %s: %w: %w", cf.Key, ErrIO, err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != cf.Hash {
			return fmt.Errorf("fetch %s: content hash mismatch: %w", cf.Key, ErrIO)
		}
		if err := writeFileSync(tmp+"/"+cf.Name, data); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// closeView closes snapshot id's view, waiting for its readers. It excludes
// openView, so a view being opened as the snapshot is deleted is closed
// too, not left open behind the deletion.
func (f *FS) closeView(id uint64) {
	f.viewOpenMu.Lock()
	defer f.viewOpenMu.Unlock()
	f.viewsMu.Lock()
	v := f.views[id]
	delete(f.views, id)
	f.viewsMu.Unlock()
	if v != nil {
		v.close()
	}
}

func (v *view) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closeLocked()
}

func (v *view) closeLocked() {
	if v.fs == nil {
		return
	}
	v.fs.bg.Wait()
	v.fs.db.Close()
	v.fs = nil
}

// closeViews closes every view (FS shutdown).
func (f *FS) closeViews() {
	f.viewsMu.Lock()
	vs := f.views
	f.views = make(map[uint64]*view)
	f.viewsMu.Unlock()
	for _, v := range vs {
		v.close()
	}
}

// in translates an inode of the view to its virtual number.
func (v *view) in(ino uint64) uint64 {
	if ino == 0 || ino > viewInoMask {
		return ino
	}
	return viewIno(v.id, ino)
}

// out gives n, read in the view, its virtual numbers; the snapshot's root
// has /.snapshots as its parent.
func (v *view) out(n Inode) Inode {
	if n.Ino == RootIno {
		n.Parent = snapDirIno
	} else {
		n.Parent = v.in(n.Parent)
	}
	n.Ino = v.in(n.Ino)
	return n
}

// withView runs fn on the view holding virtual inode ino, with ino's number
// inside the snapshot.
func (f *FS) withView(ctx context.Context, ino uint64, fn func(v *view, real uint64) error) error {
	id, real := splitViewIno(ino)
	if id == 0 || real == 0 {
		return fmt.Errorf("inode %#x: %w", ino, ErrNotExist)
	}
	v, err := f.viewOf(ctx, id)
	if err != nil {
		return err
	}
	defer v.mu.RUnlock()
	return fn(v, real)
}

// snapDirAttr is /.snapshots: a read-only directory owned by root.
func (f *FS) snapDirAttr(ctx context.Context) (Inode, error) {
	root, err := f.getInode(f.chain(), RootIno)
	if err != nil {
		return Inode{}, err
	}
	recs, err := f.snapshotRecords(f.chain())
	if err != nil {
		return Inode{}, err
	}
	n := Inode{Ino: snapDirIno, Mode: TypeDir | 0o555, Nlink: uint32(2 + len(recs)), Parent: RootIno,
		Gen: root.Gen, Mtime: root.Ctime, Ctime: root.Ctime}
	for _, r := range recs {
		n.Mtime, n.Ctime = max(n.Mtime, r.Created), max(n.Ctime, r.Created)
	}
	n.Atime = n.Mtime
	return n, nil
}

// snapDirLookup finds snapshot name's root directory.
func (f *FS) snapDirLookup(ctx context.Context, name string) (Inode, error) {
	if ValidateSnapshotName(name) != nil {
		return Inode{}, fmt.Errorf("lookup %q in /%s: %w", name, SnapshotDirName, ErrNotExist)
	}
	rec, err := f.snapshotRecord(f.chain(), name)
	if err != nil {
		return Inode{}, err
	}
	return f.GetAttr(ctx, viewIno(rec.ID, RootIno))
}

// snapDirList lists /.snapshots; cookies are snapshot ids.
func (f *FS) snapDirList(cookie uint64, maxEnts int) ([]DirEntry, bool, error) {
	recs, err := f.snapshotRecords(f.chain())
	if err != nil {
		return nil, false, err
	}
	var out []DirEntry
	for _, r := range recs {
		if r.ID <= cookie {
			continue
		}
		out = append(out, DirEntry{Name: r.Name, Ino: viewIno(r.ID, RootIno), Cookie: r.ID, Type: TypeDir})
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return cmpU64(a.Cookie, b.Cookie) })
	eof := len(out) <= maxEnts
	if !eof {
		out = out[:maxEnts]
	}
	return out, eof, nil
}

// SnapshotIno resolves the file at path (inside the snapshot, like
// "/.nbd/db") in snapshot name to its virtual inode. Errors wrap ErrNotExist.
func (f *FS) SnapshotIno(ctx context.Context, name string, path ...string) (Inode, error) {
	n, err := f.snapDirLookup(ctx, name)
	if err != nil {
		return Inode{}, err
	}
	for _, p := range path {
		if n, err = f.Lookup(ctx, Root, n.Ino, p); err != nil {
			return Inode{}, err
		}
	}
	return n, nil
}

// refuseView is the error of a change to a snapshot's file.
func refuseView(what string, ino uint64) error {
	return fmt.Errorf("%s inode %#x: it is in a snapshot: %w", what, ino, ErrReadOnly)
}

// lookupInSnapshot is Lookup in /.snapshots or in a snapshot's directory.
func (f *FS) lookupInSnapshot(ctx context.Context, c *Cred, dir uint64, name string) (Inode, error) {
	if dir == snapDirIno {
		switch name {
		case ".":
			return f.snapDirAttr(ctx)
		case "..":
			return f.GetAttr(ctx, RootIno)
		}
		return f.snapDirLookup(ctx, name)
	}
	var n Inode
	err := f.withView(ctx, dir, func(v *view, real uint64) (err error) {
		if real == RootIno && name == ".." {
			n, err = f.snapDirAttr(ctx)
			return err
		}
		if n, err = v.fs.Lookup(ctx, c, real, name); err == nil {
			n = v.out(n)
		}
		return err
	})
	return n, err
}

// readDirInSnapshot is ReadDir of /.snapshots or of a snapshot's directory.
func (f *FS) readDirInSnapshot(ctx context.Context, c *Cred, dir, cookie uint64, maxEnts int) ([]DirEntry, bool, error) {
	if dir == snapDirIno {
		return f.snapDirList(cookie, maxEnts)
	}
	var ents []DirEntry
	var eof bool
	err := f.withView(ctx, dir, func(v *view, real uint64) (err error) {
		ents, eof, err = v.fs.ReadDir(ctx, c, real, cookie, maxEnts)
		for i := range ents {
			ents[i].Ino = v.in(ents[i].Ino)
		}
		return err
	})
	return ents, eof, err
}

// refuseSnapshotName refuses changes in a snapshot's directories, and a new
// /.snapshots entry in the root (one made before snapshots existed stays).
func (f *FS) refuseSnapshotName(dir uint64, name, what string) error {
	if IsSnapshotIno(dir) {
		return refuseView(what, dir)
	}
	if dir == RootIno && name == SnapshotDirName {
		if _, _, _, ok, _ := f.lookupEntry(f.chain(), dir, name); !ok {
			return fmt.Errorf("%s /%s: the name is reserved for snapshots: %w", what, name, ErrExist)
		}
	}
	return nil
}
