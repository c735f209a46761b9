package fs

import "sync"

// recordBuffers recycles the buffers WAL records are laid out in.
//
// Why: a record is one large buffer (up to Options.BatchBytes of frames plus
// the delta), written once, sent to the store and dropped when its batch is
// applied. Allocated afresh, each one costs the runtime a zeroing pass and,
// more, the kernel a page fault per 4 KiB the first time the sealer writes
// it (the Go heap hands freed large spans back to the OS): on the sequential
// write path those faults cost more than the copy itself. The pipeline holds
// at most Options.WALInFlight records plus one being applied, so that many
// buffers, reused, cover the steady state.
//
// A buffer goes back only from the applier, after the record's append has
// completed (nothing in the WAL or the store still reads it) and the frames
// were copied into the disk cache (sealedFrame.enc points into it). A
// batch whose append failed never reaches the applier: its buffer is left to
// the garbage collector. Contents of a reused buffer are stale; encodeBatch
// writes every byte of a record (header, sealed delta, sealed frames back
// to back), so none of it leaks into the store.
type recordBuffers struct {
	mu   sync.Mutex
	free [][]byte
	keep int // buffers kept at most
	max  int // capacity above which a buffer is not kept
	step int // capacities are rounded up to a multiple of step
}

func newRecordBuffers(keep int, batchBytes int64) *recordBuffers {
	step := 1 << 20
	return &recordBuffers{keep: keep, max: int(2*batchBytes) + step, step: step}
}

// get returns a buffer of length n with undefined contents.
func (r *recordBuffers) get(n int) []byte {
	r.mu.Lock()
	for i, b := range r.free {
		if cap(b) >= n {
			last := len(r.free) - 1
			r.free[i] = r.free[last]
			r.free[last] = nil
			r.free = r.free[:last]
			r.mu.Unlock()
			return b[:n]
		}
	}
	r.mu.Unlock()
	return make([]byte, n, (n+r.step-1)/r.step*r.step)
}

// put hands back a buffer from get that nothing references any more.
func (r *recordBuffers) put(b []byte) {
	if b == nil || cap(b) > r.max {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.free) < r.keep {
		r.free = append(r.free, b[:0])
		return
	}
	// Full: keep the larger buffers, which fit more records.
	for i, old := range r.free {
		if cap(old) < cap(b) {
			r.free[i] = b[:0]
			return
		}
	}
}
