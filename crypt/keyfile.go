package crypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	mrand "math/rand/v2"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"zerofs/store"
)

// Key file layout (version 1). All integers are big-endian.
//
//	offset  size  field
//	     0     6  magic "ZFSKEY"
//	     6     2  format version (1)
//	     8     4  Argon2id time cost (passes)
//	    12     4  Argon2id memory cost in KiB
//	    16     1  Argon2id threads (parallelism)
//	    17    16  salt (random, fresh on every wrap)
//	    33    72  data key sealed with the KEK: nonce(24) || ciphertext(32) || tag(16);
//	              associated data = bytes [0, 33), so the header cannot be
//	              altered (e.g. weaker parameters) without failing authentication
//	   105     4  CRC32C (Castagnoli) of bytes [0, 105)
//	   109        end
//
// The CRC is not a security measure (the AEAD is); it exists so that
// accidental damage is reported as a corrupt file rather than as a wrong
// password, which would send the operator hunting for a password that was
// never wrong.
const (
	keyFileMagic   = "ZFSKEY"
	keyFileVersion = 1

	keyFileParamsOff = 8
	keyFileSaltOff   = 17
	keyFileSaltLen   = 16
	keyFileSealedOff = keyFileSaltOff + keyFileSaltLen // 33
	keyFileSealedLen = KeySize + Overhead              // 72
	keyFileCRCOff    = keyFileSealedOff + keyFileSealedLen
	keyFileLen       = keyFileCRCOff + 4 // 109
)

// Errors returned by UnwrapKey (wrapped with context; test with errors.Is).
var (
	// ErrWrongPassword: the key file is intact (its checksum matches) but the
	// password does not open it. This is the only way a valid file fails.
	ErrWrongPassword = errors.New("wrong password")
	// ErrCorruptKeyFile: the key file is damaged or not a key file at all:
	// bad magic, unknown version, wrong length, checksum mismatch or
	// out-of-range parameters.
	ErrCorruptKeyFile = errors.New("corrupt key file")
	// ErrEmptyPassword: an empty password was given. An empty password would
	// make the encryption decorative, so it is refused outright.
	ErrEmptyPassword = errors.New("encryption password is empty")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Params are the Argon2id cost parameters used to derive the key-encryption
// key (KEK) from the password. They are stored in the key file, so a file
// wrapped with one set of parameters can be opened by a process configured
// with another; the parameters given to the functions below only apply to
// newly written files.
type Params struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32 // memory cost in KiB
	Threads   uint8  // parallelism
}

var (
	// DefaultParams are RFC 9106's second recommended option (64 MiB,
	// 3 passes, 4 lanes): a fraction of a second per unwrap, which happens
	// only at mount and on password change.
	DefaultParams = Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}
	// TestParams are deliberately cheap, for unit tests only. They offer no
	// real protection against password guessing.
	TestParams = Params{Time: 1, MemoryKiB: 64, Threads: 1}
)

// Bounds enforced by Params.Validate. They matter most when decoding: the
// parameters come from the bucket, and a hostile or corrupt file must not be
// able to make us allocate unbounded memory or spin for hours.
const (
	maxTime      = 100
	minMemoryKiB = 8
	maxMemoryKiB = 4 << 20 // 4 GiB
)

// Validate reports whether p is within the accepted bounds.
func (p Params) Validate() error {
	switch {
	case p.Time == 0 || p.Time > maxTime:
		return fmt.Errorf("argon2id time cost %d out of range [1, %d]", p.Time, maxTime)
	case p.MemoryKiB < minMemoryKiB || p.MemoryKiB > maxMemoryKiB:
		return fmt.Errorf("argon2id memory cost %d KiB out of range [%d, %d]", p.MemoryKiB, minMemoryKiB, maxMemoryKiB)
	case p.Threads == 0:
		return fmt.Errorf("argon2id threads must be at least 1")
	}
	return nil
}

// deriveKEK runs Argon2id over the password. The caller has validated p.
func deriveKEK(password string, salt []byte, p Params) (*Key, error) {
	raw := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
	kek, err := KeyFromBytes(raw)
	clear(raw) // best effort: KeyFromBytes keeps its own copy
	if err != nil {
		return nil, fmt.Errorf("derive key-encryption key: %w", err)
	}
	return kek, nil
}

