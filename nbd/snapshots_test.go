package nbd

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"zerofs/fs"
	"zerofs/internal/testutil"
)

// TestSnapshotExports: DEVICE@SNAPSHOT serves the device as the snapshot
// has it, read-only (the flag, and EPERM for a write sent anyway), is listed
// after the live devices, and its connection shows in Attachments.
func TestSnapshotExports(t *testing.T) {
	ctx := context.Background()
	f := openTestFS(t)
	mustCreateExport(t, f, "d", 1<<20)
	srv, addr := startServer(t, f, Options{})
	c, err := dialClient(addr, "d", clientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0x11}, 64<<10)
	if err := c.Write(0, old, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.CreateSnapshot(ctx, "s1", fs.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(0, bytes.Repeat([]byte{0x22}, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	c.Close()

	sc, err := dialClient(addr, "d@s1", clientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if sc.flags&tflagReadOnly == 0 || sc.size != 1<<20 {
		t.Fatalf("d@s1: flags %#x size %d; want read-only, 1 MiB", sc.flags, sc.size)
	}
	if got, err := sc.Read(0, 64<<10); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("d@s1 reads %v, want the content at the snapshot", err)
	}
	if err := sc.Write(0, []byte("x"), 0); !errors.Is(err, errnoError(errPerm)) {
		t.Fatalf("write to d@s1: %v, want EPERM", err)
	}
	testutil.Eventually(t, func() bool { return len(srv.Attachments(nil)) == 1 },
		func() string { return "the connection to be listed as attached" })
	if a := srv.Attachments(nil); a[0].Export != "d@s1" || a[0].Remote == "" {
		t.Fatalf("attachments %+v", a)
	}

	list, err := fsExports{f}.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "d" || list[0].ReadOnly || list[1].Name != "d@s1" || !list[1].ReadOnly || list[1].Snapshot != "s1" {
		t.Fatalf("list: %+v", list)
	}
	for _, name := range []string{"d@nope", "nope@s1", "d@", "d@s/1"} {
		if _, err := (fsExports{f}).lookup(ctx, name); err == nil {
			t.Errorf("lookup %q succeeded", name)
		}
	}
}

// TestCloneAndRestoreExports covers the export-level helpers' rules.
func TestCloneAndRestoreExports(t *testing.T) {
	ctx := context.Background()
	f := openTestFS(t)
	mustCreateExport(t, f, "d", 1<<20)
	n, err := lookupExportFile(ctx, f, "d")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(ctx, fs.Root, n.Ino, 0, bytes.Repeat([]byte{1}, 4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.CreateSnapshot(ctx, "s1", fs.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(ctx, fs.Root, n.Ino, 0, bytes.Repeat([]byte{2}, 4096)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		run  func() error
		want error
	}{
		{"create with @", func() error { return CreateExport(ctx, f, "a@b", 4096) }, fs.ErrInvalid},
		{"clone to a name with @", func() error { return CloneExport(ctx, f, "d", "x@y") }, fs.ErrInvalid},
		{"clone over an existing device", func() error { return CloneExport(ctx, f, "d@s1", "d") }, fs.ErrExist},
		{"clone of a missing snapshot", func() error { return CloneExport(ctx, f, "d@s9", "e") }, fs.ErrNotExist},
		{"restore without a snapshot", func() error { return RestoreExport(ctx, f, "d") }, fs.ErrInvalid},
		{"restore of a device the snapshot lacks", func() error { return RestoreExport(ctx, f, "e@s1") }, fs.ErrNotExist},
		{"clone of a snapshot", func() error { return CloneExport(ctx, f, "d@s1", "old") }, nil},
		{"clone of a device", func() error { return CloneExport(ctx, f, "d", "new") }, nil},
		{"restore", func() error { return RestoreExport(ctx, f, "d@s1") }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) && (tc.want != nil || err != nil) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	for name, b := range map[string]byte{"d": 1, "old": 1, "new": 2} {
		n, err := lookupExportFile(ctx, f, name)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 4096)
		if _, _, err := f.Read(ctx, fs.Root, n.Ino, 0, p); err != nil || !bytes.Equal(p, bytes.Repeat([]byte{b}, 4096)) {
			t.Errorf("%s: %v, want bytes of %d", name, err, b)
		}
	}
}
