package fs

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Clones and restores copy a file's chunk map, not its data: the new chunk
// entries name the same frames as the source's (copy on write: a later
// write to either makes new frames, as any write does). The cost is one
// metadata entry per written chunk of the source, whatever its size or the
// bytes in it; no object is read or written.
//
// A frame's associated data binds the inode it was written for (frame.ID),
// so a copied piece records that inode (FrameRef.Ino) when it differs from
// the chunk's own. Chunk indexes never differ: chunk i maps onto chunk i.
//
// The copy goes into the open batch in one step (the view lock held, the
// source's inode lock held exclusively): it becomes durable and visible
// atomically, with the new name, and a crash never leaves half a clone.
// Live-byte accounting is apply's as for any chunk entry (apply.go): the
// shared objects' live bytes go up by what the copy references.

// CloneFile creates dir/name as a clone of regular file src — a live file,
// or a file in a snapshot (a virtual inode, view.go) — and returns it. The
// clone has src's size and mode; it is owned by c. It is durable after the
// next Flush. Errors wrap ErrExist (name exists), ErrInvalid (src is not a
// regular file), ErrReadOnly (fenced, or dir is in a snapshot).
func (f *FS) CloneFile(ctx context.Context, c *Cred, src, dir uint64, name string) (Inode, error) {
	if err := f.refuseReadOnly("clone"); err != nil {
		return Inode{}, err
	}
	if err := f.refuseSnapshotName(dir, name, "clone to"); err != nil {
		return Inode{}, err
	}
	if err := checkName(name); err != nil {
		return Inode{}, err
	}
	var out Inode
	err := f.withSource(ctx, src, func(sf *FS, real uint64) error {
		f.nsMu.Lock()
		defer f.nsMu.Unlock()
		f.viewMu.RLock()
		defer f.viewMu.RUnlock()
		chain := f.chainLocked()
		d, err := f.getDir(chain, c, dir, true)
		if err != nil {
			return err
		}
		if _, _, _, ok, err := f.lookupEntry(chain, dir, name); err != nil {
			return err
		} else if ok {
			return ErrExist
		}
		if sf == f {
			rw := f.inodeRW(real)
			rw.Lock()
			defer rw.Unlock()
		}
		sn, err := sf.getInode(sf.chainFor(f, chain), real)
		if err != nil {
			return err
		}
		if !sn.IsReg() {
			return fmt.Errorf("clone inode %d: not a regular file: %w", real, ErrInvalid)
		}
		if err := c.access(&sn, accessRead); err != nil {
			return err
		}
		ino, err := f.allocIno(chain)
		if err != nil {
			return err
		}
		b := f.open
		if err := sf.copyChunks(chain, f, b, real, ino); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		out = Inode{Ino: ino, Mode: sn.Mode &^ (modeSetuid | modeSetgid), Uid: c.uid(), Gid: c.gid(), Nlink: 1,
			Size: sn.Size, Atime: now, Mtime: now, Ctime: now, Gen: f.epoch}
		b.setKV(inodeKey(ino), out.encode())
		f.linkEntry(b, &d, name, ino, TypeRegular)
		d.Mtime, d.Ctime = now, now
		b.setKV(inodeKey(dir), d.encode())
		f.noteDirty(b)
		return nil
	})
	if err != nil {
		return Inode{}, fmt.Errorf("clone to %q: %w", name, err)
	}
	return out, nil
}

// RestoreFile replaces the content of live regular file dst by that of src,
// a file in a snapshot: the same size, the same bytes. Errors wrap
// ErrInvalid (src is not a snapshot's regular file, dst not a regular file)
// or ErrReadOnly.
func (f *FS) RestoreFile(ctx context.Context, c *Cred, dst, src uint64) (Inode, error) {
	if err := f.refuseReadOnly("restore"); err != nil {
		return Inode{}, err
	}
	if IsSnapshotIno(dst) {
		return Inode{}, refuseView("restore", dst)
	}
	if !IsSnapshotIno(src) {
		return Inode{}, fmt.Errorf("restore inode %d from inode %d: not a snapshot's file: %w", dst, src, ErrInvalid)
	}
	var out Inode
	err := f.withSource(ctx, src, func(sf *FS, real uint64) error {
		f.viewMu.RLock()
		defer f.viewMu.RUnlock()
		rw := f.inodeRW(dst)
		rw.Lock()
		defer rw.Unlock()
		chain := f.chainLocked()
		dn, err := f.getInode(chain, dst)
		if err != nil {
			return err
		}
		if err := writable(&dn); err != nil {
			return err
		}
		if err := c.access(&dn, accessWrite); err != nil {
			return err
		}
		sn, err := sf.getInode(nil, real)
		if err != nil {
			return err
		}
		if !sn.IsReg() {
			return fmt.Errorf("restore from inode %d: not a regular file: %w", real, ErrInvalid)
		}
		if err := f.punchLocked(chain, dst, 0, math.MaxUint64); err != nil {
			return err
		}
		b := f.open
		if err := sf.copyChunks(nil, f, b, real, dst); err != nil {
			return err
		}
		out, err = f.updateAttrs(b, chain, dst, func(n *Inode) {
			now := time.Now().UnixNano()
			n.Size = sn.Size
			n.Mtime, n.Ctime = now, now
		})
		f.noteDirty(b)
		return err
	})
	if err != nil {
		return Inode{}, fmt.Errorf("restore inode %d: %w", dst, err)
	}
	return out, nil
}

