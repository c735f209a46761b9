package nbd

import (
	"encoding/binary"
	"strings"

	"zerofs/fs"
)

// Reply encoding: pure functions appending wire bytes.

const (
	simpleReplyLen = 16 // magic(4) error(4) cookie(8)
	chunkHeaderLen = 20 // magic(4) flags(2) type(2) cookie(8) length(4)
	// maxErrorMessage bounds the human-readable text in error chunks: the
	// spec's limit on strings.
	maxErrorMessage = maxStringLen
)

// appendSimpleReply appends a simple reply header; a successful READ's data
// follows it.
func appendSimpleReply(dst []byte, errno uint32, cookie uint64) []byte {
	dst = binary.BigEndian.AppendUint32(dst, simpleReplyMagic)
	dst = binary.BigEndian.AppendUint32(dst, errno)
	return binary.BigEndian.AppendUint64(dst, cookie)
}

// appendChunkHeader appends a structured reply chunk header announcing length
// bytes of payload.
func appendChunkHeader(dst []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, structuredReplyMagic)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, cookie)
	return binary.BigEndian.AppendUint32(dst, length)
}

// appendNoneChunk appends NBD_REPLY_TYPE_NONE, the final chunk of a reply
// with nothing (more) to say.
func appendNoneChunk(dst []byte, cookie uint64) []byte {
	return appendChunkHeader(dst, replyFlagDone, replyTypeNone, cookie, 0)
}

// appendErrorChunk appends a final NBD_REPLY_TYPE_ERROR chunk.
func appendErrorChunk(dst []byte, cookie uint64, errno uint32, msg string) []byte {
	msg = clipMessage(msg)
	dst = appendChunkHeader(dst, replyFlagDone, replyTypeError, cookie, uint32(6+len(msg)))
	dst = binary.BigEndian.AppendUint32(dst, errno)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...)
}

// appendOffsetDataHeader appends an NBD_REPLY_TYPE_OFFSET_DATA chunk header
// and the offset; n bytes of data must follow.
func appendOffsetDataHeader(dst []byte, cookie uint64, flags uint16, off uint64, n int) []byte {
	dst = appendChunkHeader(dst, flags, replyTypeOffsetData, cookie, uint32(8+n))
	return binary.BigEndian.AppendUint64(dst, off)
}

// appendOffsetHole appends an NBD_REPLY_TYPE_OFFSET_HOLE chunk.
func appendOffsetHole(dst []byte, cookie uint64, flags uint16, off uint64, n uint32) []byte {
	dst = appendChunkHeader(dst, flags, replyTypeOffsetHole, cookie, 12)
	dst = binary.BigEndian.AppendUint64(dst, off)
	return binary.BigEndian.AppendUint32(dst, n)
}

// statusDesc is one block status descriptor.
type statusDesc struct {
	length uint32
	flags  uint32
}

// appendBlockStatus appends a final NBD_REPLY_TYPE_BLOCK_STATUS chunk for
// context id. descs must not be empty.
func appendBlockStatus(dst []byte, cookie uint64, id uint32, descs []statusDesc) []byte {
	dst = appendChunkHeader(dst, replyFlagDone, replyTypeBlockStatus, cookie, uint32(4+8*len(descs)))
	dst = binary.BigEndian.AppendUint32(dst, id)
	for _, d := range descs {
		dst = binary.BigEndian.AppendUint32(dst, d.length)
		dst = binary.BigEndian.AppendUint32(dst, d.flags)
	}
	return dst
}

// clipMessage bounds an error message to the spec's string limit, cutting at
// a rune boundary so it stays valid UTF-8.
func clipMessage(msg string) string {
	msg = strings.ToValidUTF8(strings.ReplaceAll(msg, "\x00", ""), "?")
	if len(msg) <= maxErrorMessage {
		return msg
	}
	cut := maxErrorMessage
	for cut > 0 && msg[cut]&0xc0 == 0x80 { // inside a multi-byte rune
		cut--
	}
	return msg[:cut]
}

// segment is part of a structured READ reply: data or a hole.
type segment struct {
	off  uint64 // absolute export offset
	n    int
	hole bool
}

// segmentsFromHoles splits n bytes read at export offset off into data and
// hole segments, given the holes the filesystem reported (sorted, within the
// range). Hole segments are whole preferred-size blocks, aligned to the
// export (the spec's SHOULD about 512-byte multiples); the zero bytes at a
// hole's unaligned edges go out as data. The segments cover the range
// exactly, in order, alternating.
func segmentsFromHoles(off uint64, n int, holes []fs.Extent) []segment {
	var segs []segment
	add := func(at, end uint64, hole bool) {
		if at >= end {
			return
		}
		if k := len(segs) - 1; k >= 0 && segs[k].hole == hole {
			segs[k].n += int(end - at)
			return
		}
		segs = append(segs, segment{off: at, n: int(end - at), hole: hole})
	}
	end := off + uint64(n)
	pos := off
	for _, h := range holes {
		lo := max(h.Off, pos)
		hi := min(h.Off+h.Len, end)
		lo = (lo + preferredBlockSize - 1) / preferredBlockSize * preferredBlockSize
		hi = hi / preferredBlockSize * preferredBlockSize
		if lo >= hi {
			continue
		}
		add(pos, lo, false)
		add(lo, hi, true)
		pos = hi
	}
	add(pos, end, false)
	return segs
}
