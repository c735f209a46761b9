package fs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"zerofs/wal"
)

// Snapshots pin a consistent state of the whole filesystem: every file and
// device at one position of the WAL, so a pool striped over several devices
// of this server gets one point in time for all of them.
//
// A snapshot is a checkpoint (checkpoint.go) that is kept: a pebble
// checkpoint of the applied metadata, hard-linked under Dir/snapshots/<id>
// and uploaded to the bucket (only the files the bucket lacks: the cost is
// the metadata changed since the last checkpoint, never data), plus a
// record in the metadata itself (kindSnap, by name) naming its files, and
// the list of data objects its chunks reference (kindSnapObjs, by id: kept
// apart so that listing and looking up snapshots never decodes them). The record goes through the WAL like any
// change, so snapshots are durable, fenced and replayed like files are: a
// fresh machine recovering from the bucket sees every snapshot, and fetches
// a snapshot's metadata files when it is first read.
//
// What keeps a snapshot readable is that its data objects are never deleted
// or moved while it exists: GC skips every object a snapshot record names
// (pins), checkpoints keep the WAL records and metadata files they name.
// The pins come from the applied state only — a record still in a batch is
// not durable yet, and a deletion not yet applied may still be undone by a
// crash — and creating a snapshot holds gcMu and ckptMu from its pebble
// checkpoint until its record is applied, so no object it needs can go in
// between.
//
// Space: a snapshot holds whole objects. The bytes only it holds are those
// of objects the current state no longer uses and no other snapshot names
// (and of metadata files only it uses): deleting it frees exactly those, at
// the next GC pass.

// SnapshotDirName is the directory, in the root, under which snapshots are
// served read-only (view.go).
const SnapshotDirName = ".snapshots"

// MaxSnapshotNameLen bounds snapshot names, which appear in NBD export names
// (DEVICE@SNAPSHOT) and paths.
const MaxSnapshotNameLen = 64

// ValidateSnapshotName checks a snapshot name: 1 to 64 bytes of letters,
// digits and . _ - + : not starting with '.'. That leaves out '/' (it names
// a directory under /.snapshots) and '@' (it separates device and snapshot
// in an export name). Errors wrap ErrInvalid or ErrNameTooLong.
func ValidateSnapshotName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("snapshot name is empty: %w", ErrInvalid)
	case len(name) > MaxSnapshotNameLen:
		return fmt.Errorf("snapshot name of %d bytes exceeds %d: %w", len(name), MaxSnapshotNameLen, ErrNameTooLong)
	case name[0] == '.':
		return fmt.Errorf("snapshot name %q starts with '.': %w", name, ErrInvalid)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+:", r)
		if !ok {
			return fmt.Errorf("snapshot name %q: %q is not allowed (letters, digits and . _ - + : are): %w", name, r, ErrInvalid)
		}
	}
	return nil
}

// SnapshotOptions are set when a snapshot is created.
type SnapshotOptions struct {
	// Held snapshots are skipped by scheduled pruning.
	Held bool
	// Schedule names the schedule that took it ("hourly"); empty for a
	// snapshot taken by hand. Pruning only ever deletes its own.
	Schedule string
}

// Snapshot describes a snapshot.
type Snapshot struct {
	Name     string
	ID       uint64
	Created  time.Time
	Held     bool
	Schedule string
	// Seq is the WAL record the snapshot includes everything up to.
	Seq uint64
	// ExclusiveBytes are held only by this snapshot: what deleting it
	// frees (at the next GC pass).
	ExclusiveBytes int64
}

// snapRecord is a snapshot's record in the metadata (kindSnap + name).
type snapRecord struct {
	Version  int          `json:"version"`
	ID       uint64       `json:"id"`
	Name     string       `json:"name"`
	Created  int64        `json:"created"` // unix ns
	Pos      wal.Position `json:"position"`
	Files    []ckptFile   `json:"files"`
	Held     bool         `json:"held,omitempty"`
	Schedule string       `json:"schedule,omitempty"`
}

const snapRecordVersion = 1

func packObjects(objs []ObjRef) []byte {
	b := make([]byte, 0, len(objs)*9)
	for _, o := range objs {
		b = append(b, byte(o.Kind))
		b = binary.BigEndian.AppendUint64(b, o.ID)
	}
	return b
}

// decodeObjects reads a packed object list (kindSnapObjs).
func decodeObjects(b []byte) ([]ObjRef, error) {
	if len(b)%9 != 0 {
		return nil, fmt.Errorf("snapshot object list of %d bytes: %w", len(b), ErrIO)
	}
	out := make([]ObjRef, 0, len(b)/9)
	for ; len(b) >= 9; b = b[9:] {
		k := ObjKind(b[0])
		if k != ObjWAL && k != ObjSeg {
			return nil, fmt.Errorf("snapshot object list: object kind %d: %w", k, ErrIO)
		}
		out = append(out, ObjRef{Kind: k, ID: binary.BigEndian.Uint64(b[1:])})
	}
	return out, nil
}

func snapObjsKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindSnapObjs
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

// snapshotObjects reads the object list of snapshot id as chain sees it.
func (f *FS) snapshotObjects(chain []*batch, id uint64) ([]ObjRef, error) {
	v, ok, err := f.getKV(chain, snapObjsKey(id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("snapshot %d has no object list: %w", id, ErrIO)
	}
	return decodeObjects(v)
}

func (r *snapRecord) info() Snapshot {
	return Snapshot{Name: r.Name, ID: r.ID, Created: time.Unix(0, r.Created), Held: r.Held, Schedule: r.Schedule, Seq: r.Pos.Seq}
}

func decodeSnapRecord(b []byte) (*snapRecord, error) {
	var r snapRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("snapshot record: %w: %w", ErrIO, err)
	}
	switch {
	case r.Version != snapRecordVersion:
		return nil, fmt.Errorf("snapshot record %q: version %d, this zerofs reads %d: %w", r.Name, r.Version, snapRecordVersion, ErrIO)
	case r.ID == 0 || r.ID > maxSnapID || ValidateSnapshotName(r.Name) != nil:
		return nil, fmt.Errorf("snapshot record %q (id %d): malformed: %w", r.Name, r.ID, ErrIO)
	}
	for _, cf := range r.Files {
		if cf.Name == "" || strings.ContainsAny(cf.Name, "/\\") || cf.Name == "." || cf.Name == ".." {
			return nil, fmt.Errorf("snapshot record %q: bad file name %q: %w", r.Name, cf.Name, ErrIO)
		}
	}
	return &r, nil
}

func snapKey(name string) []byte { return append([]byte{kindSnap}, name...) }

// snapshotRecords lists the snapshot records as chain sees them (nil: the
// applied state alone), in name order.
func (f *FS) snapshotRecords(chain []*batch) ([]*snapRecord, error) {
	var out []*snapRecord
	var derr error
	err := f.scan(chain, []byte{kindSnap}, []byte{kindSnap + 1}, func(k, v []byte) bool {
		r, err := decodeSnapRecord(v)
		if err != nil {
			derr = err
			return false
		}
		out = append(out, r)
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

func (f *FS) snapshotRecord(chain []*batch, name string) (*snapRecord, error) {
	v, ok, err := f.getKV(chain, snapKey(name))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("snapshot %q: %w", name, ErrNotExist)
	}
	return decodeSnapRecord(v)
}

// pinSet is what snapshots keep from GC and checkpoint sweeps: data objects
// (with how many snapshots name each) and metadata files.
type pinSet struct {
	objects map[ObjRef]int
	files   map[string]bool
}

func (p *pinSet) add(objs []ObjRef, files []ckptFile) {
	for _, o := range objs {
		p.objects[o]++
	}
	for _, cf := range files {
		p.files[cf.Key] = true
	}
}

// snapshotPins collects the pins of every snapshot in the applied state.
func (f *FS) snapshotPins() (*pinSet, error) {
	recs, err := f.snapshotRecords(nil)
	if err != nil {
		return nil, fmt.Errorf("snapshot pins: %w", err)
	}
	p := &pinSet{objects: make(map[ObjRef]int), files: make(map[string]bool)}
	for _, r := range recs {
		objs, err := f.snapshotObjects(nil, r.ID)
		if err != nil {
			return nil, fmt.Errorf("snapshot pins of %q: %w", r.Name, err)
		}
		p.add(objs, r.Files)
	}
	return p, nil
}

// refuseReadOnly is the error of a change the filesystem cannot accept:
// fenced by another writer, or closing.
func (f *FS) refuseReadOnly(what string) error {
	if err := f.Err(); err != nil {
		return fmt.Errorf("%s: the filesystem accepts no changes (%w): %w", what, err, ErrReadOnly)
	}
	return nil
}

// CreateSnapshot takes a snapshot of the whole filesystem named name. It
// includes every change that completed before the call (it flushes first)
// and is durable when it returns. Writes go on meanwhile; they wait at most
// for the flush. Errors wrap ErrExist (the name is taken), ErrInvalid or
// ErrNameTooLong (a bad name), ErrReadOnly (fenced or closing).
func (f *FS) CreateSnapshot(ctx context.Context, name string, o SnapshotOptions) (Snapshot, error) {
	if err := ValidateSnapshotName(name); err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot: %w", err)
	}
	if err := f.refuseReadOnly("create snapshot " + name); err != nil {
		return Snapshot{}, err
	}
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	if _, err := f.snapshotRecord(f.chain(), name); err == nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: it already exists: %w", name, ErrExist)
	} else if !errors.Is(err, ErrNotExist) {
		return Snapshot{}, fmt.Errorf("create snapshot %q: %w", name, err)
	}
	started := time.Now()
	if err := f.flushApplied(ctx); err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: flush: %w", name, err)
	}
	flushed := time.Now()
	f.gcMu.Lock()
	defer f.gcMu.Unlock()
	f.ckptMu.Lock()
	defer f.ckptMu.Unlock()

	id, err := f.nextSnapshotID()
	if err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: %w", name, err)
	}
	dir := f.snapshotDir(id)
	tmp := dir + ".tmp"
	defer os.RemoveAll(tmp)
	locked := time.Now()
	ms, err := f.snapshotMeta(ctx, tmp)
	if err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: %w", name, err)
	}
	uploaded := time.Now()
	if err := f.publishCheckpoint(ctx, ms, false); err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: %w", name, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return Snapshot{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: %w", name, err)
	}
	rec := &snapRecord{
		Version: snapRecordVersion, ID: id, Name: name, Created: time.Now().UnixNano(),
		Pos: ms.desc.Pos, Files: ms.desc.Files, Held: o.Held, Schedule: o.Schedule,
	}
	body, _ := json.Marshal(rec)
	f.viewMu.RLock()
	f.open.setKV(metaKey(nextSnapKeyName), binary.BigEndian.AppendUint64(nil, id+1))
	f.open.setKV(snapObjsKey(id), packObjects(ms.objects))
	f.open.setKV(snapKey(name), body)
	f.viewMu.RUnlock()
	// Applied, not only durable: GC reads pins from the applied state.
	if err := f.flushApplied(ctx); err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot %q: record: %w", name, err)
	}
	ms2 := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	f.log.Info("snapshot created", "snapshot", name, "id", id, "seq", rec.Pos.Seq, "objects", len(ms.objects),
		"uploaded_bytes", ms.uploaded, "elapsed", ms2(time.Since(started)),
		"flush", ms2(flushed.Sub(started)), "wait_gc", ms2(locked.Sub(flushed)),
		"metadata", ms2(uploaded.Sub(locked)), "record", ms2(time.Since(uploaded)))
	return rec.info(), nil
}

