package fs

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// MaxFileSize bounds file sizes (1 PiB), keeping chunk indexes far from overflow.
const MaxFileSize = 1 << 50

// Locking on the data path (no global lock):
//
//	viewMu (shared)      pins the open batch for the whole request, so a
//	                     request's changes land in one batch: a crash never
//	                     tears a single WRITE.
//	inodeRW (shared)     writes and partial punches of one file run in
//	                     parallel; truncate, whole-chunk punches and removal
//	                     take it exclusively.
//	chunkLocks           one stripe per chunk: writes to different chunks of
//	                     one file proceed in parallel.
//	attrMu               the short read-modify-write of size and times.
//
// Order: viewMu, inodeRW, chunk stripes, attrMu. Never held across I/O.

func (f *FS) chunkLock(id chunkID) *sync.Mutex {
	return &f.chunkLocks[(id.ino*0x9E3779B97F4A7C15^id.idx*0xC2B2AE3D27D4EB4F)%uint64(len(f.chunkLocks))]
}

func (f *FS) inodeRW(ino uint64) *sync.RWMutex { return &f.inodeRWs[ino%uint64(len(f.inodeRWs))] }
func (f *FS) attrMu(ino uint64) *sync.Mutex    { return &f.attrMus[ino%uint64(len(f.attrMus))] }

// Write writes p at offset off of regular file ino and returns the file's
// attributes after it. The data is in memory when Write returns; Flush makes
// it durable.
func (f *FS) Write(ctx context.Context, c *Cred, ino uint64, off uint64, p []byte) (Inode, error) {
	if IsSnapshotIno(ino) {
		return Inode{}, refuseView("write", ino)
	}
	if off > MaxFileSize || uint64(len(p)) > MaxFileSize-off {
		return Inode{}, fmt.Errorf("write [%d, +%d) of inode %d: %w", off, len(p), ino, ErrFileTooBig)
	}
	adm, err := f.reserve(ctx, int64(len(p)))
	if err != nil {
		return Inode{}, err
	}
	defer f.unreserve(adm)
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	chain := f.chainLocked()
	b := f.open
	rw := f.inodeRW(ino)
	rw.RLock()
	defer rw.RUnlock()
	// The last moment to give up: from here on the write changes the batch.
	if ctx.Err() != nil {
		return Inode{}, canceled(ctx)
	}
	n, err := f.getInode(chain, ino)
	if err != nil {
		return Inode{}, err
	}
	if err := writable(&n); err != nil {
		return Inode{}, err
	}
	if err := c.access(&n, accessWrite); err != nil {
		return Inode{}, err
	}
	cs := uint64(f.chunkSize)
	for done := 0; done < len(p); {
		pos := off + uint64(done)
		id := chunkID{ino, pos / cs}
		a := uint32(pos % cs)
		e := uint32(min(cs, uint64(a)+uint64(len(p)-done)))
		mu := f.chunkLock(id)
		mu.Lock()
		dc, err := f.dirtyFor(b, chain, id, a == 0 && e == uint32(cs))
		if err != nil {
			mu.Unlock()
			return Inode{}, err
		}
		b.dataBytes.Add(dc.grow(a, e, uint32(cs)))
		copy(dc.bytes(a, e), p[done:])
		dc.cover = dc.cover.add(a, e)
		dc.base = trimPieces(dc.base, a, e)
		mu.Unlock()
		done += int(e - a)
	}
	n, err = f.updateAttrs(b, chain, ino, func(n *Inode) {
		n.Size = max(n.Size, off+uint64(len(p)))
		now := time.Now().UnixNano()
		n.Mtime, n.Ctime = now, now
		if c.Uid != 0 && n.Mode&(modeSetuid|modeSetgid) != 0 {
			// As Linux does without CAP_FSETID: a write by anyone but
			// root drops setuid, and setgid on group-executable files.
			n.Mode &^= modeSetuid
			if n.Mode&0o010 != 0 {
				n.Mode &^= modeSetgid
			}
		}
	})
	f.noteDirty(b)
	f.stats.WrittenBytes.Add(int64(len(p)))
	return n, err
}

func writable(n *Inode) error {
	switch {
	case n.IsDir():
		return fmt.Errorf("inode %d: %w", n.Ino, ErrIsDir)
	case !n.IsReg():
		return fmt.Errorf("inode %d is not a regular file: %w", n.Ino, ErrInvalid)
	}
	return nil
}

// updateAttrs applies fn to ino's attributes in the open batch b. The caller
// holds viewMu shared.
func (f *FS) updateAttrs(b *batch, chain []*batch, ino uint64, fn func(*Inode)) (Inode, error) {
	mu := f.attrMu(ino)
	mu.Lock()
	defer mu.Unlock()
	n, err := f.getInode(chain, ino)
	if err != nil {
		return Inode{}, err
	}
	fn(&n)
	b.setKV(inodeKey(ino), n.encode())
	return n, nil
}

// dirtyFor returns chunk id's dirty state in the open batch b, creating it
// from the newest older state if needed. full says the caller is about to
// overwrite the whole chunk, so the older state need not be copied. The
// caller holds the chunk's lock and viewMu shared.
func (f *FS) dirtyFor(b *batch, chain []*batch, id chunkID, full bool) (*dirtyChunk, error) {
	if dc := b.getChunk(id); dc != nil {
		return dc, nil
	}
	dc := &dirtyChunk{}
	if !full {
		odc, from, pieces, err := f.findChunk(chain, id)
		if err != nil {
			return nil, err
		}
		switch {
		case odc == nil:
			dc.base = pieces
		case from.enc.Load() != nil:
			// Dirty in a sealed batch already encoded: its final pieces
			// are known, so build on them rather than on its data.
			dc.base = slices.Clone(from.enc.Load().chunks[id])
		default:
			// Still being encoded: copy its state.
			dc = odc.clone()
			b.dataBytes.Add(int64(len(dc.data)))
		}
	}
	b.putChunk(id, dc)
	return dc, nil
}

