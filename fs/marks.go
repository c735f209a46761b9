package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/store"
)

// Unflushed-write marks: crashes are never silent (docs/durability.md).
//
// A block device client may lose writes it was told were done but had not
// flushed: NBD allows it, and a crash does it. What NBD lacks is a way to
// say so. NFS has its write verifier (the epoch): a client that sees it
// change re-sends what it had not committed. An NBD client that reconnects
// after a crash (nbd-client -persist) just goes on, and its next FLUSH
// succeeds over writes that are gone: ZFS writes an uberblock that points
// at them, ext4 and XFS never notice.
//
// So a file that may hold acknowledged, unflushed writes is marked, durably
// and in the WAL store (so the mark is wherever the writes would have been,
// and outlives the machine), before the first such write is acknowledged.
// A mark costs one PUT when a file goes from clean to written, none while
// writes keep coming, and is deleted lazily once the file's writes are all
// durable and it has been quiet for markIdle; a clean Close deletes every
// mark after its final flush. Marks found at start are what a crash (or a
// takeover) left: those files are interrupted, which the start records in
// objects of their own (interruptedPrefix) before serving. The NBD server
// fails all I/O on an interrupted export until ClearInterrupted deletes
// them, so a restart — or a fresh machine — keeps the interruption.
//
// Only writers that ask are marked: the NBD server does (MarkUnflushed), NFS
// does not need it.

// markPrefix is where marks live in the WAL store: marks/<inode, hex>.
// interruptedPrefix holds the interruptions a start found them to mean:
// interrupted/<inode, hex>, there until ClearInterrupted. They are apart
// from the marks because the marks belong to the run that wrote them: a
// writer this one fenced may still be deleting its own marks when this one
// starts, and must not take an interruption with them.
const (
	markPrefix        = "marks/"
	interruptedPrefix = "interrupted/"
)

// markIdle is how long a marked file must have been quiet, its writes all
// durable, before its mark is deleted. Long enough that a database writing
// and flushing keeps its mark (no request per flush), short enough that a
// device left alone after its last flush is soon clean again.
const markIdle = 10 * time.Second

func markKey(ino uint64) string        { return fmt.Sprintf("%s%016x", markPrefix, ino) }
func interruptedKey(ino uint64) string { return fmt.Sprintf("%s%016x", interruptedPrefix, ino) }

// markBody is a mark's content, for whoever reads the bucket.
type markBody struct {
	Ino   uint64    `json:"ino"`
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since"`
}

type marks struct {
	mu sync.Mutex
	m  map[uint64]*mark
	// interrupted is read on every NBD request: an immutable map, replaced
	// whole when it changes.
	interrupted atomic.Pointer[map[uint64]time.Time]
}

// mark is one file's state. mu is held across the store request that
// creates or deletes the mark, so a write never slips between a clearer's
// decision and its DELETE.
type mark struct {
	mu       sync.Mutex
	marked   bool // the mark object exists
	active   int  // writes between MarkUnflushed and their done
	lastDone time.Time
}

// loadMarks lists the marks a previous run left: those files are
// interrupted, and each is recorded as such before the filesystem serves.
func (f *FS) loadMarks(ctx context.Context) error {
	f.marks.m = make(map[uint64]*mark)
	found := make(map[uint64]time.Time)
	for _, prefix := range []string{interruptedPrefix, markPrefix} {
		infos, err := f.wal.Records().List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, in := range infos {
			ino, err := strconv.ParseUint(strings.TrimPrefix(in.Key, prefix), 16, 64)
			if err != nil {
				f.log.Warn("ignoring an object that is not a mark", "key", in.Key)
				continue
			}
			if _, ok := found[ino]; ok {
				continue
			}
			// A file deleted while marked, before its mark went: nothing
			// is left to protect (and no name to clear it by).
			if _, err := f.getInode(nil, ino); errors.Is(err, ErrNotExist) {
				for _, key := range []string{markKey(ino), interruptedKey(ino)} {
					if err := f.wal.Records().Delete(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("delete the mark of deleted inode %d: %w", ino, err)
					}
				}
				continue
			}
			found[ino] = in.ModTime
			if prefix == markPrefix {
				body, _ := json.Marshal(markBody{Ino: ino, Epoch: f.epoch, Since: in.ModTime.UTC()})
				if _, err := f.wal.Records().Put(ctx, interruptedKey(ino), body); err != nil {
					return fmt.Errorf("record the interruption of inode %d: %w", ino, err)
				}
			}
		}
	}
	f.marks.interrupted.Store(&found)
	for ino, since := range found {
		f.log.Warn("file interrupted: it may have lost writes acknowledged but not flushed when the last run ended",
			"inode", ino, "marked", since)
	}
	return nil
}