const nextSnapKeyName = "next_snapshot"

// nextSnapshotID reads the next snapshot id. Ids are never reused, so an
// NFS handle of a deleted snapshot's file can never name another's.
func (f *FS) nextSnapshotID() (uint64, error) {
	id, err := f.counter(f.chain(), nextSnapKeyName, 1)
	if err == nil && id > maxSnapID {
		err = fmt.Errorf("all %d snapshot ids are used: %w", maxSnapID, ErrNoSpace)
	}
	return id, err
}

func (f *FS) snapshotDir(id uint64) string {
	return filepath.Join(f.opts.Dir, "snapshots", fmt.Sprintf("%06x", id))
}

// DeleteSnapshot deletes snapshot name. What only it held is freed by the
// next GC pass; the bytes are returned. Callers that serve the snapshot
// (NBD exports) must check it is not in use first. Errors wrap ErrNotExist
// or ErrReadOnly.
func (f *FS) DeleteSnapshot(ctx context.Context, name string) (int64, error) {
	if err := ValidateSnapshotName(name); err != nil {
		return 0, fmt.Errorf("delete snapshot: %w", err)
	}
	if err := f.refuseReadOnly("delete snapshot " + name); err != nil {
		return 0, err
	}
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	chain := f.chain()
	rec, err := f.snapshotRecord(chain, name)
	if err != nil {
		return 0, fmt.Errorf("delete snapshot: %w", err)
	}
	recs, err := f.snapshotRecords(chain)
	if err != nil {
		return 0, fmt.Errorf("delete snapshot %q: %w", name, err)
	}
	excl, _, err := f.snapshotSpace(chain, recs)
	if err != nil {
		return 0, fmt.Errorf("delete snapshot %q: %w", name, err)
	}
	f.viewMu.RLock()
	f.open.deleteKV(snapKey(name))
	f.open.deleteKV(snapObjsKey(rec.ID))
	f.viewMu.RUnlock()
	// Only now, with the record gone from the chain, can the view not be
	// opened again behind our back (openView looks the record up).
	f.closeView(rec.ID)
	if err := f.flushApplied(ctx); err != nil {
		return 0, fmt.Errorf("delete snapshot %q: %w", name, err)
	}
	if err := os.RemoveAll(f.snapshotDir(rec.ID)); err != nil {
		f.log.Warn("removing a deleted snapshot's local metadata", "snapshot", name, "err", err)
	}
	f.log.Info("snapshot deleted", "snapshot", name, "id", rec.ID, "frees_bytes", excl[rec.ID])
	return excl[rec.ID], nil
}

