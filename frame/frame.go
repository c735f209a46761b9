// Package frame encodes data frames, the unit in which file data is stored:
// one frame holds the bytes of one piece of one chunk, compressed (zstd, lz4
// or not at all) and then sealed with XChaCha20-Poly1305.
//
// The associated data binds the frame's identity: its frame id (unique
// forever: the writer's epoch in the high bits), the inode and the chunk index
// it belongs to. A frame read back from anywhere — an object, the disk cache,
// a segment it was later moved into — is therefore either exactly the frame
// the metadata asked for, or an authentication error; a frame swapped with
// another, moved to another file, or corrupted is never returned as data.
// Because the binding is to the identity and not to the location, frames can
// be moved between objects verbatim (packing and garbage collection) without
// being re-encrypted.
//
// Sealed plaintext layout: codec (1 byte) | raw length (uvarint) | payload.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"zerofs/crypt"
)

// MaxRaw bounds the decoded size of one frame; larger lengths in a frame are
// corruption and never lead to an allocation.
const MaxRaw = 4 << 20

// Codec is a compression method.
type Codec uint8

const (
	None Codec = 0
	Zstd Codec = 1
	LZ4  Codec = 2
)

func (c Codec) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	case LZ4:
		return "lz4"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// ParseCodec parses a configuration name: "zstd", "lz4" or "none".
func ParseCodec(name string) (Codec, error) {
	switch strings.ToLower(name) {
	case "zstd", "":
		return Zstd, nil
	case "lz4":
		return LZ4, nil
	case "none", "off":
		return None, nil
	}
	return 0, fmt.Errorf("unknown compression %q: use zstd, lz4 or none", name)
}

// ErrCorrupt means a frame failed authentication or decoding.
var ErrCorrupt = errors.New("corrupt data frame")

// ID is the identity a frame is bound to.
type ID struct {
	Frame uint64 // unique frame id
	Ino   uint64
	Chunk uint64
}

func (id ID) aad() []byte {
	var b [8 + 24]byte
	copy(b[:8], "zfsframe")
	binary.LittleEndian.PutUint64(b[8:], id.Frame)
	binary.LittleEndian.PutUint64(b[16:], id.Ino)
	binary.LittleEndian.PutUint64(b[24:], id.Chunk)
	return b[:]
}

// Coder encodes and decodes frames under one data key. Safe for concurrent use.
type Coder struct {
	key   *crypt.Key
	codec Codec
	zenc  *zstd.Encoder
	zdec  *zstd.Decoder
}

// NewCoder returns a coder that compresses new frames with codec. It decodes
// frames of every codec, whatever codec it encodes with.
func NewCoder(key *crypt.Key, codec Codec) (*Coder, error) {
	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	zdec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxRaw))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Coder{key: key, codec: codec, zenc: zenc, zdec: zdec}, nil
}

// Overhead bounds the bytes Encode adds to an incompressible frame.
const Overhead = crypt.Overhead + 1 + binary.MaxVarintLen32

// Prepared is a frame compressed and ready to be sealed, whose final size is
// known: the sealer lays out a whole WAL record before encrypting anything,
// so frames are encrypted straight into their place in it.
type Prepared struct {
	ID      ID
	hdr     [1 + binary.MaxVarintLen32]byte // codec | raw length
	hdrLen  int
	payload []byte // the raw bytes, or their compressed form
}

// Size is the sealed frame's length.
func (p *Prepared) Size() int { return crypt.Overhead + p.hdrLen + len(p.payload) }

// Prepare compresses raw with the coder's codec, keeping it uncompressed when
// that saves less than 1/32 of it. The result refers to raw.
func (c *Coder) Prepare(raw []byte, id ID) Prepared {
	if len(raw) > MaxRaw {
		panic(fmt.Sprintf("frame: %d raw bytes exceed MaxRaw", len(raw)))
	}
	p := Prepared{ID: id, payload: raw}
	used := None
	codec := c.codec
	if codec != None && len(raw) >= 4*probeSize && !c.probe(raw) {
		codec = None
	}
	switch codec {
	case Zstd:
		if out := c.zenc.EncodeAll(raw, nil); len(out) < len(raw)-len(raw)/32 {
			p.payload, used = out, Zstd
		}
	case LZ4:
		out := make([]byte, lz4.CompressBlockBound(len(raw)))
		comp := lz4Compressors.Get().(*lz4.Compressor)
		n, err := comp.CompressBlock(raw, out)
		lz4Compressors.Put(comp)
		if err == nil && n > 0 && n < len(raw)-len(raw)/32 {
			p.payload, used = out[:n], LZ4
		}
	}
	p.hdr[0] = byte(used)
	p.hdrLen = 1 + binary.PutUvarint(p.hdr[1:], uint64(len(raw)))
	return p
}

