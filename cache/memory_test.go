package cache

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func val(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// charge is what an n-byte value costs.
func charge(n int) int64 { return int64(n) + EntryOverhead }

func TestMemoryShardCount(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int64
		shards   int
	}{
		{"disabled", 0, 0},
		{"negative", -5, 0},
		{"tiny", 1000, 1},
		{"just under two shards", 2*minShardBytes - 1, 1},
		{"two shards", 2 * minShardBytes, 2},
		{"eight shards", 8*minShardBytes + 5, 8},
		{"max shards", 1 << 40, maxShards},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(tc.capacity)
			if len(m.shards) != tc.shards {
				t.Fatalf("%d shards, want %d", len(m.shards), tc.shards)
			}
			if tc.shards > 0 && m.Stats().Capacity > tc.capacity {
				t.Fatalf("distributed capacity %d exceeds requested %d", m.Stats().Capacity, tc.capacity)
			}
		})
	}
}

// TestMemoryLRU drives a single-shard cache through a scripted sequence and
// checks contents after each step.
func TestMemoryLRU(t *testing.T) {
	type op struct {
		kind string // "put", "get", "del"
		id   uint64
		size int
	}
	const sz = 100
	capFor := func(n int) int64 { return int64(n) * charge(sz) }
	for _, tc := range []struct {
		name      string
		capacity  int64
		ops       []op
		present   []uint64
		absent    []uint64
		evictions uint64
	}{
		{
			name:     "fits",
			capacity: capFor(3),
			ops:      []op{{"put", 1, sz}, {"put", 2, sz}, {"put", 3, sz}},
			present:  []uint64{1, 2, 3},
		},
		{
			name:      "evicts oldest",
			capacity:  capFor(3),
			ops:       []op{{"put", 1, sz}, {"put", 2, sz}, {"put", 3, sz}, {"put", 4, sz}},
			present:   []uint64{2, 3, 4},
			absent:    []uint64{1},
			evictions: 1,
		},
		{
			name:      "get refreshes",
			capacity:  capFor(3),
			ops:       []op{{"put", 1, sz}, {"put", 2, sz}, {"put", 3, sz}, {"get", 1, 0}, {"put", 4, sz}},
			present:   []uint64{1, 3, 4},
			absent:    []uint64{2},
			evictions: 1,
		},
		{
			name:      "re-put refreshes",
			capacity:  capFor(3),
			ops:       []op{{"put", 1, sz}, {"put", 2, sz}, {"put", 3, sz}, {"put", 1, sz}, {"put", 4, sz}},
			present:   []uint64{1, 3, 4},
			absent:    []uint64{2},
			evictions: 1,
		},
		{
			name:      "big value evicts several",
			capacity:  capFor(3),
			ops:       []op{{"put", 1, sz}, {"put", 2, sz}, {"put", 3, sz}, {"put", 4, 2*sz + EntryOverhead}},
			present:   []uint64{3, 4},
			absent:    []uint64{1, 2},
			evictions: 2,
		},
		{
			name:     "delete frees space",
			capacity: capFor(3),
			ops:      []op{{"put", 1, sz}, {"put", 2, sz}, {"put", 3, sz}, {"del", 2, 0}, {"put", 4, sz}},
			present:  []uint64{1, 3, 4},
			absent:   []uint64{2},
		},
		{
			name:     "delete missing is a no-op",
			capacity: capFor(3),
			ops:      []op{{"put", 1, sz}, {"del", 9, 0}},
			present:  []uint64{1},
		},
		{
			name:     "oversized ignored",
			capacity: capFor(3),
			ops:      []op{{"put", 1, sz}, {"put", 2, int(capFor(3))}},
			present:  []uint64{1},
			absent:   []uint64{2},
		},
		{
			name:     "exactly capacity fits",
			capacity: capFor(3),
			ops:      []op{{"put", 1, sz}, {"put", 2, int(capFor(3) - EntryOverhead)}},
			present:  []uint64{2},
			absent:   []uint64{1},
			// 1 is evicted to make room.
			evictions: 1,
		},
		{
			name:     "empty value",
			capacity: capFor(3),
			ops:      []op{{"put", 1, 0}},
			present:  []uint64{1},
		},
		{
			name:     "disabled",
			capacity: 0,
			ops:      []op{{"put", 1, 1}, {"put", 2, 0}},
			absent:   []uint64{1, 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(tc.capacity)
			want := map[uint64][]byte{}
			for i, o := range tc.ops {
				switch o.kind {
				case "put":
					v := val(o.size, byte(i))
					want[o.id] = v
					m.Put(o.id, v)
				case "get":
					m.Get(o.id)
				case "del":
					m.Delete(o.id)
				}
			}
			for _, id := range tc.present {
				got, ok := m.Get(id)
				if !ok {
					t.Errorf("id %d missing", id)
				} else if !bytes.Equal(got, want[id]) {
					t.Errorf("id %d: wrong value", id)
				}
			}
			for _, id := range tc.absent {
				if got, ok := m.Get(id); ok || got != nil {
					t.Errorf("id %d present", id)
				}
			}
			st := m.Stats()
			if st.Evictions != tc.evictions {
				t.Errorf("%d evictions, want %d", st.Evictions, tc.evictions)
			}
			if st.Entries != int64(len(tc.present)) {
				t.Errorf("%d entries, want %d", st.Entries, len(tc.present))
			}
			var bytesWant int64
			for _, id := range tc.present {
				bytesWant += charge(len(want[id]))
			}
			if st.Bytes != bytesWant {
				t.Errorf("%d bytes, want %d", st.Bytes, bytesWant)
			}
		})
	}
}

