package fs

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"zerofs/cache"
	"zerofs/crypt"
	"zerofs/store"
	"zerofs/wal"
)

// setupCorruptible writes one file of two chunks-worth of pieces, flushes and
// closes, and returns the store and the file's inode.
func setupCorruptible(t *testing.T, checkpoint bool) (store.Store, uint64, []byte) {
	t.Helper()
	ctx := context.Background()
	st := store.NewMem()
	f := mustOpen(t, testOptions(t, st, t.TempDir()))
	n := mustCreate(t, f, RootIno, "f", TypeRegular|0o644)
	data := make([]byte, 3*4096)
	for i := range data {
		data[i] = byte(i*13) | 1
	}
	mustWrite(t, f, n.Ino, 0, data)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if checkpoint {
		f.waitApplied()
		if err := f.checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.crash()
	return st, n.Ino, data
}

// noCache opens with caching off, so every read goes to the store.
func noCache(t *testing.T, st store.Store) *FS {
	opts := testOptions(t, st, t.TempDir())
	opts.Cache = cache.NewMemory(0)
	return mustOpen(t, opts)
}

func mangle(t *testing.T, st store.Store, key string, fn func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	b, err := st.Get(ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if b = fn(bytes.Clone(b)); b == nil {
		if err := st.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := st.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
}

// frameLocation returns where the frame holding chunk idx of ino lives.
func frameLocation(t *testing.T, f *FS, ino, idx uint64) FrameRef {
	t.Helper()
	_, pieces, err := f.lookupChunk(f.chain(), chunkID{ino, idx})
	if err != nil || len(pieces) == 0 {
		t.Fatalf("chunk %d: %v, %d pieces", idx, err, len(pieces))
	}
	return pieces[0].Frame
}

func objectKeyOf(o ObjRef) string {
	if o.Kind == ObjWAL {
		return wal.Key(o.ID)
	}
	return segmentKey(o.ID)
}

func TestCorruptDataIsAnIOError(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mangle func(b []byte, ref FrameRef) []byte
	}{
		{"flipped byte in the frame", func(b []byte, ref FrameRef) []byte { b[ref.Off+ref.Off%7+30] ^= 0x10; return b }},
		{"object truncated inside the frame", func(b []byte, ref FrameRef) []byte { return b[:ref.Off+5] }},
		{"object truncated before the frame", func(b []byte, ref FrameRef) []byte { return b[:ref.Off] }},
		{"object missing", func(b []byte, ref FrameRef) []byte { return nil }},
		{"frames swapped", func(b []byte, ref FrameRef) []byte {
			// Another frame's bytes in this frame's place: authentic data
			// of the same file, at the wrong place. Must not be returned.
			other := bytes.Clone(b[ref.Off+uint64(ref.Size):])
			copy(b[ref.Off:], other[:ref.Size])
			return b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, ino, data := setupCorruptible(t, false)
			f := noCache(t, st)
			ref := frameLocation(t, f, ino, 1)
			f.Close()
			mangle(t, st, objectKeyOf(ref.Obj), func(b []byte) []byte { return tc.mangle(b, ref) })

			f = noCache(t, st) // replay reads only the meta: it still opens
			defer f.crash()
			p := make([]byte, 4096)
			_, _, err := f.Read(ctx, Root, ino, 4096, p)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of the damaged chunk: %v, want EIO", err)
			}
			if tc.name != "object truncated before the frame" && tc.name != "object missing" && tc.name != "object truncated inside the frame" {
				// Damage confined to one frame leaves the others readable.
				if got := mustRead(t, f, ino, 0, 4096); !bytes.Equal(got, data[:4096]) {
					t.Fatal("undamaged chunk reads wrong")
				}
			}
			if f.Stats().CorruptFrames.Load() == 0 && tc.name != "object missing" && !strings.Contains(tc.name, "truncated") {
				t.Fatal("corruption not counted")
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	st, _, _ := setupCorruptible(t, false)
	opts := testOptions(t, st, t.TempDir())
	opts.Password = "not the password"
	_, err := Open(context.Background(), opts)
	if !errors.Is(err, crypt.ErrWrongPassword) {
		t.Fatalf("open with a wrong password: %v, want ErrWrongPassword", err)
	}
	if !strings.Contains(err.Error(), "encryption_password") {
		t.Fatalf("error does not say what to fix: %v", err)
	}
}

func TestCorruptMetadataObjects(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name       string
		checkpoint bool
		key        func(st store.Store) string
		mangle     func([]byte) []byte
		want       error
	}{
		{"wal record meta flipped", false, lastWAL, func(b []byte) []byte { b[wal.HeaderSize+2] ^= 1; return b }, wal.ErrCorrupt},
		{"wal record header flipped", false, lastWAL, func(b []byte) []byte { b[20] ^= 1; return b }, wal.ErrCorrupt},
		{"wal record truncated", false, lastWAL, func(b []byte) []byte { return b[:wal.HeaderSize+1] }, wal.ErrCorrupt},
		{"head garbage", false, func(store.Store) string { return wal.HeadKey }, func(b []byte) []byte { return []byte("garbage") }, wal.ErrCorrupt},
		{"key file flipped", false, func(store.Store) string { return dataKeyObject }, func(b []byte) []byte { b[40] ^= 1; return b }, crypt.ErrCorruptKeyFile},
		{"checkpoint file flipped", true, firstMetaFile, func(b []byte) []byte { b[len(b)/2] ^= 1; return b }, crypt.ErrAuth},
		{"checkpoint file missing", true, firstMetaFile, func(b []byte) []byte { return nil }, store.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, _, _ := setupCorruptible(t, tc.checkpoint)
			mangle(t, st, tc.key(st), tc.mangle)
			_, err := Open(ctx, testOptions(t, st, t.TempDir())) // a fresh machine: must read it all
			if !errors.Is(err, tc.want) {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
			t.Logf("error reported: %v", err)
		})
	}
}

func lastWAL(st store.Store) string {
	infos, _ := st.List(context.Background(), "wal/")
	// The last record is the fence of the closing writer's successor-less
	// run; the one before it carries the file's delta.
	return infos[len(infos)-2].Key
}

func firstMetaFile(st store.Store) string {
	infos, _ := st.List(context.Background(), metaPrefix)
	for _, in := range infos {
		if !strings.Contains(in.Key, "ckpt-") {
			return in.Key
		}
	}
	return ""
}
