package nbd

import (
	"zerofs/fs"
)

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
	if c.sess.structured {
		// The filesystem reports the holes it found while reading (they
		// cost it nothing): they go out as hole chunks, not as zeros.
		n, _, holes, err := c.s.f.ReadSparse(c.s.ctx, fs.Root, c.exp.ino, r.off, buf)
		if err != nil {
			return fsError(cmdRead, err, "read [%d, +%d)", r.off, r.length)
		}
		if n < len(buf) { // the file shrank under this connection: zeros
			clear(buf[n:])
			holes = append(holes, fs.Extent{Off: r.off + uint64(n), Len: uint64(len(buf) - n), Hole: true})
		}
		segs = segmentsFromHoles(r.off, len(buf), holes)
	} else if err := c.readInto(r.off, buf); err != nil {
		return fsError(cmdRead, err, "read [%d, +%d)", r.off, r.length)
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
