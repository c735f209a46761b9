package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A record is one object in the WAL store, at key Key(seq):
//
//	header  HeaderSize bytes, fixed layout below
//	meta    metaLen bytes: the caller's metadata (zerofs: the sealed batch delta)
//	data    dataLen bytes: the caller's data (zerofs: encrypted data frames)
//
// The fixed-size header lets the caller compute, before the record exists,
// the absolute offset of every byte of its data (HeaderSize + metaLen + i), so
// metadata can point straight into the record and the record can later be
// read as a data object with ranged GETs ("adopted" instead of copied).
//
// Header layout (little endian):
//
//	0   magic "ZFSWAL" (6 bytes) + format version (uint16)
//	8   filesystem id (16 bytes): a record of another filesystem is never replayed
//	24  seq (uint64)
//	32  epoch of the writer (uint64)
//	40  record id (uint64, random): tells a writer's own retried PUT from another's
//	48  flags (uint32)
//	52  metaLen (uint32)
//	56  dataLen (uint64)
//	64  CRC32C of meta (uint32)
//	68  CRC32C of data (uint32)
//	72  reserved (uint32, zero)
//	76  CRC32C of bytes 0..75 (uint32)
const HeaderSize = 80

const (
	recordMagic   = "ZFSWAL"
	recordVersion = 1

	// FlagFence marks the empty record a new writer appends right after
	// replay: it takes the next sequence number so that an older writer's next
	// append fails, and it carries no caller data.
	FlagFence uint32 = 1
)

// ErrCorrupt means a WAL record or the head object failed its checks.
var ErrCorrupt = errors.New("corrupt WAL object")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Key is the object key of record seq. Zero-padded hex keeps List order equal
// to sequence order.
func Key(seq uint64) string { return fmt.Sprintf("wal/%016x", seq) }

// parseKey is the inverse of Key; ok is false for foreign keys.
func parseKey(key string) (seq uint64, ok bool) {
	if len(key) != 4+16 || key[:4] != "wal/" {
		return 0, false
	}
	var v uint64
	for _, c := range key[4:] {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// header is the decoded fixed part of a record.
type header struct {
	fsid    [16]byte
	seq     uint64
	epoch   uint64
	id      uint64
	flags   uint32
	metaLen uint32
	dataLen uint64
	metaCRC uint32
	dataCRC uint32
}

func (h *header) encode(b []byte) {
	_ = b[HeaderSize-1]
	copy(b[0:6], recordMagic)
	binary.LittleEndian.PutUint16(b[6:8], recordVersion)
	copy(b[8:24], h.fsid[:])
	binary.LittleEndian.PutUint64(b[24:], h.seq)
	binary.LittleEndian.PutUint64(b[32:], h.epoch)
	binary.LittleEndian.PutUint64(b[40:], h.id)
	binary.LittleEndian.PutUint32(b[48:], h.flags)
	binary.LittleEndian.PutUint32(b[52:], h.metaLen)
	binary.LittleEndian.PutUint64(b[56:], h.dataLen)
	binary.LittleEndian.PutUint32(b[64:], h.metaCRC)
	binary.LittleEndian.PutUint32(b[68:], h.dataCRC)
	binary.LittleEndian.PutUint32(b[72:], 0)
	binary.LittleEndian.PutUint32(b[76:], crc32.Checksum(b[:76], castagnoli))
}

func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("record of %d bytes is shorter than its %d-byte header: %w", len(b), HeaderSize, ErrCorrupt)
	}
	if string(b[0:6]) != recordMagic {
		return h, fmt.Errorf("bad record magic %q: %w", b[0:6], ErrCorrupt)
	}
	if got, want := crc32.Checksum(b[:76], castagnoli), binary.LittleEndian.Uint32(b[76:]); got != want {
		return h, fmt.Errorf("record header checksum %08x, want %08x: %w", got, want, ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint16(b[6:8]); v != recordVersion {
		return h, fmt.Errorf("record format version %d, this build reads %d: %w", v, recordVersion, ErrCorrupt)
	}
	copy(h.fsid[:], b[8:24])
	h.seq = binary.LittleEndian.Uint64(b[24:])
	h.epoch = binary.LittleEndian.Uint64(b[32:])
	h.id = binary.LittleEndian.Uint64(b[40:])
	h.flags = binary.LittleEndian.Uint32(b[48:])
	h.metaLen = binary.LittleEndian.Uint32(b[52:])
	h.dataLen = binary.LittleEndian.Uint64(b[56:])
	h.metaCRC = binary.LittleEndian.Uint32(b[64:])
	h.dataCRC = binary.LittleEndian.Uint32(b[68:])
	return h, nil
}

// encodeRecord lays out a whole record object from its parts.
func encodeRecord(h header, meta, data []byte) []byte {
	b := make([]byte, HeaderSize+len(meta)+len(data))
	copy(b[HeaderSize:], meta)
	copy(b[HeaderSize+len(meta):], data)
	h.fill(b, len(meta))
	return b
}

// fill completes h from a record laid out in rec (meta then data after the
// header space) and writes it into rec[:HeaderSize].
func (h *header) fill(rec []byte, metaLen int) {
	meta, data := rec[HeaderSize:HeaderSize+metaLen], rec[HeaderSize+metaLen:]
	h.metaLen = uint32(len(meta))
	h.dataLen = uint64(len(data))
	h.metaCRC = crc32.Checksum(meta, castagnoli)
	h.dataCRC = crc32.Checksum(data, castagnoli)
	h.encode(rec[:HeaderSize])
}

// Record is one replayed record as handed to the Replay callback.
type Record struct {
	Seq   uint64
	Epoch uint64
	ID    uint64
	Flags uint32
	// Meta is the caller's metadata, checksum verified.
	Meta []byte
	// DataOffset is the offset of the first data byte within the record
	// object; DataLen its length. Data is not read during replay.
	DataOffset int64
	DataLen    int64
}
