package s3proxy

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
)

// Op is the kind of S3 request, as counted: what a benchmark wants to know
// is how many round trips of each cost class the code under test made, not
// which of S3's hundred API names they carried.
type Op uint8

// The operations. Requests are classified by method and path, assuming
// path-style addressing (http://host/bucket/key), which is what zerofs and
// the SDK use with a custom endpoint.
const (
	OpGet    Op = iota // GET of an object (GetObject; ListParts counts as OpList)
	OpPut              // any PUT: PutObject, UploadPart, CopyObject, CreateBucket
	OpHead             // any HEAD
	OpDelete           // any DELETE: DeleteObject, AbortMultipartUpload
	OpList             // GET of a bucket or of the service (ListObjectsV2, ListMultipartUploads), or ListParts
	OpPost             // any POST: CreateMultipartUpload, CompleteMultipartUpload, DeleteObjects
	OpOther            // any other method
	numOps
)

var opNames = [numOps]string{"GET", "PUT", "HEAD", "DELETE", "LIST", "POST", "OTHER"}

func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// MarshalText makes an Op a readable JSON map key.
func (o Op) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (o *Op) UnmarshalText(b []byte) error {
	for i, n := range opNames {
		if n == string(b) {
			*o = Op(i)
			return nil
		}
	}
	return fmt.Errorf("s3proxy: unknown op %q", b)
}

// OpOf classifies r.
func OpOf(r *http.Request) Op {
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		if q.Has("list-type") || q.Has("uploadId") || q.Has("uploads") {
			return OpList
		}
		// Path-style: "/bucket" or "/bucket/" is the bucket, "/" the service.
		_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if key == "" {
			return OpList
		}
		return OpGet
	case http.MethodPut:
		return OpPut
	case http.MethodHead:
		return OpHead
	case http.MethodDelete:
		return OpDelete
	case http.MethodPost:
		return OpPost
	}
	return OpOther
}

// Counts is a snapshot of what the proxy has seen since it started or was
// last Reset. Every request is counted once, when it arrives, whatever then
// happens to it; the proxy's own /_proxy/ requests are not counted.
type Counts struct {
	// Requests by operation; every Op has an entry.
	Requests map[Op]int64 `json:"requests"`
	// BytesIn is request body bytes read from clients (uploads), BytesOut
	// response body bytes written to them (downloads), injected error
	// bodies included.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// Faults injected, by kind; every Fault but Pass has an entry.
	Faults map[Fault]int64 `json:"faults"`
}

// Total is the number of requests of every operation.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c.Requests {
		n += v
	}
	return n
}

// TotalFaults is the number of faults of every kind.
func (c Counts) TotalFaults() int64 {
	var n int64
	for _, v := range c.Faults {
		n += v
	}
	return n
}

// counters are atomics, not a mutex-guarded Counts, because every request of
// a benchmark run at full concurrency updates them.
type counters struct {
	requests [numOps]atomic.Int64
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	faults   [numFaults]atomic.Int64
}

func (c *counters) snapshot() Counts {
	s := Counts{Requests: make(map[Op]int64, numOps), Faults: make(map[Fault]int64, numFaults-1)}
	for i := range c.requests {
		s.Requests[Op(i)] = c.requests[i].Load()
	}
	for i := range c.faults {
		if Fault(i) != Pass {
			s.Faults[Fault(i)] = c.faults[i].Load()
		}
	}
	s.BytesIn = c.bytesIn.Load()
	s.BytesOut = c.bytesOut.Load()
	return s
}

func (c *counters) reset() {
	for i := range c.requests {
		c.requests[i].Store(0)
	}
	for i := range c.faults {
		c.faults[i].Store(0)
	}
	c.bytesIn.Store(0)
	c.bytesOut.Store(0)
}
