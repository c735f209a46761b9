package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from size-class pools (powers of two from 4 KiB to
// 64 MiB, the default largest request), so a stream of 1 MiB requests does
// not allocate and collect 1 MiB per request. Larger buffers (a server
// configured to serve more) are allocated and left to the collector.

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 26 // 64 MiB = DefaultMaxPayload
	maxPooled     = 1 << maxClassShift
)

var bufPools [maxClassShift - minClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of length n (contents undefined).
func getBuf(n int) []byte {
	if n > maxPooled {
		return make([]byte, n)
	}
	c := classOf(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(b []byte) {
	c := cap(b)
	if c < 1<<minClassShift || c > maxPooled || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	bufPools[classOf(c)].Put(&b)
}
