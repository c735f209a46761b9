package crypt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Sealed blob layout (version 1). All integers are big-endian.
//
//	offset  size  field
//	     0     6  magic "ZFSBLB"
//	     6     2  format version (1)
//	     8     4  block size B in bytes (plaintext per block; 1 MiB when written)
//	    12     8  plaintext length N
//	    20     8  block count C = max(1, ceil(N / B))
//	    28     4  CRC32C (Castagnoli) of bytes [0, 28)
//	    32        C sealed blocks, back to back. Block i holds plaintext
//	              [i*B, min((i+1)*B, N)) and is k.Seal'ed (nonce || ciphertext
//	              || tag, Overhead bytes more than its plaintext) with
//	              associated data
//	                  aad || i (8 bytes) || final flag (1 byte, 1 on block C-1)
//	                  || N (8 bytes)
//
// Why blocks: metadata blobs reach hundreds of MiB; independent blocks keep
// the AEAD working set bounded, and damage is confined to a block. Why that
// associated data: the index stops reordering and swapping, the final flag
// and N stop truncation and dropped blocks (every block commits to the total
// length and to whether it is last), and the caller's aad (typically the
// object key) stops a whole blob or a block being moved between objects.
//
// Empty data still gets one (empty) sealed block. Without it an empty blob
// would carry no tag at all and anyone could forge one; with it every valid
// blob proves knowledge of the key.
//
// The header CRC only separates accidental damage from tampering; it is not
// what protects the header. N is bound into every block's associated data,
// and B and C decide where blocks begin and end, so any edit to them either
// makes a block fail to open or (e.g. raising B past N on a one-block blob)
// leaves the decrypted plaintext exactly as written.
const (
	blobMagic      = "ZFSBLB"
	blobVersion    = 1
	blobHeaderLen  = 32
	blobCRCOff     = 28
	blobAADSuffix  = 8 + 1 + 8 // index, final flag, total length
	maxBlobBlockSz = 64 << 20  // accepted on read; bounds per-block work
)

// BlobBlockSize is the plaintext size of each block SealBlob writes.
const BlobBlockSize = 1 << 20

// ErrCorruptBlob means a sealed blob is structurally damaged: bad magic,
// unknown version, header checksum mismatch, or lengths that do not add up
// (for example a truncated object). Tampering that leaves the structure
// consistent is reported as ErrAuth instead.
var ErrCorruptBlob = errors.New("corrupt sealed blob")

// SealBlob encrypts data with k in independently sealed blocks, binding aad
// (which the reader must present unchanged to OpenBlob). See the layout
// above.
func SealBlob(k *Key, data []byte, aad []byte) []byte {
	return sealBlob(k, data, aad, BlobBlockSize)
}

// sealBlob is SealBlob with a chosen block size; tests use small blocks to
// exercise multi-block logic cheaply.
func sealBlob(k *Key, data, aad []byte, blockSize int) []byte {
	if blockSize <= 0 || blockSize > maxBlobBlockSz {
		panic(fmt.Sprintf("crypt: blob block size %d out of range", blockSize))
	}
	n := len(data)
	count := blobBlockCount(uint64(n), uint64(blockSize))

	out := make([]byte, blobHeaderLen, blobHeaderLen+n+int(count)*Overhead)
	copy(out, blobMagic)
	binary.BigEndian.PutUint16(out[6:], blobVersion)
	binary.BigEndian.PutUint32(out[8:], uint32(blockSize))
	binary.BigEndian.PutUint64(out[12:], uint64(n))
	binary.BigEndian.PutUint64(out[20:], count)
	binary.BigEndian.PutUint32(out[blobCRCOff:], crc32.Checksum(out[:blobCRCOff], castagnoli))

	ad := blobAAD(aad, uint64(n))
	for i := uint64(0); i < count; i++ {
		start := int(i) * blockSize
		end := min(start+blockSize, n)
		setBlockAAD(ad, i, i == count-1)
		out = k.Seal(out, data[start:end], ad)
	}
	return out
}

