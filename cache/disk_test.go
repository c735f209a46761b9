package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// frameFor is the deterministic content stored under id in these tests: its
// length and bytes depend on id, so any mix-up between ids shows. maxLen
// bounds the length (at least 1).
func frameFor(id uint64, maxLen int) []byte {
	r := rand.New(rand.NewPCG(id, 0x5eed))
	n := 1 + int(id*7919%uint64(maxLen))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// openDiskT opens a disk cache that is closed when the test ends, and
// waits for its index to be whole.
func openDiskT(t testing.TB, dir string, capacity int64, slotSize int) *Disk {
	t.Helper()
	d, err := OpenDisk(dir, capacity, slotSize, nil)
	if err != nil {
		t.Fatalf("OpenDisk: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	d.WaitScan()
	return d
}

// dropIndex removes the index a Close saved: the cache is as a crash left
// it, and the next open scans. Tests that change the data file behind the
// cache's back (only a crash or damage does that) call it, so the scan
// sees their changes.
func dropIndex(t testing.TB, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, diskIndexName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

// mustGet checks that id is present with exactly want.
func mustGet(t *testing.T, d *Disk, id uint64, want []byte) {
	t.Helper()
	got, ok := d.Get(id)
	if !ok {
		t.Fatalf("Get(%d): miss, want %d bytes", id, len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%d): wrong bytes (len %d, want %d)", id, len(got), len(want))
	}
}

func mustMiss(t *testing.T, d *Disk, id uint64) {
	t.Helper()
	if got, ok := d.Get(id); ok {
		t.Fatalf("Get(%d): hit with %d bytes, want miss", id, len(got))
	}
}

// flipByte XORs one byte of the data file at off, behind the cache's back.
func flipByte(t *testing.T, dir string, off int64) {
	t.Helper()
	dropIndex(t, dir)
	f, err := os.OpenFile(filepath.Join(dir, diskDataName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestDiskSlotPayload(t *testing.T) {
	for _, tc := range []struct {
		name string
		slot int
		want int
	}{
		{"zero", 0, 0},
		{"header only", DiskHeaderSize, 0},
		{"one byte", DiskHeaderSize + 1, 1},
		{"68 KiB", 68 << 10, 68<<10 - DiskHeaderSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SlotPayload(tc.slot); got != tc.want {
				t.Fatalf("SlotPayload(%d) = %d, want %d", tc.slot, got, tc.want)
			}
		})
	}
}

func TestDiskOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int64
		slot     int
	}{
		{"slot too small", 1 << 20, MinDiskSlotSize - 1},
		{"slot too big", 1 << 30, MaxDiskSlotSize + 1},
		{"capacity under one slot", 4095, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := OpenDisk(t.TempDir(), tc.capacity, tc.slot, nil)
			if err == nil {
				d.Close()
				t.Fatal("OpenDisk succeeded")
			}
		})
	}
}

func TestDiskDisabled(t *testing.T) {
	for _, capacity := range []int64{0, -1} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			d := openDiskT(t, dir, capacity, 4096)
			d.Put(1, []byte("x"))
			mustMiss(t, d, 1)
			d.Delete(1)
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("disabled cache touched its dir: %v", err)
			}
			if st := d.Stats(); st.Misses != 1 || st.SlotsTotal != 0 || st.Puts != 0 {
				t.Fatalf("stats %+v", st)
			}
			if d.MaxValueSize() != -1 {
				t.Fatalf("MaxValueSize %d", d.MaxValueSize())
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDiskOps runs scripted sequences against a fresh single-shard cache of
// 8 slots of 1 KiB.
func TestDiskOps(t *testing.T) {
	const slot = 1024
	payload := SlotPayload(slot)
	type op struct {
		kind string // put, get (expect hit with frameFor), miss, del
		id   uint64
		n    int // put: payload length (0 = frameFor)
	}
	for _, tc := range []struct {
		name string
		ops  []op
		want DiskStats // only the counters checked below
	}{
		{"round trip", []op{{"put", 1, 0}, {"get", 1, 0}, {"get", 1, 0}},
			DiskStats{Hits: 2, Puts: 1, SlotsUsed: 1}},
		{"miss", []op{{"miss", 7, 0}, {"put", 1, 0}, {"miss", 2, 0}},
			DiskStats{Misses: 2, Puts: 1, SlotsUsed: 1}},
		{"delete", []op{{"put", 1, 0}, {"put", 2, 0}, {"del", 1, 0}, {"miss", 1, 0}, {"get", 2, 0}, {"del", 9, 0}},
			DiskStats{Hits: 1, Misses: 1, Puts: 2, Deletes: 1, SlotsUsed: 1}},
		{"full payload", []op{{"put", 3, payload}, {"get", 3, payload}},
			DiskStats{Hits: 1, Puts: 1, SlotsUsed: 1}},
		{"oversized ignored", []op{{"put", 3, payload + 1}, {"miss", 3, 0}},
			DiskStats{Misses: 1, Oversized: 1}},
		{"empty frame", []op{{"put", 4, -1}, {"get", 4, -1}},
			DiskStats{Hits: 1, Puts: 1, SlotsUsed: 1}},
		{"replace", []op{{"put", 5, 10}, {"put", 5, 0}, {"get", 5, 0}},
			DiskStats{Hits: 1, Puts: 2, SlotsUsed: 1}},
		{"put after delete", []op{{"put", 6, 0}, {"del", 6, 0}, {"put", 6, 0}, {"get", 6, 0}},
			DiskStats{Hits: 1, Puts: 2, Deletes: 1, SlotsUsed: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := openDiskT(t, t.TempDir(), 8*slot, slot)
			data := func(o op) []byte {
				switch {
				case o.n == 0:
					return frameFor(o.id, payload)
				case o.n < 0:
					return []byte{}
				default:
					return bytes.Repeat([]byte{byte(o.id)}, o.n)
				}
			}
			for i, o := range tc.ops {
				switch o.kind {
				case "put":
					buf := data(o)
					d.Put(o.id, buf)
					clear(buf) // Put copies: the caller may reuse its buffer
				case "get":
					mustGet(t, d, o.id, data(o))
				case "miss":
					mustMiss(t, d, o.id)
				case "del":
					d.Delete(o.id)
				default:
					t.Fatalf("op %d: bad kind %q", i, o.kind)
				}
			}
			st := d.Stats()
			got := DiskStats{Hits: st.Hits, Misses: st.Misses, Puts: st.Puts, Deletes: st.Deletes,
				Oversized: st.Oversized, SlotsUsed: st.SlotsUsed}
			if got != tc.want {
				t.Fatalf("stats %+v, want %+v", got, tc.want)
			}
			if st.SlotsTotal != 8 || st.Capacity != 8*slot || st.Corrupt+st.ReadErrors+st.WriteErrors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestDiskClock checks second-chance eviction on a 4-slot cache: a Get
// protects an entry from the next eviction.
func TestDiskClock(t *testing.T) {
	const slot = 512
	d := openDiskT(t, t.TempDir(), 4*slot, slot)
	p := SlotPayload(slot)
	for id := uint64(1); id <= 4; id++ {
		d.Put(id, frameFor(id, p))
	}
	mustGet(t, d, 1, frameFor(1, p)) // slot 0 referenced
	d.Put(5, frameFor(5, p))         // hand clears slot 0's bit, evicts slot 1 (id 2)
	mustMiss(t, d, 2)
	for _, id := range []uint64{1, 3, 4, 5} {
		mustGet(t, d, id, frameFor(id, p))
	}
	if st := d.Stats(); st.Evictions != 1 || st.SlotsUsed != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDiskEviction overfills caches and checks the capacity holds and every
// hit is the right frame.
func TestDiskEviction(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int64
		slot  int
		puts  uint64
	}{
		{"one shard", 16, 1024, 200},
		{"many shards", 4 * minShardSlots, 256, 6000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := openDiskT(t, t.TempDir(), tc.slots*int64(tc.slot)+100, tc.slot)
			p := SlotPayload(tc.slot)
			r := rand.New(rand.NewPCG(1, 2))
			for id := uint64(0); id < tc.puts; id++ {
				d.Put(id, frameFor(id, p))
				if q := r.Uint64N(id + 1); r.IntN(2) == 0 {
					if got, ok := d.Get(q); ok && !bytes.Equal(got, frameFor(q, p)) {
						t.Fatalf("Get(%d): wrong bytes", q)
					}
				}
			}
			st := d.Stats()
			if st.SlotsTotal != tc.slots || st.SlotsUsed > tc.slots || st.Puts != tc.puts {
				t.Fatalf("stats %+v", st)
			}
			if st.Evictions != tc.puts-uint64(st.SlotsUsed) {
				t.Fatalf("evictions %d, want %d", st.Evictions, tc.puts-uint64(st.SlotsUsed))
			}
			fi, err := os.Stat(filepath.Join(d.dirForTest(t), diskDataName))
			if err != nil || fi.Size() != tc.slots*int64(tc.slot) {
				t.Fatalf("data file: %v, %v", fi, err)
			}
			hits := int64(0)
			for id := uint64(0); id < tc.puts; id++ {
				if got, ok := d.Get(id); ok {
					hits++
					if !bytes.Equal(got, frameFor(id, p)) {
						t.Fatalf("Get(%d): wrong bytes", id)
					}
				}
			}
			if hits != st.SlotsUsed {
				t.Fatalf("%d hits, %d slots used", hits, st.SlotsUsed)
			}
		})
	}
}

// dirForTest finds the directory of d's data file.
func (d *Disk) dirForTest(t *testing.T) string {
	t.Helper()
	return filepath.Dir(d.f.Name())
}

// TestDiskReopen checks that entries survive Close and OpenDisk, in both scan
// modes, and that deleted and replaced entries do not come back.
func TestDiskReopen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slot  int
		slots int64
		block int
	}{
		{"block scan", 1024, 3000, 4 << 20},                     // one block a shard, four shards
		{"small blocks", 1024, 3000, 7 * 1024},                  // blocks end mid shard
		{"header scan", scanBlockMaxSlot + 4096, 1100, 4 << 20}, // per-slot preads, two shards
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(b int) { scanBlock = b }(scanBlock)
			scanBlock = tc.block
			dir := t.TempDir()
			p := SlotPayload(tc.slot)
			d := openDiskT(t, dir, tc.slots*int64(tc.slot), tc.slot)
			const n = 500
			for id := uint64(1000); id < 1000+n; id++ {
				d.Put(id, frameFor(id, p))
			}
			d.Delete(1001)
			d.Put(1002, []byte("replaced"))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			mustMiss(t, d, 1000) // closed

			d = openDiskT(t, dir, tc.slots*int64(tc.slot), tc.slot)
			st := d.Stats()
			if st.ScanEntries != n-1 || st.SlotsUsed != n-1 {
				t.Fatalf("after reopen: %+v", st)
			}
			mustMiss(t, d, 1001)
			mustGet(t, d, 1002, []byte("replaced"))
			for id := uint64(1003); id < 1000+n; id++ {
				mustGet(t, d, id, frameFor(id, p))
			}
			// Writes continue with sequence numbers above the old ones, so a
			// replacement made now wins at the next open too.
			d.Put(1002, []byte("again"))
			d.Put(5, frameFor(5, p))
			d.Close()
			d = openDiskT(t, dir, tc.slots*int64(tc.slot), tc.slot)
			mustGet(t, d, 1002, []byte("again"))
			mustGet(t, d, 5, frameFor(5, p))
			if st := d.Stats(); st.SlotsUsed != n {
				t.Fatalf("after second reopen: %+v", st)
			}
		})
	}
}

// TestDiskReopenIncompatible checks that any change of configuration, or a
// missing or damaged cache.meta, starts the cache empty.
func TestDiskReopenIncompatible(t *testing.T) {
	const slot, capacity = 1024, 64 * 1024
	for _, tc := range []struct {
		name     string
		slot     int
		capacity int64
		meta     func(path string) error
	}{
		{"slot size", 2048, capacity, nil},
		{"capacity", slot, capacity - slot, nil},
		{"capacity grows", slot, 4 * capacity, nil},
		{"meta missing", slot, capacity, os.Remove},
		{"meta damaged", slot, capacity, func(p string) error { return os.WriteFile(p, []byte("zerofs disk cache\nformat 99\n"), 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openDiskT(t, dir, capacity, slot)
			for id := uint64(0); id < 20; id++ {
				d.Put(id, frameFor(id, 500))
			}
			d.Close()
			if tc.meta != nil {
				if err := tc.meta(filepath.Join(dir, diskMetaName)); err != nil {
					t.Fatal(err)
				}
			}
			d = openDiskT(t, dir, tc.capacity, tc.slot)
			for id := uint64(0); id < 20; id++ {
				mustMiss(t, d, id)
			}
			want := tc.capacity / int64(tc.slot) * int64(tc.slot)
			if fi, err := os.Stat(filepath.Join(dir, diskDataName)); err != nil || fi.Size() != want {
				t.Fatalf("data file %v %v, want %d bytes", fi, err, want)
			}
			d.Put(1, frameFor(1, 500))
			mustGet(t, d, 1, frameFor(1, 500))
			d.Close()
			d = openDiskT(t, dir, tc.capacity, tc.slot) // the new configuration sticks
			mustGet(t, d, 1, frameFor(1, 500))
		})
	}
}

// TestDiskCorruptSlot damages a slot in various places, either while the
// cache is open or between runs, and checks the entry becomes a miss (and
// stays one) while its neighbours are unaffected.
func TestDiskCorruptSlot(t *testing.T) {
	const slot = 1024
	for _, tc := range []struct {
		name   string
		off    int // within slot 1
		reopen bool
	}{
		{"payload", DiskHeaderSize + 3, false},
		{"payload last byte", DiskHeaderSize + 399, false},
		{"id", hdrID, false},
		{"length", hdrLength, false},
		{"payload crc", hdrPCRC, false},
		{"header crc", hdrHCRC, false},
		{"magic", hdrMagic, false},
		{"payload, reopened", DiskHeaderSize + 3, true},
		{"id, reopened", hdrID + 1, true},
		{"slot number, reopened", hdrSlot, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openDiskT(t, dir, 8*slot, slot)
			for id := uint64(10); id < 13; id++ { // slots 0, 1, 2
				d.Put(id, bytes.Repeat([]byte{byte(id)}, 400))
			}
			if tc.reopen {
				d.Close()
			}
			flipByte(t, dir, slot+int64(tc.off))
			if tc.reopen {
				d = openDiskT(t, dir, 8*slot, slot)
			}
			mustMiss(t, d, 11)
			mustMiss(t, d, 11)
			mustGet(t, d, 10, bytes.Repeat([]byte{10}, 400))
			mustGet(t, d, 12, bytes.Repeat([]byte{12}, 400))
			// A header flipped into another id (id+0x40<<...) must not hit
			// under that id either.
			for _, other := range []uint64{11 ^ 0x40, 11 ^ 0x4000} {
				mustMiss(t, d, other)
			}
			st := d.Stats()
			if st.SlotsUsed != 2 {
				t.Fatalf("stats %+v", st)
			}
			// The slot is reusable.
			d.Put(11, []byte("fresh"))
			mustGet(t, d, 11, []byte("fresh"))
		})
	}
}

// TestDiskTruncated reopens a cache whose data file lost its tail.
func TestDiskTruncated(t *testing.T) {
	const slot, slots = 1024, 16
	for _, tc := range []struct {
		name string
		keep int64 // bytes of the data file kept
		hits int   // slots still whole
	}{
		{"mid slot", 5*slot + 600, 5},
		{"slot boundary", 7 * slot, 7},
		{"mid header", 3*slot + 10, 3},
		{"empty", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openDiskT(t, dir, slots*slot, slot)
			for id := uint64(0); id < slots; id++ { // id i in slot i
				d.Put(id, frameFor(id, 900))
			}
			d.Close()
			dropIndex(t, dir)
			if err := os.Truncate(filepath.Join(dir, diskDataName), tc.keep); err != nil {
				t.Fatal(err)
			}
			d = openDiskT(t, dir, slots*slot, slot)
			for id := uint64(0); id < slots; id++ {
				if int(id) < tc.hits {
					mustGet(t, d, id, frameFor(id, 900))
				} else {
					mustMiss(t, d, id)
				}
			}
			if fi, err := os.Stat(filepath.Join(dir, diskDataName)); err != nil || fi.Size() != slots*slot {
				t.Fatalf("data file %v %v", fi, err)
			}
			// The lost slots are free again: filling them evicts nothing.
			fresh := uint64(slots - tc.hits)
			for id := uint64(100); id < 100+fresh; id++ {
				d.Put(id, frameFor(id, 900))
			}
			for id := uint64(100); id < 100+fresh; id++ {
				mustGet(t, d, id, frameFor(id, 900))
			}
			if st := d.Stats(); st.Evictions != 0 || st.SlotsUsed != slots {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestDiskGarbage fills the data file with garbage and reopens it: nothing is
// found, and the cache then works normally. The garbage includes well-formed
// slots copied to other slots' positions and slots with valid headers but
// damaged payloads.
func TestDiskGarbage(t *testing.T) {
	const slot, slots = 512, 64
	for _, tc := range []struct {
		name string
		fill func(r *rand.Rand, b []byte)
	}{
		{"random", func(r *rand.Rand, b []byte) {
			for i := range b {
				b[i] = byte(r.Uint32())
			}
		}},
		{"magic everywhere", func(r *rand.Rand, b []byte) {
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			for s := 0; s < slots; s++ {
				h := b[s*slot:]
				h[0], h[1], h[2], h[3] = 'Z', 'F', 'C', slotFormat
			}
		}},
		{"misplaced slots", func(r *rand.Rand, b []byte) {
			for s := 0; s < slots; s++ { // slot s claims to be slot s+1
				encodeSlot(b[s*slot:], uint32(s+1), uint64(s), uint64(s), frameFor(uint64(s), 100))
			}
		}},
		{"damaged payloads", func(r *rand.Rand, b []byte) {
			for s := 0; s < slots; s++ {
				encodeSlot(b[s*slot:], uint32(s), uint64(s), uint64(s), frameFor(uint64(s), 100))
				b[s*slot+DiskHeaderSize] ^= 1
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openDiskT(t, dir, slots*slot, slot)
			d.Close()
			dropIndex(t, dir)
			b := make([]byte, slots*slot)
			tc.fill(rand.New(rand.NewPCG(3, 4)), b)
			if err := os.WriteFile(filepath.Join(dir, diskDataName), b, 0o600); err != nil {
				t.Fatal(err)
			}
			d = openDiskT(t, dir, slots*slot, slot)
			for id := uint64(0); id < 1000; id++ {
				mustMiss(t, d, id)
			}
			for id := uint64(0); id < slots; id++ {
				d.Put(id+5000, frameFor(id, SlotPayload(slot)))
			}
			for id := uint64(0); id < slots; id++ {
				mustGet(t, d, id+5000, frameFor(id, SlotPayload(slot)))
			}
			if st := d.Stats(); st.SlotsUsed != slots || st.Evictions != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestDiskConcurrent runs Put, Get and Delete from 8 goroutines over a small
// id space on caches small enough that evictions, replacements and reads of
// slots being deleted all happen constantly. Every hit must be exactly the
// frame stored under its id.
func TestDiskConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int64
		ids   uint64
	}{
		{"tiny", 8, 40},
		{"sharded", 2 * minShardSlots, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const slot, workers, ops = 512, 8, 3000
			p := SlotPayload(slot)
			ref := make([][]byte, tc.ids) // the only value each id ever has
			for id := range ref {
				ref[id] = frameFor(uint64(id), p)
			}
			d := openDiskT(t, t.TempDir(), tc.slots*slot, slot)
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(w), 99))
					for range ops {
						id := r.Uint64N(tc.ids)
						switch x := r.IntN(10); {
						case x < 4:
							d.Put(id, ref[id])
						case x < 9:
							if got, ok := d.Get(id); ok && !bytes.Equal(got, ref[id]) {
								errs <- fmt.Errorf("Get(%d): wrong bytes", id)
								return
							}
						default:
							d.Delete(id)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			st := d.Stats()
			if st.SlotsUsed > tc.slots || st.Corrupt+st.ReadErrors+st.WriteErrors != 0 || st.Hits == 0 {
				t.Fatalf("stats %+v", st)
			}
			// All bookkeeping settled: no slot is left pinned or reserved.
			for k := range d.shards {
				s := &d.shards[k]
				s.mu.Lock()
				live := 0
				for i, m := range s.slots {
					switch {
					case m.pins != 0 || m.state == slotWriting || m.state == slotClearing || m.state == slotDead:
						t.Errorf("shard %d slot %d left %+v", k, i, m)
					case m.state == slotLive:
						live++
						if s.index[m.id] != uint32(i) {
							t.Errorf("shard %d slot %d: index maps %d elsewhere", k, i, m.id)
						}
					}
				}
				if live != len(s.index) || live+len(s.free) != len(s.slots) || len(s.pending) != 0 {
					t.Errorf("shard %d: %d live, %d indexed, %d free of %d, %d pending",
						k, live, len(s.index), len(s.free), len(s.slots), len(s.pending))
				}
				s.mu.Unlock()
			}
			// And what is on disk reopens to the same, correct, contents.
			dir := d.dirForTest(t)
			d.Close()
			d = openDiskT(t, dir, tc.slots*slot, slot)
			if got := d.Stats().SlotsUsed; got != st.SlotsUsed {
				t.Fatalf("reopened with %d entries, had %d", got, st.SlotsUsed)
			}
			for id := range tc.ids {
				if got, ok := d.Get(id); ok && !bytes.Equal(got, ref[id]) {
					t.Fatalf("after reopen, Get(%d): wrong bytes", id)
				}
			}
		})
	}
}

// TestDiskIOErrors makes the data file unwritable and then unreadable under
// the cache: operations degrade to misses and dropped writes, are counted,
// and nothing panics or returns wrong data.
func TestDiskIOErrors(t *testing.T) {
	const slot = 1024
	dir := t.TempDir()
	d := openDiskT(t, dir, 16*slot, slot)
	d.Put(1, frameFor(1, 500))

	good := d.f
	ro, err := os.Open(good.Name())
	if err != nil {
		t.Fatal(err)
	}
	d.f = ro // writes now fail with EBADF
	d.Put(2, frameFor(2, 500))
	d.Put(3, frameFor(3, 500)) // skipped: write backoff
	mustGet(t, d, 1, frameFor(1, 500))
	mustMiss(t, d, 2)
	st := d.Stats()
	if st.WriteErrors != 1 || st.Dropped != 1 || st.Puts != 1 {
		t.Fatalf("stats %+v", st)
	}

	ro.Close() // reads now fail too
	mustMiss(t, d, 1)
	if st := d.Stats(); st.ReadErrors != 1 || st.SlotsUsed != 0 {
		t.Fatalf("stats %+v", st)
	}

	d.f = good
	d.noWritesUntil.Store(time.Now().Add(-time.Second).UnixNano())
	d.Put(4, frameFor(4, 500))
	mustGet(t, d, 4, frameFor(4, 500))
}

func TestDiskLocked(t *testing.T) {
	dir := t.TempDir()
	openDiskT(t, dir, 8*1024, 1024)
	if d, err := OpenDisk(dir, 8*1024, 1024, nil); err == nil {
		d.Close()
		t.Fatal("second OpenDisk of the same dir succeeded")
	}
}

// TestDiskCloseRace closes the cache while operations are running.
func TestDiskCloseRace(t *testing.T) {
	d := openDiskT(t, t.TempDir(), 64*1024, 1024)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				id := uint64(w*10000 + i%50)
				d.Put(id, frameFor(id, 900))
				if got, ok := d.Get(id); ok && !bytes.Equal(got, frameFor(id, 900)) {
					t.Errorf("Get(%d): wrong bytes", id)
					return
				}
				d.Delete(id - 3)
			}
		})
	}
	time.Sleep(5 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.ReadErrors+st.WriteErrors+st.Corrupt != 0 {
		t.Fatalf("close reported as errors: %+v", st)
	}
}

// Benchmarks: 64 KiB payloads in 68 KiB slots.

const benchSlot = 68 << 10

func benchDisk(b *testing.B, entries int) (*Disk, []byte) {
	d := openDiskT(b, b.TempDir(), int64(entries)*benchSlot, benchSlot)
	data := frameFor(1, 1<<16)
	data = append(data, make([]byte, 1<<16-len(data))...)
	return d, data
}

func BenchmarkDiskPut(b *testing.B) {
	d, data := benchDisk(b, 1024) // 68 MiB: evicting after the first 1024
	b.SetBytes(int64(len(data)))
	id := uint64(0)
	for b.Loop() {
		d.Put(id, data)
		id++
	}
}

func BenchmarkDiskGet(b *testing.B) {
	const n = 1024
	d, data := benchDisk(b, n)
	for id := range uint64(n) {
		d.Put(id, data)
	}
	b.SetBytes(int64(len(data)))
	id := uint64(0)
	for b.Loop() {
		if _, ok := d.Get(id % n); !ok {
			b.Fatal("miss")
		}
		id += 7
	}
}

func BenchmarkDiskGetParallel(b *testing.B) {
	const n = 1024
	d, data := benchDisk(b, n)
	for id := range uint64(n) {
		d.Put(id, data)
	}
	b.SetBytes(int64(len(data)))
	b.RunParallel(func(pb *testing.PB) {
		id := rand.Uint64N(n)
		for pb.Next() {
			if _, ok := d.Get(id % n); !ok {
				b.Fatal("miss")
			}
			id += 7
		}
	})
}

// writeSlotT writes a well-formed slot into a closed cache's data file.
func writeSlotT(t *testing.T, dir string, slotSize int, slot uint32, id, seq uint64, data []byte) {
	t.Helper()
	dropIndex(t, dir)
	f, err := os.OpenFile(filepath.Join(dir, diskDataName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := encodeSlot(make([]byte, slotSize), slot, id, seq, data)
	if _, err := f.WriteAt(b, int64(slot)*int64(slotSize)); err != nil {
		t.Fatal(err)
	}
}

// TestDiskScanDuplicates plants, in a file left by a crash, two copies of an
// id (the older one differing, as after a replacing Put whose clearing never
// happened) and an id in a slot of the wrong shard: the newest copy wins, the
// stale one is cleared for good, and the misfiled one is ignored.
func TestDiskScanDuplicates(t *testing.T) {
	const slot, slots = 512, 2 * minShardSlots // two shards
	dir := t.TempDir()
	d := openDiskT(t, dir, slots*slot, slot)
	if len(d.shards) != 2 {
		t.Fatalf("%d shards", len(d.shards))
	}
	var id0, id1 uint64 // ids of shard 0 and shard 1
	for id := uint64(1); id0 == 0 || id1 == 0; id++ {
		if d.shardFor(id) == &d.shards[0] {
			id0 = id
		} else {
			id1 = id
		}
	}
	d.Close()
	writeSlotT(t, dir, slot, 3, id0, 12, []byte("new"))
	writeSlotT(t, dir, slot, 7, id0, 5, []byte("old"))
	writeSlotT(t, dir, slot, 10, id1, 11, []byte("misfiled")) // shard 1's id in shard 0

	d = openDiskT(t, dir, slots*slot, slot)
	mustGet(t, d, id0, []byte("new"))
	mustMiss(t, d, id1)
	if st := d.Stats(); st.ScanEntries != 1 || st.SlotsUsed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if got := d.seq.Load(); got != 12 {
		t.Fatalf("sequence resumes after %d, want 12", got)
	}
	hdr := make([]byte, DiskHeaderSize)
	if _, err := d.f.ReadAt(hdr, 7*slot); err != nil || !bytes.Equal(hdr, zeroHeader[:]) {
		t.Fatalf("stale copy's header not cleared: %x %v", hdr, err)
	}
	d.Delete(id0)
	d.Close()
	d = openDiskT(t, dir, slots*slot, slot)
	mustMiss(t, d, id0) // neither copy came back
}

// TestDiskFileTooLong reopens a cache whose data file grew a tail.
func TestDiskFileTooLong(t *testing.T) {
	const slot, slots = 1024, 8
	dir := t.TempDir()
	d := openDiskT(t, dir, slots*slot, slot)
	d.Put(1, frameFor(1, 900))
	d.Close()
	dropIndex(t, dir)
	f, err := os.OpenFile(filepath.Join(dir, diskDataName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{0xff}, 3*slot+5))
	f.Close()
	d = openDiskT(t, dir, slots*slot, slot)
	mustGet(t, d, 1, frameFor(1, 900))
	if fi, err := os.Stat(filepath.Join(dir, diskDataName)); err != nil || fi.Size() != slots*slot {
		t.Fatalf("data file %v %v", fi, err)
	}
}

// BenchmarkDiskScan measures OpenDisk on a full 1 GiB cache until its
// index is whole: rebuilt by the scan (as after a crash), from the page
// cache ("warm") or after dropping the file's pages from it ("cold"; on a
// VM the host may still cache them), or loaded from the index a Close
// saved ("saved").
func BenchmarkDiskScan(b *testing.B) {
	const capacity = 1 << 30
	for _, slot := range []int{benchSlot, 4 << 10} {
		dir := b.TempDir()
		d, err := OpenDisk(dir, capacity, slot, nil)
		if err != nil {
			b.Fatal(err)
		}
		data := bytes.Repeat([]byte{0xa5}, SlotPayload(slot))
		n := d.Stats().SlotsTotal
		for id := range uint64(n + n/8) { // ids spread over shards unevenly
			d.Put(id, data)
		}
		if got := d.Stats().SlotsUsed; got != n {
			b.Fatalf("filled %d of %d slots", got, n)
		}
		d.Close()
		for _, mode := range []string{"warm", "cold", "saved"} {
			name := fmt.Sprintf("slot=%dKiB/slots=%d/%s", slot>>10, n, mode)
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					if mode != "saved" {
						dropIndex(b, dir)
					}
					if mode == "cold" {
						f, err := os.Open(filepath.Join(dir, diskDataName))
						if err != nil {
							b.Fatal(err)
						}
						ok := dropPageCache(f)
						f.Close()
						if !ok {
							b.Skip("cannot drop the page cache here")
						}
					}
					b.StartTimer()
					d, err := OpenDisk(dir, capacity, slot, nil)
					if err != nil {
						b.Fatal(err)
					}
					d.WaitScan()
					if st := d.Stats(); st.ScanEntries != n || st.IndexLoaded != (mode == "saved") {
						b.Fatalf("index of %d of %d entries, loaded %v", st.ScanEntries, n, st.IndexLoaded)
					}
					b.StopTimer()
					d.Close()
					b.StartTimer()
				}
			})
		}
	}
}