// Interrupted reports whether file ino may have lost acknowledged writes in
// a crash and has not been cleared since.
func (f *FS) Interrupted(ino uint64) bool {
	p := f.marks.interrupted.Load()
	if p == nil {
		return false
	}
	_, ok := (*p)[ino]
	return ok
}

// InterruptedFiles lists the interrupted files' inodes, in order.
func (f *FS) InterruptedFiles() []uint64 {
	p := f.marks.interrupted.Load()
	if p == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(*p))
}

// ClearInterrupted ends the interruption of file ino: the operator has dealt
// with what it may have lost. Clearing a file that is not interrupted does
// nothing and returns ErrNotInterrupted.
func (f *FS) ClearInterrupted(ctx context.Context, ino uint64) error {
	if IsSnapshotIno(ino) {
		return ErrNotInterrupted
	}
	if !f.Interrupted(ino) {
		return ErrNotInterrupted
	}
	return f.dropMarks(ctx, ino)
}

// ErrNotInterrupted: ClearInterrupted was asked to clear a file that is not
// interrupted.
var ErrNotInterrupted = errors.New("not interrupted")

// ForgetMarks drops file ino's mark and interruption, if any: for a file
// being deleted, whose writes no longer matter.
func (f *FS) ForgetMarks(ctx context.Context, ino uint64) error {
	if IsSnapshotIno(ino) {
		return nil
	}
	f.marks.mu.Lock()
	mk := f.marks.m[ino]
	delete(f.marks.m, ino)
	f.marks.mu.Unlock()
	if mk == nil && !f.Interrupted(ino) {
		return nil
	}
	if mk != nil { // wait out a mark being written
		mk.mu.Lock()
		defer mk.mu.Unlock()
		mk.marked = false
	}
	return f.dropMarks(ctx, ino)
}

// dropMarks deletes ino's mark and interruption objects and forgets the
// interruption.
func (f *FS) dropMarks(ctx context.Context, ino uint64) error {
	if err := f.checkWritable(); err != nil {
		return err
	}
	// The mark first: should the second delete not happen, the file is
	// still interrupted at the next start, never silently cleared.
	for _, key := range []string{markKey(ino), interruptedKey(ino)} {
		if err := f.wal.Records().Delete(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("clear interruption of inode %d: %w: %w", ino, ErrIO, err)
		}
	}
	f.marks.mu.Lock()
	if f.Interrupted(ino) {
		next := maps.Clone(*f.marks.interrupted.Load())
		delete(next, ino)
		f.marks.interrupted.Store(&next)
		f.log.Info("interruption cleared", "inode", ino)
	}
	f.marks.mu.Unlock()
	return nil
}

// MarkUnflushed must be called before a write to file ino that the caller
// will acknowledge before it is flushed, and done called once the write has
// returned. It returns once ino's mark is durable: at once if it already
// is.
func (f *FS) MarkUnflushed(ctx context.Context, ino uint64) (done func(), err error) {
	if IsSnapshotIno(ino) {
		return nil, refuseView("write", ino)
	}
	if f.Interrupted(ino) {
		return nil, fmt.Errorf("inode %d is interrupted (zerofs nbd clear): %w", ino, ErrIO)
	}
	f.marks.mu.Lock()
	mk := f.marks.m[ino]
	if mk == nil {
		mk = &mark{}
		f.marks.m[ino] = mk
	}
	f.marks.mu.Unlock()
	mk.mu.Lock()
	defer mk.mu.Unlock()
	if !mk.marked {
		if err := f.checkWritable(); err != nil {
			return nil, err
		}
		if err := f.putMark(ctx, ino); err != nil {
			return nil, err
		}
		mk.marked = true
	}
	mk.active++
	return func() {
		mk.mu.Lock()
		mk.active--
		mk.lastDone = time.Now()
		mk.mu.Unlock()
	}, nil
}

