package fs

import (
	"encoding/binary"
	"sync"
	"time"
)

// StatFS is the filesystem's space report (NFS FSSTAT, df).
type StatFS struct {
	TotalBytes uint64 // nominal capacity: object storage is elastic
	FreeBytes  uint64
	UsedBytes  uint64 // bytes stored in data objects
	TotalFiles uint64
	FreeFiles  uint64
}

// nominalCapacity is what zerofs reports as the size of an elastic bucket.
const nominalCapacity = 1 << 50 // 1 PiB

var statCache struct {
	sync.Mutex
	at   time.Time
	used uint64
	fs   *FS
}

// StatFS reports space. Used bytes come from the object records (summed at
// most every few seconds: a scan of the object table).
func (f *FS) StatFS() StatFS {
	statCache.Lock()
	if statCache.fs != f || time.Since(statCache.at) > 5*time.Second {
		var used uint64
		f.scanObjects(func(_ ObjRef, info objInfo) { used += uint64(info.Size) })
		statCache.fs, statCache.at, statCache.used = f, time.Now(), used
	}
	used := statCache.used
	statCache.Unlock()
	var files uint64
	if v, ok, _ := f.getKV(f.chain(), metaKey("next_ino")); ok && len(v) == 8 {
		files = binary.BigEndian.Uint64(v) - 1
	}
	s := StatFS{TotalBytes: nominalCapacity, UsedBytes: used, TotalFiles: 1 << 40}
	if used < nominalCapacity {
		s.FreeBytes = nominalCapacity - used
	}
	s.FreeFiles = s.TotalFiles - min(files, s.TotalFiles)
	return s
}
