package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
)

// walPuts selects the puts of WAL records, the only calls the WAL tests
// inject faults into.
func walPuts() faultstore.Match {
	return faultstore.On(faultstore.OpPutIfAbsent).Prefix("wal/")
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(discard{}, nil)) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func open(t *testing.T, st store.Store) *Log {
	t.Helper()
	return openHeadCheck(t, st, 2*time.Millisecond)
}

// openHeadCheck is open with the head watch at interval (negative: none).
func openHeadCheck(t *testing.T, st store.Store, interval time.Duration) *Log {
	t.Helper()
	l, err := Open(context.Background(), Options{Main: st, Logger: quiet(), RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond, HeadCheckInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// replayAll opens a new writer on st and returns the meta of every record
// replayed (fence records excluded), in order.
func replayAll(t *testing.T, st store.Store) []string {
	t.Helper()
	l := open(t, st)
	var got []string
	if _, err := l.Replay(context.Background(), l.Head().Base, func(r Record) error {
		if r.Flags&FlagFence == 0 {
			got = append(got, string(r.Meta))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// record lays out a record the way Append wants it.
func record(meta, data string) func(uint64) ([]byte, int) {
	return func(uint64) ([]byte, int) {
		return append(append(make([]byte, HeaderSize), meta...), data...), len(meta)
	}
}

func appendMeta(t *testing.T, l *Log, meta string) *Commit {
	t.Helper()
	c, err := l.Append(record(meta, "data:"+meta))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAppendOrderedDurability(t *testing.T) {
	// Puts complete in random order; acknowledgements must not.
	st := faultstore.New(store.NewMem())
	st.Jitter(walPuts(), 3*time.Millisecond)
	l := open(t, st)
	if _, err := l.Replay(context.Background(), l.Head().Base, func(Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var commits []*Commit
	for i := 0; i < 50; i++ {
		commits = append(commits, appendMeta(t, l, fmt.Sprint(i)))
	}
	for i, c := range commits {
		if err := c.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Once c is done, every earlier commit must be done too.
		for _, prev := range commits[:i] {
			select {
			case <-prev.Done():
			default:
				t.Fatalf("commit %d acknowledged before commit %d", i, prev.Pos.Seq)
			}
		}
	}
	if last := l.Last(); last != commits[len(commits)-1].Pos {
		t.Fatalf("Last() = %+v, want %+v", last, commits[len(commits)-1].Pos)
	}
	l.Close()
	got := replayAll(t, st)
	if len(got) != 50 {
		t.Fatalf("replayed %d records, want 50", len(got))
	}
	for i, m := range got {
		if m != fmt.Sprint(i) {
			t.Fatalf("record %d has meta %q", i, m)
		}
	}
}

func TestReplayStopsAtGapAndSkipsStaleLeftovers(t *testing.T) {
	// A writer crashes with records in flight: record 3 never lands, record 4
	// (pipelined) does. 4 was never acknowledged, so it is not history.
	mem := store.NewMem()
	st := faultstore.New(mem)
	l := open(t, st)
	l.Replay(context.Background(), l.Head().Base, func(Record) error { return nil }) // fence = record 1
	appendMeta(t, l, "a").Wait(context.Background())                                 // record 2
	block := st.Hold(walPuts().Key(Key(3)))                                          // never lands before the "crash"
	c3 := appendMeta(t, l, "lost")
	c4 := appendMeta(t, l, "stale")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := mem.Head(context.Background(), Key(4)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("record 4 never landed")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-c4.Done():
		t.Fatal("record 4 acknowledged while record 3 is missing")
	default:
	}
	// Crash: the writer stops; record 3 never lands.
	drop := st.Fail(walPuts().Key(Key(3)), nil)
	block.Release()
	l.Close()
	if c3.Err() == nil || c4.Err() == nil {
		t.Fatalf("commits after a hole succeeded: %v, %v", c3.Err(), c4.Err())
	}
	drop.Remove()

	// The next writer replays up to 2 and fences at 3; the stale 4 is not
	// history. Its next append lands on 4 and replaces the stale record.
	l2 := open(t, mem)
	var replayed []string
	fence, err := l2.Replay(context.Background(), l2.Head().Base, func(r Record) error {
		if r.Flags&FlagFence == 0 {
			replayed = append(replayed, string(r.Meta))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fence.Seq != 3 || strings.Join(replayed, ",") != "a" {
		t.Fatalf("fence at %d after replaying %q, want 3 after [a]", fence.Seq, replayed)
	}
	c := appendMeta(t, l2, "b")
	if err := c.Wait(context.Background()); err != nil || c.Pos.Seq != 4 {
		t.Fatalf("append over the stale record: seq %d, %v", c.Pos.Seq, err)
	}
	l2.Close()
	if got := replayAll(t, mem); strings.Join(got, ",") != "a,b" {
		t.Fatalf("replayed %q, want [a b]", got)
	}
}

func TestFencing(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	// Without a head watch: a must still append after b claims (below),
	// and a watch may see the claim first — at any moment, on a loaded
	// machine. Fencing by the record alone is what this test shows.
	a := openHeadCheck(t, st, -1)
	if _, err := a.Replay(ctx, a.Head().Base, func(Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := appendMeta(t, a, "a1").Wait(ctx); err != nil {
		t.Fatal(err)
	}

	b := open(t, st) // claims: a is now stale
	if b.Epoch() <= a.Epoch() {
		t.Fatalf("b epoch %d not newer than a's %d", b.Epoch(), a.Epoch())
	}
	// a keeps appending until b fences the log: those records are history.
	if err := appendMeta(t, a, "a2").Wait(ctx); err != nil {
		t.Fatalf("append before the fence: %v", err)
	}
	var replayed []string
	if _, err := b.Replay(ctx, b.Head().Base, func(r Record) error {
		if r.Flags&FlagFence == 0 {
			replayed = append(replayed, string(r.Meta))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(replayed, ",") != "a1,a2" {
		t.Fatalf("b replayed %q", replayed)
	}
	// a is fenced: its next append fails, and so does its head update.
	c, err := a.Append(record("a3", ""))
	if err == nil {
		err = c.Wait(ctx)
	}
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("append by fenced writer: %v, want ErrFenced", err)
	}
	if _, err := a.Append(record("", "")); !errors.Is(err, ErrFenced) {
		t.Fatalf("second append by fenced writer: %v, want ErrFenced", err)
	}
	if err := a.SetBase(ctx, Position{}, ""); !errors.Is(err, ErrFenced) {
		t.Fatalf("SetBase by fenced writer: %v, want ErrFenced", err)
	}
	if err := appendMeta(t, b, "b1").Wait(ctx); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if got := replayAll(t, st); strings.Join(got, ",") != "a1,a2,b1" {
		t.Fatalf("final history %q", got)
	}
}

// TestFencingRace has an old writer append continuously while a new one
// claims and fences. Every append the old writer saw acknowledged must be in
// the final history, before every record of the new writer: never
// interleaved.
func TestFencingRace(t *testing.T) {
	for round := 0; round < 20; round++ {
		ctx := context.Background()
		st := faultstore.New(store.NewMem())
		st.Jitter(walPuts(), 300*time.Microsecond)
		a := open(t, st)
		a.Replay(ctx, a.Head().Base, func(Record) error { return nil })
		var acked []string
		var mu sync.Mutex
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				meta := fmt.Sprintf("a%d", i)
				c, err := a.Append(record(meta, ""))
				if err != nil {
					return
				}
				go func() {
					if c.Wait(ctx) == nil {
						mu.Lock()
						acked = append(acked, meta)
						mu.Unlock()
					}
				}()
			}
		}()
		time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
		b := open(t, st)
		if _, err := b.Replay(ctx, b.Head().Base, func(Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if err := appendMeta(t, b, fmt.Sprintf("b%d", i)).Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		<-done
		a.Close()
		b.Close()
		time.Sleep(5 * time.Millisecond) // let ack goroutines record
		history := replayAll(t, st)
		pos := map[string]int{}
		for i, m := range history {
			pos[m] = i
		}
		firstB := len(history)
		for i, m := range history {
			if strings.HasPrefix(m, "b") {
				firstB = i
				break
			}
		}
		for i, m := range history[firstB:] {
			if m != fmt.Sprintf("b%d", i) {
				t.Fatalf("round %d: history interleaves writers after the fence: %q", round, history)
			}
		}
		mu.Lock()
		for _, m := range acked {
			p, ok := pos[m]
			if !ok {
				t.Fatalf("round %d: acknowledged %s missing from history %q", round, m, history)
			}
			if p >= firstB {
				t.Fatalf("round %d: %s after the new writer's records", round, m)
			}
		}
		mu.Unlock()
	}
}

func TestClaimRace(t *testing.T) {
	// Concurrent claims on a new store: every writer gets a distinct epoch.
	st := store.NewMem()
	var wg sync.WaitGroup
	epochs := make(chan uint64, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := Open(context.Background(), Options{Main: st, Logger: quiet()})
			if err != nil {
				t.Error(err)
				return
			}
			epochs <- l.Epoch()
			l.Close()
		}()
	}
	wg.Wait()
	close(epochs)
	seen := map[uint64]bool{}
	for e := range epochs {
		if seen[e] {
			t.Fatalf("epoch %d claimed twice", e)
		}
		seen[e] = true
	}
}

func TestCheckDiverged(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	l := open(t, st)
	l.Replay(ctx, l.Head().Base, func(Record) error { return nil })
	c := appendMeta(t, l, "x")
	c.Wait(ctx)
	l.Close()
	l2 := open(t, st)
	cases := []struct {
		name string
		pos  Position
		want error
	}{
		{"real record", c.Pos, nil},
		{"base", l2.Head().Base, nil},
		{"other id", Position{Seq: c.Pos.Seq, Epoch: c.Pos.Epoch, ID: c.Pos.ID + 1}, ErrDiverged},
		{"missing record", Position{Seq: 99, Epoch: 1, ID: 1}, ErrDiverged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := l2.Check(ctx, tc.pos); !errors.Is(err, tc.want) {
				t.Fatalf("Check: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCorruptRecordIsReported(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	l := open(t, st)
	l.Replay(ctx, l.Head().Base, func(Record) error { return nil })
	c := appendMeta(t, l, "payload")
	c.Wait(ctx)
	l.Close()
	rec, _ := st.Get(ctx, Key(c.Pos.Seq), 0, -1)
	for _, tc := range []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"flipped header byte", func(b []byte) []byte { b[30] ^= 1; return b }},
		{"flipped meta byte", func(b []byte) []byte { b[HeaderSize] ^= 1; return b }},
		{"truncated header", func(b []byte) []byte { return b[:HeaderSize-1] }},
		{"truncated meta", func(b []byte) []byte { return b[:HeaderSize+3] }},
		{"foreign object", func(b []byte) []byte {
			return []byte("not a WAL record at all, just some bytes.........................................")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st2 := store.NewMem()
			for _, k := range []string{HeadKey, Key(1), Key(c.Pos.Seq)} {
				b, _ := st.Get(ctx, k, 0, -1)
				if k == Key(c.Pos.Seq) {
					b = tc.mangle(bytes.Clone(rec))
				}
				st2.Put(ctx, k, b)
			}
			l := open(t, st2)
			_, err := l.Replay(ctx, l.Head().Base, func(Record) error { return nil })
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("replay of a corrupt record: %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), "record 2") {
				t.Fatalf("error does not name the record: %v", err)
			}
		})
	}
}

func TestAppendWaitsThroughOutage(t *testing.T) {
	ctx := context.Background()
	st := faultstore.New(store.NewMem())
	l := open(t, st)
	l.Replay(ctx, l.Head().Base, func(Record) error { return nil })
	st.Fail(walPuts().Times(20), nil) // the store fails for a while
	c := appendMeta(t, l, "x")
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("append through an outage: %v", err)
	}
	// A permanent outage: the append waits, and Close ends the wait.
	st.Fail(walPuts(), nil)
	c = appendMeta(t, l, "y")
	select {
	case <-c.Done():
		t.Fatalf("append finished during an outage: %v", c.Err())
	case <-time.After(50 * time.Millisecond):
	}
	l.Close()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("append abandoned by Close: %v, want ErrClosed", c.Err())
	}
}

func TestHeadCorruption(t *testing.T) {
	h := Head{Epoch: 3, Base: Position{Seq: 9, Epoch: 2, ID: 7}, Checkpoint: "meta/x", Init: []byte(`{"a":1}`)}
	h.FSID[0] = 0xab
	enc := h.encode()
	got, err := decodeHead(enc)
	if err != nil || got.Epoch != 3 || got.Base != h.Base || got.FSID != h.FSID || got.Checkpoint != h.Checkpoint {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 0x20
		if got, err := decodeHead(bad); err == nil && (got.Epoch != h.Epoch || got.Base != h.Base) {
			t.Fatalf("flipped byte %d decoded to a different head without error", i)
		}
	}
}

func FuzzDecodeHeader(f *testing.F) {
	var h header
	h.seq, h.epoch, h.id = 5, 2, 99
	f.Add(encodeRecord(h, []byte("meta"), []byte("data")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error not wrapping ErrCorrupt: %v", err)
		}
		if err == nil {
			var again [HeaderSize]byte
			h.encode(again[:])
			if !bytes.Equal(again[:], b[:HeaderSize]) {
				t.Fatal("decoded header does not re-encode to its bytes")
			}
		}
	})
}

func FuzzDecodeHead(f *testing.F) {
	h := Head{Epoch: 1, Checkpoint: "meta/c"}
	f.Add(h.encode())
	f.Add([]byte(headMagic + "{}\n0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := decodeHead(b); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error not wrapping ErrCorrupt: %v", err)
		}
	})
}

func TestReplaySkipsStaleAfterNewerEpoch(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	l := open(t, st) // creates the head at epoch 1
	fsid := l.FSID()
	l.Close()
	put := func(seq, epoch uint64, meta string, flags uint32) {
		h := header{fsid: fsid, seq: seq, epoch: epoch, id: seq*100 + epoch, flags: flags}
		if _, err := st.Put(ctx, Key(seq), encodeRecord(h, []byte(meta), nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Epoch 1 wrote 1 and 2 and had 4 in flight when it crashed without 3;
	// epoch 2 replayed and fenced at 3, then crashed; 4 is a stale leftover.
	put(1, 1, "", FlagFence)
	put(2, 1, "x", 0)
	put(3, 2, "", FlagFence)
	put(4, 1, "stale", 0)
	for i := 0; i < 2; i++ { // claim up to epoch 3
		l, err := Open(ctx, Options{Main: st, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	l3 := open(t, st)
	var got []string
	fence, err := l3.Replay(ctx, l3.Head().Base, func(r Record) error {
		got = append(got, fmt.Sprintf("%d:%s", r.Seq, r.Meta))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "1:,2:x,3:" || fence.Seq != 5 {
		t.Fatalf("replayed %q, fenced at %d; want [1: 2:x 3:] and a fence at 5", got, fence.Seq)
	}
}

func TestNextHeadCheck(t *testing.T) {
	const base, idle = time.Second, time.Minute
	cases := []struct {
		name     string
		cur      time.Duration
		appended bool
		want     time.Duration
	}{
		{"busy stays at the base rate", base, true, base},
		{"idle doubles", base, false, 2 * base},
		{"idle is capped", 40 * time.Second, false, idle},
		{"capped stays capped", idle, false, idle},
		{"an append after idle returns to the base rate", idle, true, base},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextHeadCheck(tc.cur, tc.appended, base, idle); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	// An idle hour costs about log2(60) checks to reach the cap, then one a minute.
	n, at, cur := 0, time.Duration(0), base
	for at < time.Hour {
		at += cur
		n++
		cur = nextHeadCheck(cur, false, base, idle)
	}
	if n > 66 {
		t.Fatalf("%d head checks in an idle hour, want about 65", n)
	}
}
