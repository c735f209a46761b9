package crypt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	mrand "math/rand/v2"
	"testing"
)

// testKey is a fixed key so fuzz seeds and failures are reproducible.
func testKey(t testing.TB) *Key {
	t.Helper()
	k, err := KeyFromBytes(bytes.Repeat([]byte{0x42}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomBytes(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func fixBlobCRC(b []byte) {
	binary.BigEndian.PutUint32(b[blobCRCOff:], crc32.Checksum(b[:blobCRCOff], castagnoli))
}

func TestBlobRoundTrip(t *testing.T) {
	k := testKey(t)
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		size   int
		blocks int
	}{
		{"empty", 0, 1},
		{"one byte", 1, 1},
		{"block minus one", mib - 1, 1},
		{"exactly one block", mib, 1},
		{"block plus one", mib + 1, 2},
		{"three and a half blocks", 3*mib + mib/2, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(tc.size, uint64(tc.size))
			aad := []byte("meta/snapshot/000042")
			blob := SealBlob(k, data, aad)
			if want := blobHeaderLen + tc.size + tc.blocks*Overhead; len(blob) != want {
				t.Fatalf("sealed blob is %d bytes, want %d (%d blocks)", len(blob), want, tc.blocks)
			}
			got, err := OpenBlob(k, blob, aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("round trip changed the data")
			}
			if len(got) != len(data) {
				t.Fatalf("len %d, want %d", len(got), len(data))
			}
		})
	}
}

func TestBlobNilAAD(t *testing.T) {
	k := testKey(t)
	blob := SealBlob(k, []byte("x"), nil)
	if got, err := OpenBlob(k, blob, []byte{}); err != nil || string(got) != "x" {
		t.Fatalf("nil and empty aad should be the same: %q %v", got, err)
	}
}

func TestBlobSmallBlocks(t *testing.T) {
	k := testKey(t)
	for _, bs := range []int{1, 2, 7, 16} {
		for size := 0; size <= 3*bs+1; size++ {
			data := randomBytes(size, uint64(size))
			blob := sealBlob(k, data, []byte("a"), bs)
			got, err := OpenBlob(k, blob, []byte("a"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("block size %d, size %d: %v", bs, size, err)
			}
		}
	}
}

// blockOffsets returns the [start, end) of every sealed block in blob.
func blockOffsets(blob []byte) [][2]int {
	bs := int(binary.BigEndian.Uint32(blob[8:]))
	n := int(binary.BigEndian.Uint64(blob[12:]))
	c := int(binary.BigEndian.Uint64(blob[20:]))
	var out [][2]int
	off := blobHeaderLen
	for i := range c {
		end := off + min(bs, n-i*bs) + Overhead
		out = append(out, [2]int{off, end})
		off = end
	}
	return out
}

func TestBlobTampering(t *testing.T) {
	k := testKey(t)
	aad := []byte("meta/snapshot/1")
	const size = 3*BlobBlockSize + BlobBlockSize/2
	data := randomBytes(size, 7)
	valid := SealBlob(k, data, aad)
	blocks := blockOffsets(valid)
	if len(blocks) != 4 {
		t.Fatalf("%d blocks, want 4", len(blocks))
	}
	other, err := KeyFromBytes(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	// A blob with the same length and layout but different aad, to splice from.
	foreign := SealBlob(k, randomBytes(size, 8), []byte("meta/snapshot/2"))

	cp := func() []byte { return append([]byte(nil), valid...) }
	for _, tc := range []struct {
		name string
		blob func() []byte
		key  *Key
		aad  []byte
		is   error
	}{
		{"flip in first block", func() []byte { b := cp(); b[blocks[0][0]+100] ^= 1; return b }, k, aad, ErrAuth},
		{"flip in nonce", func() []byte { b := cp(); b[blocks[1][0]] ^= 1; return b }, k, aad, ErrAuth},
		{"flip in last tag", func() []byte { b := cp(); b[len(b)-1] ^= 0x80; return b }, k, aad, ErrAuth},
		{"flip in header", func() []byte { b := cp(); b[13] ^= 1; return b }, k, aad, ErrCorruptBlob},
		{"bad magic", func() []byte { b := cp(); b[0] = 'z'; fixBlobCRC(b); return b }, k, aad, ErrCorruptBlob},
		{"unknown version", func() []byte { b := cp(); b[7] = 9; fixBlobCRC(b); return b }, k, aad, ErrCorruptBlob},
		{"truncated by one", func() []byte { return cp()[:len(valid)-1] }, k, aad, ErrCorruptBlob},
		{"truncated to header", func() []byte { return cp()[:blobHeaderLen] }, k, aad, ErrCorruptBlob},
		{"truncated inside header", func() []byte { return cp()[:10] }, k, aad, ErrCorruptBlob},
		{"empty", func() []byte { return nil }, k, aad, ErrCorruptBlob},
		{"trailing garbage", func() []byte { return append(cp(), 0) }, k, aad, ErrCorruptBlob},
		{"swap first two blocks", func() []byte {
			b := cp()
			b0, b1 := blocks[0], blocks[1]
			tmp := append([]byte(nil), b[b0[0]:b0[1]]...)
			copy(b[b0[0]:], b[b1[0]:b1[1]])
			copy(b[b1[0]:], tmp)
			return b
		}, k, aad, ErrAuth},
		{"drop last block", func() []byte { return cp()[:blocks[3][0]] }, k, aad, ErrCorruptBlob},
		{"drop last block and fix header", func() []byte {
			// A consistent 3-block blob of exactly 3 MiB: structurally
			// fine, but block 2 was sealed as non-final with N = 3.5 MiB.
			b := cp()[:blocks[3][0]]
			binary.BigEndian.PutUint64(b[12:], 3*BlobBlockSize)
			binary.BigEndian.PutUint64(b[20:], 3)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrAuth},
		{"drop first block and fix header", func() []byte {
			b := append(cp()[:blobHeaderLen], valid[blocks[1][0]:]...)
			binary.BigEndian.PutUint64(b[12:], 2*BlobBlockSize+BlobBlockSize/2)
			binary.BigEndian.PutUint64(b[20:], 3)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrAuth},
		{"block spliced from other blob", func() []byte {
			b := cp()
			copy(b[blocks[1][0]:blocks[1][1]], foreign[blocks[1][0]:blocks[1][1]])
			return b
		}, k, aad, ErrAuth},
		{"different aad", cp, k, []byte("meta/snapshot/2"), ErrAuth},
		{"nil aad", cp, k, nil, ErrAuth},
		{"wrong key", cp, other, aad, ErrAuth},
		{"length claims more than present", func() []byte {
			b := cp()
			binary.BigEndian.PutUint64(b[12:], 1<<62)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrCorruptBlob},
		{"block count wrong", func() []byte {
			b := cp()
			binary.BigEndian.PutUint64(b[20:], 5)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrCorruptBlob},
		{"block count huge", func() []byte {
			b := cp()
			binary.BigEndian.PutUint64(b[20:], 1<<63)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrCorruptBlob},
		{"block size zero", func() []byte {
			b := cp()
			binary.BigEndian.PutUint32(b[8:], 0)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrCorruptBlob},
		{"block size huge", func() []byte {
			b := cp()
			binary.BigEndian.PutUint32(b[8:], 0xffffffff)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrCorruptBlob},
		{"block size changed", func() []byte {
			b := cp()
			binary.BigEndian.PutUint32(b[8:], BlobBlockSize/2)
			fixBlobCRC(b)
			return b
		}, k, aad, ErrCorruptBlob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OpenBlob(tc.key, tc.blob(), tc.aad)
			if err == nil {
				t.Fatalf("OpenBlob succeeded (%d bytes, equal: %v)", len(got), bytes.Equal(got, data))
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %q does not wrap %q", err, tc.is)
			}
			if got != nil {
				t.Fatal("partial plaintext returned with an error")
			}
		})
	}
}

func TestBlobEmptyNotForgeable(t *testing.T) {
	// An empty blob still carries a tag: one forged without the key (header
	// plus an arbitrary "block") must not open.
	k := testKey(t)
	forged := sealBlob(testKeyOther(t), nil, nil, BlobBlockSize)
	if _, err := OpenBlob(k, forged, nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
	headerOnly := SealBlob(k, nil, nil)[:blobHeaderLen]
	if _, err := OpenBlob(k, headerOnly, nil); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("header only: got %v, want ErrCorruptBlob", err)
	}
}

func testKeyOther(t testing.TB) *Key {
	k, err := KeyFromBytes(bytes.Repeat([]byte{0x43}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBlobEverySingleByteFlip flips each byte of a small multi-block blob;
// every result must fail with one of the two documented errors.
func TestBlobEverySingleByteFlip(t *testing.T) {
	k := testKey(t)
	valid := sealBlob(k, randomBytes(50, 3), []byte("aad"), 16)
	for pos := range valid {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte(nil), valid...)
			b[pos] ^= x
			_, err := OpenBlob(k, b, []byte("aad"))
			if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrCorruptBlob) {
				t.Fatalf("byte %d ^ %#x: %v", pos, x, err)
			}
		}
	}
	for n := range len(valid) {
		if _, err := OpenBlob(k, valid[:n], []byte("aad")); !errors.Is(err, ErrCorruptBlob) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

func BenchmarkSealBlob(b *testing.B) {
	k := testKey(b)
	data := randomBytes(8<<20, 1)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		SealBlob(k, data, nil)
	}
}

func BenchmarkOpenBlob(b *testing.B) {
	k := testKey(b)
	data := randomBytes(8<<20, 1)
	blob := SealBlob(k, data, nil)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := OpenBlob(k, blob, nil); err != nil {
			b.Fatal(err)
		}
	}
}
