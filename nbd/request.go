package nbd

import (
	"encoding/binary"
	"fmt"
)

// Request decoding and validation are pure functions over bytes and the
// session's parameters, so that they can be unit-tested and fuzzed
// (FuzzDecodeRequest) without a connection.

// request is a decoded transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
}

// errBadMagic: the stream is not at a request header. Nothing after it can be
// trusted, so the connection is closed (the spec allows a hard disconnect on
// a violated MUST).
type errBadMagic uint32

func (e errBadMagic) Error() string {
	return fmt.Sprintf("request magic %#08x, want %#08x: stream out of sync", uint32(e), requestMagic)
}

// decodeRequest decodes a request header (requestHeaderLen bytes).
func decodeRequest(b []byte) (request, error) {
	if len(b) != requestHeaderLen {
		return request{}, fmt.Errorf("request header of %d bytes, want %d", len(b), requestHeaderLen)
	}
	if m := binary.BigEndian.Uint32(b); m != requestMagic {
		return request{}, errBadMagic(m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		cookie: binary.BigEndian.Uint64(b[8:]),
		off:    binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// encodeRequest is decodeRequest's inverse (tests and the test client).
func encodeRequest(r request) []byte {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, requestHeaderLen), requestMagic)
	b = binary.BigEndian.AppendUint16(b, r.flags)
	b = binary.BigEndian.AppendUint16(b, r.typ)
	b = binary.BigEndian.AppendUint64(b, r.cookie)
	b = binary.BigEndian.AppendUint64(b, r.off)
	return binary.BigEndian.AppendUint32(b, r.length)
}

// session is what request validation needs to know about the connection.
type session struct {
	size       uint64 // export size, fixed for the connection
	readOnly   bool
	structured bool   // structured replies negotiated
	meta       bool   // base:allocation selected for this export
	maxPayload uint32 // the largest READ or WRITE served; 0: advertisedMaxPayload
}

func (s session) payloadLimit() uint32 {
	if s.maxPayload == 0 {
		return advertisedMaxPayload
	}
	return s.maxPayload
}

// verdict is the outcome of validating a request header.
type verdict struct {
	// payload is the number of bytes following the header that belong to
	// this request (WRITE's data). The reader consumes them before the next
	// header whatever the verdict, so the stream stays in sync.
	payload uint32
	// disc: NBD_CMD_DISC, the client's soft disconnect.
	disc bool
	// err, if set, is replied without executing the request; the payload,
	// if any, is read and thrown away without being buffered.
	err *reqError
}

// flagsAllowed lists the command flags each command accepts. FUA is accepted
// on every command, as the spec requires of servers advertising
// NBD_FLAG_SEND_FUA (clients are known to set it on reads); it only has an
// effect on commands that write.
func flagsAllowed(typ uint16, s session) uint16 {
	allowed := cmdFlagFUA
	switch typ {
	case cmdRead:
		if s.structured {
			allowed |= cmdFlagDF
		}
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole | cmdFlagFastZero
	case cmdBlockStatus:
		allowed |= cmdFlagReqOne
	}
	return allowed
}

// checkRequest validates r against the session. The checks, in this order:
//
//   - DISC ends the session whatever its fields.
//   - Unknown commands: EINVAL. Only WRITE carries a payload in the protocol
//     we negotiate (no extended headers), so an unknown command is assumed
//     to have none; if a client sent one anyway, the next "header" fails the
//     magic check and the connection is closed.
//   - Flags not documented for the command (or not negotiated): EINVAL.
//   - Payload sizes: WRITE above the session's maximum payload (served: up
//     to Options.MaxPayload, 64 MiB by default) is EINVAL (its
//     payload is read and discarded, never buffered); READ above it is
//     EINVAL with simple replies and EOVERFLOW with structured replies
//     (the spec's error for "retry with smaller reads").
//   - FLUSH with a nonzero offset or length (reserved, MUST be zero): EINVAL.
//   - BLOCK_STATUS without base:allocation selected: EINVAL.
//   - Writes (WRITE, TRIM, WRITE_ZEROES) to a read-only export: EPERM.
//   - Ranges past the end of the export: ENOSPC for WRITE and WRITE_ZEROES,
//     EINVAL for READ, TRIM, CACHE and BLOCK_STATUS, as the spec asks.
//   - Zero lengths: READ, WRITE, TRIM, WRITE_ZEROES and CACHE of 0 bytes at
//     an offset within [0, size] succeed and do nothing (the spec leaves
//     this unspecified); BLOCK_STATUS of 0 bytes is EINVAL, because its
//     reply must describe at least one byte.
//   - WRITE_ZEROES with FAST_ZERO and NO_HOLE: ENOTSUP, because writing
//     zeros is no faster than a write (without NO_HOLE we punch a hole,
//     which is fast at any length).
func checkRequest(r request, s session) verdict {
	var v verdict
	if r.typ == cmdWrite {
		v.payload = r.length
	}
	name := cmdName(r.typ)
	switch r.typ {
	case cmdDisc:
		v.disc = true
		return v
	case cmdRead, cmdWrite, cmdFlush, cmdTrim, cmdCache, cmdWriteZeroes, cmdBlockStatus:
	default:
		v.err = newReqError(errInval, "unknown command %d", r.typ)
		return v
	}
	if bad := r.flags &^ flagsAllowed(r.typ, s); bad != 0 {
		v.err = newReqError(errInval, "%s: flags %#x not valid for this command", name, bad)
		return v
	}
	limit := s.payloadLimit()
	switch {
	case r.typ == cmdWrite && r.length > limit:
		v.err = newReqError(errInval, "%s of %d bytes exceeds this server's maximum payload of %d", name, r.length, limit)
		return v
	case r.typ == cmdRead && r.length > limit:
		code := uint32(errInval)
		if s.structured {
			code = errOverflow
		}
		v.err = newReqError(code, "%s of %d bytes exceeds this server's maximum payload of %d", name, r.length, limit)
		return v
	case r.typ == cmdFlush && (r.off != 0 || r.length != 0):
		v.err = newReqError(errInval, "%s with offset %d and length %d: both must be zero", name, r.off, r.length)
		return v
	case r.typ == cmdBlockStatus && !s.meta:
		v.err = newReqError(errInval, "%s without a negotiated metadata context", name)
		return v
	case s.readOnly && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes):
		v.err = newReqError(errPerm, "%s on a read-only export", name)
		return v
	}
	if r.typ == cmdFlush {
		return v
	}
	end := r.off + uint64(r.length)
	if end < r.off || end > s.size {
		code := uint32(errInval)
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			code = errNoSpc
		}
		v.err = newReqError(code, "%s [%d, +%d) beyond the export's %d bytes", name, r.off, r.length, s.size)
		return v
	}
	if r.typ == cmdBlockStatus && r.length == 0 {
		v.err = newReqError(errInval, "%s of 0 bytes", name)
		return v
	}
	if r.typ == cmdWriteZeroes && r.flags&cmdFlagFastZero != 0 && r.flags&cmdFlagNoHole != 0 {
		v.err = newReqError(errNotSup, "%s with NO_HOLE is not faster than a write", name)
		return v
	}
	return v
}

// cmdName names a command for messages and the Observe hook.
func cmdName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdDisc:
		return "disc"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdCache:
		return "cache"
	case cmdWriteZeroes:
		return "write_zeroes"
	case cmdBlockStatus:
		return "block_status"
	}
	return "unknown"
}