// withSource runs fn with the FS holding src (f itself, or a snapshot's
// view) and src's number there.
func (f *FS) withSource(ctx context.Context, src uint64, fn func(sf *FS, real uint64) error) error {
	if !IsSnapshotIno(src) {
		return fn(f, src)
	}
	return f.withView(ctx, src, func(v *view, real uint64) error { return fn(v.fs, real) })
}

// chainFor is the chain to read f through: the live chain when f is live,
// none for a view (its open batch is always empty).
func (f *FS) chainFor(live *FS, chain []*batch) []*batch {
	if f == live {
		return chain
	}
	return nil
}

// copyChunks puts into batch b of live FS dstFS a copy of every chunk of
// inode from (in f: live or a view) as chunks of inode to. With f live,
// chain is its chain and the caller holds from's inode lock exclusively:
// chunks dirty in a batch are copied as they are there.
func (f *FS) copyChunks(chain []*batch, dstFS *FS, b *batch, from, to uint64) error {
	chain = f.chainFor(dstFS, chain)
	idxs := make(map[uint64]bool)
	for _, cb := range chain {
		for i := range cb.shards {
			s := &cb.shards[i]
			s.mu.Lock()
			for id := range s.m {
				if id.ino == from {
					idxs[id.idx] = true
				}
			}
			s.mu.Unlock()
		}
	}
	// One pass over the source's chunk entries, not a lookup per chunk: a
	// device with 10 GiB written has 160 000 of them.
	stored := make(map[uint64][]Piece)
	origins := make(map[uint64]bool) // inodes the copied frames were sealed for
	start, end := chunkRangeKeys(from, 0, math.MaxUint64)
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		_, idx, ok := parseChunkKey(it.Key())
		if !ok {
			continue
		}
		pieces, err := decodePieces(it.Value(), f.chunkSize)
		if err != nil {
			it.Close()
			return fmt.Errorf("chunk %d of inode %d: %w: %w", idx, from, ErrIO, err)
		}
		stored[idx] = pieces
		idxs[idx] = true
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("chunks of inode %d: %w: %w", from, ErrIO, err)
	}
	for _, idx := range slices.Sorted(maps.Keys(idxs)) {
		id := chunkID{from, idx}
		dc, in, tomb := findInChain(chain, id)
		var ndc *dirtyChunk
		switch {
		case tomb:
			continue // punched since
		case dc == nil && len(stored[idx]) == 0:
			continue // a hole
		case dc == nil:
			ndc = &dirtyChunk{base: stored[idx]}
		case in.enc.Load() != nil:
			ndc = &dirtyChunk{base: in.enc.Load().chunks[id]}
		default:
			ndc = dc.clone()
			b.dataBytes.Add(int64(len(ndc.data)))
		}
		ndc.base = sharePieces(ndc.base, from, to)
		for _, p := range ndc.base {
			if p.Frame.Ino != 0 {
				origins[p.Frame.Ino] = true
			}
		}
		b.putChunk(chunkID{to, idx}, ndc)
	}
	for ino := range origins {
		b.setKV(cloneLinkKey(ino, to), []byte{1})
	}
	return nil
}

// cloneLinks lists the files that may share frames sealed for inode origin
// (clone links, recorded by copyChunks and never removed: a link to a file
// since deleted or rewritten only costs GC a lookup).
func (f *FS) cloneLinks(chain []*batch, origin uint64) ([]uint64, error) {
	start := cloneLinkKey(origin, 0)
	var out []uint64
	err := f.scan(chain, start, prefixEnd(start[:9]), func(k, _ []byte) bool {
		if len(k) == 17 {
			out = append(out, binary.BigEndian.Uint64(k[9:]))
		}
		return true
	})
	return out, err
}

// sharePieces returns pieces of a chunk of inode from, as pieces of the same
// chunk of inode to: each frame keeps the inode it was sealed for.
func sharePieces(pieces []Piece, from, to uint64) []Piece {
	out := slices.Clone(pieces)
	for i := range out {
		ino := out[i].Frame.sealedIno(from)
		if ino == to {
			ino = 0
		}
		out[i].Frame.Ino = ino
	}
	return out
}
