package faultstore_test

import (
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
	"zerofs/store/storetest"
)

// hang bounds a wait that only a bug makes long.
const hang = 60 * time.Second

func TestConformanceMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return faultstore.New(store.NewMem()) })
}

func TestConformanceFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.Open(context.Background(), "file://"+t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return faultstore.New(s)
	})
}

// TestConformanceWithIdleRules: rules that select nothing leave the store
// conforming.
func TestConformanceWithIdleRules(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := faultstore.New(store.NewMem())
		never := faultstore.On().Prefix("\x00never/")
		s.Fail(never, nil)
		s.Delay(never, time.Hour)
		s.Hold(never)
		s.After(never, func(faultstore.Op, string, error) error { return errors.New("never") })
		return s
	})
}

var errReset = errors.New("connection reset")

func bg() context.Context { return context.Background() }

func put(s store.Store, key string) error {
	_, err := s.Put(bg(), key, []byte("v"))
	return err
}

func exists(t *testing.T, s store.Store, key string) bool {
	t.Helper()
	_, err := s.Head(bg(), key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestFail: which calls a Fail rule selects, and what they return.
func TestFail(t *testing.T) {
	storeSentinels := []error{store.ErrNotFound, store.ErrExists, store.ErrPrecondition, store.ErrInvalidRange}
	for _, tc := range []struct {
		name   string
		m      faultstore.Match
		err    error
		call   func(s store.Store) error
		wantIs error // nil: the call passes
	}{
		{"every op", faultstore.On(), nil, func(s store.Store) error { return put(s, "k") }, faultstore.ErrInjected},
		{"selected op", faultstore.On(faultstore.OpPut), nil, func(s store.Store) error { return put(s, "k") }, faultstore.ErrInjected},
		{"other op", faultstore.On(faultstore.OpGet), nil, func(s store.Store) error { return put(s, "k") }, nil},
		{"Puts selects PutIfAbsent", faultstore.Puts(), nil, func(s store.Store) error {
			_, err := s.PutIfAbsent(bg(), "k", []byte("v"))
			return err
		}, faultstore.ErrInjected},
		{"Puts leaves Delete", faultstore.Puts(), nil, func(s store.Store) error { return s.Delete(bg(), "k") }, nil},
		{"prefix match", faultstore.On().Prefix("wal/"), nil, func(s store.Store) error { return put(s, "wal/1") }, faultstore.ErrInjected},
		{"prefix miss", faultstore.On().Prefix("wal/"), nil, func(s store.Store) error { return put(s, "seg/1") }, nil},
		{"key match", faultstore.On().Key("a"), nil, func(s store.Store) error { return put(s, "a") }, faultstore.ErrInjected},
		{"key miss", faultstore.On().Key("a"), nil, func(s store.Store) error { return put(s, "ab") }, nil},
		{"where", faultstore.On().Where(func(k string) bool { return strings.HasSuffix(k, ".x") }), nil,
			func(s store.Store) error { return put(s, "a.x") }, faultstore.ErrInjected},
		{"conditions add up", faultstore.On().Prefix("a").Where(func(k string) bool { return strings.HasSuffix(k, "z") }), nil,
			func(s store.Store) error { return put(s, "bz") }, nil},
		{"List matches its prefix", faultstore.On(faultstore.OpList).Key("wal/"), nil, func(s store.Store) error {
			_, err := s.List(bg(), "wal/")
			return err
		}, faultstore.ErrInjected},
		{"own error", faultstore.On(), errReset, func(s store.Store) error { return put(s, "k") }, errReset},
		{"store sentinel on demand", faultstore.On(), store.ErrPrecondition, func(s store.Store) error { return put(s, "k") }, store.ErrPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := store.NewMem()
			s := faultstore.New(mem)
			s.Fail(tc.m, tc.err)
			err := tc.call(s)
			if tc.wantIs == nil {
				if err != nil {
					t.Fatalf("call failed: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("error %v, want one wrapping %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), "faultstore") {
				t.Errorf("error %q does not say it was injected", err)
			}
			if tc.err == nil {
				for _, sentinel := range storeSentinels {
					if errors.Is(err, sentinel) {
						t.Errorf("injected error %v wraps store sentinel %v", err, sentinel)
					}
				}
			}
			if exists(t, mem, "k") {
				t.Error("a failed Put reached the inner store")
			}
		})
	}
}

// TestFailMessage: an injected error names the operation and key.
func TestFailMessage(t *testing.T) {
	s := faultstore.New(store.NewMem())
	s.Fail(faultstore.On(faultstore.OpGet), nil)
	_, err := s.Get(bg(), "wal/7", 0, -1)
	for _, want := range []string{"Get", `"wal/7"`, faultstore.ErrInjected.Error()} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

// TestWindow: Skip and Times choose which of a run of selected calls a rule
// acts on.
func TestWindow(t *testing.T) {
	six := []string{"a0", "a1", "a2", "a3", "a4", "a5"}
	for _, tc := range []struct {
		name string
		m    faultstore.Match
		keys []string // put in turn
		want string   // per put: x fails, . passes
	}{
		{"always", faultstore.On(faultstore.OpPut), six, "xxxxxx"},
		{"next 2", faultstore.On(faultstore.OpPut).Times(2), six, "xx...."},
		{"after 2", faultstore.On(faultstore.OpPut).Skip(2), six, "..xxxx"},
		{"after 1, next 2", faultstore.On(faultstore.OpPut).Skip(1).Times(2), six, ".xx..."},
		{"unselected calls do not count", faultstore.On(faultstore.OpPut).Prefix("a").Skip(1).Times(1),
			[]string{"a0", "b", "a1", "b", "a2", "a3"}, "..x..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := faultstore.New(store.NewMem())
			r := s.Fail(tc.m, nil)
			var got strings.Builder
			for _, k := range tc.keys {
				switch err := put(s, k); {
				case err == nil:
					got.WriteByte('.')
				case errors.Is(err, faultstore.ErrInjected):
					got.WriteByte('x')
				default:
					t.Fatal(err)
				}
			}
			if got.String() != tc.want {
				t.Fatalf("pattern %s, want %s", got.String(), tc.want)
			}
			if want := strings.Count(tc.want, "x"); r.Hits() != want {
				t.Fatalf("Hits %d, want %d", r.Hits(), want)
			}
		})
	}
}

// TestDelay: a delayed call goes on after the delay, or fails with the
// context's error when its context ends first.
func TestDelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule func(s *faultstore.Store)
		ctx  func() (context.Context, context.CancelFunc) // the call's context; cancel runs once the call started
		want error
	}{
		{"short delay passes", func(s *faultstore.Store) { s.Delay(faultstore.On(), time.Millisecond) },
			func() (context.Context, context.CancelFunc) { return bg(), func() {} }, nil},
		{"jitter passes", func(s *faultstore.Store) { s.Jitter(faultstore.On(), time.Millisecond) },
			func() (context.Context, context.CancelFunc) { return bg(), func() {} }, nil},
		{"cancel during delay", func(s *faultstore.Store) { s.Delay(faultstore.On(), time.Hour) },
			func() (context.Context, context.CancelFunc) { return context.WithCancel(bg()) }, context.Canceled},
		{"canceled before the call", func(s *faultstore.Store) { s.Delay(faultstore.On(), time.Hour) },
			func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(bg())
				cancel()
				return ctx, func() {}
			}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := store.NewMem()
			s := faultstore.New(mem)
			entered := make(chan struct{}) // the call reached the rules
			s.Before(faultstore.On().Times(1), func(faultstore.Op, string) error { close(entered); return nil })
			tc.rule(s)
			ctx, cancel := tc.ctx()
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := s.Put(ctx, "k", []byte("v"))
				done <- err
			}()
			select {
			case <-entered:
			case <-time.After(hang):
				t.Fatal("call never started")
			}
			cancel()
			select {
			case err := <-done:
				if tc.want == nil && err != nil {
					t.Fatalf("delayed call: %v", err)
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("delayed call: %v, want %v", err, tc.want)
				}
				if exists(t, mem, "k") != (tc.want == nil) {
					t.Fatalf("object landed: %v, want %v", !(tc.want == nil), tc.want == nil)
				}
			case <-time.After(hang):
				t.Fatal("delayed call did not return")
			}
		})
	}
}

