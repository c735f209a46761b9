// Package storetest is the conformance suite every store.Store backend must
// pass: the contract of store.Store, tested the same way on each.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"zerofs/store"
)

// LargeObjectSize is the size of the suite's large object: above 2 parts of
// 5 MiB plus a ragged tail, so that a backend opened with a 5 MiB part size
// and a threshold below it uploads it in 3 parts.
const LargeObjectSize = 13*1024*1024 + 12345

// Run runs the suite. newStore must return a new, empty store for each call
// (each subtest gets its own).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"GetRanges", testGetRanges},
		{"GetEmptyObject", testGetEmptyObject},
		{"GetReturnsCopy", testGetReturnsCopy},
		{"PutOverwrite", testPutOverwrite},
		{"PutCopiesInput", testPutCopiesInput},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfAbsentRace", testPutIfAbsentRace},
		{"PutIfMatch", testPutIfMatch},
		{"PutIfMatchCounterRace", testPutIfMatchCounterRace},
		{"Head", testHead},
		{"List", testList},
		{"Delete", testDelete},
		{"DeepKeys", testDeepKeys},
		{"InvalidKeys", testInvalidKeys},
		{"ConcurrentPuts", testConcurrentPuts},
		{"LargeObject", testLargeObject},
		{"LargeObjectConditional", testLargeObjectConditional},
		{"CanceledContext", testCanceledContext},
		{"CheckConditionalWrites", testCheckConditionalWrites},
		{"String", testString},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustPut(t *testing.T, s store.Store, key string, data []byte) string {
	t.Helper()
	etag, err := s.Put(ctx(t), key, data)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if etag == "" {
		t.Fatalf("Put(%q): empty ETag", key)
	}
	return etag
}

func mustGet(t *testing.T, s store.Store, key string) []byte {
	t.Helper()
	data, err := s.Get(ctx(t), key, 0, -1)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return data
}

func mustHead(t *testing.T, s store.Store, key string) store.Info {
	t.Helper()
	info, err := s.Head(ctx(t), key)
	if err != nil {
		t.Fatalf("Head(%q): %v", key, err)
	}
	return info
}