// OpenBlob authenticates and decrypts a blob made by SealBlob with the same
// aad. Structural damage wraps ErrCorruptBlob; anything that fails
// authentication (bit flips, reordered, swapped or foreign blocks, a
// different aad, the wrong key) wraps ErrAuth. It never allocates more than
// len(blob) bytes of output, whatever the header claims.
func OpenBlob(k *Key, blob []byte, aad []byte) ([]byte, error) {
	corrupt := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("open sealed blob: %w: %s", ErrCorruptBlob, fmt.Sprintf(format, args...))
	}
	if len(blob) < blobHeaderLen {
		return corrupt("%d bytes, shorter than the %d-byte header", len(blob), blobHeaderLen)
	}
	if string(blob[:len(blobMagic)]) != blobMagic {
		return corrupt("bad magic %q", blob[:len(blobMagic)])
	}
	if v := binary.BigEndian.Uint16(blob[6:]); v != blobVersion {
		return corrupt("unknown format version %d (this build reads version %d)", v, blobVersion)
	}
	if got, want := crc32.Checksum(blob[:blobCRCOff], castagnoli), binary.BigEndian.Uint32(blob[blobCRCOff:]); got != want {
		return corrupt("header checksum mismatch (computed %08x, stored %08x)", got, want)
	}
	blockSize := uint64(binary.BigEndian.Uint32(blob[8:]))
	n := binary.BigEndian.Uint64(blob[12:])
	count := binary.BigEndian.Uint64(blob[20:])
	if blockSize == 0 || blockSize > maxBlobBlockSz {
		return corrupt("block size %d out of range [1, %d]", blockSize, maxBlobBlockSz)
	}
	// Check the claimed sizes against what we actually hold before doing
	// arithmetic that could overflow or allocations that could be huge.
	body := uint64(len(blob) - blobHeaderLen)
	if n > body {
		return corrupt("header claims %d plaintext bytes but only %d bytes follow it", n, body)
	}
	if want := blobBlockCount(n, blockSize); count != want {
		return corrupt("header claims %d blocks, %d bytes in blocks of %d need %d", count, n, blockSize, want)
	}
	// count <= n/blockSize+1 <= body+1, so this cannot overflow.
	if want := n + count*Overhead; body != want {
		return corrupt("%d bytes of blocks, want %d for %d blocks holding %d bytes (truncated or trailing data)", body, want, count, n)
	}

	out := make([]byte, 0, n)
	ad := blobAAD(aad, n)
	off := uint64(blobHeaderLen)
	for i := uint64(0); i < count; i++ {
		plain := min(blockSize, n-i*blockSize)
		end := off + plain + Overhead
		setBlockAAD(ad, i, i == count-1)
		var err error
		out, err = k.Open(out, blob[off:end], ad)
		if err != nil {
			return nil, fmt.Errorf("open sealed blob: block %d of %d: %w", i, count, err)
		}
		off = end
	}
	return out, nil
}

// blobBlockCount is max(1, ceil(n / blockSize)).
func blobBlockCount(n, blockSize uint64) uint64 {
	if n == 0 {
		return 1
	}
	return (n-1)/blockSize + 1
}

// blobAAD returns a fresh buffer aad || index || final || n with the index
// and flag left for setBlockAAD to fill in per block.
func blobAAD(aad []byte, n uint64) []byte {
	ad := make([]byte, len(aad)+blobAADSuffix)
	copy(ad, aad)
	binary.BigEndian.PutUint64(ad[len(ad)-8:], n)
	return ad
}

func setBlockAAD(ad []byte, index uint64, final bool) {
	tail := ad[len(ad)-blobAADSuffix:]
	binary.BigEndian.PutUint64(tail, index)
	tail[8] = 0
	if final {
		tail[8] = 1
	}
}
