package nfs

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// TestHandlesSurviveRestart: handles obtained before a restart (the
// filesystem closed and reopened on the same store and state directory, a
// new Server on a new port) name the same files with the same contents, and
// a handle of a file deleted before the restart is STALE after it. Then the
// same from a fresh machine (empty state directory: metadata recovered from
// the bucket).
func TestHandlesSurviveRestart(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(0, 0)
	dir := c.mustMkdir(c.root, "dir")
	file := c.mustCreate(dir, "file")
	data := make([]byte, 300<<10)
	rand.Read(data)
	c.mustWrite(file, 0, data)
	_, link := c.symlink(dir, "link", "file")
	if st, _ := c.link(file, c.root, "hard"); st != StatusOK {
		t.Fatal(st)
	}
	// Renamed before the restart: the handle does not care.
	if st := c.rename(dir, "file", dir, "renamed"); st != StatusOK {
		t.Fatal(st)
	}
	gone := c.mustCreate(dir, "gone")
	c.remove(dir, "gone")
	_, before := c.getattr(file)
	root := c.root
	verf := f.fs.Epoch()

	check := func(t *testing.T, c *nfsClient) {
		t.Helper()
		if !bytes.Equal(c.root, root) {
			t.Fatal("MNT returned another root handle")
		}
		st, a := c.getattr(file)
		if st != StatusOK || a.fileid != before.fileid || a.size != before.size || a.nlink != 2 || a.mtime != before.mtime {
			t.Fatalf("GETATTR by the old handle: %v %+v, before %+v", st, a, before)
		}
		var got []byte
		for off := uint64(0); off < uint64(len(data)); {
			st, p, _ := c.read(file, off, 128<<10)
			if st != StatusOK || len(p) == 0 {
				t.Fatalf("READ by the old handle: %v", st)
			}
			got = append(got, p...)
			off += uint64(len(p))
		}
		if !bytes.Equal(got, data) {
			t.Fatal("contents differ after restart")
		}
		if st, target := c.readlink(link.fh); st != StatusOK || target != "file" {
			t.Fatalf("READLINK by the old handle: %v %q", st, target)
		}
		st, fh, _ := c.lookup(dir, "renamed")
		if st != StatusOK || !bytes.Equal(fh, file) {
			t.Fatalf("LOOKUP in the old directory handle: %v, same handle %v", st, bytes.Equal(fh, file))
		}
		if st, _ := c.getattr(gone); st != StatusStale {
			t.Fatalf("handle of a file deleted before the restart: %v, want STALE", st)
		}
		if st, _, _ := c.readdir(dir, 0, 4096); st != StatusOK {
			t.Fatalf("READDIR by the old handle: %v", st)
		}
	}

	f.restart()
	t.Run("restart", func(t *testing.T) {
		c := f.client(0, 0)
		check(t, c)
		if _, v := c.commit(file); v == verf {
			t.Fatal("write verifier did not change across the restart")
		}
	})

	f.stop()
	f.dir = t.TempDir()
	f.start()
	t.Run("fresh machine", func(t *testing.T) { check(t, f.client(0, 0)) })
}
