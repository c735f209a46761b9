package nfs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/fs"
)

// populate creates n empty files named prefix%05d in dir, straight through
// package fs (the listing is what is under test, and it is much faster).
func populate(t testing.TB, f *fixture, dir uint64, prefix string, n int) map[string]bool {
	t.Helper()
	names := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s%05d", prefix, i)
		if _, _, err := f.fs.Create(context.Background(), fs.Root, dir, name, fs.NewNode{Mode: fs.TypeRegular | 0o644}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		names[name] = true
	}
	return names
}

func inoOf(t testing.TB, fh []byte) uint64 {
	t.Helper()
	if len(fh) != handleSize {
		t.Fatalf("handle of %d bytes", len(fh))
	}
	var ino uint64
	for _, b := range fh[9:17] {
		ino = ino<<8 | uint64(b)
	}
	return ino
}

func TestReaddirLarge(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	dir := c.mustMkdir(c.root, "big")
	want := populate(t, f, inoOf(t, dir), "file", 10_000)
	_, dirAttr := c.getattr(dir)
	_, rootAttr := c.getattr(c.root)

	for _, tc := range []struct {
		name  string
		plus  bool
		count uint32
	}{
		{"readdir small count", false, 1024},
		{"readdir 4k", false, 4096},
		{"readdir dtpref", false, dtpref},
		{"readdir over the cap", false, 16 << 20},
		{"readdirplus small count", true, 2048},
		{"readdirplus 32k", true, 32 << 10},
		{"readdirplus 1m", true, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ents := c.listAll(dir, tc.count, tc.plus)
			seen := make(map[string]bool)
			cookies := make(map[uint64]bool)
			var last uint64
			for i, e := range ents {
				if seen[e.name] {
					t.Fatalf("%q listed twice", e.name)
				}
				seen[e.name] = true
				if cookies[e.cookie] || e.cookie == 0 || e.cookie <= last {
					t.Fatalf("entry %d %q: cookie %d after %d", i, e.name, e.cookie, last)
				}
				cookies[e.cookie], last = true, e.cookie
				switch e.name {
				case ".":
					if e.fileid != dirAttr.fileid {
						t.Fatalf(`"." has fileid %d`, e.fileid)
					}
				case "..":
					if e.fileid != rootAttr.fileid {
						t.Fatalf(`".." has fileid %d`, e.fileid)
					}
				default:
					if !want[e.name] {
						t.Fatalf("unexpected entry %q", e.name)
					}
				}
				if tc.plus {
					if e.attr == nil || e.fh == nil || e.attr.fileid != e.fileid || inoOf(t, e.fh) != e.fileid {
						t.Fatalf("READDIRPLUS entry %q without matching attributes and handle: %+v", e.name, e)
					}
				}
			}
			if len(seen) != len(want)+2 || !seen["."] || !seen[".."] {
				t.Fatalf("listed %d names, want %d plus . and ..", len(seen), len(want))
			}
		})
	}

	t.Run("plus handles work", func(t *testing.T) {
		_, ents, _ := c.readdirplus(dir, 0, 4096, 8192)
		for _, e := range ents[2:] {
			if st, a := c.getattr(e.fh); st != StatusOK || a.fileid != e.fileid {
				t.Fatalf("GETATTR of READDIRPLUS handle for %q: %v", e.name, st)
			}
		}
	})

	t.Run("resume from each dot cookie", func(t *testing.T) {
		_, ents, _ := c.readdir(dir, cookieDot, 4096)
		if len(ents) == 0 || ents[0].name != ".." {
			t.Fatalf(`after "." comes %+v`, ents[:min(1, len(ents))])
		}
		_, ents, _ = c.readdir(dir, cookieDotDot, 4096)
		if len(ents) == 0 || ents[0].name != "file00000" {
			t.Fatalf(`after ".." comes %+v`, ents[:min(1, len(ents))])
		}
		st, ents, eof := c.readdir(dir, 1<<62, 4096)
		if st != StatusOK || len(ents) != 0 || !eof {
			t.Fatalf("from a cookie past the end: %v %d entries eof %v", st, len(ents), eof)
		}
	})
}

