// Package store holds the object-store clients zerofs keeps its data in: S3
// (any S3-compatible server), a local directory (file://) and memory (mem://,
// for unit tests). All three implement Store and pass the same conformance
// suite (package store/storetest), so everything above this package can treat
// them alike.
//
// The interface is deliberately small. It carries exactly the primitives the
// write-ahead log and the filesystem core need: whole-object puts (the WAL
// appends and segment uploads), ranged gets (reading one frame out of a big
// segment), and the two conditional writes that make single-writer fencing
// possible (create-if-absent and compare-and-swap on the ETag).
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Backends wrap them with context; callers test with errors.Is.
var (
	// ErrNotFound: the object does not exist (Get, Head, PutIfMatch).
	ErrNotFound = errors.New("object not found")
	// ErrExists: PutIfAbsent found an object already at the key.
	ErrExists = errors.New("object already exists")
	// ErrPrecondition: PutIfMatch found an object whose ETag differs.
	ErrPrecondition = errors.New("precondition failed: object changed")
	// ErrInvalidRange: a Get asked for bytes that start beyond the end of the object.
	ErrInvalidRange = errors.New("invalid range")
)

// Info describes one stored object.
type Info struct {
	Key     string
	Size    int64
	ETag    string // opaque; equal ETags mean equal content for PutIfMatch
	ModTime time.Time
}

// Store is an object store: a flat namespace of immutable-once-written byte
// blobs addressed by key. Keys are relative to the store's root (the URL's
// prefix) and use '/' as separator; they never start with '/'.
//
// All methods are safe for concurrent use. Transient failures (network errors,
// 5xx, throttling) are retried inside the backend with backoff and jitter;
// an error returned is either one of the sentinels above, a context error, or
// a failure that persisted through the retries.
type Store interface {
	// Get returns length bytes of the object at key starting at off.
	// length < 0 means "to the end". A range that runs past the end is
	// shortened to the end; a range starting past the end (off > size) is
	// ErrInvalidRange. A missing object is ErrNotFound.
	Get(ctx context.Context, key string, off, length int64) ([]byte, error)

	// Put stores data at key, replacing any object there, and returns its ETag.
	// Objects larger than the backend's single-request limit are uploaded in
	// parts; the object becomes visible atomically, whole, or not at all.
	Put(ctx context.Context, key string, data []byte) (etag string, err error)

	// PutIfAbsent stores data at key only if no object exists there, atomically
	// with respect to concurrent writers (If-None-Match: *). ErrExists otherwise.
	PutIfAbsent(ctx context.Context, key string, data []byte) (etag string, err error)

	// PutIfMatch replaces the object at key only if its current ETag equals
	// etag (If-Match). ErrPrecondition if it differs, ErrNotFound if there is
	// no object.
	PutIfMatch(ctx context.Context, key string, data []byte, etag string) (newETag string, err error)

	// Head returns the object's metadata, or ErrNotFound.
	Head(ctx context.Context, key string) (Info, error)

	// List returns every object whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Info, error)

	// Delete removes the object at key. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error

	// String names the store for logs and errors (URL without credentials).
	String() string
}
