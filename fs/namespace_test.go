package fs

import (
	"context"
	"errors"
	"testing"

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