// TestHold: a gate holds calls until released or their context ends, and
// tells how many it holds.
func TestHold(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s *faultstore.Store, inner store.Store)
	}{
		{"release lets held calls go on", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.Puts())
			done := make(chan error, 3)
			for i := range 3 {
				go func() { done <- put(s, fmt.Sprint("k", i)) }()
			}
			waitBlocked(t, g, 3)
			if g.Blocked() != 3 || g.Hits() != 3 {
				t.Fatalf("Blocked %d Hits %d, want 3 and 3", g.Blocked(), g.Hits())
			}
			if exists(t, inner, "k0") || exists(t, inner, "k1") || exists(t, inner, "k2") {
				t.Fatal("a held call reached the inner store")
			}
			if _, err := s.Get(bg(), "k0", 0, -1); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get through a gate on puts: %v, want ErrNotFound", err)
			}
			g.Release()
			for range 3 {
				if err := recv(t, done); err != nil {
					t.Fatal(err)
				}
			}
			if g.Blocked() != 0 {
				t.Fatalf("Blocked %d after release", g.Blocked())
			}
			if err := put(s, "later"); err != nil {
				t.Fatalf("call after release: %v", err)
			}
			g.Release() // idempotent
		}},
		{"context ends while held", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.On())
			defer g.Release()
			ctx, cancel := context.WithCancel(bg())
			done := make(chan error, 1)
			go func() {
				_, err := s.Put(ctx, "k", []byte("v"))
				done <- err
			}()
			waitBlocked(t, g, 1)
			cancel()
			if err := recv(t, done); !errors.Is(err, context.Canceled) {
				t.Fatalf("held call: %v, want context.Canceled", err)
			}
			if exists(t, inner, "k") {
				t.Fatal("a canceled call reached the inner store")
			}
		}},
		{"rule added while held acts on the held call", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.On(faultstore.OpPut))
			done := make(chan error, 1)
			go func() { done <- put(s, "k") }()
			waitBlocked(t, g, 1)
			s.Fail(faultstore.On(faultstore.OpPut), nil)
			g.Release()
			if err := recv(t, done); !errors.Is(err, faultstore.ErrInjected) {
				t.Fatalf("held call: %v, want ErrInjected", err)
			}
		}},
		{"Clear releases gates", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.On())
			s.Fail(faultstore.On().Key("other"), nil)
			done := make(chan error, 1)
			go func() { done <- put(s, "k") }()
			waitBlocked(t, g, 1)
			s.Clear()
			if err := recv(t, done); err != nil {
				t.Fatal(err)
			}
			if err := put(s, "other"); err != nil {
				t.Fatalf("rule survived Clear: %v", err)
			}
		}},
		{"WaitBlocked ends with its context", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.On())
			defer g.Release()
			ctx, cancel := context.WithCancel(bg())
			cancel()
			if err := g.WaitBlocked(ctx, 1); !errors.Is(err, context.Canceled) {
				t.Fatalf("WaitBlocked: %v, want context.Canceled", err)
			}
		}},
		{"WaitBlocked ends on release", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.On())
			g.Release()
			if err := g.WaitBlocked(bg(), 1); err == nil {
				t.Fatal("WaitBlocked on a released gate succeeded")
			}
		}},
		{"hold only the second put", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			g := s.Hold(faultstore.On(faultstore.OpPut).Skip(1).Times(1))
			defer g.Release()
			if err := put(s, "first"); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- put(s, "second") }()
			waitBlocked(t, g, 1)
			if err := put(s, "third"); err != nil {
				t.Fatal(err)
			}
			g.Release()
			if err := recv(t, done); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := store.NewMem()
			tc.fn(t, faultstore.New(mem), mem)
		})
	}
}

