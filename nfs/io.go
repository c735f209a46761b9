package nfs

import (
	"context"
	"encoding/binary"

	"zerofs/fs"
)

// READ, WRITE and COMMIT.
//
// Stability is answered honestly (DESIGN.md rules 1 and 4):
//   - WRITE UNSTABLE puts the data in the filesystem's open batch (memory)
//     and answers UNSTABLE. The client keeps the data until a COMMIT.
//   - WRITE DATA_SYNC or FILE_SYNC flushes (fs.Flush: the batch is in the
//     WAL store) before answering, and answers FILE_SYNC: the flush makes
//     metadata durable along with the data, so the stronger level holds.
//   - COMMIT flushes everything (not just the range asked for: one WAL
//     append covers all files and is no cheaper for less) and answers.
//   - The write verifier is the filesystem's epoch (fs.Epoch), which changes
//     on every start of a writer. Data a client wrote UNSTABLE to an earlier
//     process may have been lost with it; the client sees a new verifier in
//     the next WRITE or COMMIT reply and sends those writes again.

// maxIO is rtmax and wtmax: the most one READ returns and one WRITE carries.
const maxIO = 1 << 20

// verifier returns the write verifier.
func (s *Server) verifier() []byte {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], s.fs.Epoch())
	return v[:]
}

// readFixed is the size of a READ result before its data: status,
// post_op_attr with attributes, count, eof, and the data's length.
const readFixed = 4 + 4 + fattr3Size + 4 + 4 + 4

func (s *Server) read(ctx context.Context, c *call, a *readArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putPostOpAttr(c.w, nil)
		return st
	}
	count := min(a.count, maxIO)
	// Read straight into the reply: the data goes at the offset it will
	// have once the fixed part is written, so it is never copied.
	base := c.w.len()
	need := base + readFixed + pad4(int(count))
	if cap(c.w.b) < need {
		nb := getBuf(need)[:base]
		copy(nb, c.w.b)
		putBuf(c.w.b)
		c.w.b = nb
	}
	data := c.w.b[base+readFixed : base+readFixed+int(count)]
	got, eof, err := s.fs.Read(ctx, c.cred, n.Ino, a.off, data)
	if err != nil && ownerOverride(c.cred, &n, err) {
		got, eof, err = s.fs.Read(ctx, fs.Root, n.Ino, a.off, data)
	}
	if err != nil {
		s.logFailure(c, "READ", err)
		st := statusOf(err)
		c.status(st)
		s.putPostOpAttr(c.w, &n)
		return st
	}
	// Attributes after the read, so the client's cached size is current.
	after, aerr := s.fs.GetAttr(ctx, n.Ino)
	if aerr != nil {
		after = n
	}
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &after)
	c.w.uint32(uint32(got))
	c.w.bool(eof)
	c.w.uint32(uint32(got))
	end := base + readFixed + got
	c.w.b = c.w.b[:pad4(end-base)+base]
	clear(c.w.b[end:]) // XDR padding
	return nil
}

func (s *Server) write(ctx context.Context, c *call, a *writeArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, nil, nil)
		return st
	}
	after, err := s.fs.Write(ctx, c.cred, n.Ino, a.off, a.data)
	if err != nil && ownerOverride(c.cred, &n, err) {
		// The owner keeps writing a file it made read-only for itself.
		// Done as root, fs does not drop setuid/setgid for this write:
		// the rare price of knfsd-compatible owner semantics.
		after, err = s.fs.Write(ctx, fs.Root, n.Ino, a.off, a.data)
	}
	if err != nil {
		s.logFailure(c, "WRITE", err)
		st := statusOf(err)
		c.status(st)
		s.putWcc(c.w, &n, s.attrOr(ctx, fs.Inode{}, n.Ino))
		return st
	}
	committed := uint32(unstable)
	if a.stable != unstable {
		if err := s.fs.Flush(ctx); err != nil {
			if ctx.Err() != nil {
				return errDrop
			}
			s.logFailure(c, "WRITE (flush)", err)
			st := statusOf(err)
			c.status(st)
			s.putWcc(c.w, &n, &after)
			return st
		}
		committed = fileSync
	}
	c.status(StatusOK)
	s.putWcc(c.w, &n, &after)
	c.w.uint32(uint32(len(a.data)))
	c.w.uint32(committed)
	c.w.fixed(s.verifier())
	return nil
}

func (s *Server) commit(ctx context.Context, c *call, a *commitArgs) error {
	n, st := s.inode(ctx, a.fh)
	if st != StatusOK {
		c.status(st)
		s.putWcc(c.w, nil, nil)
		return st
	}
	if err := s.fs.Flush(ctx); err != nil {
		if ctx.Err() != nil {
			return errDrop
		}
		s.logFailure(c, "COMMIT", err)
		st := statusOf(err)
		c.status(st)
		s.putWcc(c.w, &n, &n)
		return st
	}
	c.status(StatusOK)
	s.putWcc(c.w, &n, s.attrOr(ctx, fs.Inode{}, n.Ino))
	c.w.fixed(s.verifier())
	return nil
}
