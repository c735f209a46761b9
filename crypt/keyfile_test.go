package crypt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"zerofs/store"
	"zerofs/store/faultstore"
)

const testObjKey = "keys/datakey"

// newTestStore is an in-memory store wrapped so that a test can inject
// faults, or run code just before a conditional put to stage a race
// deterministically.
func newTestStore() *faultstore.Store { return faultstore.New(store.NewMem()) }

func mustNewKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustWrap(t testing.TB, k *Key, password string) []byte {
	t.Helper()
	blob, err := WrapKey(k, password, TestParams)
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

// fixKeyFileCRC recomputes the trailing checksum so a test can reach the
// checks behind it.
func fixKeyFileCRC(b []byte) {
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
}

func TestWrapUnwrapRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		password string
		params   Params
	}{
		{"ascii", "correct horse battery staple", TestParams},
		{"single char", "x", TestParams},
		{"unicode", "pässwörd 🔑 パスワード", TestParams},
		{"long", strings.Repeat("long password ", 1000), TestParams},
		{"nul bytes", "a\x00b", TestParams},
		{"two threads", "pw", Params{Time: 2, MemoryKiB: 128, Threads: 2}},
		{"min memory", "pw", Params{Time: 1, MemoryKiB: minMemoryKiB, Threads: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := mustNewKey(t)
			blob, err := WrapKey(k, tc.password, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if len(blob) != keyFileLen {
				t.Fatalf("key file is %d bytes, want %d", len(blob), keyFileLen)
			}
			got, err := UnwrapKey(blob, tc.password)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), k.Bytes()) {
				t.Fatal("unwrapped key differs")
			}
			// The unwrapped key must be usable, not just equal.
			box := got.Seal(nil, []byte("hello"), nil)
			if pt, err := k.Open(nil, box, nil); err != nil || string(pt) != "hello" {
				t.Fatalf("unwrapped key does not interoperate: %q, %v", pt, err)
			}
		})
	}
}

func TestWrapUsesFreshSalt(t *testing.T) {
	k := mustNewKey(t)
	a, b := mustWrap(t, k, "pw"), mustWrap(t, k, "pw")
	if bytes.Equal(a[keyFileSaltOff:keyFileSealedOff], b[keyFileSaltOff:keyFileSealedOff]) {
		t.Fatal("two wraps share a salt")
	}
}

