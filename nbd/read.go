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
	buf, err := c.alloc(int(r.length))
	if err != nil {
		return fsError(cmdRead, err, "read [%d, +%d)", r.off, r.length)
	}
	handed := false
	defer func() {
		if !handed {
			c.free(buf)
		}
	}()
	// Cached data goes out straight from the frames holding it (see
	// fs.ReadShared): data is the read's bytes as a list of slices, of buf
	// or of immutable frame memory. buf still bounds what the connection
	// holds (the budget counts it), and is what is freed after sending.
	data, n, _, holes, err := c.s.f.ReadShared(c.ctx, fs.Root, c.exp.ino, r.off, buf)
	if err != nil {
		return fsError(cmdRead, err, "read [%d, +%d)", r.off, r.length)
	}
	if n < len(buf) { // the file shrank under this connection: zeros
		clear(buf[n:])
		data = append(data, buf[n:])
		holes = append(holes, fs.Extent{Off: r.off + uint64(n), Len: uint64(len(buf) - n), Hole: true})
	}
	var parts [][]byte
	switch {
	case !c.sess.structured:
		parts = append([][]byte{appendSimpleReply(nil, 0, r.cookie)}, data...)
	case r.flags&cmdFlagDF != 0:
		// Don't fragment: one content chunk. A read that is all zeros can
		// still be one hole chunk.
		if segs := segmentsFromHoles(r.off, len(buf), holes); len(segs) == 1 && segs[0].hole {
			parts = [][]byte{appendOffsetHole(nil, r.cookie, replyFlagDone, r.off, r.length)}
		} else {
			parts = append([][]byte{appendOffsetDataHeader(nil, r.cookie, replyFlagDone, r.off, len(buf))}, data...)
		}
	default:
		// The filesystem reports the holes it found while reading (they
		// cost it nothing): they go out as hole chunks, not as zeros.
		parts = structuredReadParts(r, data, segmentsFromHoles(r.off, len(buf), holes))
	}
	handed = true
	c.send(&reply{parts: parts, free: func() { c.free(buf) }})
	return nil
}

// structuredReadParts builds the chunks of a structured READ reply from
// segments covering the request: OFFSET_DATA for data, OFFSET_HOLE for holes,
// the last one flagged DONE (all data is in hand, so no error can follow).
// data holds the request's bytes, in slices.
func structuredReadParts(r request, data [][]byte, segs []segment) [][]byte {
	parts := make([][]byte, 0, 2*len(segs)+len(data))
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
		parts = append(parts, hdrs[start:len(hdrs):len(hdrs)])
		rel := int(s.off - r.off)
		parts = appendRange(parts, data, rel, rel+s.n)
	}
	return parts
}

// appendRange appends to dst the slices of data (consecutive pieces of one
// byte sequence) that cover bytes [from, to) of it.
func appendRange(dst, data [][]byte, from, to int) [][]byte {
	at := 0
	for _, d := range data {
		lo, hi := max(from, at), min(to, at+len(d))
		if lo < hi {
			dst = append(dst, d[lo-at:hi-at])
		}
		at += len(d)
		if at >= to {
			break
		}
	}
	return dst
}
