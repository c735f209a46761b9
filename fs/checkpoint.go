package fs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"zerofs/crypt"
	"zerofs/wal"
)

// Checkpoints make the bucket alone enough to recover: a snapshot of the
// pebble metadata database is uploaded and the WAL head is pointed at it, so
// recovery loads it and replays only the records after it, and those before
// it can be removed.
//
// pebble's files are immutable once written, so a checkpoint uploads only the
// files the previous one did not have (incremental). Each file is sealed with
// the data key and stored as meta/<epoch>/<sha256 of its content>: content
// naming makes reuse a lookup, and the epoch in the name lets a writer sweep
// leftovers of its own and older epochs without ever touching the files of a
// newer writer that fenced it.
//
// Order, so that nothing durable points at something that is not: upload the
// files, then the descriptor, then compare-and-swap the head; only after the
// head moved are the previous checkpoint's files and the covered WAL records
// deleted.

const metaPrefix = "meta/"

type ckptFile struct {
	Name string `json:"name"` // file name in the pebble directory
	Key  string `json:"key"`  // object key
	Size int64  `json:"size"`
	Hash string `json:"sha256"`
}

type ckptDesc struct {
	Version int          `json:"version"`
	Pos     wal.Position `json:"position"`
	Files   []ckptFile   `json:"files"`
}

func (f *FS) blobAAD(key string) []byte {
	return append(append([]byte("zfsmeta"), f.fsid[:]...), key...)
}

// checkpoint uploads a snapshot of the applied metadata if it changed since
// the last one, moves the WAL head to it and removes what it supersedes.
func (f *FS) checkpoint(ctx context.Context) error {
	f.ckptMu.Lock()
	defer f.ckptMu.Unlock()
	if f.appliedPosition() == f.lastCkpt {
		return nil
	}
	tmp := filepath.Join(f.opts.Dir, "checkpoint.tmp")
	defer os.RemoveAll(tmp)
	ms, err := f.snapshotMeta(ctx, tmp)
	if err != nil {
		return err
	}
	return f.publishCheckpoint(ctx, ms, true)
}

// metaSnapshot is a consistent copy of the applied metadata: a pebble
// checkpoint (hard links) in dir, and in the bucket its files and descriptor.
type metaSnapshot struct {
	dir      string
	desc     ckptDesc
	descKey  string
	objects  []ObjRef // data objects it references (live bytes > 0)
	uploaded int64
	started  time.Time
}

// snapshotMeta takes a pebble checkpoint of the applied metadata into dir
// and uploads the files of it the bucket lacks, then its descriptor. The
// caller holds ckptMu.
func (f *FS) snapshotMeta(ctx context.Context, dir string) (*metaSnapshot, error) {
	ms := &metaSnapshot{dir: dir, started: time.Now()}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	// Flush first so the snapshot is SST files (shared with the previous
	// checkpoint where unchanged) rather than a large pebble log.
	if err := f.db.Flush(); err != nil {
		return nil, fmt.Errorf("checkpoint: flush metadata: %w", err)
	}
	if err := f.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return nil, fmt.Errorf("checkpoint: snapshot metadata: %w", err)
	}
	pos, objects, err := snapshotContents(dir)
	if err != nil {
		return nil, err
	}
	ms.objects = objects
	prev, err := f.prevCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	have := make(map[string]ckptFile)
	if prev != nil {
		for _, cf := range prev.Files {
			have[cf.Hash] = cf
		}
	}
	ms.desc = ckptDesc{Version: 1, Pos: pos}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	// The files go up in parallel: on a store 50 ms away, one after the
	// other they would make a snapshot's (and every checkpoint's) latency
	// a round trip per changed file.
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		sem  = make(chan struct{}, 8)
	)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		cf := ckptFile{Name: e.Name(), Size: int64(len(data)), Hash: hex.EncodeToString(sum[:])}
		if old, ok := have[cf.Hash]; ok {
			cf.Key = old.Key
			ms.desc.Files = append(ms.desc.Files, cf)
			continue
		}
		cf.Key = fmt.Sprintf("%s%06x/%s", metaPrefix, f.epoch, cf.Hash)
		ms.desc.Files = append(ms.desc.Files, cf)
		ms.uploaded += int64(len(data))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := f.main.Put(ctx, cf.Key, crypt.SealBlob(f.key, data, f.blobAAD(cf.Key))); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("checkpoint: upload %s: %w", cf.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ms.descKey = fmt.Sprintf("%s%06x/ckpt-%016x", metaPrefix, f.epoch, pos.Seq)
	body, _ := json.Marshal(ms.desc)
	if _, err := f.main.Put(ctx, ms.descKey, crypt.SealBlob(f.key, body, f.blobAAD(ms.descKey))); err != nil {
		return nil, fmt.Errorf("checkpoint: upload descriptor: %w", err)
	}
	return ms, nil
}

