package nfs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// XDR (RFC 4506) is all this package speaks: big-endian 32-bit words,
// 64-bit hypers, and variable-length opaques and strings as a length word
// followed by the bytes padded to a multiple of four.
//
// The decoder works on one whole RPC record that is already in memory, so
// every length is checked against the bytes actually left before anything is
// allocated or sliced: a hostile length can make a decode fail, never make the
// server allocate or panic. Decoded opaques alias the record (no copy); they
// are valid while the request is being served.

// errGarbage marks arguments that do not decode; the RPC layer answers
// GARBAGE_ARGS.
var errGarbage = errors.New("arguments do not decode as XDR")

// xdrReader decodes XDR from a byte slice. The first failure is sticky: it
// sets err and every later read returns a zero value, so decoders are plain
// sequential code with one error check at the end.
type xdrReader struct {
	b   []byte
	err error
}

func (r *xdrReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{errGarbage}, args...)...)
	}
	r.b = nil
}

func (r *xdrReader) uint32() uint32 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 4 {
		r.fail("truncated: want a 4-byte word, have %d bytes", len(r.b))
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) uint64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail("truncated: want an 8-byte hyper, have %d bytes", len(r.b))
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// bool decodes an XDR boolean; anything but 0 or 1 is malformed.
func (r *xdrReader) bool() bool {
	switch v := r.uint32(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail("boolean of value %d", v)
		return false
	}
}

// fixed decodes fixed-length opaque data of n bytes (plus padding).
func (r *xdrReader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	padded := pad4(n)
	if padded > len(r.b) {
		r.fail("truncated: want %d bytes of opaque data, have %d", n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[padded:]
	return v
}

// opaque decodes variable-length opaque data of at most max bytes.
func (r *xdrReader) opaque(max uint32) []byte {
	n := r.uint32()
	if r.err != nil {
		return nil
	}
	if n > max {
		r.fail("opaque of %d bytes exceeds its bound of %d", n, max)
		return nil
	}
	if uint64(n) > uint64(len(r.b)) {
		r.fail("truncated: opaque of %d bytes, have %d", n, len(r.b))
		return nil
	}
	return r.fixed(int(n))
}

// string decodes an XDR string of at most max bytes. Contents are not
// validated here: names are checked by package fs.
func (r *xdrReader) string(max uint32) string { return string(r.opaque(max)) }

// remaining is the number of undecoded bytes.
func (r *xdrReader) remaining() int { return len(r.b) }

func pad4(n int) int { return (n + 3) &^ 3 }

// xdrWriter appends XDR to a byte slice.
type xdrWriter struct {
	b []byte
}

func (w *xdrWriter) uint32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *xdrWriter) uint64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }

func (w *xdrWriter) bool(v bool) {
	if v {
		w.uint32(1)
	} else {
		w.uint32(0)
	}
}

// fixed appends fixed-length opaque data with its padding.
func (w *xdrWriter) fixed(p []byte) {
	w.b = append(w.b, p...)
	if n := pad4(len(p)) - len(p); n > 0 {
		w.b = append(w.b, make([]byte, n)...)
	}
}

// opaque appends variable-length opaque data.
func (w *xdrWriter) opaque(p []byte) {
	w.uint32(uint32(len(p)))
	w.fixed(p)
}

func (w *xdrWriter) string(s string) {
	w.uint32(uint32(len(s)))
	w.b = append(w.b, s...)
	if n := pad4(len(s)) - len(s); n > 0 {
		w.b = append(w.b, make([]byte, n)...)
	}
}

// len is the number of bytes written so far.
func (w *xdrWriter) len() int { return len(w.b) }

// truncate drops everything written after the first n bytes.
func (w *xdrWriter) truncate(n int) { w.b = w.b[:n] }

// putUint32 overwrites the word at byte offset off (a field whose value is
// known only after what follows it was written, such as a count).
func (w *xdrWriter) putUint32(off int, v uint32) { binary.BigEndian.PutUint32(w.b[off:], v) }
