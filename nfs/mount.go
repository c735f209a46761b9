// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"

	"zerofs/fs"
)

// The MOUNT protocol, version 3 (RFC 1813 appendix I), served on the NFS
// port. There is one export, "/", the root of the filesystem. As knfsd does,
// MNT also accepts any existing directory below it ("/srv/data"), resolved
// with the caller's credentials; the client then sees that directory as its
// root. (libnfs mounts a file's parent directory, so its tools need this to
// reach files below the root.) The same access rules apply everywhere.

// exportPath is the export EXPORT lists.
const exportPath = "/"

// mountstat3 values.
type mountStat uint32

const (
	mnt3OK          mountStat = 0
	mnt3ErrNoEnt    mountStat = 2
	mnt3ErrIO       mountStat = 5
	mnt3ErrAcces    mountStat = 13
	mnt3ErrNotDir   mountStat = 20
	mnt3ErrNameLong mountStat = 63
)

func (m mountStat) Error() string {
	switch m {
	case mnt3ErrNoEnt:
		return "MNT3ERR_NOENT"
	case mnt3ErrIO:
		return "MNT3ERR_IO"
	case mnt3ErrAcces:
		return "MNT3ERR_ACCES"
	case mnt3ErrNotDir:
		return "MNT3ERR_NOTDIR"
	case mnt3ErrNameLong:
		return "MNT3ERR_NAMETOOLONG"
	}
	return fmt.Sprintf("mountstat3(%d)", uint32(m))
}

// MNTPATHLEN and MNTNAMLEN.
const (
	mntPathLen = 1024
	mntNameLen = 255
)

// mountTable remembers who mounted what, for DUMP. It is advisory (as in
// every implementation: clients that crash never unmount) and bounded, so
// a client looping on MNT cannot grow it without limit.
type mountTable struct {
	mu sync.Mutex
	m  map[mountEntry]struct{}
}

type mountEntry struct {
	host, path string
}

const maxMountEntries = 1024

func (t *mountTable) add(e mountEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[mountEntry]struct{})
	}
	if len(t.m) < maxMountEntries {
		t.m[e] = struct{}{}
	}
}

func (t *mountTable) remove(match func(mountEntry) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e := range t.m {
		if match(e) {
			delete(t.m, e)
		}
	}
}

func (t *mountTable) list() []mountEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]mountEntry, 0, len(t.m))
	for e := range t.m {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b mountEntry) int {
		if c := strings.Compare(a.host, b.host); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	return out
}

func (s *Server) mnt(ctx context.Context, c *call, a *mountPathArgs) error {
	var st mountStat
	var root fs.Inode
	switch {
	case len(a.path) > mntPathLen:
		st = mnt3ErrNameLong
	case !strings.HasPrefix(a.path, "/"):
		st = mnt3ErrNoEnt
	default:
		root, st = s.resolveMountPath(ctx, c.cred, a.path)
		if st == mnt3ErrIO {
			s.log.Warn("nfs: MNT: resolving the path failed", "remote", c.remote, "path", truncateForLog(a.path))
		}
	}
	c.w.uint32(uint32(st))
	if st != mnt3OK {
		s.log.Info("nfs: refused MNT", "remote", c.remote, "path", truncateForLog(a.path), "status", st.Error())
		return st
	}
	s.putHandle(c.w, &root)
	c.w.uint32(1) // auth_flavors: AUTH_UNIX only (AUTH_NONE is accepted too, as nobody)
	c.w.uint32(authSys)
	s.mounts.add(mountEntry{host: c.remote.String(), path: a.path})
	s.log.Info("nfs: client mounted", "remote", c.remote, "path", a.path)
	return nil
}

// resolveMountPath walks an absolute path from the root with the caller's
// credentials and returns the directory it names.
func (s *Server) resolveMountPath(ctx context.Context, cred *fs.Cred, path string) (fs.Inode, mountStat) {
	n, err := s.fs.GetAttr(ctx, fs.RootIno)
	if err != nil {
		return n, mnt3ErrIO
	}
	for _, name := range strings.Split(path, "/") {
		if name == "" || name == "." {
			continue
		}
		if n, err = s.fs.Lookup(ctx, cred, n.Ino, name); err != nil {
			switch fs.Errno(err) {
			case syscall.ENOENT:
				return n, mnt3ErrNoEnt
			case syscall.EACCES, syscall.EPERM:
				return n, mnt3ErrAcces
			case syscall.ENOTDIR:
				return n, mnt3ErrNotDir
			case syscall.ENAMETOOLONG:
				return n, mnt3ErrNameLong
			}
			return n, mnt3ErrIO
		}
	}
	if !n.IsDir() {
		return n, mnt3ErrNotDir
	}
	return n, mnt3OK
}

func truncateForLog(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}

func (s *Server) dump(ctx context.Context, c *call, _ *noArgs) error {
	for _, e := range s.mounts.list() {
		c.w.bool(true)
		c.w.string(e.host)
		c.w.string(e.path)
	}
	c.w.bool(false)
	return nil
}

func (s *Server) umnt(ctx context.Context, c *call, a *mountPathArgs) error {
	host := c.remote.String()
	s.mounts.remove(func(e mountEntry) bool { return e.host == host && e.path == a.path })
	return nil
}

func (s *Server) umntall(ctx context.Context, c *call, _ *noArgs) error {
	host := c.remote.String()
	s.mounts.remove(func(e mountEntry) bool { return e.host == host })
	return nil
}

// export lists "/" with the allowed networks as its groups (informational:
// the networks are enforced when a connection is accepted).
func (s *Server) export(ctx context.Context, c *call, _ *noArgs) error {
	c.w.bool(true)
	c.w.string(exportPath)
	for _, p := range s.allowedNames() {
		c.w.bool(true)
		c.w.string(p)
	}
	c.w.bool(false) // end of groups
	c.w.bool(false) // end of exports
	return nil
}