func waitBlocked(t *testing.T, g *faultstore.Gate, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg(), hang)
	defer cancel()
	if err := g.WaitBlocked(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(hang):
		t.Fatal("call did not return")
		return nil
	}
}

// TestHooks: Before and After run a test's code around calls.
func TestHooks(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s *faultstore.Store, inner store.Store)
	}{
		{"Before sees op and key", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			var got []string
			s.Before(faultstore.On(), func(op faultstore.Op, key string) error {
				got = append(got, op.String()+" "+key)
				return nil
			})
			put(s, "a")
			s.Head(bg(), "a")
			s.List(bg(), "p/")
			if want := "Put a,Head a,List p/"; strings.Join(got, ",") != want {
				t.Fatalf("hook saw %q, want %q", got, want)
			}
		}},
		{"Before error fails the call", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			s.Before(faultstore.On(faultstore.OpPut), func(faultstore.Op, string) error { return errReset })
			if err := put(s, "k"); !errors.Is(err, errReset) || !strings.Contains(err.Error(), `"k"`) {
				t.Fatalf("Put: %v, want errReset naming the key", err)
			}
			if exists(t, inner, "k") {
				t.Fatal("failed call reached the inner store")
			}
		}},
		{"Before stages a race once", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			r := s.Before(faultstore.On(faultstore.OpPutIfAbsent).Times(1), func(faultstore.Op, string) error {
				return put(inner, "k") // another writer wins
			})
			if _, err := s.PutIfAbsent(bg(), "k", []byte("mine")); !errors.Is(err, store.ErrExists) {
				t.Fatalf("PutIfAbsent after a staged race: %v, want ErrExists", err)
			}
			if _, err := s.PutIfAbsent(bg(), "k2", []byte("mine")); err != nil {
				t.Fatal(err)
			}
			if r.Hits() != 1 {
				t.Fatalf("Hits %d, want 1", r.Hits())
			}
		}},
		{"hook removes its own rule", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			calls := 0
			var r *faultstore.Rule
			r = s.Before(faultstore.On(), func(faultstore.Op, string) error {
				calls++
				r.Remove()
				return nil
			})
			put(s, "a")
			put(s, "b")
			if calls != 1 {
				t.Fatalf("hook ran %d times, want 1", calls)
			}
		}},
		{"After loses the answer of a landed put", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			s.After(faultstore.On(faultstore.OpPut), func(op faultstore.Op, key string, err error) error {
				if err != nil {
					return err
				}
				return fmt.Errorf("answer to %v %s lost: %w", op, key, faultstore.ErrInjected)
			})
			if err := put(s, "k"); !errors.Is(err, faultstore.ErrInjected) {
				t.Fatalf("Put: %v, want ErrInjected", err)
			}
			if !exists(t, inner, "k") {
				t.Fatal("the put did not land")
			}
		}},
		{"After sees the inner error", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			var seen error
			s.After(faultstore.On(faultstore.OpGet), func(_ faultstore.Op, _ string, err error) error {
				seen = err
				return err
			})
			if _, err := s.Get(bg(), "missing", 0, -1); !errors.Is(err, store.ErrNotFound) || !errors.Is(seen, store.ErrNotFound) {
				t.Fatalf("Get: %v, hook saw %v; want ErrNotFound for both", err, seen)
			}
		}},
		{"removed rule stops acting", func(t *testing.T, s *faultstore.Store, inner store.Store) {
			r := s.Fail(faultstore.On(), nil)
			if put(s, "k") == nil {
				t.Fatal("Fail rule did not act")
			}
			r.Remove()
			r.Remove() // idempotent
			if err := put(s, "k"); err != nil {
				t.Fatalf("after Remove: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := store.NewMem()
			tc.fn(t, faultstore.New(mem), mem)
		})
	}
}

