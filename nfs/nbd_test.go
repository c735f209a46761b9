package nfs

import (
	"context"
	"testing"

	"zerofs/nbd"
)

// TestNBDExportsOverNFS: a file created in /.nbd over NFS is an NBD export,
// and its size follows SETATTR size (truncate -s); removing it removes the
// export. Nothing in this package knows about /.nbd: this checks that the
// two adapters see one filesystem.
func TestNBDExportsOverNFS(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	ctx := context.Background()
	exports := func() map[string]nbd.ExportInfo {
		t.Helper()
		list, err := nbd.ListExports(ctx, f.fs)
		if err != nil {
			t.Fatal(err)
		}
		m := make(map[string]nbd.ExportInfo)
		for _, e := range list {
			m[e.Name] = e
		}
		return m
	}
	if len(exports()) != 0 {
		t.Fatal("exports before /.nbd exists")
	}
	dir := c.mustMkdir(c.root, nbd.ExportDir)
	// truncate -s 20G /mnt/zerofs/.nbd/db: open(O_CREAT) then SETATTR size.
	db := c.mustCreate(dir, "db")
	for _, size := range []uint64{20 << 30, 1 << 40, 512 << 20, 0, 4096} {
		if st, _ := c.setattr(db, sattrIn{size: u64(size)}, nil); st != StatusOK {
			t.Fatalf("SETATTR size %d: %v", size, st)
		}
		e, ok := exports()["db"]
		if !ok || e.Size != size || e.ReadOnly {
			t.Fatalf("after truncate to %d: export %+v (listed %v)", size, e, ok)
		}
	}
	// Data written over NFS is what the export holds.
	c.mustWrite(db, 0, []byte("boot sector"))
	p := make([]byte, 11)
	if n, _, err := f.fs.Read(ctx, nil, inoOf(t, db), 0, p); err != nil || string(p[:n]) != "boot sector" {
		t.Fatalf("export contents: %q %v", p[:n], err)
	}
	// chmod a-w makes it read-only; a second export; non-files are not exports.
	c.setattr(db, sattrIn{mode: u32(0o444)}, nil)
	c.mustCreate(dir, "logs")
	c.mustMkdir(dir, "subdir")
	c.symlink(dir, "alias", "db")
	got := exports()
	if len(got) != 2 || !got["db"].ReadOnly || got["logs"].ReadOnly {
		t.Fatalf("exports %+v", got)
	}
	if st := c.remove(dir, "db"); st != StatusOK {
		t.Fatal(st)
	}
	if _, ok := exports()["db"]; ok {
		t.Fatal("removed file still an export")
	}
}
