package fs

import (
	"encoding/binary"
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

// StatFS reports space. Used bytes come from the object records (summed at
// most every few seconds: a scan of the object table).
func (f *FS) StatFS() StatFS {
	f.statMu.Lock()
	if time.Since(f.statAt) > 5*time.Second {
		var used uint64
		f.scanObjects(func(_ ObjRef, info objInfo) { used += uint64(info.Size) })
		f.statAt, f.statUsed = time.Now(), used
	}
	used := f.statUsed
	f.statMu.Unlock()
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
