package fs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"zerofs/wal"
)

// recover brings the metadata to the newest durable state:
//
//  1. The local pebble database, if it belongs to this filesystem and its
//     applied position is still part of the WAL's history, is used as is:
//     a restart replays only the records after it.
//  2. Otherwise (a fresh machine, a deleted cache dir, another machine wrote
//     since) the checkpoint named in the head is downloaded.
//  3. The WAL is replayed from there, and the fence record taken.
//
// Recovery time grows with the metadata and the WAL after the checkpoint,
// never with the data.
func (f *FS) recover(ctx context.Context) error {
	started := time.Now()
	if err := os.MkdirAll(f.opts.Dir, 0o700); err != nil {
		return fmt.Errorf("local state dir: %w", err)
	}
	if err := f.lockDir(); err != nil {
		return err
	}
	head := f.wal.Head()
	dbDir := filepath.Join(f.opts.Dir, "meta")
	idFile := filepath.Join(f.opts.Dir, "fsid")
	want := hex.EncodeToString(f.fsid[:])
	if got, err := os.ReadFile(idFile); err == nil && string(got) != want {
		f.log.Warn("local state belongs to another filesystem; discarding it", "dir", f.opts.Dir)
		if err := os.RemoveAll(dbDir); err != nil {
			return err
		}
	}

	var pos wal.Position
	usable := false
	if _, err := os.Stat(dbDir); err == nil {
		db, err := f.openDB(dbDir)
		if err != nil {
			f.log.Warn("local metadata database unusable; restoring from the bucket", "err", err)
		} else {
			pos, err = readApplied(db)
			if err == nil {
				err = f.wal.Check(ctx, pos)
			}
			switch {
			case err == nil:
				usable = true
				f.db = db
			case errors.Is(err, wal.ErrDiverged), errors.Is(err, errBadApplied):
				f.log.Info("local metadata is not current; restoring from the bucket", "reason", err)
				db.Close()
			default:
				db.Close()
				return err
			}
		}
	}
	if !usable {
		if err := os.RemoveAll(dbDir); err != nil {
			return err
		}
		if err := f.restoreCheckpoint(ctx, head, dbDir); err != nil {
			return err
		}
		db, err := f.openDB(dbDir)
		if err != nil {
			return fmt.Errorf("open restored metadata: %w", err)
		}
		f.db = db
		if pos, err = readApplied(db); err != nil {
			return err
		}
		if pos != head.Base {
			return fmt.Errorf("checkpoint %s holds record %d, the head says %d: %w", head.Checkpoint, pos.Seq, head.Base.Seq, wal.ErrCorrupt)
		}
		f.lastCkpt = pos
	}
	if err := os.WriteFile(idFile, []byte(want), 0o600); err != nil {
		return err
	}
	if err := f.ensureUsed(); err != nil {
		return err
	}

	last, err := f.wal.Replay(ctx, pos, f.replayRecord)
	if err != nil {
		return err
	}
	// Recording the fence as applied lets the next start check this
	// database against the WAL without replaying anything.
	if err := f.apply(nil, last, 0, 0); err != nil {
		return err
	}
	source := "local metadata"
	switch {
	case !usable && head.Checkpoint != "":
		source = "bucket checkpoint"
	case !usable:
		source = "new filesystem"
	}
	f.log.Info("filesystem ready", "epoch", f.epoch, "metadata_from", source, "replayed_from_seq", pos.Seq+1,
		"fence_seq", last.Seq, "elapsed", time.Since(started).Round(time.Millisecond))
	return nil
}

func (f *FS) replayRecord(r wal.Record) error {
	pos := wal.Position{Seq: r.Seq, Epoch: r.Epoch, ID: r.ID}
	if r.Flags&wal.FlagFence != 0 {
		return f.apply(nil, pos, 0, 0)
	}
	d, err := openDelta(f.key, r.Meta, f.fsid, r.Seq, r.Epoch, f.chunkSize)
	if err != nil {
		return err
	}
	return f.apply(d, pos, r.DataOffset, r.DataOffset+r.DataLen)
}