// TestCounts: calls, errors and bytes per operation, and their reset.
func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(s *faultstore.Store)
		op   faultstore.Op
		want faultstore.Count
	}{
		{"put bytes", func(s *faultstore.Store) { s.Put(bg(), "k", make([]byte, 10)) }, faultstore.OpPut, faultstore.Count{Calls: 1, Bytes: 10}},
		{"get bytes", func(s *faultstore.Store) {
			s.Put(bg(), "k", make([]byte, 10))
			s.Get(bg(), "k", 2, 5)
			s.Get(bg(), "k", 0, -1)
		}, faultstore.OpGet, faultstore.Count{Calls: 2, Bytes: 15}},
		{"inner error", func(s *faultstore.Store) { s.Get(bg(), "missing", 0, -1) }, faultstore.OpGet, faultstore.Count{Calls: 1, Errors: 1}},
		{"injected error", func(s *faultstore.Store) {
			s.Fail(faultstore.On(faultstore.OpPutIfAbsent).Times(1), nil)
			s.PutIfAbsent(bg(), "k", []byte("abc"))
			s.PutIfAbsent(bg(), "k2", []byte("abc"))
		}, faultstore.OpPutIfAbsent, faultstore.Count{Calls: 2, Errors: 1, Bytes: 3}},
		{"other ops counted apart", func(s *faultstore.Store) {
			s.Head(bg(), "k")
			s.List(bg(), "")
			s.Delete(bg(), "k")
		}, faultstore.OpList, faultstore.Count{Calls: 1}},
		{"reset", func(s *faultstore.Store) {
			s.Put(bg(), "k", []byte("abc"))
			s.ResetCounts()
			s.Put(bg(), "k", []byte("ab"))
		}, faultstore.OpPut, faultstore.Count{Calls: 1, Bytes: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := faultstore.New(store.NewMem())
			tc.do(s)
			if got := s.Count(tc.op); got != tc.want {
				t.Fatalf("Count(%v) = %+v, want %+v", tc.op, got, tc.want)
			}
		})
	}
}

