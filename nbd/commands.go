package nbd

import (
	"sync"

	"zerofs/fs"
)

// Command execution: each command is a thin call into package fs. Requests
// reaching here passed checkRequest: flags are valid and the range lies
// within the export's negotiated size.

// exec runs job j and queues its reply. It returns the error replied, if any.
func (c *conn) exec(j *job) error {
	r := j.req
	var rerr *reqError
	switch {
	case c.s.f.Interrupted(c.exp.ino):
		// The last run ended with writes to this export acknowledged and
		// perhaps lost (fs/marks.go). Every request fails, FLUSH above all,
		// until the operator clears it: a client that went on would build
		// on writes that are gone.
		rerr = newReqError(errIO, "export %q is interrupted: it may have lost acknowledged writes in a crash; clear it with `zerofs nbd clear %s` once its user knows", c.exp.name, c.exp.name)
	case r.typ == cmdRead:
		rerr = c.read(r)
	case r.typ == cmdWrite:
		rerr = c.write(r, j.payload)
	case r.typ == cmdFlush:
		rerr = c.flush(r)
	case r.typ == cmdTrim:
		rerr = c.trim(r)
	case r.typ == cmdWriteZeroes:
		rerr = c.writeZeroes(r)
	case r.typ == cmdCache:
		rerr = c.cache(r)
	case r.typ == cmdBlockStatus:
		rerr = c.blockStatus(r)
	default:
		// checkRequest refuses unknown commands; defence in depth.
		rerr = newReqError(errInval, "unknown command %d", r.typ)
	}
	if rerr != nil {
		c.log.Debug("nbd: request failed", "cmd", cmdName(r.typ), "offset", r.off, "length", r.length, "err", rerr)
		c.sendError(r, rerr)
		return rerr
	}
	return nil
}

// fua makes a completed write durable before its reply when the client asked
// (NBD_CMD_FLAG_FUA): fs.Flush returns once the WAL append covering every
// completed write, this one included, is done (DESIGN.md durability rule 1).
func (c *conn) fua(r request) *reqError {
	if r.flags&cmdFlagFUA == 0 {
		return nil
	}
	if err := c.s.f.Flush(c.ctx); err != nil {
		return fsError(cmdFlush, err, "%s [%d, +%d) done but not made durable (FUA)", cmdName(r.typ), r.off, r.length)
	}
	return nil
}

// markUnflushed makes sure the export is marked as holding unflushed
// writes (fs/marks.go) before a change is acknowledged without a flush; the
// returned func must be called once the change is made. A FUA request is
// durable before its reply and needs no mark.
func (c *conn) markUnflushed(r request) (func(), *reqError) {
	if r.flags&cmdFlagFUA != 0 || r.length == 0 {
		return func() {}, nil
	}
	done, err := c.s.f.MarkUnflushed(c.ctx, c.exp.ino)
	if err != nil {
		return nil, fsError(r.typ, err, "%s [%d, +%d): mark the export as holding unflushed writes", cmdName(r.typ), r.off, r.length)
	}
	return done, nil
}

func (c *conn) write(r request, payload []byte) *reqError {
	done, rerr := c.markUnflushed(r)
	if rerr != nil {
		c.freePayload(payload)
		return rerr
	}
	defer done()
	if r.length > 0 {
		// One fs.Write per request: the filesystem puts one call in one
		// batch, so a crash never tears a request.
		_, err := c.s.f.Write(c.ctx, fs.Root, c.exp.ino, r.off, payload)
		// The data is in the batch now (or nowhere): its request memory
		// goes back before a FUA flush waits for the store.
		c.freePayload(payload)
		if err != nil {
			return fsError(cmdWrite, err, "write [%d, +%d)", r.off, r.length)
		}
	} else if payload != nil {
		c.freePayload(payload)
	}
	if err := c.fua(r); err != nil {
		return err
	}
	c.sendOK(r)
	return nil
}

func (c *conn) flush(r request) *reqError {
	if err := c.s.f.Flush(c.ctx); err != nil {
		return fsError(cmdFlush, err, "flush")
	}
	c.sendOK(r)
	return nil
}

func (c *conn) trim(r request) *reqError {
	done, rerr := c.markUnflushed(r)
	if rerr != nil {
		return rerr
	}
	defer done()
	if r.length > 0 {
		if err := c.s.f.Punch(c.ctx, fs.Root, c.exp.ino, r.off, uint64(r.length)); err != nil {
			return fsError(cmdTrim, err, "trim [%d, +%d)", r.off, r.length)
		}
	}
	if err := c.fua(r); err != nil {
		return err
	}
	c.sendOK(r)
	return nil
}

