package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// The saved index: a warm start in constant time.
//
// Rebuilding the index reads every slot's header: 0.6–0.9 s per GiB of
// cache from a cold disk here (disk_open.go), so a 50 GB cache would hold
// every client's I/O for most of a minute at each start. A clean Close
// therefore writes the index to index.snap, and OpenDisk loads it instead
// of scanning: one sequential read of 16 bytes per live slot (a GiB of
// 68 KiB slots: 240 KiB).
//
// OpenDisk removes the file as soon as it has read it, so only a cache
// that was closed cleanly since its last write has one; after a crash the
// index is rebuilt by the scan, in the background (the cache misses until
// each shard is scanned). A stale snapshot (its removal lost to a power
// cut) is harmless all the same: every Get checks the slot's header — its
// number, id and checksums — so an index entry that no longer matches its
// slot reads as a miss, never as wrong data.
//
// Format (little-endian), then a CRC32C of all that precedes it:
//
//	magic   "ZFCI" + format version (indexFormat), 4 bytes
//	metaLen uint32, then cache.meta's bytes: a snapshot of another
//	        configuration (slot size, slots, shards) is ignored
//	seq     uint64: the last write sequence number
//	count   uint64, then count entries of 16 bytes:
//	        slot uint32, length uint32 (bit 31: the CLOCK reference bit), id uint64
const (
	diskIndexName = "index.snap"
	indexFormat   = 1
	indexRefBit   = 1 << 31
)

var indexMagic = [4]byte{'Z', 'F', 'C', 'I'}

// saveIndex writes the index of a fully scanned cache to dir's index.snap
// (through a temporary file and a rename). Entries are taken shard by
// shard under the shard's lock; Puts still in flight are left out and so
// are free again at the next open.
func (d *Disk) saveIndex(dir string, meta []byte) error {
	var b bytes.Buffer
	b.Write(indexMagic[:3])
	b.WriteByte(indexFormat)
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(meta))))
	b.Write(meta)
	b.Write(binary.LittleEndian.AppendUint64(nil, d.seq.Load()))
	countAt := b.Len()
	b.Write(make([]byte, 8))
	var count uint64
	var e [16]byte
	for k := range d.shards {
		s := &d.shards[k]
		s.mu.Lock()
		if !s.ready {
			s.mu.Unlock()
			return errors.New("index not complete: the scan has not finished")
		}
		for id, i := range s.index {
			m := &s.slots[i]
			length := m.length
			if m.ref {
				length |= indexRefBit
			}
			binary.LittleEndian.PutUint32(e[0:], s.base+i)
			binary.LittleEndian.PutUint32(e[4:], length)
			binary.LittleEndian.PutUint64(e[8:], id)
			b.Write(e[:])
			count++
		}
		s.mu.Unlock()
	}
	out := b.Bytes()
	binary.LittleEndian.PutUint64(out[countAt:], count)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	path := filepath.Join(dir, diskIndexName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// errNoIndex: there is no saved index (the last run did not close the
// cache cleanly, or this is its first).
var errNoIndex = errors.New("no saved index")

// loadIndex fills the shards from dir's index.snap, if it is there and
// describes a cache of this configuration, and removes the file. On any
// error the shards are untouched and the caller scans.
func (d *Disk) loadIndex(dir string, meta []byte) (int64, error) {
	path := filepath.Join(dir, diskIndexName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errNoIndex
	}
	// Read once: from here on the file describes the past.
	if rerr := os.Remove(path); rerr != nil && err == nil {
		return 0, fmt.Errorf("remove %s: %w", diskIndexName, rerr)
	}
	if err != nil {
		return 0, err
	}
	if len(data) < 4+4+8+8+4 || !bytes.Equal(data[:3], indexMagic[:3]) || data[3] != indexFormat {
		return 0, fmt.Errorf("%s: not an index of format %d", diskIndexName, indexFormat)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, fmt.Errorf("%s: checksum mismatch", diskIndexName)
	}
	p := body[4:]
	metaLen := int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if metaLen > len(p) || !bytes.Equal(p[:metaLen], meta) {
		return 0, fmt.Errorf("%s: saved for another configuration", diskIndexName)
	}
	p = p[metaLen:]
	if len(p) < 16 {
		return 0, fmt.Errorf("%s: truncated", diskIndexName)
	}
	seq, count := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
	p = p[16:]
	if uint64(len(p)) != count*16 {
		return 0, fmt.Errorf("%s: %d bytes of entries, want %d", diskIndexName, len(p), count*16)
	}
	// Check everything before changing anything.
	seen := make(map[uint32]bool, count)
	for off := 0; off < len(p); off += 16 {
		slot, length, id := binary.LittleEndian.Uint32(p[off:]), binary.LittleEndian.Uint32(p[off+4:])&^indexRefBit, binary.LittleEndian.Uint64(p[off+8:])
		s := d.shardFor(id)
		if int64(slot) >= d.nslots || slot < s.base || slot-s.base >= uint32(len(s.slots)) || seen[slot] || int(length) > d.maxPayload {
			return 0, fmt.Errorf("%s: entry for slot %d (id %016x, %d bytes) does not fit this cache", diskIndexName, slot, id, length)
		}
		seen[slot] = true
	}
	for off := 0; off < len(p); off += 16 {
		slot, length, id := binary.LittleEndian.Uint32(p[off:]), binary.LittleEndian.Uint32(p[off+4:]), binary.LittleEndian.Uint64(p[off+8:])
		s := d.shardFor(id)
		if old, dup := s.index[id]; dup { // the same id twice: keep one
			s.slots[old] = slotMeta{}
		}
		i := slot - s.base
		s.index[id] = i
		s.slots[i] = slotMeta{id: id, length: length &^ indexRefBit, state: slotLive, ref: length&indexRefBit != 0}
	}
	var entries int64
	for k := range d.shards {
		s := &d.shards[k]
		var b int64
		for i := len(s.slots) - 1; i >= 0; i-- {
			if s.slots[i].state != slotLive {
				s.pushFree(uint32(i))
			}
		}
		for _, i := range s.index {
			b += int64(s.slots[i].length)
		}
		s.live.Store(int64(len(s.index)))
		s.bytes.Store(b)
		s.ready = true
		entries += int64(len(s.index))
	}
	d.seq.Store(seq)
	return entries, nil
}
