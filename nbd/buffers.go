package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from size-class pools (powers of two from 4 KiB to the
// 32 MiB maximum payload), so a stream of 1 MiB requests does not allocate
// and collect 1 MiB per request.

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 25 // 32 MiB = maxPayload
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
	if n > maxPayload {
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
	if c < 1<<minClassShift || c > maxPayload || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	bufPools[classOf(c)].Put(&b)
}