var errBadApplied = errors.New("corrupt applied-position record")

func readApplied(db *pebble.DB) (wal.Position, error) {
	v, closer, err := db.Get(metaKey(appliedKeyName))
	if errors.Is(err, pebble.ErrNotFound) {
		return wal.Position{}, nil
	}
	if err != nil {
		return wal.Position{}, err
	}
	defer closer.Close()
	p, err := decodePosition(v)
	if err != nil {
		return p, fmt.Errorf("%w: %w", errBadApplied, err)
	}
	return p, nil
}

func (f *FS) openDB(dir string) (*pebble.DB, error) {
	if f.blockCache == nil {
		// Every write and read looks up a chunk entry: keep the metadata's
		// hot blocks decoded in memory rather than pebble's 8 MB default.
		f.blockCache = pebble.NewCache(128 << 20)
	}
	opts := &pebble.Options{
		Cache:              f.blockCache,
		Logger:             pebbleLogger{f},
		FormatMajorVersion: pebble.FormatNewest,
		// pebble's own log would only duplicate ours: after a crash, what
		// pebble lost since its last memtable flush is replayed from the WAL
		// in the store (records are removed only once a checkpoint, which
		// flushes pebble first, covers them). Without it, applying costs no
		// disk writes, and our WAL fsyncs do not drag pebble's along.
		DisableWAL: true,
	}
	// Bloom filters make lookups of chunks never written (most of a fresh
	// device) cost no block reads.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	return pebble.Open(dir, opts)
}

// lockDir takes an exclusive lock on the local state dir for the life of the
// process, so two zerofs processes never share one.
func (f *FS) lockDir() error {
	fd, err := os.OpenFile(filepath.Join(f.opts.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("local state dir: %w", err)
	}
	if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fd.Close()
		return fmt.Errorf("local state dir %s is in use by another zerofs process (set a different [cache] dir): %w", f.opts.Dir, err)
	}
	f.dirLock = fd
	return nil
}

// pebbleLogger routes pebble's log lines to slog at debug level (its info
// lines are chatty), errors at error level.
type pebbleLogger struct{ f *FS }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.f.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

// Errorf logs pebble's errors at most once per pebbleErrorEvery, with a
// count of those left out. Pebble retries a failing background flush at
// once and logs each try: with its directory gone (deleted under a running
// zerofs), that was thousands of lines a second, a 6.8 GB log in an hour.
func (l pebbleLogger) Errorf(format string, args ...any) {
	pl := &l.f.pebbleLog
	pl.mu.Lock()
	now := time.Now()
	if !pl.last.IsZero() && now.Sub(pl.last) < pebbleErrorEvery {
		pl.dropped++
		pl.mu.Unlock()
		return
	}
	dropped := pl.dropped
	pl.last, pl.dropped = now, 0
	pl.mu.Unlock()
	if dropped > 0 {
		l.f.log.Error("pebble: "+fmt.Sprintf(format, args...), "similar_errors_not_logged", dropped)
		return
	}
	l.f.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

// pebbleErrorEvery is the least time between two pebble error lines.
const pebbleErrorEvery = 10 * time.Second

// pebbleLog rate-limits pebble's error lines (pebbleLogger.Errorf).
type pebbleLog struct {
	mu      sync.Mutex
	last    time.Time
	dropped int64
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.f.log.Error("pebble fatal: " + fmt.Sprintf(format, args...))
	os.Exit(1)
}

// ensureRoot creates the root directory of a new filesystem.
func (f *FS) ensureRoot(ctx context.Context) error {
	if _, err := f.GetAttr(ctx, RootIno); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotExist) {
		return err
	}
	f.viewMu.RLock()
	now := time.Now().UnixNano()
	root := Inode{Ino: RootIno, Mode: TypeDir | 0o755, Nlink: 2, Parent: RootIno, NextCookie: 1,
		Atime: now, Mtime: now, Ctime: now}
	f.open.setKV(inodeKey(RootIno), root.encode())
	f.viewMu.RUnlock()
	return f.Flush(ctx)
}
