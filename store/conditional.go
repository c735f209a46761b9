package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrNoConditionalWrites: the store accepted a write whose condition
// (If-None-Match: * or If-Match) should have failed. zerofs cannot run on
// it: the conditional writes are what keeps two writers of one filesystem
// from overwriting each other's head (docs/stores.md).
var ErrNoConditionalWrites = errors.New("the store ignores conditional writes (If-None-Match / If-Match)")

// CheckConditionalWrites proves that st honours both conditional writes, by
// asking it to break each once on a scratch object: PutIfAbsent on an object
// that exists must fail with ErrExists, PutIfMatch with a stale ETag with
// ErrPrecondition. Some S3-compatible servers silently ignore the headers;
// finding that out at start, with a clear error, beats finding it out when
// two writers have both claimed a filesystem.
//
// It costs five requests and leaves nothing behind (unless the store fails
// midway: a leftover probe object is harmless).
func CheckConditionalWrites(ctx context.Context, st Store) error {
	var b [8]byte
	rand.Read(b[:])
	key := "probe/conditional-" + hex.EncodeToString(b[:])
	defer st.Delete(context.WithoutCancel(ctx), key)
	first, err := st.PutIfAbsent(ctx, key, []byte("first"))
	if err != nil {
		return fmt.Errorf("check conditional writes on %s: create %s: %w", st, key, err)
	}
	_, err = st.PutIfAbsent(ctx, key, []byte("second"))
	switch {
	case err == nil:
		return fmt.Errorf("%s: a PutObject with If-None-Match: * replaced an existing object: %w", st, ErrNoConditionalWrites)
	case !errors.Is(err, ErrExists):
		return fmt.Errorf("check conditional writes on %s: If-None-Match: %w", st, err)
	}
	// An ETag of the right shape (S3's: the hex MD5 of the content) that
	// is not the object's.
	stale := "0f343b0931126a20f133d67c2b018a3b"
	if stale == first {
		stale = "1f343b0931126a20f133d67c2b018a3b"
	}
	_, err = st.PutIfMatch(ctx, key, []byte("third"), stale)
	switch {
	case err == nil:
		return fmt.Errorf("%s: a PutObject with If-Match and a stale ETag succeeded: %w", st, ErrNoConditionalWrites)
	case !errors.Is(err, ErrPrecondition):
		return fmt.Errorf("check conditional writes on %s: If-Match: %w", st, err)
	}
	if _, err := st.PutIfMatch(ctx, key, []byte("fourth"), first); err != nil {
		return fmt.Errorf("check conditional writes on %s: If-Match with the current ETag: %w", st, err)
	}
	return nil
}