// HoldSnapshot marks snapshot name held (scheduled pruning skips it) or not.
func (f *FS) HoldSnapshot(ctx context.Context, name string, held bool) error {
	what := "hold snapshot"
	if !held {
		what = "release snapshot"
	}
	if err := ValidateSnapshotName(name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := f.refuseReadOnly(what + " " + name); err != nil {
		return err
	}
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	rec, err := f.snapshotRecord(f.chain(), name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if rec.Held == held {
		return nil
	}
	rec.Held = held
	body, _ := json.Marshal(rec)
	f.viewMu.RLock()
	f.open.setKV(snapKey(name), body)
	f.viewMu.RUnlock()
	return f.Flush(ctx)
}

// Snapshots lists the snapshots, oldest first, with the bytes each alone
// holds.
func (f *FS) Snapshots(ctx context.Context) ([]Snapshot, error) { return f.snapshots(true) }

// SnapshotNames is Snapshots without the space each holds (cheaper: no
// object records are read).
func (f *FS) SnapshotNames(ctx context.Context) ([]Snapshot, error) { return f.snapshots(false) }

func (f *FS) snapshots(space bool) ([]Snapshot, error) {
	chain := f.chain() // records and object lists seen alike
	recs, err := f.snapshotRecords(chain)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	excl := map[uint64]int64{}
	if space {
		if excl, _, err = f.snapshotSpace(chain, recs); err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
	}
	out := make([]Snapshot, 0, len(recs))
	for _, r := range recs {
		s := r.info()
		s.ExclusiveBytes = excl[r.ID]
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Snapshot) int { return cmpU64(a.ID, b.ID) })
	return out, nil
}

// snapshotSpace computes, for snapshots recs (as chain sees them), the
// bytes each alone holds (by id) and the bytes they hold together: objects
// the current state no longer uses, and metadata files the current
// checkpoint does not use.
func (f *FS) snapshotSpace(chain []*batch, recs []*snapRecord) (map[uint64]int64, int64, error) {
	excl := make(map[uint64]int64)
	type use struct {
		n     int
		owner uint64
	}
	objs := make(map[ObjRef]*use)
	files := make(map[string]*use)
	sizes := make(map[string]int64)
	for _, r := range recs {
		robjs, err := f.snapshotObjects(chain, r.ID)
		if err != nil {
			return nil, 0, err
		}
		for _, o := range robjs {
			if u := objs[o]; u != nil {
				u.n++
			} else {
				objs[o] = &use{1, r.ID}
			}
		}
		for _, cf := range r.Files {
			if u := files[cf.Key]; u != nil {
				u.n++
			} else {
				files[cf.Key] = &use{1, r.ID}
				sizes[cf.Key] = cf.Size
			}
		}
	}
	var held int64
	for o, u := range objs {
		info, ok, err := f.objInfo(o)
		if err != nil {
			return nil, 0, err
		}
		if !ok || info.Live > 0 {
			continue
		}
		held += info.Size
		if u.n == 1 {
			excl[u.owner] += info.Size
		}
	}
	current := make(map[string]bool)
	if d := f.headDesc.Load(); d != nil {
		for _, cf := range d.Files {
			current[cf.Key] = true
		}
	}
	for k, u := range files {
		if current[k] {
			continue
		}
		held += sizes[k]
		if u.n == 1 {
			excl[u.owner] += sizes[k]
		}
	}
	return excl, held, nil
}

// SnapshotBytes is the space snapshots hold that the current state does not
// use (zerofs status, metrics).
func (f *FS) SnapshotBytes() (count int, held int64, err error) {
	recs, err := f.snapshotRecords(nil)
	if err != nil {
		return 0, 0, err
	}
	_, held, err = f.snapshotSpace(nil, recs)
	return len(recs), held, err
}

// removeStaleSnapshotDirs removes local snapshot directories that no record
// names: a creation interrupted by a crash, a deletion whose cleanup did not
// finish, or another machine's history.
func (f *FS) removeStaleSnapshotDirs() error {
	root := filepath.Join(f.opts.Dir, "snapshots")
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	recs, err := f.snapshotRecords(nil)
	if err != nil {
		return err
	}
	keep := make(map[string]bool)
	for _, r := range recs {
		keep[filepath.Base(f.snapshotDir(r.ID))] = true
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