// putMark writes ino's mark. Like a WAL append it is retried for as long
// as the store fails (an outage makes the write wait, as it makes flushes
// wait), until it succeeds, the writer's context ends or the filesystem
// stops.
func (f *FS) putMark(ctx context.Context, ino uint64) error {
	body, _ := json.Marshal(markBody{Ino: ino, Epoch: f.epoch, Since: time.Now().UTC()})
	delay := 100 * time.Millisecond
	for {
		_, err := f.wal.Records().Put(ctx, markKey(ino), body)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ErrCanceled
		}
		if ferr := f.checkWritable(); ferr != nil {
			return ferr
		}
		f.log.Warn("marking a file as holding unflushed writes failed; its write waits and retries", "inode", ino, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return ErrCanceled
		case <-f.stop:
			return f.writeErr(errClosed)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// checkWritable refuses mark changes once the filesystem has failed or was
// fenced: a fenced writer's marks would describe writes the new one never
// saw.
func (f *FS) checkWritable() error {
	if err := f.Err(); err != nil {
		return f.writeErr(err)
	}
	return nil
}

// marker deletes the marks of files that have been quiet for markIdle with
// their writes durable.
func (f *FS) marker() {
	defer f.bg.Done()
	tick := time.NewTicker(markIdle / 4)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
			f.clearQuietMarks(f.workCtx, time.Now().Add(-markIdle))
		}
	}
}

// clearQuietMarks deletes the marks whose last write finished before
// before, once a flush has made those writes durable.
func (f *FS) clearQuietMarks(ctx context.Context, before time.Time) {
	f.marks.mu.Lock()
	var quiet []uint64
	for ino, mk := range f.marks.m {
		mk.mu.Lock()
		if mk.marked && mk.active == 0 && mk.lastDone.Before(before) {
			quiet = append(quiet, ino)
		}
		mk.mu.Unlock()
	}
	f.marks.mu.Unlock()
	if len(quiet) == 0 || f.Err() != nil {
		return
	}
	// Every write to these files finished before now: this flush covers
	// them all.
	flushed := time.Now()
	if err := f.Flush(ctx); err != nil {
		return // the marks stay; a later pass tries again
	}
	for _, ino := range quiet {
		f.unmark(ctx, ino, flushed)
	}
}

// unmark deletes ino's mark if no write to it has started or finished since
// flushed, the start of a flush that made its writes durable.
func (f *FS) unmark(ctx context.Context, ino uint64, flushed time.Time) {
	f.marks.mu.Lock()
	mk := f.marks.m[ino]
	f.marks.mu.Unlock()
	if mk == nil {
		return
	}
	mk.mu.Lock()
	defer mk.mu.Unlock()
	if !mk.marked || mk.active > 0 || mk.lastDone.After(flushed) {
		return
	}
	if err := f.wal.Records().Delete(ctx, markKey(ino)); err != nil && !errors.Is(err, store.ErrNotFound) {
		if ctx.Err() == nil {
			f.log.Warn("deleting an unflushed-write mark failed; will retry", "inode", ino, "err", err)
		}
		return
	}
	mk.marked = false
}

// clearAllMarks deletes every mark of this run at a clean stop, after the
// final flush: nothing is unflushed. Interrupted files keep theirs.
func (f *FS) clearAllMarks(ctx context.Context) {
	f.marks.mu.Lock()
	inos := slices.Collect(maps.Keys(f.marks.m))
	f.marks.mu.Unlock()
	for _, ino := range inos {
		f.unmark(ctx, ino, time.Now())
	}
}