// WrapKey seals the data key k under a key derived from password with
// Argon2id(p) and a fresh random salt, and returns the key file bytes.
func WrapKey(k *Key, password string, p Params) ([]byte, error) {
	if k == nil {
		return nil, errors.New("wrap data key: nil key")
	}
	if password == "" {
		return nil, fmt.Errorf("wrap data key: %w", ErrEmptyPassword)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}

	buf := make([]byte, keyFileSealedOff, keyFileLen)
	copy(buf, keyFileMagic)
	binary.BigEndian.PutUint16(buf[6:], keyFileVersion)
	binary.BigEndian.PutUint32(buf[keyFileParamsOff:], p.Time)
	binary.BigEndian.PutUint32(buf[keyFileParamsOff+4:], p.MemoryKiB)
	buf[keyFileParamsOff+8] = p.Threads
	salt := buf[keyFileSaltOff:keyFileSealedOff]
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("wrap data key: generate salt: %w", err)
	}

	kek, err := deriveKEK(password, salt, p)
	if err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}
	// A copy, because the AEAD contract forbids the associated data from
	// overlapping the destination buffer.
	header := bytes.Clone(buf[:keyFileSealedOff])
	buf = kek.Seal(buf, k.Bytes(), header)
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
	if len(buf) != keyFileLen {
		// Only possible if the constants above disagree with crypt.Overhead.
		panic(fmt.Sprintf("crypt: key file is %d bytes, want %d", len(buf), keyFileLen))
	}
	return buf, nil
}

// keyFile is a structurally valid, checksummed key file, not yet opened.
type keyFile struct {
	params Params
	salt   []byte
	sealed []byte
	header []byte // associated data for sealed
}

// parseKeyFile checks everything that can be checked without the password:
// magic, version, length, checksum and parameter bounds. Every failure wraps
// ErrCorruptKeyFile.
func parseKeyFile(blob []byte) (keyFile, error) {
	corrupt := func(format string, args ...any) (keyFile, error) {
		return keyFile{}, fmt.Errorf("%w: %s", ErrCorruptKeyFile, fmt.Sprintf(format, args...))
	}
	// Magic and version come first so that a newer format (possibly of a
	// different length) is reported as such rather than as a length error.
	if len(blob) < keyFileParamsOff {
		return corrupt("%d bytes, too short for a header", len(blob))
	}
	if string(blob[:len(keyFileMagic)]) != keyFileMagic {
		return corrupt("bad magic %q, not a zerofs key file", blob[:len(keyFileMagic)])
	}
	if v := binary.BigEndian.Uint16(blob[6:]); v != keyFileVersion {
		return corrupt("unknown format version %d (this build reads version %d)", v, keyFileVersion)
	}
	if len(blob) != keyFileLen {
		return corrupt("%d bytes, want %d", len(blob), keyFileLen)
	}
	if got, want := crc32.Checksum(blob[:keyFileCRCOff], castagnoli), binary.BigEndian.Uint32(blob[keyFileCRCOff:]); got != want {
		return corrupt("checksum mismatch (computed %08x, stored %08x)", got, want)
	}
	p := Params{
		Time:      binary.BigEndian.Uint32(blob[keyFileParamsOff:]),
		MemoryKiB: binary.BigEndian.Uint32(blob[keyFileParamsOff+4:]),
		Threads:   blob[keyFileParamsOff+8],
	}
	if err := p.Validate(); err != nil {
		return corrupt("%v", err)
	}
	return keyFile{
		params: p,
		salt:   blob[keyFileSaltOff:keyFileSealedOff],
		sealed: blob[keyFileSealedOff:keyFileCRCOff],
		header: blob[:keyFileSealedOff],
	}, nil
}

// UnwrapKey opens a key file made by WrapKey. Errors wrap ErrCorruptKeyFile
// (damaged file), ErrWrongPassword (intact file, wrong password) or
// ErrEmptyPassword.
func UnwrapKey(blob []byte, password string) (*Key, error) {
	if password == "" {
		return nil, fmt.Errorf("unwrap data key: %w", ErrEmptyPassword)
	}
	kf, err := parseKeyFile(blob)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	kek, err := deriveKEK(password, kf.salt, kf.params)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	raw, err := kek.Open(nil, kf.sealed, kf.header)
	if err != nil {
		// The checksum matched, so the bytes are what was written: the
		// password (or, improbably, a deliberate forgery) is at fault.
		return nil, fmt.Errorf("unwrap data key: %w", ErrWrongPassword)
	}
	k, err := KeyFromBytes(raw)
	clear(raw)
	if err != nil {
		// Unreachable: the sealed part has a fixed length.
		return nil, fmt.Errorf("unwrap data key: %w: %v", ErrCorruptKeyFile, err)
	}
	return k, nil
}

// objectName names objKey inside st for error messages, e.g.
// "s3://bucket/prefix/keys/datakey".
func objectName(st store.Store, objKey string) string {
	return strings.TrimSuffix(st.String(), "/") + "/" + objKey
}