func wantContent(t *testing.T, s store.Store, key string, want []byte) {
	t.Helper()
	if got := mustGet(t, s, key); !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %s, want %s", key, describe(got), describe(want))
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func describe(b []byte) string {
	if len(b) <= 64 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%d bytes %q...", len(b), b[:32])
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func testGetMissing(t *testing.T, s store.Store) {
	_, err := s.Get(ctx(t), "missing", 0, -1)
	wantErr(t, "Get missing", err, store.ErrNotFound)
	_, err = s.Get(ctx(t), "missing", 5, 10)
	wantErr(t, "Get missing, ranged", err, store.ErrNotFound)
	_, err = s.Get(ctx(t), "missing", 0, 0)
	wantErr(t, "Get missing, zero length", err, store.ErrNotFound)
	_, err = s.Get(ctx(t), "no/such/dir/key", 0, -1)
	wantErr(t, "Get missing, nested", err, store.ErrNotFound)
}

func testGetRanges(t *testing.T, s store.Store) {
	data := []byte("0123456789abcdefghij") // 20 bytes
	mustPut(t, s, "obj", data)
	tests := []struct {
		name        string
		off, length int64
		want        string
		err         error
	}{
		{"whole", 0, -1, string(data), nil},
		{"whole by length", 0, 20, string(data), nil},
		{"prefix", 0, 5, "01234", nil},
		{"middle", 7, 3, "789", nil},
		{"one byte", 19, 1, "j", nil},
		{"suffix to end", 15, -1, "fghij", nil},
		{"runs past end", 15, 100, "fghij", nil},
		{"zero length", 5, 0, "", nil},
		{"at end", 20, -1, "", nil},
		{"at end with length", 20, 5, "", nil},
		{"at end zero length", 20, 0, "", nil},
		{"past end", 21, -1, "", store.ErrInvalidRange},
		{"past end with length", 25, 5, "", store.ErrInvalidRange},
		{"past end zero length", 21, 0, "", store.ErrInvalidRange},
		{"negative offset", -1, 5, "", store.ErrInvalidRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Get(ctx(t), "obj", tc.off, tc.length)
			if tc.err != nil {
				wantErr(t, fmt.Sprintf("Get(%d, %d)", tc.off, tc.length), err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("Get(%d, %d): %v", tc.off, tc.length, err)
			}
			if got == nil {
				t.Fatalf("Get(%d, %d) = nil, want non-nil", tc.off, tc.length)
			}
			if string(got) != tc.want {
				t.Fatalf("Get(%d, %d) = %q, want %q", tc.off, tc.length, got, tc.want)
			}
		})
	}
}

func testGetEmptyObject(t *testing.T, s store.Store) {
	etag := mustPut(t, s, "empty", []byte{})
	if info := mustHead(t, s, "empty"); info.Size != 0 || info.ETag != etag {
		t.Fatalf("Head(empty) = %+v, want size 0, ETag %q", info, etag)
	}
	for _, r := range [][2]int64{{0, -1}, {0, 0}, {0, 10}} {
		got, err := s.Get(ctx(t), "empty", r[0], r[1])
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Get(empty, %d, %d) = %q, %v; want empty, nil", r[0], r[1], got, err)
		}
	}
	_, err := s.Get(ctx(t), "empty", 1, -1)
	wantErr(t, "Get(empty, 1, -1)", err, store.ErrInvalidRange)
	// An empty object exists: create-if-absent must see it.
	_, err = s.PutIfAbsent(ctx(t), "empty", []byte("x"))
	wantErr(t, "PutIfAbsent over empty object", err, store.ErrExists)
}

func testGetReturnsCopy(t *testing.T, s store.Store) {
	mustPut(t, s, "k", []byte("hello"))
	got := mustGet(t, s, "k")
	got[0] = 'J'
	wantContent(t, s, "k", []byte("hello"))
}

func testPutOverwrite(t *testing.T, s store.Store) {
	e1 := mustPut(t, s, "k", []byte("first"))
	e2 := mustPut(t, s, "k", []byte("second, longer"))
	if e1 == e2 {
		t.Fatalf("ETag unchanged (%q) after overwrite with different content", e1)
	}
	wantContent(t, s, "k", []byte("second, longer"))
	if info := mustHead(t, s, "k"); info.ETag != e2 || info.Size != int64(len("second, longer")) {
		t.Fatalf("Head = %+v, want ETag %q size %d", info, e2, len("second, longer"))
	}
	e3 := mustPut(t, s, "k", []byte("3"))
	if e3 == e2 || e3 == e1 {
		t.Fatalf("ETag %q repeats an earlier one (%q, %q)", e3, e1, e2)
	}
	wantContent(t, s, "k", []byte("3"))
}

func testPutCopiesInput(t *testing.T, s store.Store) {
	buf := []byte("original")
	mustPut(t, s, "k", buf)
	copy(buf, "CHANGED!")
	wantContent(t, s, "k", []byte("original"))
}

func testPutIfAbsent(t *testing.T, s store.Store) {
	etag, err := s.PutIfAbsent(ctx(t), "k", []byte("one"))
	if err != nil {
		t.Fatalf("PutIfAbsent on absent key: %v", err)
	}
	if info := mustHead(t, s, "k"); info.ETag != etag {
		t.Fatalf("Head ETag %q, PutIfAbsent returned %q", info.ETag, etag)
	}
	_, err = s.PutIfAbsent(ctx(t), "k", []byte("two"))
	wantErr(t, "PutIfAbsent on present key", err, store.ErrExists)
	if errors.Is(err, store.ErrPrecondition) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PutIfAbsent on present key: %v is also another sentinel", err)
	}
	wantContent(t, s, "k", []byte("one"))
	// Same bytes again: still a create on an existing key.
	_, err = s.PutIfAbsent(ctx(t), "k", []byte("one"))
	wantErr(t, "PutIfAbsent same bytes on present key", err, store.ErrExists)

	// After a delete the key is absent again.
	if err := s.Delete(ctx(t), "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIfAbsent(ctx(t), "k", []byte("three")); err != nil {
		t.Fatalf("PutIfAbsent after delete: %v", err)
	}
	wantContent(t, s, "k", []byte("three"))
}

