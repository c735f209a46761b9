// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"context"
	"math"

	"zerofs/fs"
)

// NULL, FSSTAT, FSINFO and PATHCONF.

func (s *Server) null(ctx context.Context, c *call, _ *noArgs) error { return nil }

func (s *Server) fsstat(ctx context.Context, c *call, a *fhArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	sf := s.fs.StatFS()
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &n)
	c.w.uint64(sf.TotalBytes)
	c.w.uint64(sf.FreeBytes)
	c.w.uint64(sf.FreeBytes) // abytes: no reservation for root
	c.w.uint64(sf.TotalFiles)
	c.w.uint64(sf.FreeFiles)
	c.w.uint64(sf.FreeFiles)
	c.w.uint32(0) // invarsec: the figures change at any time
	return nil
}

// FSINFO properties.
const (
	fsfLink        = 0x0001
	fsfSymlink     = 0x0002
	fsfHomogeneous = 0x0008
	fsfCanSetTime  = 0x0010
)

// dtpref is the preferred READDIR count: 64 KiB holds several hundred
// entries, and fs lists a directory in sorted batches cheaply.
const dtpref = 64 << 10

func (s *Server) fsinfo(ctx context.Context, c *call, a *fhArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &n)
	c.w.uint32(maxIO)                    // rtmax
	c.w.uint32(maxIO)                    // rtpref
	c.w.uint32(4096)                     // rtmult
	c.w.uint32(maxIO)                    // wtmax
	c.w.uint32(maxIO)                    // wtpref
	c.w.uint32(uint32(s.fs.ChunkSize())) // wtmult: whole chunks avoid read-modify-write
	c.w.uint32(dtpref)
	c.w.uint64(fs.MaxFileSize)
	c.w.uint32(0) // time_delta: 1 ns, times are kept in nanoseconds
	c.w.uint32(1)
	c.w.uint32(fsfLink | fsfSymlink | fsfHomogeneous | fsfCanSetTime)
	return nil
}

func (s *Server) pathconf(ctx context.Context, c *call, a *fhArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &n)
	c.w.uint32(math.MaxUint32) // linkmax: fs counts links in 32 bits
	c.w.uint32(fs.MaxNameLen)  // name_max
	c.w.bool(true)             // no_trunc: long names are refused, not cut
	c.w.bool(true)             // chown_restricted: only root gives files away
	c.w.bool(false)            // case_insensitive
	c.w.bool(true)             // case_preserving
	return nil
}
