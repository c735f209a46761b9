// Package cache holds zerofs's caches of decoded data frames.
//
// Frames are addressed by a uint64 frame id that is globally unique and never
// reused: a frame's bytes never change once written, and a rewritten range
// gets a new frame with a new id. Caches therefore never need invalidation for
// correctness; Delete exists only to drop frames early (for example after the
// segment holding them is garbage collected) so they stop taking space.
package cache

// Cache maps frame ids to frame bytes. Implementations are safe for
// concurrent use. The in-memory tier is Memory; a disk tier will implement the
// same interface so the two can be stacked.
type Cache interface {
	// Get returns the frame stored under id and true, or nil and false if the
	// cache does not hold it (never stored, evicted or deleted). The returned
	// slice is shared with the cache and with other readers: callers must not
	// modify it.
	Get(id uint64) ([]byte, bool)

	// Put stores data under id. The cache keeps data itself, not a copy, so
	// the caller must not modify data after Put. A value the cache cannot
	// hold (larger than its capacity; see the implementation for the exact
	// limit) is silently ignored, as is any Put to a disabled cache. Putting
	// an id that is already present replaces the value.
	Put(id uint64, data []byte)

	// Delete drops id from the cache, if present.
	Delete(id uint64)

	// GetScan and PutScan are Get and Put for a sequential scan, which
	// touches each frame about once: what only a scan reads must be the
	// first to go, so that one big pass does not evict the hot set.
	GetScan(id uint64) ([]byte, bool)
	PutScan(id uint64, data []byte)
}
