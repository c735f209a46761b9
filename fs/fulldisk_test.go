package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"zerofs/store"
)

// TestFullMetadataDisk fills the local disk holding the metadata database
// (pebble) while files are created, written and flushed. The WAL lives in the
// bucket, so flushes must go on succeeding: pebble reports ENOSPC on its
// flushes and checkpoints, keeps the metadata in memory and catches up once
// space is back. Nothing acknowledged may be lost, on this machine or on a
// fresh one. It needs a small tmpfs, so it runs only where mounting works
// (root in CI).
func TestFullMetadataDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a disk")
	}
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v): needs root", err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })

	ctx := context.Background()
	st := store.NewMem()
	var noSpace atomic.Int64
	opts := testOptions(t, st, filepath.Join(disk, "state"))
	opts.CheckpointInterval = 100 * time.Millisecond // each one flushes pebble to the full disk
	opts.Logger = slog.New(&countingHandler{Handler: opts.Logger.Handler(), match: "no space left on device", n: &noSpace})
	f := mustOpen(t, opts)

	filler, err := os.Create(filepath.Join(disk, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	filler.Close()

	// Work until pebble has hit the full disk, and then some. (Its error
	// lines are rate-limited, recover.go: one report stands for many.)
	content := func(i int) []byte { return []byte(fmt.Sprintf("file %d on a full metadata disk", i)) }
	name := func(i int) string { return fmt.Sprintf("f%06d-%s", i, strings.Repeat("x", 40)) }
	files := 0
	deadline := time.Now().Add(2 * time.Minute)
	for noSpace.Load() < 1 || files < 2000 {
		if time.Now().After(deadline) {
			t.Fatalf("no ENOSPC from the metadata disk after %d files: the test did not fill it", files)
		}
		for range 100 {
			n, _, err := f.Create(ctx, Root, RootIno, name(files), NewNode{Mode: 0o644})
			if err != nil {
				t.Fatalf("create %d on a full metadata disk: %v", files, err)
			}
			if _, err := f.Write(ctx, Root, n.Ino, 0, content(files)); err != nil {
				t.Fatalf("write %d on a full metadata disk: %v", files, err)
			}
			files++
		}
		if err := f.Flush(ctx); err != nil {
			t.Fatalf("flush after %d files on a full metadata disk: %v", files, err)
		}
	}
	t.Logf("%d files created, %d ENOSPC reports from the metadata disk", files, noSpace.Load())

	// Space is back: the filesystem goes on without a restart.
	if err := os.Remove(filepath.Join(disk, "filler")); err != nil {
		t.Fatal(err)
	}
	n := mustCreate(t, f, RootIno, "after", 0o644)
	mustWrite(t, f, n.Ino, 0, []byte("after"))
	if err := f.Flush(ctx); err != nil {
		t.Fatalf("flush once space is back: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close once space is back: %v", err)
	}

	check := func(label, dir string) {
		g := mustOpen(t, testOptions(t, st, dir))
		defer g.Close()
		for i := 0; i < files; i++ {
			n, err := g.Lookup(ctx, Root, RootIno, name(i))
			if err != nil {
				t.Fatalf("%s: file %d: %v", label, i, err)
			}
			if got := mustRead(t, g, n.Ino, 0, 100); !bytes.Equal(got, content(i)) {
				t.Fatalf("%s: file %d reads %q", label, i, got)
			}
		}
		n, err := g.Lookup(ctx, Root, RootIno, "after")
		if err != nil || !bytes.Equal(mustRead(t, g, n.Ino, 0, 10), []byte("after")) {
			t.Fatalf("%s: the file written once space was back: %v", label, err)
		}
	}
	check("same machine", filepath.Join(disk, "state"))
	check("fresh machine", t.TempDir())
}

// countingHandler counts log records whose message or attributes contain
// match, and passes every record on.
type countingHandler struct {
	slog.Handler
	match string
	n     *atomic.Int64
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	text := r.Message
	r.Attrs(func(a slog.Attr) bool {
		text += " " + a.Value.String()
		return true
	})
	if strings.Contains(text, h.match) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithAttrs(as), match: h.match, n: h.n}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithGroup(name), match: h.match, n: h.n}
}
