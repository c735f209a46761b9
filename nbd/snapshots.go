package nbd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"zerofs/fs"
)

// Every device of every snapshot is also an export, DEVICE@SNAPSHOT,
// read-only (NBD_FLAG_READ_ONLY; writes fail with EPERM), listed by
// NBD_OPT_LIST after the live devices. Its file is the device's file in the
// snapshot's tree (fs/view.go), so reads go through the same filesystem
// calls as a live device's.
//
// Snapshot names cannot contain '@' (fs.ValidateSnapshotName), so the last
// '@' separates device and snapshot. New device names cannot contain '@'
// either (CreateExport, CloneExport); a device made before that keeps being
// served under its name, which wins over the snapshot reading of it.

// SnapshotSep separates device and snapshot in an export name.
const SnapshotSep = "@"

// SplitSnapshotExport splits "DEVICE@SNAPSHOT"; ok is false for a name
// without '@'.
func SplitSnapshotExport(name string) (device, snapshot string, ok bool) {
	i := strings.LastIndex(name, SnapshotSep)
	if i < 0 {
		return name, "", false
	}
	return name[:i], name[i+1:], true
}

// validateNewExportName is ValidateExportName for a device being made.
func validateNewExportName(name string) error {
	if err := ValidateExportName(name); err != nil {
		return err
	}
	if strings.Contains(name, SnapshotSep) {
		return fmt.Errorf("export name %q contains '@', which separates a device from a snapshot (DEVICE@SNAPSHOT): %w", name, fs.ErrInvalid)
	}
	return nil
}

// lookupSnapshotExport finds the file behind DEVICE@SNAPSHOT.
func lookupSnapshotExport(ctx context.Context, f *fs.FS, name string) (fs.Inode, error) {
	dev, snap, ok := SplitSnapshotExport(name)
	if !ok {
		return fs.Inode{}, fmt.Errorf("export %q: %w", name, fs.ErrNotExist)
	}
	if err := fs.ValidateSnapshotName(snap); err != nil {
		return fs.Inode{}, fmt.Errorf("export %q: %w", name, err)
	}
	if err := ValidateExportName(dev); err != nil {
		return fs.Inode{}, fmt.Errorf("export %q: %w", name, err)
	}
	n, err := f.SnapshotIno(ctx, snap, ExportDir, dev)
	if err != nil {
		return fs.Inode{}, fmt.Errorf("export %q: %w", name, err)
	}
	if !n.IsReg() {
		return fs.Inode{}, fmt.Errorf("export %q: not a regular file in the snapshot: %w", name, fs.ErrInvalid)
	}
	return n, nil
}

// lookupAnyExport finds the file behind a live export, or else a snapshot's.
func lookupAnyExport(ctx context.Context, f *fs.FS, name string) (n fs.Inode, snapshot bool, err error) {
	n, err = lookupExportFile(ctx, f, name)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(name, SnapshotSep) {
		return n, false, err
	}
	n, err = lookupSnapshotExport(ctx, f, name)
	return n, err == nil, err
}

// ListSnapshotExports lists every snapshot's devices as DEVICE@SNAPSHOT, by
// snapshot (oldest first), then device name.
func ListSnapshotExports(ctx context.Context, f *fs.FS) ([]ExportInfo, error) {
	snaps, err := f.SnapshotNames(ctx)
	if err != nil {
		return nil, err
	}
	var out []ExportInfo
	for _, s := range snaps {
		devs, err := snapshotDevices(ctx, f, s)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			d.Name += SnapshotSep + s.Name
			d.ReadOnly, d.Interrupted, d.Snapshot = true, false, s.Name
			out = append(out, d)
		}
	}
	return out, nil
}

// snapshotCache holds each snapshot's devices once listed: a snapshot never
// changes and its id is never reused, so listing every snapshot's exports
// (NBD_OPT_LIST) opens each snapshot's metadata once, not at every listing.
var snapshotCache sync.Map // snapshotKey → []ExportInfo

type snapshotKey struct {
	f  *fs.FS
	id uint64
}

