package cache

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// errKind classifies the disk cache's failures for counting and logging.
type errKind int

const (
	errRead    errKind = iota // a read failed (EIO, file shrunk underneath us)
	errWrite                  // a write failed (ENOSPC, EIO)
	errCorrupt                // a read returned bytes that failed their checks
	numErrKinds
)

var errKindNames = [numErrKinds]string{"read", "write", "checksum"}

// errLogInterval is the least time between two log lines for one kind of
// failure: a dying disk fails every operation, and one line a minute (with a
// count of the ones not logged) says as much as thousands.
const errLogInterval = time.Minute

// diskErrors counts failures by kind and rate-limits their logging.
type diskErrors struct {
	count      [numErrKinds]atomic.Uint64
	lastLog    [numErrKinds]atomic.Int64 // UnixNano of the last line logged; 0 = never
	suppressed [numErrKinds]atomic.Uint64
}

// report counts one failure of kind k, at slot for frame id, and logs it
// unless a line for the same kind was logged less than errLogInterval ago.
func (e *diskErrors) report(log *slog.Logger, k errKind, err error, slot uint32, id uint64) {
	e.count[k].Add(1)
	now := time.Now().UnixNano()
	last := e.lastLog[k].Load()
	if last != 0 && now-last < int64(errLogInterval) || !e.lastLog[k].CompareAndSwap(last, now) {
		e.suppressed[k].Add(1)
		return
	}
	attrs := []any{"kind", errKindNames[k], "slot", slot, "frame", id,
		"not_logged_since_last", e.suppressed[k].Swap(0), "total", e.count[k].Load()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	msg := "disk cache: I/O error; treating as a miss"
	if k == errCorrupt {
		msg = "disk cache: slot failed its checksum; dropped it"
	} else if k == errWrite {
		msg = "disk cache: write failed; skipping writes briefly"
	}
	log.Warn(msg, attrs...)
}
