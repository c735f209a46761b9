package nfs

import (
	"context"

	"zerofs/fs"
)

// LOOKUP, READLINK, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME,
// LINK: every name operation goes straight to package fs by inode number.
//
// Weak cache consistency: the pre-operation attributes of a directory are
// read just before the operation (fs returns only the directory after it).
// A change by another client in between would be missed by a client that
// compares them with its cache; the window is one metadata read long, and
// the post-operation attributes, which every reply carries, are exact.

// Default permissions when a client creates without setting a mode (clients
// normally send one, with their umask applied): what an open(2) or mkdir(2)
// with the usual umask 022 gives.
const (
	defaultFileMode = 0o644
	defaultDirMode  = 0o755
)

// maxSymlinkTarget bounds a symlink's target (PATH_MAX, as package fs does);
// longer targets are NAMETOOLONG rather than fs's INVAL, as knfsd answers.
const maxSymlinkTarget = 4096

// attrOr returns &n if n holds attributes (fs returns them with many
// errors), else ino's current attributes, or nil if they cannot be read.
func (s *Server) attrOr(ctx context.Context, n fs.Inode, ino uint64) *fs.Inode {
	if n.Ino != 0 {
		return &n
	}
	cur, err := s.fs.GetAttr(ctx, ino)
	if err != nil {
		return nil
	}
	return &cur
}

func (s *Server) lookup(ctx context.Context, c *call, a *diropArgs) error {
	d, st := s.inode(ctx, a.dir)
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	n, err := s.fs.Lookup(ctx, c.cred, d.Ino, a.name)
	if err != nil {
		st := statusOf(err)
		c.status(st)
		s.putPostOpAttr(c.w, &d)
		return st
	}
	c.status(StatusOK)
	s.putHandle(c.w, &n)
	s.putPostOpAttr(c.w, &n)
	s.putPostOpAttr(c.w, &d)
	return nil
}

func (s *Server) readlink(ctx context.Context, c *call, a *fhArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st == StatusOK && !n.IsLink() {
		st = StatusInval
	}
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &n)
	c.w.string(n.Target)
	return nil
}

// newNode is what CREATE, MKDIR, SYMLINK and MKNOD share: create the node,
// then set the attributes the create itself does not (owner, times, size),
// and answer with the new handle, its attributes and the directory's wcc.
type newNode struct {
	where diropArgs
	node  fs.NewNode
	attr  sattr
	// sizeOnly, for an UNCHECKED create of an existing file: apply only
	// the size (see create).
	sizeOnly bool
}

func (s *Server) makeNode(ctx context.Context, c *call, op string, nn newNode) error {
	d, st := s.inode(ctx, nn.where.dir)
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, nil, nil)
		return st
	}
	rest, st := nn.attr.toFS()
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, &d, &d)
		return st
	}
	n, dAfter, err := s.fs.Create(ctx, c.cred, d.Ino, nn.where.name, nn.node)
	if err != nil {
		s.logFailure(c, op, err)
		st := statusOf(err)
		c.status(st)
		s.putWcc(c.w, &d, s.attrOr(ctx, dAfter, d.Ino))
		return st
	}
	// The mode went into the create. What is left is applied as a SETATTR,
	// skipping what already holds, so that a plain create costs one
	// metadata update.
	rest.Mode = nil
	if nn.sizeOnly {
		rest = fs.SetAttrs{Size: rest.Size}
	}
	if rest.Uid != nil && *rest.Uid == n.Uid {
		rest.Uid = nil
	}
	if rest.Gid != nil && *rest.Gid == n.Gid {
		rest.Gid = nil
	}
	if rest.Size != nil && (*rest.Size == n.Size || !n.IsReg()) {
		rest.Size = nil
	}
	if rest != (fs.SetAttrs{}) {
		rest.OwnerOverride = true // as SETATTR: the owner may truncate
		_, after, err := s.fs.SetAttr(ctx, c.cred, n.Ino, rest)
		if err != nil {
			// The node exists now; the client learns that the call failed
			// and will look it up again if it retries (knfsd does the same).
			s.logFailure(c, op+" (setting attributes)", err)
			st := statusOf(err)
			c.status(st)
			s.putWcc(c.w, &d, &dAfter)
			return st
		}
		n = after
	}
	c.status(StatusOK)
	s.putPostOpFH(c.w, &n)
	s.putPostOpAttr(c.w, &n)
	s.putWcc(c.w, &d, &dAfter)
	return nil
}

