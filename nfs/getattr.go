package nfs

import (
	"context"
	"errors"

	"zerofs/fs"
)

// GETATTR, SETATTR and ACCESS.

func (s *Server) getattr(ctx context.Context, c *call, a *fhArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		return c.status(st)
	}
	c.status(StatusOK)
	s.putFattr(c.w, &n)
	return nil
}

// ownerOverride reports whether a READ or WRITE refused by the mode bits
// should be retried as root because the caller owns the file. knfsd does
// this (NFSD_MAY_OWNER_OVERRIDE) for READ, WRITE and truncation: the client
// checked permissions when the file was opened, and a process may keep
// writing a file it created read-only (open(O_CREAT|O_WRONLY, 0444), as git
// does for its objects) or truncate it through that descriptor. ACCESS stays
// strict, so open(2) on the client still enforces the bits. Truncation does
// not retry: SETATTR asks fs for the override itself
// (fs.SetAttrs.OwnerOverride), which checks ownership under the inode's
// lock and applies no other rule differently.
func ownerOverride(c *fs.Cred, n *fs.Inode, err error) bool {
	return errors.Is(err, fs.ErrAccess) && c.Uid == n.Uid
}

func (s *Server) setattr(ctx context.Context, c *call, a *setattrArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, nil, nil)
		return st
	}
	sa, st := a.attr.toFS()
	if st == StatusOK && a.guard {
		// The guard is compared by fs with the file's ctime under the
		// inode's lock, so a concurrent change cannot slip between the
		// check and the update.
		ct, ok := a.guardCt.ns()
		if !ok {
			st = StatusNotSync // no ctime has a nanosecond field of 1e9 or more
		}
		sa.IfCtime = &ct
	}
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, &n, &n)
		return st
	}
	// The owner may truncate a file its mode bits make read-only for them
	// (see ownerOverride). fs decides that under the inode's lock, with
	// every other SETATTR rule unchanged (fs/perm.go).
	sa.OwnerOverride = true
	before, after, err := s.fs.SetAttr(ctx, c.cred, n.Ino, sa)
	if err != nil {
		s.logFailure(c, "SETATTR", err)
		pre := &n
		if before.Ino != 0 {
			pre = &before
		}
		c.status(statusOf(err))
		s.putWcc(c.w, pre, pre) // nothing changed
		return statusOf(err)
	}
	c.status(StatusOK)
	s.putWcc(c.w, &before, &after)
	return nil
}

// ACCESS3 bits.
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Modify  = 0x04
	access3Extend  = 0x08
	access3Delete  = 0x10
	access3Execute = 0x20
)

// fs.Access bits.
const (
	permRead  = 4
	permWrite = 2
	permExec  = 1
)

// accessMap says which permission bits each ACCESS3 bit needs, for
// directories and for other files (knfsd's nfs3_diraccess/nfs3_regaccess:
// changing a directory needs search as well as write; DELETE means nothing
// for a non-directory and LOOKUP nothing for a file).
var accessMap = []struct {
	bit      uint32
	dir, reg uint32 // 0: never granted
}{
	{access3Read, permRead, permRead},
	{access3Lookup, permExec, 0},
	{access3Modify, permWrite | permExec, permWrite},
	{access3Extend, permWrite | permExec, permWrite},
	{access3Delete, permWrite | permExec, 0},
	{access3Execute, 0, permExec},
}

const access3Writes = access3Modify | access3Extend | access3Delete

func (s *Server) access(ctx context.Context, c *call, a *accessArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	got, n, err := s.fs.Access(ctx, c.cred, n.Ino, permRead|permWrite|permExec)
	if err != nil {
		st := statusOf(err)
		if errors.Is(err, fs.ErrNotExist) {
			st = StatusStale
		}
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	var res uint32
	for _, m := range accessMap {
		need := m.reg
		if n.IsDir() {
			need = m.dir
		}
		if a.access&m.bit != 0 && need != 0 && got&need == need {
			res |= m.bit
		}
	}
	if s.fs.Err() != nil {
		// The filesystem stopped accepting writes (fenced by another
		// writer, or closing): do not promise what would fail with ROFS.
		res &^= access3Writes
	}
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &n)
	c.w.uint32(res)
	return nil
}