func testPutIfAbsentRace(t *testing.T, s store.Store) {
	const racers = 8
	for round := range 3 {
		key := fmt.Sprintf("race/%d", round)
		var wg sync.WaitGroup
		etags := make([]string, racers)
		errs := make([]error, racers)
		start := make(chan struct{})
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				etags[i], errs[i] = s.PutIfAbsent(ctx(t), key, []byte("writer "+strconv.Itoa(i)))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both won PutIfAbsent", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrExists):
				t.Fatalf("round %d: writer %d: err = %v, want ErrExists", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won PutIfAbsent", round)
		}
		wantContent(t, s, key, []byte("writer "+strconv.Itoa(winner)))
		if info := mustHead(t, s, key); info.ETag != etags[winner] {
			t.Fatalf("round %d: Head ETag %q, winner's %q", round, info.ETag, etags[winner])
		}
	}
}

func testPutIfMatch(t *testing.T, s store.Store) {
	_, err := s.PutIfMatch(ctx(t), "k", []byte("x"), "some-etag")
	wantErr(t, "PutIfMatch on missing key", err, store.ErrNotFound)
	_, err = s.PutIfMatch(ctx(t), "k", []byte("x"), "")
	wantErr(t, "PutIfMatch with empty ETag on missing key", err, store.ErrNotFound)

	e1 := mustPut(t, s, "k", []byte("v1"))
	e2, err := s.PutIfMatch(ctx(t), "k", []byte("v2"), e1)
	if err != nil {
		t.Fatalf("PutIfMatch with current ETag: %v", err)
	}
	wantContent(t, s, "k", []byte("v2"))
	if info := mustHead(t, s, "k"); info.ETag != e2 {
		t.Fatalf("Head ETag %q, PutIfMatch returned %q", info.ETag, e2)
	}

	tests := []struct{ name, etag string }{
		{"stale", e1},
		{"wrong", "0123456789abcdef0123456789abcdef"},
		{"garbage", "not an etag"},
		{"empty", ""},
	}
	for _, tc := range tests {
		_, err := s.PutIfMatch(ctx(t), "k", []byte("bad"), tc.etag)
		wantErr(t, "PutIfMatch with "+tc.name+" ETag", err, store.ErrPrecondition)
		wantContent(t, s, "k", []byte("v2"))
	}

	// The ETag from List works too.
	infos, err := s.List(ctx(t), "k")
	if err != nil || len(infos) != 1 {
		t.Fatalf("List(k) = %v, %v", infos, err)
	}
	if _, err := s.PutIfMatch(ctx(t), "k", []byte("v3"), infos[0].ETag); err != nil {
		t.Fatalf("PutIfMatch with ETag from List: %v", err)
	}
	wantContent(t, s, "k", []byte("v3"))

	// A deleted object's ETag matches nothing.
	e3 := mustHead(t, s, "k").ETag
	if err := s.Delete(ctx(t), "k"); err != nil {
		t.Fatal(err)
	}
	_, err = s.PutIfMatch(ctx(t), "k", []byte("v4"), e3)
	wantErr(t, "PutIfMatch after delete", err, store.ErrNotFound)
}

// testPutIfMatchCounterRace runs read-modify-CAS loops on one counter from
// several goroutines; every increment must land exactly once.
func testPutIfMatchCounterRace(t *testing.T, s store.Store) {
	const workers, increments = 4, 10
	mustPut(t, s, "counter", []byte("0"))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range increments {
				if err := Increment(ctx(t), s, "counter"); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantContent(t, s, "counter", []byte(strconv.Itoa(workers*increments)))
}

// Increment adds one to the decimal counter at key with a read, compare-and-swap,
// retry loop. Tests of other packages and processes use it to check that
// PutIfMatch is exclusive.
func Increment(ctx context.Context, s store.Store, key string) error {
	for attempt := 0; attempt < 1000; attempt++ {
		// Head before Get: if a write lands in between, the ETag is the
		// older one and the CAS fails, instead of succeeding on stale data.
		info, err := s.Head(ctx, key)
		if err != nil {
			return err
		}
		data, err := s.Get(ctx, key, 0, -1)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(data))
		if err != nil {
			return fmt.Errorf("counter holds %q: %w", data, err)
		}
		_, err = s.PutIfMatch(ctx, key, []byte(strconv.Itoa(n+1)), info.ETag)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrPrecondition) {
			return err
		}
	}
	return errors.New("no progress after 1000 CAS attempts")
}