// publishCheckpoint moves the WAL head to ms and, with sweep, removes what
// only older checkpoints and the WAL records before it needed, keeping
// whatever a snapshot still uses (snapshot.go). A snapshot being taken does
// not sweep: that would cost it round trips, and its objects are not yet
// pinned by a record; the next checkpoint sweeps. The caller holds ckptMu.
func (f *FS) publishCheckpoint(ctx context.Context, ms *metaSnapshot, sweep bool) error {
	pos := ms.desc.Pos
	if pos != f.lastCkpt {
		if err := f.wal.SetBase(ctx, pos, ms.descKey); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		f.lastCkpt = pos
		f.setPrevDesc(&ms.desc)
		f.log.Info("checkpoint", "seq", pos.Seq, "files", len(ms.desc.Files), "uploaded_bytes", ms.uploaded,
			"elapsed", time.Since(ms.started).Round(time.Millisecond))
	}
	if !sweep {
		return nil
	}
	pins, err := f.snapshotPins()
	if err != nil {
		return err
	}
	// The head has moved: what only older checkpoints reference can go.
	if f.prevDesc != nil {
		if err := f.sweepMeta(ctx, f.wal.Head().Checkpoint, f.prevDesc, pins); err != nil {
			f.log.Warn("checkpoint: removing old metadata files", "err", err)
		}
	}
	if err := f.truncateWAL(ctx, f.lastCkpt, pins); err != nil {
		f.log.Warn("checkpoint: removing covered WAL records", "err", err)
	}
	return nil
}

// snapshotContents reads what a metadata snapshot holds: the exact WAL
// position it covers, and the data objects its chunks reference.
func snapshotContents(dir string) (wal.Position, []ObjRef, error) {
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: quietLogger{}})
	if err != nil {
		return wal.Position{}, nil, fmt.Errorf("checkpoint: open snapshot: %w", err)
	}
	defer db.Close()
	pos, err := readApplied(db)
	if err != nil {
		return pos, nil, err
	}
	var objs []ObjRef
	err = scanObjectsOf(db, func(o ObjRef, info objInfo) {
		if info.Live > 0 {
			objs = append(objs, o)
		}
	})
	return pos, objs, err
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// setPrevDesc records the checkpoint the head names. The caller holds
// ckptMu, or is recovering.
func (f *FS) setPrevDesc(d *ckptDesc) {
	f.prevDesc = d
	f.headDesc.Store(d)
}

// prevCheckpoint returns the descriptor the head names, loading it once.
func (f *FS) prevCheckpoint(ctx context.Context) (*ckptDesc, error) {
	if f.prevDesc != nil {
		return f.prevDesc, nil
	}
	key := f.wal.Head().Checkpoint
	if key == "" {
		return nil, nil
	}
	d, err := f.loadDesc(ctx, key)
	if err != nil {
		return nil, err
	}
	f.setPrevDesc(d)
	return d, nil
}

func (f *FS) loadDesc(ctx context.Context, key string) (*ckptDesc, error) {
	blob, err := f.main.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("checkpoint descriptor %s: %w", key, err)
	}
	body, err := crypt.OpenBlob(f.key, blob, f.blobAAD(key))
	if err != nil {
		return nil, fmt.Errorf("checkpoint descriptor %s: %w", key, err)
	}
	var d ckptDesc
	if err := json.Unmarshal(body, &d); err != nil || d.Version != 1 {
		return nil, fmt.Errorf("checkpoint descriptor %s: unreadable (%v): %w", key, err, wal.ErrCorrupt)
	}
	for _, cf := range d.Files {
		if cf.Name == "" || strings.ContainsAny(cf.Name, "/\\") || cf.Name == "." || cf.Name == ".." {
			return nil, fmt.Errorf("checkpoint descriptor %s: bad file name %q: %w", key, cf.Name, wal.ErrCorrupt)
		}
	}
	return &d, nil
}

