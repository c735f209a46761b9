package nbd

import (
	"zerofs/fs"
)

// extentsThreshold: structured READs at least this long ask fs.Extents where
// the holes are first, so large sparse reads skip reading (and allocating
// for) holes. Shorter reads are read whole and zero-detected: one metadata
// scan costs more than reading a few blocks.
const extentsThreshold = 256 << 10

// read answers NBD_CMD_READ. The data is read completely before the first
// reply byte is queued, so an error is always reported cleanly (with simple
// replies there is no way to report an error after the header).
func (c *conn) read(r request) *reqError {
	if r.length == 0 {
		if c.sess.structured {
			c.send(&reply{parts: [][]byte{appendNoneChunk(nil, r.cookie)}})
		} else {
			c.sendOK(r)
		}
		return nil
	}
	buf := c.alloc(int(r.length))
	handed := false
	defer func() {
		if !handed {
			c.free(buf)
		}
	}()
	var segs []segment
	if c.sess.structured && r.length >= extentsThreshold {
		var err *reqError
		if segs, err = c.readSparse(r, buf); err != nil {
			return err
		}
	} else {
		if err := c.readInto(r.off, buf); err != nil {
			return fsError(cmdRead, err, "read [%d, +%d)", r.off, r.length)
		}
		if c.sess.structured {
			segs = splitZeros(r.off, buf)
		}
	}
	var parts [][]byte
	switch {
	case !c.sess.structured:
		parts = [][]byte{appendSimpleReply(nil, 0, r.cookie), buf}
	case r.flags&cmdFlagDF != 0:
		// Don't fragment: one content chunk. A read that is all zeros can
		// still be one hole chunk.
		if len(segs) == 1 && segs[0].hole {
			parts = [][]byte{appendOffsetHole(nil, r.cookie, replyFlagDone, r.off, r.length)}
		} else {
			parts = [][]byte{appendOffsetDataHeader(nil, r.cookie, replyFlagDone, r.off, len(buf)), buf}
		}
	default:
		parts = structuredReadParts(r, buf, segs)
	}
	handed = true
	c.send(&reply{parts: parts, free: func() { c.free(buf) }})
	return nil
}

// readInto fills p from the export at off. Bytes past the file's current end
// (it shrank under this connection) read as zeros.
func (c *conn) readInto(off uint64, p []byte) error {
	n, _, err := c.s.f.Read(c.s.ctx, fs.Root, c.exp.ino, off, p)
	if err != nil {
		return err
	}
	clear(p[n:])
	return nil
}

// readSparse fills the data parts of buf (holes are left unread) and returns
// the segments for a structured reply. If the extent map cannot be had, it
// falls back to reading everything.
func (c *conn) readSparse(r request, buf []byte) ([]segment, *reqError) {
	end := r.off + uint64(r.length)
	var segs []segment
	addHole := func(off, n uint64) {
		if k := len(segs) - 1; k >= 0 && segs[k].hole {
			segs[k].n += int(n)
			return
		}
		segs = append(segs, segment{off: off, n: int(n), hole: true})
	}
	readData := func(off, n uint64) *reqError {
		p := buf[off-r.off : off-r.off+n]
		if err := c.readInto(off, p); err != nil {
			return fsError(cmdRead, err, "read [%d, +%d)", off, n)
		}
		for _, s := range splitZeros(off, p) {
			if s.hole {
				addHole(s.off, uint64(s.n))
			} else {
				segs = append(segs, s)
			}
		}
		return nil
	}
	for pos := r.off; pos < end; {
		ext, err := c.s.f.Extents(c.s.ctx, c.exp.ino, pos, end-pos)
		if err != nil || len(ext) == 0 || ext[0].Off != pos {
			if err == nil && len(ext) == 0 {
				// Past the file's current end: zeros.
				addHole(pos, end-pos)
				break
			}
			// No usable map: read the rest.
			if rerr := readData(pos, end-pos); rerr != nil {
				return nil, rerr
			}
			break
		}
		before := pos
		for _, e := range ext {
			if e.Off != pos || e.Off >= end {
				break // not contiguous: ask again from pos
			}
			n := min(e.Len, end-e.Off)
			if e.Hole {
				addHole(pos, n)
			} else if rerr := readData(pos, n); rerr != nil {
				return nil, rerr
			}
			pos += n
		}
		if pos == before {
			// No progress (never expected of fs.Extents): read the rest.
			if rerr := readData(pos, end-pos); rerr != nil {
				return nil, rerr
			}
			break
		}
	}
	// Hole bytes were never read: make buf all zeros there, so that a
	// DF reply that turns the segments back into one data chunk is right.
	for _, s := range segs {
		if s.hole {
			clear(buf[s.off-r.off : s.off-r.off+uint64(s.n)])
		}
	}
	return segs, nil
}

// structuredReadParts builds the chunks of a structured READ reply from
// segments covering the request: OFFSET_DATA for data, OFFSET_HOLE for holes,
// the last one flagged DONE (all data is in hand, so no error can follow).
func structuredReadParts(r request, buf []byte, segs []segment) [][]byte {
	parts := make([][]byte, 0, 2*len(segs))
	hdrs := make([]byte, 0, len(segs)*(chunkHeaderLen+12))
	for i, s := range segs {
		var flags uint16
		if i == len(segs)-1 {
			flags = replyFlagDone
		}
		start := len(hdrs)
		if s.hole {
			hdrs = appendOffsetHole(hdrs, r.cookie, flags, s.off, uint32(s.n))
			parts = append(parts, hdrs[start:len(hdrs):len(hdrs)])
			continue
		}
		hdrs = appendOffsetDataHeader(hdrs, r.cookie, flags, s.off, s.n)
		rel := s.off - r.off
		parts = append(parts, hdrs[start:len(hdrs):len(hdrs)], buf[rel:rel+uint64(s.n)])
	}
	return parts
}
