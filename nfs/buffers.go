package nfs

import "sync"

// Request records and replies are pooled by size class: a busy connection
// moves a 1 MiB buffer per READ or WRITE, and allocating each one fresh would
// make the garbage collector the bottleneck at gigabytes per second.

// maxRecord bounds one RPC record (a call). The largest legitimate call is a
// WRITE of wtmax bytes plus its header; anything larger is refused by closing
// the connection, before it is buffered.
const maxRecord = maxIO + 64<<10

var bufClasses = [...]int{8 << 10, 64 << 10, maxRecord}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns a slice of length n. Its capacity is the size class that
// holds n, so that putBuf can recognise and reuse it.
func getBuf(n int) []byte {
	for i, size := range bufClasses {
		if n <= size {
			if p, ok := bufPools[i].Get().(*[]byte); ok {
				return (*p)[:n]
			}
			return make([]byte, n, size)
		}
	}
	return make([]byte, n)
}

// putBuf returns b to its pool. Slices that grew past their class (append
// reallocated them) or were never pooled are left to the garbage collector.
func putBuf(b []byte) {
	for i, size := range bufClasses {
		if cap(b) == size {
			b = b[:0]
			bufPools[i].Put(&b)
			return
		}
	}
}