// explainUnwrapError turns an UnwrapKey error into one that names the object
// and tells the operator what to do about it.
func explainUnwrapError(err error, name string) error {
	switch {
	case errors.Is(err, ErrWrongPassword):
		return fmt.Errorf("wrong encryption password for %s: check [storage] encryption_password: %w", name, err)
	case errors.Is(err, ErrCorruptKeyFile):
		return fmt.Errorf("key file %s is damaged; restore it from a backup (without it the data cannot be decrypted): %w", name, err)
	default:
		return fmt.Errorf("key file %s: %w", name, err)
	}
}

// loadAttempts bounds the create/read loop in LoadOrCreateKey and the
// compare-and-swap loop in ChangePassword. Contention on the key file is
// rare (a few processes starting at once), so a handful is plenty.
const loadAttempts = 5

// LoadOrCreateKey reads the key file at objKey and unwraps it with password.
// If there is no key file, it generates a new data key, wraps it with
// Argon2id(p) and stores it with PutIfAbsent; created reports that. If
// another process creates the file first, that process's key is loaded
// instead, so concurrent first starts all end up with the same key.
func LoadOrCreateKey(ctx context.Context, st store.Store, objKey, password string, p Params) (k *Key, created bool, err error) {
	name := objectName(st, objKey)
	if password == "" {
		return nil, false, fmt.Errorf("open key file %s: %w: set [storage] encryption_password", name, ErrEmptyPassword)
	}
	if err := p.Validate(); err != nil {
		return nil, false, fmt.Errorf("open key file %s: %w", name, err)
	}
	for attempt := 0; attempt < loadAttempts; attempt++ {
		blob, err := st.Get(ctx, objKey, 0, -1)
		if err == nil {
			k, err := UnwrapKey(blob, password)
			if err != nil {
				return nil, false, explainUnwrapError(err, name)
			}
			return k, false, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, false, fmt.Errorf("read key file %s: %w", name, err)
		}

		// No key file yet: this is a new filesystem.
		nk, err := NewKey()
		if err != nil {
			return nil, false, fmt.Errorf("create key file %s: %w", name, err)
		}
		blob, err = WrapKey(nk, password, p)
		if err != nil {
			return nil, false, fmt.Errorf("create key file %s: %w", name, err)
		}
		_, err = st.PutIfAbsent(ctx, objKey, blob)
		if err == nil {
			return nk, true, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, false, fmt.Errorf("create key file %s: %w", name, err)
		}
		// Another process won the race; loop and load its key. (Looping
		// rather than a single re-Get also copes with the winner's file
		// being deleted again in between, however unlikely.)
	}
	return nil, false, fmt.Errorf("open key file %s: still contended after %d attempts", name, loadAttempts)
}

// ChangePassword rewraps the data key stored at objKey from oldPassword to
// newPassword (with a fresh salt and Argon2id(p)). The data key itself is
// unchanged, so everything already written stays readable. The update is a
// compare-and-swap on the object's ETag; if another writer changes the file
// in between, the whole read-unwrap-wrap-write cycle is retried a few times.
func ChangePassword(ctx context.Context, st store.Store, objKey, oldPassword, newPassword string, p Params) error {
	name := objectName(st, objKey)
	if oldPassword == "" || newPassword == "" {
		return fmt.Errorf("change password of %s: %w", name, ErrEmptyPassword)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("change password of %s: %w", name, err)
	}
	for attempt := 0; attempt < loadAttempts; attempt++ {
		if attempt > 0 {
			// Back off a little, with jitter, so two changers do not keep
			// colliding in lockstep.
			d := time.Duration(attempt)*20*time.Millisecond + mrand.N(20*time.Millisecond)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("change password of %s: %w", name, ctx.Err())
			case <-t.C:
			}
		}

		// Head before Get: if the object changes between the two, the ETag
		// we hold is older than the bytes we read and PutIfMatch fails, which
		// is the safe direction.
		info, err := st.Head(ctx, objKey)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("change password of %s: no key file there (nothing to change): %w", name, err)
			}
			return fmt.Errorf("change password of %s: %w", name, err)
		}
		blob, err := st.Get(ctx, objKey, 0, -1)
		if err != nil {
			return fmt.Errorf("change password of %s: read: %w", name, err)
		}
		k, err := UnwrapKey(blob, oldPassword)
		if err != nil {
			if errors.Is(err, ErrWrongPassword) {
				return fmt.Errorf("change password of %s: old password is wrong: %w", name, err)
			}
			return fmt.Errorf("change password: %w", explainUnwrapError(err, name))
		}
		nblob, err := WrapKey(k, newPassword, p)
		if err != nil {
			return fmt.Errorf("change password of %s: %w", name, err)
		}
		_, err = st.PutIfMatch(ctx, objKey, nblob, info.ETag)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrPrecondition) {
			return fmt.Errorf("change password of %s: write: %w", name, err)
		}
	}
	return fmt.Errorf("change password of %s: key file kept changing underneath us (%d attempts): %w", name, loadAttempts, store.ErrPrecondition)
}
