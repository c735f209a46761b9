package store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/storetest"
)

func openFileStore(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), "file://"+dir, store.Options{})
	if err != nil {
		t.Fatalf("Open(file://%s): %v", dir, err)
	}
	return s
}

func TestFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openFileStore(t, t.TempDir()) })
}

// TestFileTwoOpens runs the suite against two stores opened on one directory,
// alternating calls between them: the races of the suite then pit two
// independent lock sets against each other, as two processes would.
func TestFileTwoOpens(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		dir := t.TempDir()
		return &alternating{stores: []store.Store{openFileStore(t, dir), openFileStore(t, dir)}}
	})
}

// alternating sends each call to the next of its stores in turn.
type alternating struct {
	stores []store.Store
	n      atomic.Uint64
}

func (a *alternating) next() store.Store {
	return a.stores[a.n.Add(1)%uint64(len(a.stores))]
}

func (a *alternating) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	return a.next().Get(ctx, key, off, length)
}
func (a *alternating) Put(ctx context.Context, key string, data []byte) (string, error) {
	return a.next().Put(ctx, key, data)
}
func (a *alternating) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	return a.next().PutIfAbsent(ctx, key, data)
}
func (a *alternating) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (string, error) {
	return a.next().PutIfMatch(ctx, key, data, etag)
}
func (a *alternating) Head(ctx context.Context, key string) (store.Info, error) {
	return a.next().Head(ctx, key)
}
func (a *alternating) List(ctx context.Context, prefix string) ([]store.Info, error) {
	return a.next().List(ctx, prefix)
}
func (a *alternating) Delete(ctx context.Context, key string) error {
	return a.next().Delete(ctx, key)
}
func (a *alternating) String() string { return a.stores[0].String() }

// TestFileProcesses races real processes (this test binary, re-run as a
// helper) on one directory: CAS increments of one counter and
// create-if-absent of the same keys.
func TestFileProcesses(t *testing.T) {
	if dir := os.Getenv("ZEROFS_FILE_HELPER_DIR"); dir != "" {
		fileHelper(t, dir)
		return
	}
	const procs, rounds = 3, 15
	dir := t.TempDir()
	s := openFileStore(t, dir)
	if _, err := s.Put(context.Background(), "counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	outs := make([][]byte, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := testutil.Child{Run: "^TestFileProcesses$", Env: []string{"ZEROFS_FILE_HELPER_DIR=" + dir,
				"ZEROFS_FILE_HELPER_ID=" + strconv.Itoa(p), "ZEROFS_FILE_HELPER_ROUNDS=" + strconv.Itoa(rounds)}}.Command()
			outs[p], errs[p] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	winners := map[string][]int{}
	for p := range procs {
		if errs[p] != nil {
			t.Fatalf("helper %d: %v\n%s", p, errs[p], outs[p])
		}
		sc := bufio.NewScanner(bytes.NewReader(outs[p]))
		for sc.Scan() {
			if key, ok := strings.CutPrefix(sc.Text(), "WON "); ok {
				winners[key] = append(winners[key], p)
			}
		}
	}
	ctx := context.Background()
	for i := range rounds {
		key := fmt.Sprintf("race/%d", i)
		if len(winners[key]) != 1 {
			t.Fatalf("%s won by helpers %v, want exactly one", key, winners[key])
		}
		got, err := s.Get(ctx, key, 0, -1)
		if err != nil || string(got) != strconv.Itoa(winners[key][0]) {
			t.Fatalf("%s = %q, %v; want winner %d's bytes", key, got, err, winners[key][0])
		}
	}
	got, err := s.Get(ctx, "counter", 0, -1)
	if err != nil || string(got) != strconv.Itoa(procs*rounds) {
		t.Fatalf("counter = %q, %v; want %d", got, err, procs*rounds)
	}
}

func fileHelper(t *testing.T, dir string) {
	id := os.Getenv("ZEROFS_FILE_HELPER_ID")
	rounds, _ := strconv.Atoi(os.Getenv("ZEROFS_FILE_HELPER_ROUNDS"))
	s := openFileStore(t, dir)
	ctx := context.Background()
	for i := range rounds {
		if err := storetest.Increment(ctx, s, "counter"); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("race/%d", i)
		_, err := s.PutIfAbsent(ctx, key, []byte(id))
		switch {
		case err == nil:
			fmt.Printf("WON %s\n", key)
		case !errors.Is(err, store.ErrExists):
			t.Fatal(err)
		}
	}
}

func TestFileTempLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := openFileStore(t, dir)
	ctx := context.Background()
	if _, err := s.Put(ctx, "a/obj", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	tmpDir := filepath.Join(dir, ".zerofs", "tmp")
	// What a crash leaves: a half-written temp file, and the temp name of an
	// object whose link succeeded just before the crash.
	if err := os.WriteFile(filepath.Join(tmpDir, "crashed.tmp"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a", "obj"), filepath.Join(tmpDir, "linked.tmp")); err != nil {
		t.Fatal(err)
	}
	// A live writer's temp file, locked, must survive another Open.
	live, err := os.OpenFile(filepath.Join(tmpDir, "live.tmp"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := syscall.Flock(int(live.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	infos, err := s.List(ctx, "")
	if err != nil || len(infos) != 1 || infos[0].Key != "a/obj" {
		t.Fatalf("List with temp files present = %+v, %v; want just a/obj", infos, err)
	}

	s2 := openFileStore(t, dir)
	entries, err := os.ReadDir(tmpDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "live.tmp" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("after Open, temp dir holds %q; want only the live writer's live.tmp", names)
	}
	got, err := s2.Get(ctx, "a/obj", 0, -1)
	if err != nil || string(got) != "kept" {
		t.Fatalf("Get(a/obj) after cleanup = %q, %v", got, err)
	}
}

func TestFileDiskFull(t *testing.T) {
	dir := t.TempDir()
	s := openFileStore(t, dir)
	ctx := context.Background()
	etag, err := s.Put(ctx, "k", []byte("old contents"))
	if err != nil {
		t.Fatal(err)
	}
	// The disk fills halfway through the next write.
	store.SetFileWriteHook(s, func(f *os.File, p []byte) (int, error) {
		n, _ := f.Write(p[:len(p)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	})
	ops := map[string]func() error{
		"Put":                func() error { _, err := s.Put(ctx, "k", []byte("new contents")); return err },
		"PutIfMatch":         func() error { _, err := s.PutIfMatch(ctx, "k", []byte("new contents"), etag); return err },
		"PutIfAbsent (new)":  func() error { _, err := s.PutIfAbsent(ctx, "fresh", []byte("x")); return err },
		"Put (new, nested)":  func() error { _, err := s.Put(ctx, "d/e/f", []byte("x")); return err },
		"PutIfAbsent (old)":  func() error { _, err := s.PutIfAbsent(ctx, "k", []byte("x")); return err },
		"Put (large object)": func() error { _, err := s.Put(ctx, "k", make([]byte, 3<<20)); return err },
	}
	for name, op := range ops {
		err := op()
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("%s on a full disk: err = %v, want ENOSPC saying so", name, err)
		}
	}
	got, err := s.Get(ctx, "k", 0, -1)
	if err != nil || string(got) != "old contents" {
		t.Fatalf("after failed writes, k = %q, %v; want the old contents", got, err)
	}
	if info, err := s.Head(ctx, "k"); err != nil || info.ETag != etag {
		t.Fatalf("after failed writes, Head(k) = %+v, %v; want ETag %q", info, err, etag)
	}
	for _, key := range []string{"fresh", "d/e/f"} {
		if _, err := s.Head(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("after failed write, Head(%s) = %v; want ErrNotFound", key, err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, ".zerofs", "tmp")); len(entries) != 0 {
		t.Fatalf("failed writes left %d temp files", len(entries))
	}
	store.SetFileWriteHook(s, nil)
	if _, err := s.PutIfMatch(ctx, "k", []byte("after"), etag); err != nil {
		t.Fatalf("write after the disk has room again: %v", err)
	}
}

func TestFileKeyDirectoryConflict(t *testing.T) {
	s := openFileStore(t, t.TempDir())
	ctx := context.Background()
	if _, err := s.Put(ctx, "a/b", []byte("child")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "x", []byte("file")); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Put over a directory":         second(s.Put(ctx, "a", []byte("v"))),
		"PutIfAbsent over a directory": second(s.PutIfAbsent(ctx, "a", []byte("v"))),
		"Put under an object":          second(s.Put(ctx, "x/y", []byte("v"))),
		"PutIfAbsent under an object":  second(s.PutIfAbsent(ctx, "x/y/z", []byte("v"))),
	} {
		if err == nil || errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), "file backend") {
			t.Fatalf("%s: err = %v; want an error explaining the file backend's limit", name, err)
		}
	}
	if _, err := s.PutIfMatch(ctx, "a", []byte("v"), "e"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PutIfMatch on a directory: err = %v; want ErrNotFound", err)
	}
	for key, want := range map[string]string{"a/b": "child", "x": "file"} {
		got, err := s.Get(ctx, key, 0, -1)
		if err != nil || string(got) != want {
			t.Fatalf("Get(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestFileCorruptObject(t *testing.T) {
	dir := t.TempDir()
	s := openFileStore(t, dir)
	ctx := context.Background()
	if err := os.WriteFile(filepath.Join(dir, "foreign"), []byte("not an object"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Get":  second(s.Get(ctx, "foreign", 0, -1)),
		"Head": second(s.Head(ctx, "foreign")),
		"List": second(s.List(ctx, "")),
	} {
		if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "not a zerofs object file") {
			t.Fatalf("%s of a foreign file: err = %v; want a clear corruption error", name, err)
		}
	}
}

func TestFileOpenErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(context.Background(), "file://"+f+"/sub", store.Options{})
	if err == nil || !strings.Contains(err.Error(), f) {
		t.Fatalf("Open under a regular file: err = %v; want an error naming the path", err)
	}
}

func TestFileRelativeURL(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ctx := context.Background()
	for _, u := range []string{"file://rel/one", "file://./rel/two"} {
		s, err := store.Open(ctx, u, store.Options{})
		if err != nil {
			t.Fatalf("Open(%s): %v", u, err)
		}
		if _, err := s.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"rel/one/k", "rel/two/k"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("relative file URL did not store under the working directory: %v", err)
		}
	}
}
