package sched

import (
	"errors"
	"sync/atomic"
	"time"

	"zerofs/store"
)

// Op is a kind of store request, as counted in Stats.
type Op uint8

// The counted operations. Put, PutIfAbsent and PutIfMatch all count as
// OpPut. A large object the S3 backend uploads in parts is one OpPut here:
// the parts are the backend's business, below this scheduler.
const (
	OpGet Op = iota
	OpPut
	OpHead
	OpList
	OpDelete

	// NumOps is the number of operations, for arrays indexed by Op.
	NumOps = 5
)

var opNames = [NumOps]string{"get", "put", "head", "list", "delete"}

// String is the operation's name as used in metric labels: "get", "put",
// "head", "list" or "delete".
func (o Op) String() string {
	if o < NumOps {
		return opNames[o]
	}
	return "unknown"
}

// Stats is a snapshot of a Store's counters. The counters only grow;
// InFlight, Waiting and HedgesInFlight are the state at the snapshot.
type Stats struct {
	// Ops counts requests by operation.
	Ops [NumOps]OpStats
	// Classes is the limiter's state by priority class.
	Classes [NumClasses]ClassStats

	// Hedges is the number of hedge GETs issued. Hedges are not counted
	// in Ops: Ops[OpGet].Requests counts the Gets callers made.
	Hedges int64
	// HedgesWon counts the Gets answered by their hedge.
	HedgesWon int64
	// HedgesSkipped counts Gets that ran past their hedging threshold but
	// were not hedged: the rate cap or the hedge pool was exhausted.
	HedgesSkipped int64
	// HedgesInFlight is the number of hedges running now.
	HedgesInFlight int

	// Limit is the maximum of requests in flight (Options.MaxRequests),
	// HedgeLimit the size of the separate pool hedges run in.
	Limit, HedgeLimit int
}

// OpStats counts the requests of one operation.
type OpStats struct {
	// Requests is every call made, including those that failed or whose
	// context ended while waiting for a slot.
	Requests int64
	// Errors counts calls that failed: the store's error that persisted
	// through its retries, or the context ending. The store's sentinel
	// answers (store.ErrNotFound, ErrExists, ErrPrecondition,
	// ErrInvalidRange) are answers, not failures, and are not counted.
	Errors int64
	// BytesIn is the bytes Gets returned; BytesOut the bytes successful
	// puts stored. A hedged Get's losing copy is not counted.
	BytesIn, BytesOut int64
}

// ClassStats is the limiter's state for one priority class.
type ClassStats struct {
	// InFlight is the number of requests holding a slot now.
	InFlight int
	// Waiting is the number of requests queued for a slot now.
	Waiting int
	// Waits counts the requests that had to queue, WaitTime the time
	// they spent queued (both including requests whose context ended
	// while queued).
	Waits    int64
	WaitTime time.Duration
}

type opCounters struct {
	requests, errors, bytesIn, bytesOut atomic.Int64
}

type counters struct {
	ops                              [NumOps]opCounters
	hedges, hedgesWon, hedgesSkipped atomic.Int64
}

// count records one finished call of op: err as returned, in and out the
// bytes received and sent (counted only on success).
func (c *counters) count(op Op, err error, in, out int) {
	oc := &c.ops[op]
	oc.requests.Add(1)
	if err != nil {
		if !isSentinel(err) {
			oc.errors.Add(1)
		}
		return
	}
	if in > 0 {
		oc.bytesIn.Add(int64(in))
	}
	if out > 0 {
		oc.bytesOut.Add(int64(out))
	}
}

func isSentinel(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) ||
		errors.Is(err, store.ErrPrecondition) || errors.Is(err, store.ErrInvalidRange)
}

// Stats returns a snapshot of the counters and of the limiter's state.
func (s *Store) Stats() Stats {
	var st Stats
	for i := range st.Ops {
		oc := &s.stats.ops[i]
		st.Ops[i] = OpStats{
			Requests: oc.requests.Load(),
			Errors:   oc.errors.Load(),
			BytesIn:  oc.bytesIn.Load(),
			BytesOut: oc.bytesOut.Load(),
		}
	}
	st.Hedges = s.stats.hedges.Load()
	st.HedgesWon = s.stats.hedgesWon.Load()
	st.HedgesSkipped = s.stats.hedgesSkipped.Load()
	s.lim.snapshot(&st)
	return st
}
