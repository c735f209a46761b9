package nbd

import "bytes"

// zeroBlock is what zero detection compares against.
var zeroBlock = make([]byte, preferredBlockSize)

// isZero reports whether b is all zeros.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
