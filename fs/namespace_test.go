package fs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"zerofs/store"
)

func TestRenameLinkCounts(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name          string
		sameDir       bool
		wantSrcParent uint32 // nlink of the source parent after
		wantDstParent uint32
	}{
		{"dir over empty dir, same parent", true, 3, 3},
		{"dir over empty dir, other parent", false, 3, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := mustOpen(t, testOptions(t, store.NewMem(), t.TempDir()))
			defer f.Close()
			p1, _, _ := f.Create(ctx, Root, RootIno, "p1", NewNode{Mode: TypeDir | 0o755})
			p2 := p1
			if !tc.sameDir {
				p2, _, _ = f.Create(ctx, Root, RootIno, "p2", NewNode{Mode: TypeDir | 0o755})
			}
			f.Create(ctx, Root, p1.Ino, "a", NewNode{Mode: TypeDir | 0o755})
			f.Create(ctx, Root, p2.Ino, "b", NewNode{Mode: TypeDir | 0o755})
			if !tc.sameDir {
				f.Create(ctx, Root, p1.Ino, "keep", NewNode{Mode: TypeDir | 0o755})
			}
			if err := f.Rename(ctx, Root, p1.Ino, "a", p2.Ino, "b"); err != nil {
				t.Fatal(err)
			}
			s, _ := f.GetAttr(ctx, p1.Ino)
			d, _ := f.GetAttr(ctx, p2.Ino)
			t.Logf("src %d dst %d", s.Nlink, d.Nlink)
			if s.Nlink != tc.wantSrcParent || d.Nlink != tc.wantDstParent {
				t.Fatalf("nlink: source parent %d (want %d), destination parent %d (want %d)", s.Nlink, tc.wantSrcParent, d.Nlink, tc.wantDstParent)
			}
			if _, err := f.Lookup(ctx, Root, p1.Ino, "a"); !errors.Is(err, ErrNotExist) {
				t.Fatalf("source still there: %v", err)
			}
		})
	}
}

// TestReadDirLargeUnappliedDirectory: paging through a big directory whose
// entries are still in unapplied batches returns each entry once, in cookie
// order, and page by page (the scan works in bounded rounds).
func TestReadDirLargeUnappliedDirectory(t *testing.T) {
	ctx := context.Background()
	opts := testOptions(t, store.NewMem(), t.TempDir())
	opts.BatchAge = time.Hour // keep everything in the open batch
	f := mustOpen(t, opts)
	defer f.Close()
	d, _, err := f.Create(ctx, Root, RootIno, "big", NewNode{Mode: TypeDir | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		if _, _, err := f.Create(ctx, Root, d.Ino, fmt.Sprintf("f%05d", i), NewNode{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if i%700 == 0 { // some in pebble, some in several batches
			f.Flush(ctx)
		}
	}
	if _, err := f.Remove(ctx, Root, d.Ino, "f00010"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var cookie uint64
	for pages := 0; ; pages++ {
		ents, eof, err := f.ReadDir(ctx, Root, d.Ino, cookie, 37)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if seen[e.Name] || e.Cookie <= cookie {
				t.Fatalf("entry %q (cookie %d) repeated or out of order after cookie %d", e.Name, e.Cookie, cookie)
			}
			seen[e.Name] = true
			cookie = e.Cookie
		}
		if eof {
			break
		}
	}
	if len(seen) != n-1 || seen["f00010"] {
		t.Fatalf("listed %d entries, want %d without the removed one", len(seen), n-1)
	}
}
