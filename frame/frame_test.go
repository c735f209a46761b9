package frame

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"zerofs/crypt"
)

func testCoder(t testing.TB, c Codec) *Coder {
	t.Helper()
	k, err := crypt.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	coder, err := NewCoder(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return coder
}

func TestRoundTrip(t *testing.T) {
	random := make([]byte, 64<<10)
	rand.Read(random)
	cases := []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"one byte", []byte{7}},
		{"zeros 64k", make([]byte, 64<<10)},
		{"random 64k", random},
		{"text", bytes.Repeat([]byte("zerofs frame "), 1000)},
	}
	for _, codec := range []Codec{None, Zstd, LZ4} {
		c := testCoder(t, codec)
		for _, tc := range cases {
			t.Run(codec.String()+"/"+tc.name, func(t *testing.T) {
				id := ID{Frame: 42, Ino: 7, Chunk: 3}
				box := c.Encode([]byte("prefix"), tc.raw, id)
				if !bytes.HasPrefix(box, []byte("prefix")) {
					t.Fatal("Encode did not append to dst")
				}
				box = box[len("prefix"):]
				if len(box) > len(tc.raw)+Overhead {
					t.Fatalf("encoded %d bytes for %d raw: more than the overhead", len(box), len(tc.raw))
				}
				got, err := c.Decode(nil, box, id)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tc.raw) {
					t.Fatal("round trip changed the data")
				}
			})
		}
	}
}

func TestIdentityBinding(t *testing.T) {
	c := testCoder(t, Zstd)
	id := ID{Frame: 1, Ino: 2, Chunk: 3}
	box := c.Encode(nil, []byte("hello"), id)
	for _, tc := range []struct {
		name string
		id   ID
	}{
		{"other frame", ID{Frame: 9, Ino: 2, Chunk: 3}},
		{"other inode", ID{Frame: 1, Ino: 9, Chunk: 3}},
		{"other chunk", ID{Frame: 1, Ino: 2, Chunk: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Decode(nil, box, tc.id); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode under %+v: %v, want ErrCorrupt", tc.id, err)
			}
		})
	}
	other := testCoder(t, Zstd)
	if _, err := other.Decode(nil, box, id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("decode with another key: %v, want ErrCorrupt", err)
	}
	for i := range box {
		bad := bytes.Clone(box)
		bad[i] ^= 0x40
		if _, err := c.Decode(nil, bad, id); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d: %v, want ErrCorrupt", i, err)
		}
	}
	for n := 0; n < len(box); n++ {
		if _, err := c.Decode(nil, box[:n], id); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v, want ErrCorrupt", n, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	c := testCoder(f, Zstd)
	id := ID{Frame: 1, Ino: 2, Chunk: 3}
	f.Add(c.Encode(nil, []byte("seed"), id))
	f.Add(c.Encode(nil, make([]byte, 4096), id))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, box []byte) {
		out, err := c.Decode(nil, box, id)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error not wrapping ErrCorrupt: %v", err)
		}
		if err == nil && len(out) > MaxRaw {
			t.Fatal("decoded more than MaxRaw")
		}
	})
}

func BenchmarkEncode64K(b *testing.B) {
	raw := make([]byte, 64<<10)
	rand.Read(raw[:32<<10]) // half random, half zeros
	for _, codec := range []Codec{None, Zstd, LZ4} {
		c := testCoder(b, codec)
		b.Run(codec.String(), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			var dst []byte
			for i := 0; i < b.N; i++ {
				dst = c.Encode(dst[:0], raw, ID{Frame: uint64(i)})
			}
		})
	}
}