func TestMemoryStats(t *testing.T) {
	m := NewMemory(1 << 20)
	m.Put(1, val(10, 1))
	m.Get(1)
	m.Get(1)
	m.Get(2)
	m.Delete(1)
	m.Get(1)
	st := m.Stats()
	want := Stats{Hits: 2, Misses: 2, Evictions: 0, Bytes: 0, Entries: 0, Capacity: 1 << 20}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}

	d := NewMemory(0)
	d.Put(1, val(1, 1))
	d.Get(1)
	d.Get(2)
	if st := d.Stats(); st != (Stats{Misses: 2}) {
		t.Fatalf("disabled stats %+v", st)
	}
	if d.MaxValueSize() != -1 {
		t.Fatalf("disabled MaxValueSize %d", d.MaxValueSize())
	}
}

func TestMemoryMaxValueSize(t *testing.T) {
	m := NewMemory(64 * minShardBytes)
	max := m.MaxValueSize()
	m.Put(1, make([]byte, max))
	if _, ok := m.Get(1); !ok {
		t.Fatal("value of MaxValueSize was not stored")
	}
	m.Put(2, make([]byte, max+1))
	if _, ok := m.Get(2); ok {
		t.Fatal("value of MaxValueSize+1 was stored")
	}
}

// TestMemoryShardSpread checks that sequential ids, the common case, spread
// over all shards.
func TestMemoryShardSpread(t *testing.T) {
	m := NewMemory(1 << 40)
	counts := make(map[*shard]int)
	for id := uint64(0); id < 32*100; id++ {
		counts[m.shardFor(id)]++
	}
	if len(counts) != maxShards {
		t.Fatalf("sequential ids hit %d shards, want %d", len(counts), maxShards)
	}
	for s, n := range counts {
		if n < 50 || n > 150 {
			t.Fatalf("shard %p got %d of 3200 ids", s, n)
		}
	}
}

