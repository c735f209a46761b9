package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	diskDataName = "frames.cache"
	diskMetaName = "cache.meta"

	// Scanning. Slots of up to scanBlockMaxSlot bytes are scanned by reading
	// the file sequentially in blocks of about scanBlock bytes, by one
	// goroutine: their headers are dense enough that reading everything
	// costs little more than reading one page per header, and large
	// sequential reads are what disks do best. Bigger slots are scanned with
	// one small pread per header (the kernel reads one page for each) from
	// scanWorkers goroutines, so that an SSD sees a queue of requests.
	//
	// Measured on a full 1 GiB cache (2-core VM, virtio disk, BenchmarkDiskScan),
	// 68 KiB slots (15,420 header preads): 24 ms from the page cache,
	// 0.6-0.9 s cold (1.6 s with one goroutine; 8 or 16 were no faster than
	// 4). 4 KiB slots (262,144 headers, block reads): 0.4 s warm, 1.3 s
	// cold. Reading all of a 68 KiB-slot file in blocks would cost the 1.3 s
	// too, so the crossover is around 40-50 KiB slots here; 32 KiB keeps
	// slots that fit in a few pages on the block path.
	scanBlockMaxSlot = 32 << 10
	scanWorkers      = 4
)

// scanBlock is the size of the scan's block reads (a variable so tests can
// make the blocks small).
var scanBlock = 4 << 20

// OpenDisk opens (creating if needed) the disk cache in dir, holding
// capacityBytes rounded down to whole slots of slotSize bytes; each slot holds
// one frame of up to SlotPayload(slotSize) bytes. Pick slotSize as the largest
// encoded frame worth caching plus DiskHeaderSize, preferably a multiple of
// 4096 (for 64 KiB chunks, 68 KiB leaves room for compression's worst case
// and the encryption overhead).
//
// If dir holds a cache from a previous run with the same slot size, slot
// count and format, its entries are kept. The index comes from index.snap
// if the last Close saved it (disk_index.go); otherwise (a crash) it is
// rebuilt in the background by reading every slot's header, one header
// read per slot (a 10 GiB cache of 68 KiB slots has about 154k), and
// OpenDisk returns before that scan ends; WaitScan waits for it. Stats
// reports either as ScanTime. Otherwise (no cache.meta, a different
// configuration, an empty data file) the cache starts empty. A data file of
// the right configuration but the wrong length (truncated) is resized and
// keeps the entries in its remaining slots.
//
// The data file is preallocated to its full size, so the cache has its disk
// space from the start; an error is returned if it cannot be (disk full),
// as for a dir that cannot be created or a cache already open in another
// process (the data file is flock'ed). A capacityBytes of zero or less
// returns a disabled cache, on which every Get misses, without touching dir.
// log may be nil.
func OpenDisk(dir string, capacityBytes int64, slotSize int, log *slog.Logger) (*Disk, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Disk{log: log, slotSize: slotSize, scanDone: make(chan struct{})}
	if capacityBytes <= 0 {
		close(d.scanDone)
		return d, nil
	}
	if slotSize < MinDiskSlotSize || slotSize > MaxDiskSlotSize {
		return nil, fmt.Errorf("disk cache: slot size %d out of range [%d, %d]", slotSize, MinDiskSlotSize, MaxDiskSlotSize)
	}
	n := capacityBytes / int64(slotSize)
	if n == 0 {
		return nil, fmt.Errorf("disk cache: capacity %d bytes is less than one %d-byte slot", capacityBytes, slotSize)
	}
	n = min(n, math.MaxUint32) // slot numbers are 32 bits in the header
	d.nslots = n
	d.maxPayload = SlotPayload(slotSize)
	d.bufs.New = func() any { b := make([]byte, slotSize); return &b }

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, diskDataName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("disk cache %s is in use by another process: %w", dir, err)
	}
	d.f = f
	fail := func(err error) (*Disk, error) {
		f.Close()
		return nil, fmt.Errorf("disk cache %s: %w", dir, err)
	}

	shards := shardCount(n)
	d.shards = make([]diskShard, shards)
	d.shift = uint(64 - bits.TrailingZeros(uint(shards)))
	for k := range d.shards {
		d.shards[k].init(shardBounds(k, shards, n))
	}

	size := n * int64(slotSize)
	meta := diskMeta(slotSize, n, shards)
	d.dir, d.meta = dir, meta
	reason := ""
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	switch have, err := os.ReadFile(filepath.Join(dir, diskMetaName)); {
	case errors.Is(err, fs.ErrNotExist):
		reason = "new cache"
	case err != nil:
		reason = "cannot read " + diskMetaName + ": " + err.Error()
	case !bytes.Equal(have, meta):
		reason = "configuration or format changed"
	case st.Size() == 0:
		reason = "empty data file"
	}
	if reason != "" {
		log.Info("disk cache: starting empty", "dir", dir, "reason", reason, "slots", n, "slot_size", slotSize)
		if err := d.recreate(dir, size, meta); err != nil {
			return fail(err)
		}
		for k := range d.shards {
			d.shards[k].freeAll()
			d.shards[k].ready = true
		}
		os.Remove(filepath.Join(dir, diskIndexName))
		close(d.scanDone)
		return d, nil
	}

	if st.Size() != size {
		log.Warn("disk cache: data file has the wrong length; resizing it and keeping what it holds",
			"dir", dir, "length", st.Size(), "want", size)
		if st.Size() > size {
			err = f.Truncate(size)
		} else {
			err = preallocate(f, size)
		}
		if err != nil {
			return fail(err)
		}
	}
	start := time.Now()
	entries, err := d.loadIndex(dir, meta)
	if err == nil {
		d.indexLoaded = true
		d.scanEntries.Store(entries)
		d.scanTime.Store(int64(time.Since(start)))
		close(d.scanDone)
		log.Info("disk cache: opened from its saved index", "dir", dir, "entries", entries, "slots", n,
			"slot_size", slotSize, "load_time", time.Since(start).Round(time.Millisecond))
		return d, nil
	}
	if !errors.Is(err, errNoIndex) {
		log.Warn("disk cache: saved index unusable; scanning the cache", "dir", dir, "err", err)
	}
	// No index saved: the last run did not close the cache (a crash). The
	// scan runs in the background; shards serve as it finishes them.
	log.Info("disk cache: rebuilding its index in the background (the last run did not close it)", "dir", dir, "slots", n, "slot_size", slotSize)
	d.scanning.Store(true)
	go func() {
		defer close(d.scanDone)
		defer d.scanning.Store(false)
		d.scan()
		d.scanTime.Store(int64(time.Since(start)))
		log.Info("disk cache: index rebuilt", "dir", dir, "entries", d.scanEntries.Load(), "slots", n,
			"slot_size", slotSize, "scan_time", time.Since(start).Round(time.Millisecond), "stopped", d.closed.Load())
	}()
	return d, nil
}

