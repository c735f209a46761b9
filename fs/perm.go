package fs

import "fmt"

// SETATTR permission rules. They are Linux's, as knfsd applies them to an
// NFS SETATTR (fs/attr.c setattr_prepare, may_setattr and chown_common;
// fs/nfsd/vfs.c nfsd_setattr), so that a client sees what a local
// filesystem would tell it. "Owner" means the caller's uid is the file's;
// root (uid 0, after any root_squash mapping by the protocol adapter) passes
// every ownership check below.
//
//	what                   who may                                      else
//	size                   regular files only                           EISDIR, EINVAL
//	                       write permission; the owner also without it  EACCES
//	                       with SetAttrs.OwnerOverride (NFS)
//	atime/mtime, both to   owner, or anyone with write permission       EACCES
//	  "now" (server time)  (utimensat(UTIME_NOW) / utimes(NULL))
//	atime/mtime, either    owner                                        EPERM
//	  to an explicit time
//	uid                    root; the owner only to the current uid      EPERM
//	                       (a no-op). A non-owner naming the current
//	                       owner is refused all the same (pjdfstest
//	                       chown/07).
//	gid                    root; the owner to the current gid or to a   EPERM
//	                       group it is in (primary or supplementary)
//	mode                   owner                                        EPERM
//	size > MaxFileSize                                                  EFBIG
//
// Checks run in knfsd's order: the file type, then write permission
// (EACCES), then ownership (EPERM). What the change then does besides (see
// changeOwnerMode):
//   - A mode with setgid set by a non-root caller not in the file's group
//     (the new group, if the same call changes it) loses setgid silently,
//     for every file type.
//   - The sticky bit may be set on any file type by its owner (Linux).
//   - Setting uid or gid of anything but a directory, by anyone including
//     root, clears setuid; and clears setgid when the file is
//     group-executable, or when the caller is neither root nor in the
//     file's group (setattr_should_drop_sgid). When the same call sets the
//     mode, the new mode loses setuid, and setgid if group-executable.
//   - ctime is set by every SetAttr that succeeds.

// owns reports whether c may act as the owner of n (inode_owner_or_capable).
func (c *Cred) owns(n *Inode) bool { return c.root() || c.Uid == n.Uid }

// mayChange checks whether c may make the changes s describes to n (as it
// is before them). Errors wrap ErrPerm (ownership rules), ErrAccess
// (permission bits), ErrIsDir or ErrInvalid (size of a non-regular file),
// or ErrFileTooBig.
func (c *Cred) mayChange(n *Inode, s *SetAttrs) error {
	owner := c.owns(n)
	if s.Size != nil {
		if err := writable(n); err != nil {
			return err
		}
		if !(s.OwnerOverride && owner) {
			if err := c.access(n, accessWrite); err != nil {
				return fmt.Errorf("truncate: %w", err)
			}
		}
	}
	explicit := s.Atime != nil && !s.Atime.Now || s.Mtime != nil && !s.Mtime.Now
	touch := !explicit && (s.Atime != nil || s.Mtime != nil)
	if touch && !owner {
		if err := c.access(n, accessWrite); err != nil {
			return fmt.Errorf("set times to now: %w", err)
		}
	}
	if s.Uid != nil && !c.root() && !(c.Uid == n.Uid && *s.Uid == n.Uid) {
		return fmt.Errorf("chown from uid %d to %d by uid %d: %w", n.Uid, *s.Uid, c.Uid, ErrPerm)
	}
	if s.Gid != nil && !c.root() && !(c.Uid == n.Uid && (*s.Gid == n.Gid || c.inGroup(*s.Gid))) {
		return fmt.Errorf("chgrp from gid %d to %d by uid %d: %w", n.Gid, *s.Gid, c.Uid, ErrPerm)
	}
	if s.Mode != nil && !owner {
		return fmt.Errorf("chmod by uid %d, owner %d: %w", c.Uid, n.Uid, ErrPerm)
	}
	if explicit && !owner {
		return fmt.Errorf("set times by uid %d, owner %d: %w", c.Uid, n.Uid, ErrPerm)
	}
	if s.Size != nil && *s.Size > MaxFileSize {
		return fmt.Errorf("truncate to %d: %w", *s.Size, ErrFileTooBig)
	}
	return nil
}

// changeOwnerMode applies s's uid, gid and mode to n, which mayChange
// allowed, with the setuid and setgid rules above.
func (c *Cred) changeOwnerMode(n *Inode, s *SetAttrs) {
	old := *n
	if s.Uid != nil {
		n.Uid = *s.Uid
	}
	if s.Gid != nil {
		n.Gid = *s.Gid
	}
	if s.Mode != nil {
		mode := *s.Mode & 0o7777
		if mode&modeSetgid != 0 && !c.root() && !c.inGroup(n.Gid) {
			mode &^= modeSetgid // cannot give away setgid to a group one is not in
		}
		n.Mode = n.Type() | mode
	}
	if (s.Uid != nil || s.Gid != nil) && !old.IsDir() {
		n.Mode &^= modeSetuid
		switch {
		case s.Mode != nil:
			if n.Mode&0o010 != 0 {
				n.Mode &^= modeSetgid
			}
		case old.Mode&modeSetgid == 0:
		case old.Mode&0o010 != 0, !c.root() && !c.inGroup(old.Gid):
			n.Mode &^= modeSetgid
		}
	}
}