// testCheckConditionalWrites: the start-up probe passes on a store that
// honours conditions, and leaves nothing behind.
func testCheckConditionalWrites(t *testing.T, s store.Store) {
	if err := store.CheckConditionalWrites(ctx(t), s); err != nil {
		t.Fatal(err)
	}
	left, err := s.List(ctx(t), "probe/")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("the probe left %d objects behind", len(left))
	}
}

func testHead(t *testing.T, s store.Store) {
	_, err := s.Head(ctx(t), "k")
	wantErr(t, "Head missing", err, store.ErrNotFound)
	before := time.Now().Add(-time.Minute) // allow for clock skew with a server
	etag := mustPut(t, s, "dir/k", []byte("12345"))
	info := mustHead(t, s, "dir/k")
	if info.Key != "dir/k" || info.Size != 5 || info.ETag != etag {
		t.Fatalf("Head = %+v, want key dir/k, size 5, ETag %q", info, etag)
	}
	if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Head ModTime %v, want about now", info.ModTime)
	}
	_, err = s.Head(ctx(t), "dir")
	wantErr(t, "Head of a key's parent 'directory'", err, store.ErrNotFound)
}

func testList(t *testing.T, s store.Store) {
	infos, err := s.List(ctx(t), "")
	if err != nil || len(infos) != 0 {
		t.Fatalf("List on empty store = %v, %v; want nothing", infos, err)
	}
	keys := []string{"b", "a/2", "a/1", "a/b/c", "ab", "a-c", "wal/000010", "wal/000002", "z/y/x"}
	etags := map[string]string{}
	for i, k := range keys {
		etags[k] = mustPut(t, s, k, bytes.Repeat([]byte{'x'}, i))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-c", "a/1", "a/2", "a/b/c", "ab", "b", "wal/000002", "wal/000010", "z/y/x"}},
		{"a", []string{"a-c", "a/1", "a/2", "a/b/c", "ab"}},
		{"a/", []string{"a/1", "a/2", "a/b/c"}},
		{"a/b", []string{"a/b/c"}},
		{"a/b/", []string{"a/b/c"}},
		{"a/b/c", []string{"a/b/c"}},
		{"a/b/c/", nil},
		{"wal/0000", []string{"wal/000002", "wal/000010"}},
		{"z/y", []string{"z/y/x"}},
		{"zz", nil},
		{"c", nil},
		{"nope/", nil},
	}
	for _, tc := range tests {
		infos, err := s.List(ctx(t), tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		if infos == nil {
			t.Fatalf("List(%q) = nil, want non-nil", tc.prefix)
		}
		var got []string
		for _, info := range infos {
			got = append(got, info.Key)
			i := indexOf(keys, info.Key)
			if i < 0 || info.Size != int64(i) || info.ETag != etags[info.Key] {
				t.Fatalf("List(%q): %+v, want size %d ETag %q", tc.prefix, info, i, etags[info.Key])
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Fatalf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func indexOf(keys []string, k string) int {
	for i, x := range keys {
		if x == k {
			return i
		}
	}
	return -1
}

func testDelete(t *testing.T, s store.Store) {
	if err := s.Delete(ctx(t), "missing"); err != nil {
		t.Fatalf("Delete missing: %v", err)
	}
	if err := s.Delete(ctx(t), "no/such/dir"); err != nil {
		t.Fatalf("Delete missing nested: %v", err)
	}
	mustPut(t, s, "d/k1", []byte("1"))
	mustPut(t, s, "d/k2", []byte("2"))
	if err := s.Delete(ctx(t), "d/k1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Get(ctx(t), "d/k1", 0, -1)
	wantErr(t, "Get after delete", err, store.ErrNotFound)
	_, err = s.Head(ctx(t), "d/k1")
	wantErr(t, "Head after delete", err, store.ErrNotFound)
	if err := s.Delete(ctx(t), "d/k1"); err != nil {
		t.Fatalf("Delete twice: %v", err)
	}
	// Deleting a key's parent "directory" deletes nothing.
	if err := s.Delete(ctx(t), "d"); err != nil {
		t.Fatalf("Delete of a parent: %v", err)
	}
	infos, err := s.List(ctx(t), "")
	if err != nil || len(infos) != 1 || infos[0].Key != "d/k2" {
		t.Fatalf("List after delete = %+v, %v; want just d/k2", infos, err)
	}
	wantContent(t, s, "d/k2", []byte("2"))
}

func testDeepKeys(t *testing.T, s store.Store) {
	var segs []string
	for i := range 20 {
		segs = append(segs, fmt.Sprintf("level-%02d", i))
	}
	key := strings.Join(segs, "/") + "/leaf.bin"
	weird := "odd chars/ü spaced+plus=eq~tilde@at,comma;semi'quote(paren)&amp$dollar%pct"
	for _, k := range []string{key, weird} {
		mustPut(t, s, k, []byte(k))
		wantContent(t, s, k, []byte(k))
		infos, err := s.List(ctx(t), k[:len(k)/2])
		if err != nil || len(infos) != 1 || infos[0].Key != k {
			t.Fatalf("List(%q) = %+v, %v", k[:len(k)/2], infos, err)
		}
		if err := s.Delete(ctx(t), k); err != nil {
			t.Fatal(err)
		}
		_, err = s.Head(ctx(t), k)
		wantErr(t, "Head after delete", err, store.ErrNotFound)
	}
}

func testInvalidKeys(t *testing.T, s store.Store) {
	bad := []string{"", "/abs", "a//b", "a/", "..", "a/../b", "./a", "a/.", "nul\x00byte", ".zerofs/x", strings.Repeat("k", 1025)}
	for _, k := range bad {
		c := ctx(t)
		_, err := s.Put(c, k, []byte("x"))
		wantErr(t, fmt.Sprintf("Put(%q)", k), err, store.ErrInvalidKey)
		_, err = s.PutIfAbsent(c, k, []byte("x"))
		wantErr(t, fmt.Sprintf("PutIfAbsent(%q)", k), err, store.ErrInvalidKey)
		_, err = s.PutIfMatch(c, k, []byte("x"), "e")
		wantErr(t, fmt.Sprintf("PutIfMatch(%q)", k), err, store.ErrInvalidKey)
		_, err = s.Get(c, k, 0, -1)
		wantErr(t, fmt.Sprintf("Get(%q)", k), err, store.ErrInvalidKey)
		_, err = s.Head(c, k)
		wantErr(t, fmt.Sprintf("Head(%q)", k), err, store.ErrInvalidKey)
		err = s.Delete(c, k)
		wantErr(t, fmt.Sprintf("Delete(%q)", k), err, store.ErrInvalidKey)
	}
	infos, err := s.List(ctx(t), "")
	if err != nil || len(infos) != 0 {
		t.Fatalf("List after rejected puts = %+v, %v; want nothing", infos, err)
	}
}

func testConcurrentPuts(t *testing.T, s store.Store) {
	const writers, perWriter = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				key := fmt.Sprintf("w%d/obj%d", w, i)
				if _, err := s.Put(ctx(t), key, []byte(key)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	infos, err := s.List(ctx(t), "")
	if err != nil || len(infos) != writers*perWriter {
		t.Fatalf("List = %d objects, %v; want %d", len(infos), err, writers*perWriter)
	}
	for _, info := range infos {
		wantContent(t, s, info.Key, []byte(info.Key))
	}
}

func testLargeObject(t *testing.T, s store.Store) {
	data := randomBytes(LargeObjectSize, 1)
	etag := mustPut(t, s, "large", data)
	info := mustHead(t, s, "large")
	if info.Size != LargeObjectSize || info.ETag != etag {
		t.Fatalf("Head = %+v, want size %d ETag %q", info, LargeObjectSize, etag)
	}
	wantContent(t, s, "large", data)
	const mib = 1 << 20
	for _, r := range [][2]int64{
		{0, 100},
		{5*mib - 10, 20}, // across the first part boundary
		{10*mib - 1, 2},  // across the second
		{7 * mib, 3 * mib},
		{LargeObjectSize - 7, -1},
		{LargeObjectSize - 7, 1000},
		{LargeObjectSize, -1},
	} {
		got, err := s.Get(ctx(t), "large", r[0], r[1])
		if err != nil {
			t.Fatalf("Get(large, %d, %d): %v", r[0], r[1], err)
		}
		end := int64(len(data))
		if r[1] >= 0 {
			end = min(end, r[0]+r[1])
		}
		if !bytes.Equal(got, data[r[0]:end]) {
			t.Fatalf("Get(large, %d, %d): %d bytes differ from what was put", r[0], r[1], len(got))
		}
	}
	infos, err := s.List(ctx(t), "")
	if err != nil || len(infos) != 1 || infos[0].Size != LargeObjectSize || infos[0].ETag != etag {
		t.Fatalf("List = %+v, %v", infos, err)
	}
	// Overwrite with different large content: new ETag, new bytes.
	data2 := randomBytes(LargeObjectSize, 2)
	etag2 := mustPut(t, s, "large", data2)
	if etag2 == etag {
		t.Fatalf("ETag unchanged after overwriting with different content")
	}
	wantContent(t, s, "large", data2)
}

func testLargeObjectConditional(t *testing.T, s store.Store) {
	a := randomBytes(LargeObjectSize, 3)
	b := randomBytes(LargeObjectSize, 4)
	ea, err := s.PutIfAbsent(ctx(t), "large", a)
	if err != nil {
		t.Fatalf("PutIfAbsent large on absent key: %v", err)
	}
	_, err = s.PutIfAbsent(ctx(t), "large", b)
	wantErr(t, "PutIfAbsent large on present key", err, store.ErrExists)
	wantContent(t, s, "large", a)

	eb, err := s.PutIfMatch(ctx(t), "large", b, ea)
	if err != nil {
		t.Fatalf("PutIfMatch large with current ETag: %v", err)
	}
	wantContent(t, s, "large", b)
	if info := mustHead(t, s, "large"); info.ETag != eb {
		t.Fatalf("Head ETag %q, PutIfMatch returned %q", info.ETag, eb)
	}
	_, err = s.PutIfMatch(ctx(t), "large", a, ea)
	wantErr(t, "PutIfMatch large with stale ETag", err, store.ErrPrecondition)
	_, err = s.PutIfMatch(ctx(t), "large-missing", a, ea)
	wantErr(t, "PutIfMatch large on missing key", err, store.ErrNotFound)
	wantContent(t, s, "large", b)
	// A small CAS over a large object, and back.
	es, err := s.PutIfMatch(ctx(t), "large", []byte("small"), eb)
	if err != nil {
		t.Fatalf("PutIfMatch small over large: %v", err)
	}
	if _, err := s.PutIfMatch(ctx(t), "large", a, es); err != nil {
		t.Fatalf("PutIfMatch large over small: %v", err)
	}
	wantContent(t, s, "large", a)
}

func testCanceledContext(t *testing.T, s store.Store) {
	mustPut(t, s, "k", []byte("v"))
	c, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{}
	_, checks["Get"] = s.Get(c, "k", 0, -1)
	_, checks["Head"] = s.Head(c, "k")
	_, checks["Put"] = s.Put(c, "k2", []byte("v"))
	_, checks["PutIfAbsent"] = s.PutIfAbsent(c, "k3", []byte("v"))
	_, checks["PutIfMatch"] = s.PutIfMatch(c, "k", []byte("v2"), "e")
	_, checks["List"] = s.List(c, "")
	checks["Delete"] = s.Delete(c, "k")
	for op, err := range checks {
		wantErr(t, op+" with canceled context", err, context.Canceled)
	}
	wantContent(t, s, "k", []byte("v"))
}

func testString(t *testing.T, s store.Store) {
	name := s.String()
	if name == "" {
		t.Fatal("String() is empty")
	}
	for _, secret := range []string{"secret", "password"} {
		if strings.Contains(strings.ToLower(name), secret) {
			t.Fatalf("String() = %q looks like it holds credentials", name)
		}
	}
}
