package crypt

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzUnwrapKey feeds arbitrary key files and passwords to UnwrapKey. It must
// never panic, must fail only with the documented errors, and a file it does
// accept must rewrap and unwrap to the same key. Separately, wrapping a fresh
// key under the fuzzed password must round trip.
func FuzzUnwrapKey(f *testing.F) {
	k := testKey(f)
	valid, err := WrapKey(k, "password", TestParams)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, "password")
	f.Add(valid, "wrong")
	f.Add(valid, "")
	f.Add(valid[:len(valid)-1], "password")
	f.Add(append(append([]byte(nil), valid...), 0), "password")
	broken := append([]byte(nil), valid...)
	broken[40] ^= 1
	f.Add(broken, "password")
	hostile := append([]byte(nil), valid...)
	hostile[12], hostile[13] = 0xff, 0xff // huge memory cost, then fixed CRC
	fixKeyFileCRC(hostile)
	f.Add(hostile, "password")
	f.Add([]byte{}, "password")
	f.Add([]byte("ZFSKEY\x00\x01"), "password")

	f.Fuzz(func(t *testing.T, blob []byte, password string) {
		// Honour the parameter bounds, but do not let the fuzzer spend
		// seconds on an expensive (yet valid) Argon2id run per input.
		if kf, err := parseKeyFile(blob); err == nil && (kf.params.MemoryKiB > 1024 || kf.params.Time > 4) {
			t.Skip("expensive parameters")
		}
		got, err := UnwrapKey(blob, password)
		if err != nil {
			if !errors.Is(err, ErrCorruptKeyFile) && !errors.Is(err, ErrWrongPassword) && !errors.Is(err, ErrEmptyPassword) {
				t.Fatalf("undocumented error: %v", err)
			}
		} else {
			again, err := WrapKey(got, password, TestParams)
			if err != nil {
				t.Fatal(err)
			}
			back, err := UnwrapKey(again, password)
			if err != nil || !bytes.Equal(back.Bytes(), got.Bytes()) {
				t.Fatalf("accepted key file does not round trip: %v", err)
			}
		}

		if password == "" {
			return
		}
		wrapped, err := WrapKey(k, password, TestParams)
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnwrapKey(wrapped, password)
		if err != nil || !bytes.Equal(back.Bytes(), k.Bytes()) {
			t.Fatalf("round trip under fuzzed password failed: %v", err)
		}
	})
}

// FuzzOpenBlob feeds arbitrary bytes to OpenBlob. It must never panic, fail
// only with the documented errors, and whatever it accepts must reseal and
// reopen identically. The fuzzed bytes are also sealed as plaintext (in
// small blocks, to exercise block boundaries) and must round trip.
func FuzzOpenBlob(f *testing.F) {
	k := testKey(f)
	aad := []byte("meta/x")
	for _, data := range [][]byte{nil, []byte("a"), bytes.Repeat([]byte("0123456789"), 10)} {
		f.Add(SealBlob(k, data, aad), aad)
		f.Add(sealBlob(k, data, aad, 7), aad)
		f.Add(sealBlob(k, data, aad, 7), []byte("other"))
	}
	multi := sealBlob(k, bytes.Repeat([]byte("z"), 40), aad, 16)
	f.Add(multi[:len(multi)-1], aad)
	f.Add(multi[:blobHeaderLen], aad)
	flipped := append([]byte(nil), multi...)
	flipped[blobHeaderLen+5] ^= 1
	f.Add(flipped, aad)
	f.Add([]byte{}, aad)
	f.Add([]byte("ZFSBLB\x00\x01"), []byte(nil))

	f.Fuzz(func(t *testing.T, blob, aad []byte) {
		got, err := OpenBlob(k, blob, aad)
		if err != nil {
			if !errors.Is(err, ErrCorruptBlob) && !errors.Is(err, ErrAuth) {
				t.Fatalf("undocumented error: %v", err)
			}
			if got != nil {
				t.Fatal("plaintext returned with an error")
			}
		} else {
			again, err := OpenBlob(k, SealBlob(k, got, aad), aad)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("accepted blob does not round trip: %v", err)
			}
		}

		for _, bs := range []int{BlobBlockSize, 5} {
			back, err := OpenBlob(k, sealBlob(k, blob, aad, bs), aad)
			if err != nil || !bytes.Equal(back, blob) {
				t.Fatalf("round trip with block size %d failed: %v", bs, err)
			}
		}
	})
}