// lookupChunk finds chunk id's newest state: a batch's dirty chunk, or the
// pieces in pebble. Both nil means a hole.
func (f *FS) lookupChunk(chain []*batch, id chunkID) (*dirtyChunk, []Piece, error) {
	dc, _, pieces, err := f.findChunk(chain, id)
	return dc, pieces, err
}

// findChunk is lookupChunk that also says which batch the dirty chunk is in.
func (f *FS) findChunk(chain []*batch, id chunkID) (*dirtyChunk, *batch, []Piece, error) {
	if dc, in, tomb := findInChain(chain, id); dc != nil || tomb {
		return dc, in, nil, nil
	}
	pieces, err := f.getPieces(f.db, chunkKey(id.ino, id.idx))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("chunk %d of inode %d: %w: %w", id.idx, id.ino, ErrIO, err)
	}
	return nil, nil, pieces, nil
}

// findInChain finds chunk id's newest state in the batch chain: a dirty
// chunk and its batch, or tomb if a punch made it a hole; neither means
// pebble has it.
func findInChain(chain []*batch, id chunkID) (dc *dirtyChunk, in *batch, tomb bool) {
	for i := len(chain) - 1; i >= 0; i-- {
		if dc := chain[i].getChunk(id); dc != nil {
			return dc, chain[i], false
		}
		if chain[i].tombCovers(id) {
			return nil, nil, true
		}
	}
	return nil, nil, false
}

// Punch deallocates [off, off+length) of regular file ino: it reads as zeros
// afterwards and its space is reclaimed. The size does not change. Whole
// chunks are dropped with one range deletion whatever their number, so a
// TRIM of a whole multi-TiB device is cheap (see applyPunch).
func (f *FS) Punch(ctx context.Context, c *Cred, ino uint64, off, length uint64) error {
	if IsSnapshotIno(ino) {
		return refuseView("punch", ino)
	}
	if length == 0 {
		return nil
	}
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	rw := f.inodeRW(ino)
	rw.Lock()
	defer rw.Unlock()
	if ctx.Err() != nil {
		return canceled(ctx)
	}
	chain := f.chainLocked()
	n, err := f.getInode(chain, ino)
	if err != nil {
		return err
	}
	if err := writable(&n); err != nil {
		return err
	}
	if err := c.access(&n, accessWrite); err != nil {
		return err
	}
	end := min(n.Size, off+min(length, MaxFileSize))
	if off >= end {
		return nil
	}
	if err := f.punchLocked(chain, ino, off, end); err != nil {
		return err
	}
	_, err = f.updateAttrs(f.open, chain, ino, func(n *Inode) {
		now := time.Now().UnixNano()
		n.Mtime, n.Ctime = now, now
	})
	return err
}

// punchLocked makes [off, end) of ino a hole in the open batch; end may be
// math.MaxUint64 for "to the end". The caller holds viewMu shared and ino's
// inodeRW exclusively.
func (f *FS) punchLocked(chain []*batch, ino, off, end uint64) error {
	b := f.open
	cs := uint64(f.chunkSize)
	head := off / cs
	if end != math.MaxUint64 && (end-1)/cs == head {
		return f.punchPartial(b, chain, chunkID{ino, head}, uint32(off-head*cs), uint32(end-head*cs))
	}
	first := head
	if off%cs != 0 {
		if err := f.punchPartial(b, chain, chunkID{ino, head}, uint32(off%cs), uint32(cs)); err != nil {
			return err
		}
		first++
	}
	last := uint64(math.MaxUint64)
	if end != math.MaxUint64 {
		last = end / cs
		if end%cs != 0 {
			if err := f.punchPartial(b, chain, chunkID{ino, last}, 0, uint32(end%cs)); err != nil {
				return err
			}
		}
	}
	if first < last {
		b.punch(ino, first, last)
	}
	return nil
}

// punchPartial makes bytes [a, e) of one chunk a hole.
func (f *FS) punchPartial(b *batch, chain []*batch, id chunkID, a, e uint32) error {
	if a >= e {
		return nil
	}
	mu := f.chunkLock(id)
	mu.Lock()
	defer mu.Unlock()
	if a == 0 && e == f.chunkSize {
		b.punch(id.ino, id.idx, id.idx+1)
		return nil
	}
	odc, pieces, err := f.lookupChunk(chain, id)
	if err != nil {
		return err
	}
	if odc == nil && len(pieces) == 0 {
		return nil // already a hole
	}
	dc, err := f.dirtyFor(b, chain, id, false)
	if err != nil {
		return err
	}
	dc.cover = dc.cover.remove(a, e)
	dc.base = trimPieces(dc.base, a, e)
	return nil
}

// truncateLocked sets ino's size, punching everything beyond a smaller size
// so that a later extension reads zeros there. The caller holds viewMu shared
// and ino's inodeRW exclusively.
func (f *FS) truncateLocked(chain []*batch, n *Inode, size uint64) error {
	if size < n.Size {
		if err := f.punchLocked(chain, n.Ino, size, math.MaxUint64); err != nil {
			return err
		}
	}
	n.Size = size
	return nil
}

// chainLocked is chain() for a caller already holding viewMu.
func (f *FS) chainLocked() []*batch {
	c := make([]*batch, 0, len(f.sealed)+1)
	c = append(c, f.sealed...)
	return append(c, f.open)
}
