package nfs

import (
	"context"

	"zerofs/fs"
)

// READDIR and READDIRPLUS.
//
// Cookies. package fs gives every directory entry its own cookie when it is
// linked (from a per-directory counter, never reused), and ReadDir resumes
// after any cookie whether or not that entry still exists. So a listing
// resumed from a cookie never skips or repeats an entry because others were
// added or removed meanwhile, and a cookie never goes stale: the cookie
// verifier is a constant (zero) and is not checked, and BAD_COOKIE is never
// returned. This server adds "." and ".." (fs lists neither):
//
//	cookie 1 is ".", cookie 2 is "..", fs cookie c is c+2
//
// (cookie 0 means "from the start", as the RFC says).
//
// Sizes. For READDIR, count bounds the encoded READDIR3resok including the
// status word. For READDIRPLUS, maxcount bounds the same for the whole
// result and dircount bounds the directory information alone (fileid, name,
// cookie of each entry), as RFC 1813 defines both; dircount never keeps the
// first entry out, so a small dircount means short replies, never TOOSMALL.
// TOOSMALL is the answer when not even one entry fits in count/maxcount.
// Both are capped at maxIO.

// cookie numbers of the entries this server adds.
const (
	cookieDot    = 1
	cookieDotDot = 2
	cookieBias   = 2 // fs cookie c is NFS cookie c+cookieBias
)

// Encoded sizes.
const (
	entryFixed     = 4 + 8 + 4 + 8         // value-follows, fileid, name length, cookie
	entryPlusExtra = 4 + fattr3Size + 4    // post_op_attr with attributes, post_op_fh3 flag
	handleEncoded  = 4 + (handleSize+3)&^3 // the handle as opaque
	resokTail      = 4 + 4                 // end of list, eof
)

type dirLister struct {
	s       *Server
	w       *xdrWriter
	plus    bool
	count   int // bytes left for the result
	dirLeft int // READDIRPLUS dircount left
	n       int // entries written
}

// add writes one entry if it fits; attrs (READDIRPLUS only) may be nil when
// the entry's inode could not be read (removed meanwhile): the entry is then
// sent without attributes and handle, as the RFC allows.
func (l *dirLister) add(name string, ino, cookie uint64, attrs *fs.Inode) bool {
	nameLen := pad4(len(name))
	size := entryFixed + nameLen
	dirSize := size - 4
	if l.plus {
		size += 4 + 4
		if attrs != nil {
			size += fattr3Size + handleEncoded
		}
	}
	if size > l.count || (l.plus && l.n > 0 && dirSize > l.dirLeft) {
		return false
	}
	l.count -= size
	l.dirLeft -= dirSize
	l.n++
	w := l.w
	w.bool(true)
	w.uint64(ino)
	w.string(name)
	w.uint64(cookie)
	if l.plus {
		l.s.putPostOpAttr(w, attrs)
		l.s.putPostOpFH(w, attrs)
	}
	return true
}

func (s *Server) readdir(ctx context.Context, c *call, a *readdirArgs) error {
	d, st := s.inode(ctx, a.fh)
	if st == StatusOK && !d.IsDir() {
		st = StatusNotDir
	}
	if st != StatusOK {
		c.status(st)
		if st == StatusNotDir {
			s.putPostOpAttr(c.w, &d)
		} else {
			s.putPostOpAttr(c.w, nil)
		}
		return st
	}
	count := int(min(a.count, maxIO))
	dirMax := int(min(a.dirMax, maxIO))
	// How many entries to ask fs for at a time: about what fits, assuming
	// 12-byte names (more are fetched as needed).
	perEntry := entryFixed + 12
	if a.plus {
		perEntry += entryPlusExtra + handleEncoded
	}
	batch := min(max(count/perEntry, 16), 1024)

	// Where fs's listing resumes, and which of "." and ".." come first.
	var fsCookie uint64
	dots := 0
	switch a.cookie {
	case 0:
		dots = 2
	case cookieDot:
		dots = 1
	case cookieDotDot:
	default:
		fsCookie = a.cookie - cookieBias
	}

	// The first batch is read before anything is written, so a refusal
	// (no read permission) is a clean error result.
	ents, fsEOF, err := s.fs.ReadDir(ctx, c.cred, d.Ino, fsCookie, batch)
	if err != nil {
		s.logFailure(c, "READDIR", err)
		st := statusOf(err)
		c.status(st)
		s.putPostOpAttr(c.w, &d)
		return st
	}

	base := c.w.len()
	c.status(StatusOK)
	s.putPostOpAttr(c.w, &d)
	c.w.uint64(0) // cookieverf: constant, cookies never go stale
	l := &dirLister{s: s, w: c.w, plus: a.plus, dirLeft: dirMax}
	l.count = count - (c.w.len() - base) - resokTail

	full := false
	if dots == 2 && !l.add(".", d.Ino, cookieDot, &d) {
		full = true
	}
	if dots >= 1 && !full {
		var parent *fs.Inode
		if a.plus {
			if p, err := s.fs.GetAttr(ctx, d.Parent); err == nil {
				parent = &p
			}
		}
		if !l.add("..", d.Parent, cookieDotDot, parent) {
			full = true
		}
	}
	for !full {
		for _, e := range ents {
			var attrs *fs.Inode
			if a.plus {
				if n, err := s.fs.GetAttr(ctx, e.Ino); err == nil {
					attrs = &n
				}
			}
			if !l.add(e.Name, e.Ino, e.Cookie+cookieBias, attrs) {
				full = true
				break
			}
			fsCookie = e.Cookie
		}
		if full || fsEOF {
			break
		}
		ents, fsEOF, err = s.fs.ReadDir(ctx, c.cred, d.Ino, fsCookie, batch)
		if err != nil {
			// What was listed stands; the client asks again from the
			// last cookie and gets the error then, if it persists.
			s.logFailure(c, "READDIR (continuing)", err)
			full = true
		}
	}
	if l.n == 0 && full {
		c.w.truncate(base)
		c.status(StatusTooSmall)
		s.putPostOpAttr(c.w, &d)
		return StatusTooSmall
	}
	c.w.bool(false)          // no more entries in this reply
	c.w.bool(!full && fsEOF) // eof
	return nil
}