// TestMemoryConcurrent hammers a multi-shard cache from 8 goroutines and
// checks the byte bound is never exceeded (sampled while running and
// checked exactly at the end) and that hits return the right values.
func TestMemoryConcurrent(t *testing.T) {
	const capacity = 4 * minShardBytes // 4 shards of 8 MiB
	m := NewMemory(capacity)
	const goroutines = 8
	const perG = 3000
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				id := uint64(g*perG + i)
				// Values between 1 and 32 KiB, content derived from the id.
				n := 1 + int(id*7919%(32<<10))
				m.Put(id, val(n, byte(id)))
				if i%3 == 0 {
					back := id - uint64(i%50)
					if v, ok := m.Get(back); ok && (len(v) == 0 || v[0] != byte(back)) {
						errs <- fmt.Errorf("id %d: wrong value", back)
						return
					}
				}
				if i%10 == 0 {
					m.Delete(id - 5)
				}
				if st := m.Stats(); st.Bytes > capacity {
					errs <- fmt.Errorf("%d bytes cached, capacity %d", st.Bytes, capacity)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	st := m.Stats()
	if st.Bytes > capacity || st.Bytes <= 0 {
		t.Fatalf("%d bytes cached, capacity %d", st.Bytes, capacity)
	}
	if st.Evictions == 0 {
		t.Fatal("no evictions; the test does not exercise the bound")
	}
	// Cross-check the counters against the shards' real contents.
	var bytes, entries int64
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		var used int64
		n := 0
		for e := s.root.next; e != &s.root; e = e.next {
			used += e.charge
			n++
		}
		if used != s.used || n != len(s.items) || used > s.capacity {
			t.Errorf("shard %d: list holds %d bytes / %d entries, accounting says %d / %d, capacity %d", i, used, n, s.used, len(s.items), s.capacity)
		}
		bytes += used
		entries += int64(n)
		s.mu.Unlock()
	}
	if bytes != st.Bytes || entries != st.Entries {
		t.Fatalf("stats say %d bytes / %d entries, shards hold %d / %d", st.Bytes, st.Entries, bytes, entries)
	}
}

func BenchmarkMemoryGetHit(b *testing.B) {
	m := NewMemory(1 << 30)
	for id := range uint64(1024) {
		m.Put(id, val(4096, 1))
	}
	b.RunParallel(func(pb *testing.PB) {
		var id uint64
		for pb.Next() {
			m.Get(id % 1024)
			id++
		}
	})
}

func BenchmarkMemoryPut(b *testing.B) {
	m := NewMemory(64 << 20)
	v := val(4096, 1)
	var next atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Put(next.Add(1), v)
		}
	})
}

// A sequential scan many times the capacity does not evict the hot set: it
// only cycles through the scan area.
func TestMemoryScanKeepsHotSet(t *testing.T) {
	const frame = 4096
	m := NewMemory(4 << 20) // one shard: exact accounting
	hot := int64(2<<20) / (frame + EntryOverhead)
	for id := range uint64(hot) {
		m.Put(id, make([]byte, frame))
	}
	for id := uint64(1 << 20); id < 1<<20+10*1024; id++ { // a 40 MiB scan
		m.PutScan(id, make([]byte, frame))
		if _, ok := m.GetScan(id); !ok {
			t.Fatalf("scan frame %d gone right after it was put", id)
		}
	}
	for id := range uint64(hot) {
		if _, ok := m.Get(id); !ok {
			t.Fatalf("hot frame %d evicted by a scan", id)
		}
	}
}

// The scan area uses room the LRU list leaves free, and gives it back.
func TestMemoryScanArea(t *testing.T) {
	const frame = 4096
	m := NewMemory(4 << 20)
	fits := uint64(4<<20) / (frame + EntryOverhead)
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"scan fills an empty cache", func(t *testing.T) {
			for id := range fits {
				m.PutScan(id, make([]byte, frame))
			}
			if st := m.Stats(); st.Entries != int64(fits) || st.Evictions != 0 {
				t.Fatalf("%d entries, %d evictions; want %d, 0", st.Entries, st.Evictions, fits)
			}
		}},
		{"ordinary puts take the room back, down to the scan share", func(t *testing.T) {
			for id := fits; id < 3*fits; id++ {
				m.Put(id, make([]byte, frame))
			}
			scanLeft := 0
			for id := range fits {
				if _, ok := m.GetScan(id); ok {
					scanLeft++
				}
			}
			if want := int(fits / ScanShare); scanLeft < want-1 || scanLeft > want+1 {
				t.Fatalf("%d scan frames left, want the scan share, about %d", scanLeft, want)
			}
		}},
		{"a Get makes a scan frame hot", func(t *testing.T) {
			var id uint64
			for ; id < fits; id++ {
				if _, ok := m.GetScan(id); ok {
					break
				}
			}
			m.Get(id) // now in the LRU list, most recently used
			for n := uint64(0); n < fits/ScanShare+8; n++ {
				m.PutScan(1<<30+n, make([]byte, frame))
			}
			if _, ok := m.Get(id); !ok {
				t.Fatal("a frame made hot by Get was evicted by a scan")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}
