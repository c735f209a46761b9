// Package crypt holds zerofs's encryption: the random 256-bit data key that
// seals every frame and metadata blob with XChaCha20-Poly1305, and the key
// file that stores the data key in the bucket wrapped under a key derived
// from the user's password with Argon2id.
//
// Why XChaCha20-Poly1305: its 192-bit nonce can be drawn at random for every
// sealed box without any risk of reuse across writers, restarts or machines,
// so no nonce counter has to be made durable or coordinated.
package crypt

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the size of a data key in bytes.
const KeySize = chacha20poly1305.KeySize

// NonceSize is the size of the random nonce at the front of every sealed box.
const NonceSize = chacha20poly1305.NonceSizeX

// Overhead is how many bytes Seal adds to a plaintext: nonce plus tag.
const Overhead = NonceSize + chacha20poly1305.Overhead

// ErrAuth means a sealed box failed authentication: it was corrupted,
// truncated, sealed under another key, or moved to a place whose associated
// data differs from where it was written.
var ErrAuth = errors.New("authentication failed: data corrupt or not ours")

// Key is a data key ready for sealing. It is safe for concurrent use.
type Key struct {
	raw  [KeySize]byte
	aead cipher.AEAD
}

// NewKey returns a fresh random data key.
func NewKey() (*Key, error) {
	var raw [KeySize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	return KeyFromBytes(raw[:])
}

// KeyFromBytes builds a key from KeySize raw bytes.
func KeyFromBytes(b []byte) (*Key, error) {
	if len(b) != KeySize {
		return nil, fmt.Errorf("data key: %d bytes, want %d", len(b), KeySize)
	}
	k := &Key{}
	copy(k.raw[:], b)
	aead, err := chacha20poly1305.NewX(k.raw[:])
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	k.aead = aead
	return k, nil
}

// Bytes returns the raw key. Only the key file code should need it.
func (k *Key) Bytes() []byte { return k.raw[:] }

// Seal encrypts and authenticates plaintext, binding aad, and appends
// nonce || ciphertext || tag to dst.
func (k *Key) Seal(dst, plaintext, aad []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, NonceSize)...)
	if _, err := rand.Read(dst[n : n+NonceSize]); err != nil {
		// crypto/rand never fails on Linux since Go 1.24; if it ever does,
		// continuing with a predictable nonce would be a silent disaster.
		panic(fmt.Sprintf("crypt: reading random nonce: %v", err))
	}
	return k.aead.Seal(dst, dst[n:n+NonceSize], plaintext, aad)
}

// Open authenticates and decrypts a box made by Seal with the same aad and
// appends the plaintext to dst. Any mismatch is ErrAuth.
func (k *Key) Open(dst, box, aad []byte) ([]byte, error) {
	if len(box) < Overhead {
		return nil, fmt.Errorf("sealed box of %d bytes, shorter than the %d-byte overhead: %w", len(box), Overhead, ErrAuth)
	}
	out, err := k.aead.Open(dst, box[:NonceSize], box[NonceSize:], aad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// SealInPlace seals box[NonceSize:len(box)-TagSize] in place: it writes a
// random nonce into box[:NonceSize], encrypts the plaintext where it lies and
// writes the tag into the last TagSize bytes. It lets a caller lay plaintext
// straight into its final buffer and avoid a copy.
func (k *Key) SealInPlace(box, aad []byte) {
	if len(box) < Overhead {
		panic("crypt: SealInPlace on a box shorter than the overhead")
	}
	if _, err := rand.Read(box[:NonceSize]); err != nil {
		panic(fmt.Sprintf("crypt: reading random nonce: %v", err))
	}
	plain := box[NonceSize : len(box)-TagSize]
	k.aead.Seal(plain[:0], box[:NonceSize], plain, aad)
}

// TagSize is the size of the authentication tag at the end of a sealed box.
const TagSize = chacha20poly1305.Overhead