// create is CREATE (RFC 1813 section 3.3.8):
//   - UNCHECKED creates the file or, if a regular file of that name exists,
//     uses it: then only the size of the given attributes is applied
//     (knfsd's choice): open(O_CREAT|O_TRUNC) truncates, but an existing
//     file's mode and owner are not reset by every open.
//   - GUARDED fails with EXIST if the name exists.
//   - EXCLUSIVE stores the client's verifier in the inode (fs.NewNode.Verf)
//     rather than in its times, as the RFC suggests servers may: a
//     retransmitted create with the same verifier finds its own file and
//     succeeds; another verifier gets EXIST. The file's attributes are not
//     touched by that, so the client's follow-up SETATTR is all it needs.
//     (A verifier of zero cannot be recognised on retransmission: fs reserves
//     zero for "no verifier". Clients send random verifiers.)
func (s *Server) create(ctx context.Context, c *call, a *createArgs) error {
	nn := newNode{where: a.where, attr: a.attr}
	mode := uint32(defaultFileMode)
	if a.attr.mode != nil {
		mode = *a.attr.mode & 0o7777
	}
	nn.node.Mode = fs.TypeRegular | mode
	switch a.how {
	case createUnchecked:
		// fs.Create returns an existing regular file as is; find out first
		// whether it exists, to apply the size only.
		if d, st := s.inode(ctx, a.where.dir); st == StatusOK {
			if e, err := s.fs.Lookup(ctx, c.cred, d.Ino, a.where.name); err == nil && e.IsReg() {
				nn.sizeOnly = true
			}
		}
	case createGuarded:
		nn.node.Exclusive = true
	case createExclusive:
		nn.node.Exclusive = true
		nn.node.Verf = a.verf
	}
	return s.makeNode(ctx, c, "CREATE", nn)
}

func (s *Server) mkdir(ctx context.Context, c *call, a *mkdirArgs) error {
	mode := uint32(defaultDirMode)
	if a.attr.mode != nil {
		mode = *a.attr.mode & 0o7777
	}
	attr := a.attr
	attr.size = nil // meaningless for a directory
	return s.makeNode(ctx, c, "MKDIR", newNode{
		where: a.where, attr: attr,
		node: fs.NewNode{Mode: fs.TypeDir | mode},
	})
}

func (s *Server) symlink(ctx context.Context, c *call, a *symlinkArgs) error {
	if len(a.target) > maxSymlinkTarget {
		d, st := s.inode(ctx, a.where.dir)
		if st == StatusOK {
			st = StatusNameTooLong
		}
		c.status(st)
		if st == StatusNameTooLong {
			s.putWcc(c.w, &d, &d)
		} else {
			s.putWcc(c.w, nil, nil)
		}
		return st
	}
	attr := a.attr
	attr.mode, attr.size = nil, nil // a symlink's mode is always 0777
	return s.makeNode(ctx, c, "SYMLINK", newNode{
		where: a.where, attr: attr,
		node: fs.NewNode{Mode: fs.TypeSymlink | 0o777, Target: a.target},
	})
}