// snapshotDevices lists the devices of snapshot s.
func snapshotDevices(ctx context.Context, f *fs.FS, s fs.Snapshot) ([]ExportInfo, error) {
	key := snapshotKey{f, s.ID}
	if v, ok := snapshotCache.Load(key); ok {
		return v.([]ExportInfo), nil
	}
	dir, err := f.SnapshotIno(ctx, s.Name, ExportDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // deleted meanwhile, or no devices then
	}
	if err != nil {
		return nil, fmt.Errorf("list exports of snapshot %q: %w", s.Name, err)
	}
	devs, err := listExportDir(ctx, f, dir.Ino)
	if err != nil {
		return nil, fmt.Errorf("list exports of snapshot %q: %w", s.Name, err)
	}
	snapshotCache.Store(key, devs)
	return devs, nil
}

// CloneExport creates device newName as a copy-on-write clone of source:
// a device, or DEVICE@SNAPSHOT. It takes no time proportional to the
// device's size or data (fs/clone.go), and is durable when it returns.
// Errors wrap fs.ErrExist (newName exists), fs.ErrNotExist (no source),
// fs.ErrInvalid (bad names), fs.ErrReadOnly.
func CloneExport(ctx context.Context, f *fs.FS, source, newName string) error {
	if err := validateNewExportName(newName); err != nil {
		return fmt.Errorf("clone export: %w", err)
	}
	if err := ValidateExportName(source); err != nil {
		return fmt.Errorf("clone export: %w", err)
	}
	src, _, err := lookupAnyExport(ctx, f, source)
	if err != nil {
		return fmt.Errorf("clone export: %w", err)
	}
	dir, err := ensureExportDir(ctx, f)
	if err != nil {
		return fmt.Errorf("clone export %q: %w", newName, err)
	}
	if _, err := f.CloneFile(ctx, fs.Root, src.Ino, dir, newName); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("clone export %q: it already exists: %w", newName, fs.ErrExist)
		}
		return fmt.Errorf("clone export %q from %q: %w", newName, source, err)
	}
	if err := f.Flush(ctx); err != nil {
		return fmt.Errorf("clone export %q: flush: %w", newName, err)
	}
	return nil
}

// RestoreExport replaces the content of device DEVICE by its content in
// snapshot SNAPSHOT (name is DEVICE@SNAPSHOT). The caller checks that no
// client has DEVICE attached (Server.Attachments). Durable when it returns.
func RestoreExport(ctx context.Context, f *fs.FS, name string) error {
	dev, snap, ok := SplitSnapshotExport(name)
	if !ok {
		return fmt.Errorf("restore export %q: give DEVICE@SNAPSHOT: %w", name, fs.ErrInvalid)
	}
	if err := ValidateExportName(dev); err != nil {
		return fmt.Errorf("restore export: %w", err)
	}
	src, err := lookupSnapshotExport(ctx, f, name)
	if err != nil {
		return fmt.Errorf("restore export: %w", err)
	}
	dst, err := lookupExportFile(ctx, f, dev)
	if err != nil {
		return fmt.Errorf("restore export %q (it must exist; zerofs nbd clone %s NEW makes a new device instead): %w", dev, name, err)
	}
	if _, err := f.RestoreFile(ctx, fs.Root, dst.Ino, src.Ino); err != nil {
		return fmt.Errorf("restore export %q from snapshot %q: %w", dev, snap, err)
	}
	if err := f.Flush(ctx); err != nil {
		return fmt.Errorf("restore export %q: flush: %w", dev, err)
	}
	return nil
}

// Attachment is a client connection in transmission on an export.
type Attachment struct {
	Export string    `json:"export"`
	Remote string    `json:"remote"`
	Client string    `json:"client,omitempty"` // the TLS client certificate's name
	Since  time.Time `json:"since"`
}

func (a Attachment) String() string {
	s := fmt.Sprintf("%s attached by %s", a.Export, a.Remote)
	if a.Client != "" {
		s += " (certificate " + a.Client + ")"
	}
	return s + " since " + a.Since.UTC().Format(time.RFC3339)
}

// Attachments lists the connections in transmission, on the exports match
// accepts (all if nil).
func (s *Server) Attachments(match func(export string) bool) []Attachment {
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	var out []Attachment
	for _, a := range s.attached {
		if match == nil || match(a.Export) {
			out = append(out, a)
		}
	}
	return out
}

func (s *Server) attach(c *conn, a Attachment) {
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	if s.attached == nil {
		s.attached = make(map[*conn]Attachment)
	}
	s.attached[c] = a
}

func (s *Server) detach(c *conn) {
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	delete(s.attached, c)
}