func TestWrapKeyRejects(t *testing.T) {
	k := mustNewKey(t)
	for _, tc := range []struct {
		name     string
		key      *Key
		password string
		params   Params
		is       error
	}{
		{"empty password", k, "", TestParams, ErrEmptyPassword},
		{"nil key", nil, "pw", TestParams, nil},
		{"time zero", k, "pw", Params{Time: 0, MemoryKiB: 64, Threads: 1}, nil},
		{"time too large", k, "pw", Params{Time: 101, MemoryKiB: 64, Threads: 1}, nil},
		{"memory too small", k, "pw", Params{Time: 1, MemoryKiB: 7, Threads: 1}, nil},
		{"memory too large", k, "pw", Params{Time: 1, MemoryKiB: maxMemoryKiB + 1, Threads: 1}, nil},
		{"threads zero", k, "pw", Params{Time: 1, MemoryKiB: 64, Threads: 0}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WrapKey(tc.key, tc.password, tc.params)
			if err == nil {
				t.Fatal("WrapKey succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

func TestUnwrapKeyErrors(t *testing.T) {
	k := mustNewKey(t)
	valid := mustWrap(t, k, "right")

	// mutate returns a modified copy of the valid file; if fixCRC, the
	// checksum is recomputed afterwards so deeper checks are reached.
	mutate := func(fixCRC bool, f func(b []byte) []byte) []byte {
		b := f(append([]byte(nil), valid...))
		if fixCRC {
			fixKeyFileCRC(b)
		}
		return b
	}
	setParams := func(p Params) []byte {
		return mutate(true, func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[keyFileParamsOff:], p.Time)
			binary.BigEndian.PutUint32(b[keyFileParamsOff+4:], p.MemoryKiB)
			b[keyFileParamsOff+8] = p.Threads
			return b
		})
	}

	for _, tc := range []struct {
		name     string
		blob     []byte
		password string
		is       error
	}{
		{"wrong password", valid, "wrong", ErrWrongPassword},
		{"password prefix", valid, "righ", ErrWrongPassword},
		{"empty password", valid, "", ErrEmptyPassword},
		{"nil blob", nil, "right", ErrCorruptKeyFile},
		{"empty blob", []byte{}, "right", ErrCorruptKeyFile},
		{"magic only", []byte("ZFSKEY"), "right", ErrCorruptKeyFile},
		{"bad magic", mutate(true, func(b []byte) []byte { b[0] = 'X'; return b }), "right", ErrCorruptKeyFile},
		{"version 0", mutate(true, func(b []byte) []byte { b[7] = 0; return b }), "right", ErrCorruptKeyFile},
		{"version 2", mutate(true, func(b []byte) []byte { b[7] = 2; return b }), "right", ErrCorruptKeyFile},
		{"bad crc", mutate(false, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "right", ErrCorruptKeyFile},
		{"trailing byte", mutate(true, func(b []byte) []byte { return append(b, 0, 0, 0, 0, 0) }), "right", ErrCorruptKeyFile},
		{"missing byte", mutate(true, func(b []byte) []byte { return b[:len(b)-1] }), "right", ErrCorruptKeyFile},
		{"time zero", setParams(Params{0, 64, 1}), "right", ErrCorruptKeyFile},
		{"time too large", setParams(Params{1000, 64, 1}), "right", ErrCorruptKeyFile},
		{"memory too small", setParams(Params{1, 7, 1}), "right", ErrCorruptKeyFile},
		{"memory huge", setParams(Params{1, 0xffffffff, 1}), "right", ErrCorruptKeyFile},
		{"threads zero", setParams(Params{1, 64, 0}), "right", ErrCorruptKeyFile},
		// Valid-but-different parameters change the KEK and the associated
		// data, so the only possible outcome is an authentication failure.
		{"params swapped for others", setParams(Params{2, 64, 1}), "right", ErrWrongPassword},
		{"salt changed", mutate(true, func(b []byte) []byte { b[keyFileSaltOff] ^= 1; return b }), "right", ErrWrongPassword},
		{"sealed key changed", mutate(true, func(b []byte) []byte { b[keyFileSealedOff+30] ^= 1; return b }), "right", ErrWrongPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UnwrapKey(tc.blob, tc.password)
			if err == nil {
				t.Fatalf("UnwrapKey succeeded (key equal: %v)", bytes.Equal(got.Bytes(), k.Bytes()))
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %q does not wrap %q", err, tc.is)
			}
		})
	}
}

// TestKeyFileSingleByteCorruption flips every byte of a key file in several
// ways, both leaving the checksum stale (what disk or network damage does)
// and recomputing it (what a deliberate edit does). Nothing may panic or
// produce a key; every error must be one of the two documented sentinels.
func TestKeyFileSingleByteCorruption(t *testing.T) {
	k := mustNewKey(t)
	valid := mustWrap(t, k, "pw")
	for _, fixCRC := range []bool{false, true} {
		t.Run(fmt.Sprintf("fixCRC=%v", fixCRC), func(t *testing.T) {
			for pos := range valid {
				if fixCRC && pos >= keyFileCRCOff {
					continue // recomputing would undo the change
				}
				for _, x := range []byte{0x01, 0x80, 0xff} {
					b := append([]byte(nil), valid...)
					b[pos] ^= x
					if fixCRC {
						fixKeyFileCRC(b)
					}
					got, err := UnwrapKey(b, "pw")
					if err == nil {
						t.Fatalf("byte %d ^ %#x: UnwrapKey succeeded (same key: %v)", pos, x, bytes.Equal(got.Bytes(), k.Bytes()))
					}
					if !errors.Is(err, ErrCorruptKeyFile) && !errors.Is(err, ErrWrongPassword) {
						t.Fatalf("byte %d ^ %#x: unexpected error %v", pos, x, err)
					}
					if !fixCRC && !errors.Is(err, ErrCorruptKeyFile) {
						t.Fatalf("byte %d ^ %#x with stale CRC: %v, want ErrCorruptKeyFile", pos, x, err)
					}
				}
			}
		})
	}
}

func TestKeyFileTruncations(t *testing.T) {
	valid := mustWrap(t, mustNewKey(t), "pw")
	for n := 0; n < len(valid); n++ {
		if _, err := UnwrapKey(valid[:n], "pw"); !errors.Is(err, ErrCorruptKeyFile) {
			t.Fatalf("truncated to %d bytes: %v, want ErrCorruptKeyFile", n, err)
		}
	}
}

// TestDefaultParamsCost runs the production parameters once and logs what a
// mount (one unwrap) and a password change (unwrap + wrap) cost.
func TestDefaultParamsCost(t *testing.T) {
	if testing.Short() {
		t.Skip("uses 64 MiB Argon2id")
	}
	k := mustNewKey(t)
	start := time.Now()
	blob, err := WrapKey(k, "pw", DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapKey(blob, "pw")
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got.Bytes(), k.Bytes()) {
		t.Fatal("round trip changed the key")
	}
	// Logged, not asserted: test machines are shared and their timings noisy.
	t.Logf("wrap+unwrap with DefaultParams: %v", elapsed)
}

func TestLoadOrCreateKey(t *testing.T) {
	ctx := context.Background()

	t.Run("create then load", func(t *testing.T) {
		st := newTestStore()
		k1, created, err := LoadOrCreateKey(ctx, st, testObjKey, "pw", TestParams)
		if err != nil || !created {
			t.Fatalf("first call: created=%v err=%v", created, err)
		}
		k2, created, err := LoadOrCreateKey(ctx, st, testObjKey, "pw", TestParams)
		if err != nil || created {
			t.Fatalf("second call: created=%v err=%v", created, err)
		}
		if !bytes.Equal(k1.Bytes(), k2.Bytes()) {
			t.Fatal("second call returned a different key")
		}
	})

	t.Run("params of an existing file win", func(t *testing.T) {
		st := newTestStore()
		k1, _, err := LoadOrCreateKey(ctx, st, testObjKey, "pw", TestParams)
		if err != nil {
			t.Fatal(err)
		}
		other := Params{Time: 2, MemoryKiB: 128, Threads: 2}
		k2, created, err := LoadOrCreateKey(ctx, st, testObjKey, "pw", other)
		if err != nil || created || !bytes.Equal(k1.Bytes(), k2.Bytes()) {
			t.Fatalf("created=%v err=%v", created, err)
		}
	})

	for _, tc := range []struct {
		name     string
		setup    func(st *faultstore.Store)
		password string
		is       error
		contains []string
	}{
		{
			name:     "wrong password",
			setup:    func(st *faultstore.Store) { mustPut(t, st, mustWrap(t, mustNewKey(t), "right")) },
			password: "wrong",
			is:       ErrWrongPassword,
			contains: []string{"mem://keys/datakey", "encryption_password"},
		},
		{
			name:     "corrupt file",
			setup:    func(st *faultstore.Store) { mustPut(t, st, []byte("ZFSKEY garbage")) },
			password: "pw",
			is:       ErrCorruptKeyFile,
			contains: []string{"mem://keys/datakey", "backup"},
		},
		{
			name:     "empty password",
			setup:    func(st *faultstore.Store) {},
			password: "",
			is:       ErrEmptyPassword,
		},
		{
			name:     "store error",
			setup:    func(st *faultstore.Store) { st.Fail(faultstore.On(faultstore.OpGet), errors.New("connection reset")) },
			password: "pw",
			contains: []string{"mem://keys/datakey", "connection reset"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newTestStore()
			tc.setup(st)
			_, _, err := LoadOrCreateKey(ctx, st, testObjKey, tc.password, TestParams)
			if err == nil {
				t.Fatal("LoadOrCreateKey succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %q does not wrap %q", err, tc.is)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if tc.name == "empty password" {
				if _, err := st.Head(ctx, testObjKey); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("a key file was written despite the empty password: %v", err)
				}
			}
		})
	}
}

func mustPut(t testing.TB, st store.Store, blob []byte) {
	t.Helper()
	if _, err := st.Put(context.Background(), testObjKey, blob); err != nil {
		t.Fatal(err)
	}
}

// TestLoadOrCreateKeyLosesRace stages the race exactly: we see no file, and
// another process creates one just before our PutIfAbsent. We must adopt its
// key, not ours.
func TestLoadOrCreateKeyLosesRace(t *testing.T) {
	st := newTestStore()
	winner := mustNewKey(t)
	st.Before(faultstore.On(faultstore.OpPutIfAbsent).Times(1), func(faultstore.Op, string) error {
		mustPut(t, st.Inner(), mustWrap(t, winner, "pw"))
		return nil
	})
	k, created, err := LoadOrCreateKey(context.Background(), st, testObjKey, "pw", TestParams)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Fatal("reported created although another process won")
	}
	if !bytes.Equal(k.Bytes(), winner.Bytes()) {
		t.Fatal("did not adopt the winner's key")
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	st := store.NewMem()
	const n = 8
	var (
		wg      sync.WaitGroup
		keys    [n]*Key
		errs    [n]error
		created atomic.Int32
		start   = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			k, c, err := LoadOrCreateKey(context.Background(), st, testObjKey, "pw", TestParams)
			keys[i], errs[i] = k, err
			if c {
				created.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !bytes.Equal(keys[i].Bytes(), keys[0].Bytes()) {
			t.Fatalf("goroutine %d got a different key", i)
		}
	}
	if got := created.Load(); got != 1 {
		t.Fatalf("%d goroutines reported creating the key, want 1", got)
	}
}

func TestChangePassword(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*faultstore.Store, *Key) {
		st := newTestStore()
		k, _, err := LoadOrCreateKey(ctx, st, testObjKey, "old", TestParams)
		if err != nil {
			t.Fatal(err)
		}
		return st, k
	}
	loadWith := func(t *testing.T, st store.Store, pw string) (*Key, error) {
		t.Helper()
		k, created, err := LoadOrCreateKey(ctx, st, testObjKey, pw, TestParams)
		if created {
			t.Fatal("key file was recreated")
		}
		return k, err
	}

	t.Run("success", func(t *testing.T) {
		st, k := setup(t)
		if err := ChangePassword(ctx, st, testObjKey, "old", "new", TestParams); err != nil {
			t.Fatal(err)
		}
		got, err := loadWith(t, st, "new")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), k.Bytes()) {
			t.Fatal("data key changed")
		}
		if _, err := loadWith(t, st, "old"); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("old password: %v, want ErrWrongPassword", err)
		}
	})

	t.Run("same password gets a new salt", func(t *testing.T) {
		st, k := setup(t)
		before, _ := st.Get(ctx, testObjKey, 0, -1)
		if err := ChangePassword(ctx, st, testObjKey, "old", "old", TestParams); err != nil {
			t.Fatal(err)
		}
		after, _ := st.Get(ctx, testObjKey, 0, -1)
		if bytes.Equal(before, after) {
			t.Fatal("key file unchanged")
		}
		if got, err := loadWith(t, st, "old"); err != nil || !bytes.Equal(got.Bytes(), k.Bytes()) {
			t.Fatalf("reload: %v", err)
		}
	})

	t.Run("wrong old password leaves file alone", func(t *testing.T) {
		st, _ := setup(t)
		before, _ := st.Get(ctx, testObjKey, 0, -1)
		err := ChangePassword(ctx, st, testObjKey, "nope", "new", TestParams)
		if !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("got %v, want ErrWrongPassword", err)
		}
		after, _ := st.Get(ctx, testObjKey, 0, -1)
		if !bytes.Equal(before, after) {
			t.Fatal("key file was modified")
		}
	})

	t.Run("empty new password", func(t *testing.T) {
		st, _ := setup(t)
		if err := ChangePassword(ctx, st, testObjKey, "old", "", TestParams); !errors.Is(err, ErrEmptyPassword) {
			t.Fatalf("got %v, want ErrEmptyPassword", err)
		}
	})

	t.Run("no key file", func(t *testing.T) {
		st := newTestStore()
		if err := ChangePassword(ctx, st, testObjKey, "old", "new", TestParams); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})

	t.Run("concurrent rewrite is retried", func(t *testing.T) {
		st, k := setup(t)
		// Another process rewraps (same password, new salt) between our
		// read and our write, once; the CAS must fail and the retry win.
		var interfered int
		st.Before(faultstore.On(faultstore.OpPutIfMatch), func(faultstore.Op, string) error {
			if interfered == 0 {
				mustPut(t, st.Inner(), mustWrap(t, k, "old"))
			}
			interfered++
			return nil
		})
		if err := ChangePassword(ctx, st, testObjKey, "old", "new", TestParams); err != nil {
			t.Fatal(err)
		}
		if interfered != 2 {
			t.Fatalf("%d write attempts, want 2", interfered)
		}
		if got, err := loadWith(t, st, "new"); err != nil || !bytes.Equal(got.Bytes(), k.Bytes()) {
			t.Fatalf("reload: %v", err)
		}
	})

	t.Run("persistent contention gives up", func(t *testing.T) {
		st, k := setup(t)
		st.Before(faultstore.On(faultstore.OpPutIfMatch), func(faultstore.Op, string) error {
			mustPut(t, st.Inner(), mustWrap(t, k, "old"))
			return nil
		})
		err := ChangePassword(ctx, st, testObjKey, "old", "new", TestParams)
		if !errors.Is(err, store.ErrPrecondition) {
			t.Fatalf("got %v, want ErrPrecondition", err)
		}
	})

	t.Run("concurrent change to another password", func(t *testing.T) {
		st, _ := setup(t)
		// Someone else changes old -> other first; our retry then finds
		// the old password no longer opens the file.
		st.Before(faultstore.On(faultstore.OpPutIfMatch).Times(1), func(faultstore.Op, string) error {
			if err := ChangePassword(ctx, st.Inner(), testObjKey, "old", "other", TestParams); err != nil {
				t.Error(err)
			}
			return nil
		})
		err := ChangePassword(ctx, st, testObjKey, "old", "new", TestParams)
		if !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("got %v, want ErrWrongPassword", err)
		}
		if _, err := loadWith(t, st, "other"); err != nil {
			t.Fatalf("other writer's change lost: %v", err)
		}
	})
}