// mknod is MKNOD. Device nodes are made by root only (as mknod(2) needs
// CAP_MKNOD, and knfsd drops capabilities for non-root callers): a device
// node on a share is interpreted by the clients' kernels, so letting any
// user create one would let them reach any device on a client that mounts
// without nodev.
func (s *Server) mknod(ctx context.Context, c *call, a *mknodArgs) error {
	var typ uint32
	switch a.ftype {
	case ftypeChr:
		typ = fs.TypeChar
	case ftypeBlk:
		typ = fs.TypeBlock
	case ftypeSock:
		typ = fs.TypeSocket
	case ftypeFIFO:
		typ = fs.TypeFIFO
	}
	st := StatusOK
	switch {
	case typ == 0:
		st = StatusBadType
	case (typ == fs.TypeChar || typ == fs.TypeBlock) && c.cred.Uid != 0:
		st = StatusPerm
	}
	if st != StatusOK {
		d, dst := s.inode(ctx, a.where.dir)
		if dst != StatusOK {
			c.status(dst)
			s.putWcc(c.w, nil, nil)
			return dst
		}
		c.status(st)
		s.putWcc(c.w, &d, &d)
		return st
	}
	mode := uint32(defaultFileMode)
	if a.attr.mode != nil {
		mode = *a.attr.mode & 0o7777
	}
	attr := a.attr
	attr.size = nil
	nn := fs.NewNode{Mode: typ | mode}
	if typ == fs.TypeChar || typ == fs.TypeBlock {
		nn.Rdev = makeDev(a.major, a.minor)
	}
	return s.makeNode(ctx, c, "MKNOD", newNode{where: a.where, attr: attr, node: nn})
}

func (s *Server) remove(ctx context.Context, c *call, a *diropArgs) error {
	return s.unlink(ctx, c, "REMOVE", a, s.fs.Remove)
}

func (s *Server) rmdir(ctx context.Context, c *call, a *diropArgs) error {
	return s.unlink(ctx, c, "RMDIR", a, s.fs.Rmdir)
}

func (s *Server) unlink(ctx context.Context, c *call, op string, a *diropArgs,
	fn func(context.Context, *fs.Cred, uint64, string) (fs.Inode, error)) error {
	d, st := s.inode(ctx, a.dir)
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, nil, nil)
		return st
	}
	dAfter, err := fn(ctx, c.cred, d.Ino, a.name)
	if err != nil {
		s.logFailure(c, op, err)
		st := statusOf(err)
		c.status(st)
		s.putWcc(c.w, &d, s.attrOr(ctx, dAfter, d.Ino))
		return st
	}
	c.status(StatusOK)
	s.putWcc(c.w, &d, &dAfter)
	return nil
}

func (s *Server) rename(ctx context.Context, c *call, a *renameArgs) error {
	from, st := s.inode(ctx, a.from.dir)
	to, st2 := s.inode(ctx, a.to.dir)
	if st == StatusOK {
		st = st2
	}
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, nil, nil)
		s.putWcc(c.w, nil, nil)
		return st
	}
	err := s.fs.Rename(ctx, c.cred, from.Ino, a.from.name, to.Ino, a.to.name)
	if err != nil {
		s.logFailure(c, "RENAME", err)
	}
	st = statusOf(err)
	c.status(st)
	s.putWcc(c.w, &from, s.attrOr(ctx, fs.Inode{}, from.Ino))
	s.putWcc(c.w, &to, s.attrOr(ctx, fs.Inode{}, to.Ino))
	if st != StatusOK {
		return st
	}
	return nil
}

func (s *Server) link(ctx context.Context, c *call, a *linkArgs) error {
	n, st := s.inode(ctx, a.fh)
	d, st2 := s.inode(ctx, a.to.dir)
	if st == StatusOK {
		st = st2
	}
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		s.putWcc(c.w, nil, nil)
		return st
	}
	nAfter, dAfter, err := s.fs.Link(ctx, c.cred, n.Ino, d.Ino, a.to.name)
	if err != nil {
		s.logFailure(c, "LINK", err)
		st := statusOf(err)
		c.status(st)
		s.putPostOpAttr(c.w, s.attrOr(ctx, nAfter, n.Ino))
		s.putWcc(c.w, &d, s.attrOr(ctx, dAfter, d.Ino))
		return st
	}
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &nAfter)
	s.putWcc(c.w, &d, &dAfter)
	return nil
}