// diskMeta is the content of cache.meta for a cache of n slots of slotSize
// bytes in the given number of shards. An existing data file is used only if
// cache.meta matches it byte for byte.
func diskMeta(slotSize int, n int64, shards int) []byte {
	return fmt.Appendf(nil, "zerofs disk cache\nformat %d\nheader_size %d\nslot_size %d\nslots %d\nshards %d\n",
		slotFormat, DiskHeaderSize, slotSize, n, shards)
}

// recreate empties the data file, preallocates it to size and writes meta.
// cache.meta is removed first and written last, so a crash part way leaves a
// cache that the next open recreates again.
func (d *Disk) recreate(dir string, size int64, meta []byte) error {
	metaPath := filepath.Join(dir, diskMetaName)
	if err := os.Remove(metaPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := d.f.Truncate(0); err != nil {
		return err
	}
	if err := preallocate(d.f, size); err != nil {
		d.f.Truncate(0) // give back whatever part was allocated
		return err
	}
	tmp := metaPath + ".tmp"
	if err := os.WriteFile(tmp, meta, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, metaPath)
}

// freeAll puts every slot of an empty shard on the free list, lowest first.
func (s *diskShard) freeAll() {
	for i := len(s.slots) - 1; i >= 0; i-- {
		s.free = append(s.free, uint32(i))
	}
}

// scan rebuilds the index from the slot headers. Shards are scanned
// independently by up to scanWorkers goroutines, each made ready as soon
// as it is done (scanShard).
func (d *Disk) scan() {
	var (
		next    atomic.Int64
		entries atomic.Int64
		maxSeq  atomic.Uint64
		wg      sync.WaitGroup
	)
	workers := min(scanWorkers, len(d.shards))
	if d.slotSize <= scanBlockMaxSlot {
		// Sequential block reads: more goroutines would only make the disk
		// seek between them.
		workers = 1
	}
	for range workers {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(len(d.shards)) {
					return
				}
				e, seq := d.scanShard(&d.shards[k])
				entries.Add(e)
				for {
					cur := maxSeq.Load()
					if seq <= cur || maxSeq.CompareAndSwap(cur, seq) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	d.scanEntries.Store(entries.Load())
	d.seq.Store(max(d.seq.Load(), maxSeq.Load()))
}

// scanShard indexes the valid headers in s's slots and returns how many it
// indexed and the highest sequence number it saw. A header for an id that
// belongs to another shard (possible only in a damaged file) is ignored. Of
// two slots holding the same id, the one written last (highest seq) is kept
// and the other emptied.
//
// The shard is built apart and installed under its lock at the end: until
// then it is not ready (its Gets miss, its Puts are dropped, nothing else
// touches its slots), and the lock is never held across the reads. A scan
// stopped by Close leaves the shard not ready.
func (d *Disk) scanShard(s *diskShard) (entries int64, maxSeq uint64) {
	slots := make([]slotMeta, len(s.slots))
	index := make(map[uint64]uint32)
	seqs := make([]uint64, len(s.slots))
	var stale []uint32
	visit := func(i uint32, h slotHeader) {
		if d.shardFor(h.id) != s {
			return
		}
		maxSeq = max(maxSeq, h.seq)
		if j, dup := index[h.id]; dup {
			if seqs[j] >= h.seq {
				stale = append(stale, i)
				return
			}
			stale = append(stale, j)
			slots[j] = slotMeta{}
			entries--
		}
		index[h.id] = i
		slots[i] = slotMeta{id: h.id, length: h.length, state: slotLive}
		seqs[i] = h.seq
		entries++
	}

	n := uint32(len(s.slots))
	if d.slotSize <= scanBlockMaxSlot {
		per := max(1, scanBlock/d.slotSize)
		buf := make([]byte, per*d.slotSize)
		for i := uint32(0); i < n; i += uint32(per) {
			if d.closed.Load() {
				return 0, 0
			}
			cnt := min(uint32(per), n-i)
			got, err := d.f.ReadAt(buf[:int(cnt)*d.slotSize], d.offset(s.base+i))
			if err != nil && err != io.EOF {
				d.errs.report(d.log, errRead, err, s.base+i, 0)
			}
			for k := uint32(0); k < cnt && int(k)*d.slotSize+DiskHeaderSize <= got; k++ {
				b := buf[int(k)*d.slotSize:]
				if h, ok := parseHeader(b, s.base+i+k, d.maxPayload); ok {
					visit(i+k, h)
				}
			}
		}
	} else {
		var hdr [DiskHeaderSize]byte
		for i := uint32(0); i < n; i++ {
			if i%1024 == 0 && d.closed.Load() {
				return 0, 0
			}
			if _, err := d.f.ReadAt(hdr[:], d.offset(s.base+i)); err != nil {
				if err != io.EOF {
					d.errs.report(d.log, errRead, err, s.base+i, 0)
				}
				continue
			}
			if h, ok := parseHeader(hdr[:], s.base+i, d.maxPayload); ok {
				visit(i, h)
			}
		}
	}

	for _, i := range stale {
		if _, err := d.f.WriteAt(zeroHeader[:], d.offset(s.base+i)); err != nil {
			d.errs.report(d.log, errWrite, err, s.base+i, 0)
		}
	}
	var b int64
	for _, i := range index {
		b += int64(slots[i].length)
	}
	// Sequence numbers go on from the highest this shard holds, before it
	// takes Puts.
	for {
		cur := d.seq.Load()
		if maxSeq <= cur || d.seq.CompareAndSwap(cur, maxSeq) {
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.slots, slots) // s.slots itself is never reallocated
	s.index = index
	s.free = s.free[:0]
	for i := int(n) - 1; i >= 0; i-- {
		if s.slots[i].state != slotLive {
			s.pushFree(uint32(i))
		}
	}
	s.live.Store(entries)
	s.bytes.Store(b)
	s.ready = true
	return entries, maxSeq
}

// lockFile takes an exclusive flock on f without waiting. Closing f releases
// it.
func lockFile(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		ferr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
	}); err != nil {
		return err
	}
	return ferr
}