func TestReaddirEdgeCases(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	empty := c.mustMkdir(c.root, "empty")
	st, ents, eof := c.readdir(empty, 0, 4096)
	if st != StatusOK || !eof || len(ents) != 2 || ents[0].name != "." || ents[1].name != ".." {
		t.Fatalf("empty directory: %v %+v eof %v", st, ents, eof)
	}
	for _, tc := range []struct {
		name               string
		plus               bool
		dircount, maxcount uint32
		want               Status
	}{
		{"readdir count too small", false, 0, 100, StatusTooSmall},
		{"readdir count zero", false, 0, 0, StatusTooSmall},
		{"readdir count just enough", false, 0, 4 + 88 + 8 + 8 + 28, StatusOK},
		{"readdirplus maxcount too small", true, 512, 200, StatusTooSmall},
		{"readdirplus tiny dircount", true, 1, 8192, StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st Status
			var ents []dirEntry
			if tc.plus {
				st, ents, _ = c.readdirplus(empty, 0, tc.dircount, tc.maxcount)
			} else {
				st, ents, _ = c.readdir(empty, 0, tc.maxcount)
			}
			if st != tc.want {
				t.Fatalf("%v, want %v", st, tc.want)
			}
			if st == StatusOK && len(ents) == 0 {
				t.Fatal("no entries")
			}
		})
	}
	file := c.mustCreate(c.root, "file")
	if st, _, _ := c.readdir(file, 0, 4096); st != StatusNotDir {
		t.Fatalf("READDIR of a file: %v, want NOTDIR", st)
	}
	if st, _, _ := c.readdirplus(file, 0, 4096, 8192); st != StatusNotDir {
		t.Fatalf("READDIRPLUS of a file: %v, want NOTDIR", st)
	}
	c.setattr(empty, sattrIn{mode: u32(0o311)}, nil)
	user := f.client(1000, 1000)
	if st, _, _ := user.readdir(empty, 0, 4096); st != StatusAccess {
		t.Fatalf("READDIR of a 0311 directory by another user: %v, want ACCES", st)
	}
}

// TestReaddirConcurrentChanges lists a directory page by page while other
// entries are created and removed: every entry present for the whole
// listing appears exactly once, and nothing appears twice.
func TestReaddirConcurrentChanges(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	dir := c.mustMkdir(c.root, "busy")
	stable := populate(t, f, inoOf(t, dir), "stable", 3000)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var churn atomic.Int64
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := f.client(0, 0)
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("churn%d-%d", w, i)
				if st, _ := cc.create(dir, name, createGuarded, sattrIn{}, 0); st != StatusOK {
					t.Errorf("CREATE %s: %v", name, st)
					return
				}
				if i%2 == 1 {
					if st := cc.remove(dir, fmt.Sprintf("churn%d-%d", w, i-1)); st != StatusOK {
						t.Errorf("REMOVE: %v", st)
						return
					}
				}
				churn.Add(1)
			}
		}()
	}
	// Between the first pages of each listing, wait for the directory to
	// change, until ten changes have happened, however little CPU the
	// churning clients get. (Not all along: the listing would chase the
	// entries they keep adding.)
	var roundStart int64
	changed := func() {
		from := churn.Load()
		if from-roundStart >= 10 {
			return
		}
		for deadline := time.Now().Add(time.Minute); churn.Load() == from; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no create or remove for a minute")
			}
		}
	}
	for round, plus := range []bool{false, true, false} {
		roundStart = churn.Load()
		ents := c.listAllPaged(dir, 1500, plus, changed)
		seen := make(map[string]bool)
		for _, e := range ents {
			if seen[e.name] {
				t.Fatalf("round %d: %q listed twice", round, e.name)
			}
			seen[e.name] = true
		}
		for name := range stable {
			if !seen[name] {
				t.Fatalf("round %d: %q skipped", round, name)
			}
		}
	}
	cancel()
	wg.Wait()
	if churn.Load() < 10 {
		t.Fatalf("only %d changes happened during the listings", churn.Load())
	}
	t.Logf("%d creates/removes during the listings", churn.Load())
}
