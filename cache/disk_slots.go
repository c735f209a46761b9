package cache

import (
	"encoding/binary"
	"hash/crc32"
)

// On-disk slot format.
//
// The data file is an array of slots, each slotSize bytes, slot i at byte
// offset i*slotSize. A slot holds one frame: a fixed header followed by the
// payload (the frame's encoded bytes); the rest of the slot is unused. All
// integers are little-endian.
//
//	off  size  field
//	  0     4  magic    "ZFC" followed by the format version (slotFormat)
//	  4     4  slot     this slot's number: catches a header read at the wrong offset
//	  8     8  id       frame id
//	 16     8  seq      write sequence number; at open, the newest copy of an id wins
//	 24     4  length   payload length, at most SlotPayload(slotSize)
//	 28     4  pcrc     CRC32C (Castagnoli) of the payload
//	 32     4  reserved zero
//	 36     4  hcrc     CRC32C of bytes 0..35 of the header
//
// hcrc covers pcrc, so the pair is a checksum of header and payload together.
// Splitting it lets the open-time scan validate a header without reading the
// payload; Get checks both (and the slot number and id) on every read. A slot
// whose header fails its checks is empty; an all-zero header (a never-written
// or cleared slot) fails them because the magic is wrong.
const (
	// DiskHeaderSize is the size of a slot's header; a slot of slotSize bytes
	// holds a payload of at most slotSize-DiskHeaderSize bytes.
	DiskHeaderSize = 40

	slotFormat = 1
	slotMagic  = uint32('Z') | uint32('F')<<8 | uint32('C')<<16 | uint32(slotFormat)<<24

	hdrMagic  = 0
	hdrSlot   = 4
	hdrID     = 8
	hdrSeq    = 16
	hdrLength = 24
	hdrPCRC   = 28
	hdrHCRC   = 36

	// MinDiskSlotSize and MaxDiskSlotSize bound OpenDisk's slotSize.
	MinDiskSlotSize = 2 * DiskHeaderSize
	MaxDiskSlotSize = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SlotPayload is the largest frame a slot of slotSize bytes holds: Put ignores
// frames longer than this. It is 0 for a slotSize too small to hold anything.
func SlotPayload(slotSize int) int {
	if slotSize <= DiskHeaderSize {
		return 0
	}
	return slotSize - DiskHeaderSize
}

// slotHeader is a decoded header.
type slotHeader struct {
	slot   uint32
	id     uint64
	seq    uint64
	length uint32
	pcrc   uint32
}

// putHeader encodes h into b[:DiskHeaderSize].
func putHeader(b []byte, h slotHeader) {
	_ = b[DiskHeaderSize-1]
	binary.LittleEndian.PutUint32(b[hdrMagic:], slotMagic)
	binary.LittleEndian.PutUint32(b[hdrSlot:], h.slot)
	binary.LittleEndian.PutUint64(b[hdrID:], h.id)
	binary.LittleEndian.PutUint64(b[hdrSeq:], h.seq)
	binary.LittleEndian.PutUint32(b[hdrLength:], h.length)
	binary.LittleEndian.PutUint32(b[hdrPCRC:], h.pcrc)
	binary.LittleEndian.PutUint32(b[32:], 0)
	binary.LittleEndian.PutUint32(b[hdrHCRC:], crc32.Checksum(b[:hdrHCRC], castagnoli))
}

// parseHeader decodes b[:DiskHeaderSize] as the header of slot number slot in
// a file whose slots hold at most maxPayload bytes. ok is false if the header
// is not a valid one for that slot (empty, torn, foreign or damaged).
func parseHeader(b []byte, slot uint32, maxPayload int) (h slotHeader, ok bool) {
	if len(b) < DiskHeaderSize {
		return h, false
	}
	if binary.LittleEndian.Uint32(b[hdrMagic:]) != slotMagic ||
		binary.LittleEndian.Uint32(b[hdrHCRC:]) != crc32.Checksum(b[:hdrHCRC], castagnoli) {
		return h, false
	}
	h = slotHeader{
		slot:   binary.LittleEndian.Uint32(b[hdrSlot:]),
		id:     binary.LittleEndian.Uint64(b[hdrID:]),
		seq:    binary.LittleEndian.Uint64(b[hdrSeq:]),
		length: binary.LittleEndian.Uint32(b[hdrLength:]),
		pcrc:   binary.LittleEndian.Uint32(b[hdrPCRC:]),
	}
	if h.slot != slot || int64(h.length) > int64(maxPayload) ||
		binary.LittleEndian.Uint32(b[32:]) != 0 {
		return h, false
	}
	return h, true
}

// encodeSlot writes the header and payload of a slot into buf, which must hold
// DiskHeaderSize+len(data) bytes, and returns the bytes to write.
func encodeSlot(buf []byte, slot uint32, id, seq uint64, data []byte) []byte {
	b := buf[:DiskHeaderSize+len(data)]
	copy(b[DiskHeaderSize:], data)
	putHeader(b, slotHeader{
		slot: slot, id: id, seq: seq, length: uint32(len(data)),
		pcrc: crc32.Checksum(data, castagnoli),
	})
	return b
}

// checkSlot reports whether b, read from slot number slot, holds frame id with
// exactly wantLen payload bytes and intact checksums.
func checkSlot(b []byte, slot uint32, id uint64, wantLen int, maxPayload int) bool {
	h, ok := parseHeader(b, slot, maxPayload)
	if !ok || h.id != id || int(h.length) != wantLen || len(b) != DiskHeaderSize+wantLen {
		return false
	}
	return crc32.Checksum(b[DiskHeaderSize:], castagnoli) == h.pcrc
}
