package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

const (
	modeSetuid = 0o4000
	modeSetgid = 0o2000
	modeSticky = 0o1000
)

// Cred is the caller's identity for permission checks (AUTH_UNIX over NFS;
// NBD and administrative callers use Root).
type Cred struct {
	Uid, Gid uint32
	Groups   []uint32
}

// Root may do anything permission bits would forbid, as on Linux.
var Root = &Cred{}

const (
	accessRead  = 4
	accessWrite = 2
	accessExec  = 1
)

func (c *Cred) root() bool { return c == nil || c.Uid == 0 }

func (c *Cred) inGroup(gid uint32) bool {
	return c.Gid == gid || slices.Contains(c.Groups, gid)
}

// access checks the permission bits of n for want (a mask of accessRead,
// accessWrite, accessExec).
func (c *Cred) access(n *Inode, want uint32) error {
	if c.root() {
		// Root bypasses the bits, except that executing needs some x bit.
		if want&accessExec != 0 && !n.IsDir() && n.Mode&0o111 == 0 {
			return fmt.Errorf("inode %d: %w", n.Ino, ErrAccess)
		}
		return nil
	}
	var bits uint32
	switch {
	case c.Uid == n.Uid:
		bits = n.Mode >> 6 & 7
	case c.inGroup(n.Gid):
		bits = n.Mode >> 3 & 7
	default:
		bits = n.Mode & 7
	}
	if bits&want != want {
		return fmt.Errorf("inode %d mode %o for uid %d: %w", n.Ino, n.Perm(), c.Uid, ErrAccess)
	}
	return nil
}

// Access reports which of the accessRead|accessWrite|accessExec bits in want
// c has on ino (NFS ACCESS).
func (f *FS) Access(ctx context.Context, c *Cred, ino uint64, want uint32) (uint32, Inode, error) {
	n, err := f.GetAttr(ctx, ino)
	if err != nil {
		return 0, n, err
	}
	var got uint32
	for _, bit := range []uint32{accessRead, accessWrite, accessExec} {
		if bit == accessWrite && IsSnapshotIno(ino) {
			continue
		}
		if want&bit != 0 && c.access(&n, bit) == nil {
			got |= bit
		}
	}
	return got, n, nil
}

// GetAttr returns ino's attributes.
func (f *FS) GetAttr(ctx context.Context, ino uint64) (Inode, error) {
	if IsSnapshotIno(ino) {
		if ino == snapDirIno {
			return f.snapDirAttr(ctx)
		}
		var n Inode
		err := f.withView(ctx, ino, func(v *view, real uint64) (err error) {
			n, err = v.fs.GetAttr(ctx, real)
			n = v.out(n)
			return err
		})
		return n, err
	}
	return f.getInode(f.chain(), ino)
}

// getInode reads ino through the batch chain and pebble.
func (f *FS) getInode(chain []*batch, ino uint64) (Inode, error) {
	v, ok, err := f.getKV(chain, inodeKey(ino))
	if err != nil {
		return Inode{}, err
	}
	if !ok {
		return Inode{}, fmt.Errorf("inode %d: %w", ino, ErrNotExist)
	}
	n, err := decodeInode(v)
	if err != nil {
		return Inode{}, fmt.Errorf("inode %d: %w: %w", ino, ErrIO, err)
	}
	return n, nil
}

// getKV reads a metadata key through the batch chain (newest first) and
// pebble. The returned value must not be modified.
func (f *FS) getKV(chain []*batch, key []byte) ([]byte, bool, error) {
	for i := len(chain) - 1; i >= 0; i-- {
		if it, ok := chain[i].getKV(key); ok {
			return it.val, !it.del, nil
		}
	}
	v, closer, err := f.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("metadata read: %w: %w", ErrIO, err)
	}
	out := slices.Clone(v)
	closer.Close()
	return out, true, nil
}

// TimeSet says how SETATTR changes a time.
type TimeSet struct {
	Now  bool  // set to the server's current time
	Time int64 // else this time (ns since the epoch)
}

// SetAttrs lists the attributes SetAttr changes; nil fields stay as they are.
type SetAttrs struct {
	Mode  *uint32 // permission bits (the file type is kept)
	Uid   *uint32
	Gid   *uint32
	Size  *uint64
	Atime *TimeSet
	Mtime *TimeSet
	// IfCtime, when set, makes SetAttr fail with ErrGuard unless the file's
	// ctime equals it (NFSv3 SETATTR guard).
	IfCtime *int64
	// OwnerOverride lets the file's owner change its size without write
	// permission (knfsd's NFSD_MAY_OWNER_OVERRIDE): over NFS a truncation
	// may come through a descriptor the client opened for writing before
	// the mode lost its write bit, and the client checked access at open.
	// It grants nothing else: ownership and mode changes are unaffected.
	OwnerOverride bool
}

// ErrGuard: the SetAttr guard did not match the file's ctime.
var ErrGuard = errors.New("setattr guard mismatch")

// SetAttr changes ino's attributes with POSIX permission rules and returns the
// attributes before and after.
func (f *FS) SetAttr(ctx context.Context, c *Cred, ino uint64, s SetAttrs) (before, after Inode, err error) {
	if IsSnapshotIno(ino) {
		return before, after, refuseView("setattr", ino)
	}
	if s.Size != nil {
		adm, err := f.reserve(ctx, 0)
		if err != nil {
			return before, after, err
		}
		defer f.unreserve(adm)
	}
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	rw := f.inodeRW(ino)
	rw.Lock() // excludes writes while the size changes
	defer rw.Unlock()
	if ctx.Err() != nil {
		return before, after, canceled(ctx)
	}
	chain := f.chainLocked()
	n, err := f.getInode(chain, ino)
	if err != nil {
		return before, after, err
	}
	before = n
	if s.IfCtime != nil && *s.IfCtime != n.Ctime {
		return before, n, ErrGuard
	}
	if err := c.mayChange(&n, &s); err != nil {
		return before, n, fmt.Errorf("setattr inode %d: %w", ino, err)
	}
	now := time.Now().UnixNano()
	c.changeOwnerMode(&n, &s)
	for _, t := range []struct {
		set *TimeSet
		dst *int64
	}{{s.Atime, &n.Atime}, {s.Mtime, &n.Mtime}} {
		switch {
		case t.set == nil:
		case t.set.Now:
			*t.dst = now
		default:
			*t.dst = t.set.Time
		}
	}
	if s.Size != nil {
		if *s.Size != n.Size {
			if err := f.truncateLocked(chain, &n, *s.Size); err != nil {
				return before, n, err
			}
			if s.Mtime == nil {
				n.Mtime = now
			}
		}
	}
	n.Ctime = now
	mu := f.attrMu(ino)
	mu.Lock()
	// Size and times may have moved since we read n only through writes,
	// which we exclude; keep our copy.
	f.open.setKV(inodeKey(ino), n.encode())
	mu.Unlock()
	return before, n, nil
}
