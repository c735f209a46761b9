package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// contentETag is the ETag of the local backends (mem and file): the hex
// SHA-256 of the content. Equal content gives equal ETags, as with a plain S3
// PUT, and a collision is out of reach, so PutIfMatch cannot be fooled.
func contentETag(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// clampRange turns Get's (off, length) into [start, end) within an object of
// size bytes, following the Store.Get contract: a range running past the end
// is shortened, one starting past the end is ErrInvalidRange, and off == size
// is a valid empty read.
func clampRange(size, off, length int64) (start, end int64, err error) {
	if off < 0 {
		return 0, 0, fmt.Errorf("%w: negative offset %d", ErrInvalidRange, off)
	}
	if off > size {
		return 0, 0, fmt.Errorf("%w: offset %d beyond size %d", ErrInvalidRange, off, size)
	}
	end = size
	if length >= 0 && length < size-off {
		end = off + length
	}
	return off, end, nil
}