// lz4Compressors reuses LZ4's 64 KiB hash tables, which would otherwise be
// allocated and zeroed for every frame.
var lz4Compressors = sync.Pool{New: func() any { return new(lz4.Compressor) }}

// probeSize is the sample compressed to decide whether a large frame is
// worth compressing at all.
const probeSize = 4 << 10

// probe reports whether a sample from the middle of raw compresses. Data that
// is already compressed or encrypted (a ZFS pool with compression on, media,
// backups) is the common case on a block device, and trying to compress all
// of it halves encoding throughput for nothing; a 4 KiB probe costs a
// sixteenth of that for a 64 KiB frame. A frame whose sample is incompressible
// but whose rest is not is stored uncompressed: a little space, never data.
func (c *Coder) probe(raw []byte) bool {
	mid := len(raw) / 2
	sample := raw[mid-probeSize/2 : mid+probeSize/2]
	var out []byte
	switch c.codec {
	case Zstd:
		out = c.zenc.EncodeAll(sample, make([]byte, 0, probeSize))
	case LZ4:
		buf := make([]byte, lz4.CompressBlockBound(probeSize))
		comp := lz4Compressors.Get().(*lz4.Compressor)
		n, err := comp.CompressBlock(sample, buf)
		lz4Compressors.Put(comp)
		if err != nil || n == 0 {
			return false
		}
		out = buf[:n]
	default:
		return false
	}
	return len(out) < probeSize-probeSize/32
}

// SealInto encrypts p into dst, which must be exactly p.Size() bytes and
// must not overlap p's payload.
func (c *Coder) SealInto(dst []byte, p *Prepared) {
	if len(dst) != p.Size() {
		panic(fmt.Sprintf("frame: SealInto a %d-byte buffer, frame is %d", len(dst), p.Size()))
	}
	n := copy(dst[crypt.NonceSize:], p.hdr[:p.hdrLen])
	copy(dst[crypt.NonceSize+n:], p.payload)
	c.key.SealInPlace(dst, p.ID.aad())
}

// Encode compresses raw (keeping it uncompressed when that saves less than
// 1/32 of it) and seals it bound to id, appending the sealed frame to dst.
func (c *Coder) Encode(dst, raw []byte, id ID) []byte {
	p := c.Prepare(raw, id)
	n := len(dst)
	dst = append(dst, make([]byte, p.Size())...)
	c.SealInto(dst[n:], &p)
	return dst
}

// Decode authenticates box against id, decompresses it and appends the raw
// bytes to dst. Any failure wraps ErrCorrupt.
func (c *Coder) Decode(dst, box []byte, id ID) ([]byte, error) {
	plain, err := c.key.Open(nil, box, id.aad())
	if err != nil {
		return nil, fmt.Errorf("frame %016x (inode %d chunk %d): %w: %w", id.Frame, id.Ino, id.Chunk, ErrCorrupt, err)
	}
	if len(plain) < 2 {
		return nil, fmt.Errorf("frame %016x: %d-byte plaintext: %w", id.Frame, len(plain), ErrCorrupt)
	}
	rawLen, n := binary.Uvarint(plain[1:])
	if n <= 0 || rawLen > MaxRaw {
		return nil, fmt.Errorf("frame %016x: bad raw length: %w", id.Frame, ErrCorrupt)
	}
	payload := plain[1+n:]
	start := len(dst)
	switch Codec(plain[0]) {
	case None:
		dst = append(dst, payload...)
	case Zstd:
		dst, err = c.zdec.DecodeAll(payload, dst)
		if err != nil {
			return nil, fmt.Errorf("frame %016x: zstd: %v: %w", id.Frame, err, ErrCorrupt)
		}
	case LZ4:
		dst = append(dst, make([]byte, rawLen)...)
		m, err := lz4.UncompressBlock(payload, dst[start:])
		if err != nil {
			return nil, fmt.Errorf("frame %016x: lz4: %v: %w", id.Frame, err, ErrCorrupt)
		}
		dst = dst[:start+m]
	default:
		return nil, fmt.Errorf("frame %016x: unknown codec %d: %w", id.Frame, plain[0], ErrCorrupt)
	}
	if uint64(len(dst)-start) != rawLen {
		return nil, fmt.Errorf("frame %016x: decoded %d bytes, header says %d: %w", id.Frame, len(dst)-start, rawLen, ErrCorrupt)
	}
	return dst, nil
}