// zeros is a read-only buffer of zeros for WRITE_ZEROES with NO_HOLE, as
// large as the largest write, allocated on first use.
var zeros = sync.OnceValue(func() []byte { return make([]byte, advertisedMaxPayload) })

// writeZeroes punches a hole (fast, one metadata operation at any length)
// unless the client insists on allocation with NO_HOLE; then it writes
// zeros, in pieces of at most 32 MiB. Each piece is atomic; a crash during a
// longer NO_HOLE request may leave a prefix of the pieces zeroed.
func (c *conn) writeZeroes(r request) *reqError {
	done, rerr := c.markUnflushed(r)
	if rerr != nil {
		return rerr
	}
	defer done()
	if r.flags&cmdFlagNoHole != 0 {
		z := zeros()
		for done := uint64(0); done < uint64(r.length); {
			n := min(uint64(r.length)-done, uint64(len(z)))
			if _, err := c.s.f.Write(c.ctx, fs.Root, c.exp.ino, r.off+done, z[:n]); err != nil {
				return fsError(cmdWriteZeroes, err, "write zeroes [%d, +%d)", r.off+done, n)
			}
			done += n
		}
	} else if r.length > 0 {
		if err := c.s.f.Punch(c.ctx, fs.Root, c.exp.ino, r.off, uint64(r.length)); err != nil {
			return fsError(cmdWriteZeroes, err, "write zeroes [%d, +%d)", r.off, r.length)
		}
	}
	if err := c.fua(r); err != nil {
		return err
	}
	c.sendOK(r)
	return nil
}

// cache reads the range into the filesystem's cache before replying.
func (c *conn) cache(r request) *reqError {
	if r.length > 0 {
		if err := c.s.f.Prefetch(c.ctx, c.exp.ino, r.off, uint64(r.length)); err != nil {
			return fsError(cmdCache, err, "cache [%d, +%d)", r.off, r.length)
		}
	}
	c.sendOK(r)
	return nil
}

// maxStatusDescs bounds descriptors in one BLOCK_STATUS reply (the spec's
// SHOULD NOT exceed 2^20).
const maxStatusDescs = 1 << 20

// blockStatus answers base:allocation from fs.Extents: holes are
// NBD_STATE_HOLE|NBD_STATE_ZERO, data is 0. The reply may describe only a
// prefix of the range (fs.Extents bounds its work), which the spec allows.
func (c *conn) blockStatus(r request) *reqError {
	ext, err := c.s.f.Extents(c.ctx, c.exp.ino, r.off, uint64(r.length))
	if err != nil {
		return fsError(cmdBlockStatus, err, "block status [%d, +%d)", r.off, r.length)
	}
	descs := statusDescs(ext, r)
	c.send(&reply{parts: [][]byte{appendBlockStatus(nil, r.cookie, metaBaseAllocationID, descs)}})
	return nil
}

// statusDescs converts extents of [r.off, r.off+r.length) to descriptors,
// merging neighbours of equal status and honouring REQ_ONE. Extents never
// extend past the request (fs.Extents clamps), so each fits 32 bits. No
// extents means the range lies past the file's current end (the file shrank
// under this connection): it reads as zeros, so it is reported as a hole.
//
// Descriptors are positional, so the extents must be contiguous from
// r.off; if they are not (never expected of fs.Extents), the contiguous
// prefix is reported, or the whole range as status 0 ("allocated or
// unknown", always a safe answer).
func statusDescs(ext []fs.Extent, r request) []statusDesc {
	var descs []statusDesc
	pos := r.off
	for _, e := range ext {
		if e.Off != pos || e.Len == 0 || e.Len > uint64(r.length) {
			break
		}
		pos += e.Len
		var flags uint32
		if e.Hole {
			flags = stateHole | stateZero
		}
		if k := len(descs) - 1; k >= 0 && descs[k].flags == flags {
			descs[k].length += uint32(e.Len)
			continue
		}
		if len(descs) == maxStatusDescs {
			break
		}
		descs = append(descs, statusDesc{length: uint32(e.Len), flags: flags})
	}
	if len(descs) == 0 {
		flags := uint32(0)
		if len(ext) == 0 {
			flags = stateHole | stateZero
		}
		descs = append(descs, statusDesc{length: r.length, flags: flags})
	}
	if r.flags&cmdFlagReqOne != 0 {
		descs = descs[:1]
	}
	return descs
}