// restoreCheckpoint downloads the checkpoint the head names into dir (an
// empty dir for a new filesystem).
func (f *FS) restoreCheckpoint(ctx context.Context, head wal.Head, dir string) error {
	if head.Checkpoint == "" {
		if head.Base != (wal.Position{}) {
			return fmt.Errorf("head names no checkpoint but says records up to %d are covered: %w", head.Base.Seq, wal.ErrCorrupt)
		}
		return os.MkdirAll(dir, 0o700)
	}
	started := time.Now()
	d, err := f.loadDesc(ctx, head.Checkpoint)
	if err != nil {
		return err
	}
	tmp := dir + ".restore"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	var total int64
	for i, cf := range d.Files {
		blob, err := f.main.Get(ctx, cf.Key, 0, -1)
		if err != nil {
			return fmt.Errorf("restore checkpoint file %s: %w", cf.Key, err)
		}
		data, err := crypt.OpenBlob(f.key, blob, f.blobAAD(cf.Key))
		if err != nil {
			return fmt.Errorf("restore checkpoint file %s: %w", cf.Key, err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != cf.Hash {
			return fmt.Errorf("restore checkpoint file %s: content hash mismatch: %w", cf.Key, wal.ErrCorrupt)
		}
		if err := writeFileSync(filepath.Join(tmp, cf.Name), data); err != nil {
			return err
		}
		total += int64(len(data))
		if (i+1)%50 == 0 {
			f.log.Info("restoring metadata checkpoint", "files", i+1, "of", len(d.Files), "bytes", total)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	f.setPrevDesc(d)
	f.log.Info("restored metadata checkpoint", "seq", d.Pos.Seq, "files", len(d.Files), "bytes", total,
		"elapsed", time.Since(started).Round(time.Millisecond))
	return nil
}

func writeFileSync(path string, data []byte) error {
	fd, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := fd.Write(data); err != nil {
		fd.Close()
		return err
	}
	if err := fd.Sync(); err != nil {
		fd.Close()
		return err
	}
	return fd.Close()
}

// sweepMeta deletes metadata objects of this and older epochs that neither
// the current checkpoint nor a snapshot uses.
func (f *FS) sweepMeta(ctx context.Context, descKey string, d *ckptDesc, pins *pinSet) error {
	keep := map[string]bool{descKey: true}
	for _, cf := range d.Files {
		keep[cf.Key] = true
	}
	for k := range pins.files {
		keep[k] = true
	}
	infos, err := f.main.List(ctx, metaPrefix)
	if err != nil {
		return err
	}
	for _, in := range infos {
		if keep[in.Key] {
			continue
		}
		rest := strings.TrimPrefix(in.Key, metaPrefix)
		slash := strings.IndexByte(rest, '/')
		if slash < 0 {
			continue
		}
		epoch, err := strconv.ParseUint(rest[:slash], 16, 64)
		if err != nil || epoch > f.epoch {
			continue // a newer writer's: never ours to delete
		}
		if err := f.main.Delete(ctx, in.Key); err != nil {
			return err
		}
	}
	return nil
}

// truncateWAL deletes WAL records the checkpoint at pos covers, except those
// still holding live data (they are data objects now; GC packs them) or
// data a snapshot holds.
func (f *FS) truncateWAL(ctx context.Context, pos wal.Position, pins *pinSet) error {
	seqs, err := f.wal.Seqs(ctx)
	if err != nil {
		return err
	}
	var drop []ObjRef
	deleted := 0
	for _, seq := range seqs {
		if seq > pos.Seq {
			break
		}
		obj := ObjRef{Kind: ObjWAL, ID: seq}
		info, ok, err := f.objInfo(obj)
		if err != nil {
			return err
		}
		if ok && info.Live > 0 || pins.objects[obj] > 0 {
			continue
		}
		if err := f.wal.Delete(ctx, seq); err != nil {
			return err
		}
		deleted++
		if ok {
			drop = append(drop, obj)
		}
	}
	f.dropObjects(drop)
	if deleted > 0 {
		f.log.Debug("removed covered WAL records", "records", deleted, "up_to", pos.Seq)
	}
	return nil
}

// objInfo reads an object's record from the applied state.
func (f *FS) objInfo(o ObjRef) (objInfo, bool, error) {
	v, closer, err := f.db.Get(objectKey(o))
	if errors.Is(err, pebble.ErrNotFound) {
		return objInfo{}, false, nil
	}
	if err != nil {
		return objInfo{}, false, err
	}
	defer closer.Close()
	info, err := decodeObjInfo(v)
	return info, err == nil, err
}

// dropObjects removes the records of deleted objects from the metadata.
func (f *FS) dropObjects(objs []ObjRef) {
	if len(objs) == 0 {
		return
	}
	f.viewMu.RLock()
	for _, o := range objs {
		f.open.deleteKV(objectKey(o))
	}
	f.viewMu.RUnlock()
}