// TestConcurrentRules adds and removes rules while calls run (for -race).
func TestConcurrentRules(t *testing.T) {
	s := faultstore.New(store.NewMem())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				if i >= 100 { // at least 100 rounds, then until stopped
					select {
					case <-stop:
						return
					default:
					}
				}
				key := fmt.Sprintf("w%d/%d", w, i%8)
				put(s, key)
				s.Get(bg(), key, 0, -1)
			}
		})
	}
	for i := range 200 {
		rules := []*faultstore.Rule{
			s.Fail(faultstore.On(faultstore.OpGet).Prefix("w1/").Times(2), nil),
			s.Delay(faultstore.On().Key("w2/3"), time.Microsecond),
			s.Before(faultstore.On(faultstore.OpPut), func(faultstore.Op, string) error { return nil }),
			s.After(faultstore.On(), func(_ faultstore.Op, _ string, err error) error { return err }),
		}
		g := s.Hold(faultstore.On().Key(fmt.Sprintf("w3/%d", i%8)))
		for _, r := range rules {
			r.Remove()
		}
		g.Release()
		_ = s.Count(faultstore.OpPut)
	}
	close(stop)
	wg.Wait()
	if s.Count(faultstore.OpPut).Calls == 0 {
		t.Fatal("no calls ran")
	}
}

// TestOpString names every operation.
func TestOpString(t *testing.T) {
	for op, want := range map[faultstore.Op]string{
		faultstore.OpGet: "Get", faultstore.OpPut: "Put", faultstore.OpPutIfAbsent: "PutIfAbsent",
		faultstore.OpPutIfMatch: "PutIfMatch", faultstore.OpHead: "Head", faultstore.OpList: "List",
		faultstore.OpDelete: "Delete",
	} {
		if op.String() != want {
			t.Errorf("%d.String() = %q, want %q", op, op.String(), want)
		}
	}
}

// TestTestOnly: no non-test file of the module imports faultstore.
func TestTestOnly(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "faultstore") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if imp.Path.Value == `"zerofs/store/faultstore"` {
				t.Errorf("%s imports faultstore; only tests may", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
