package nbd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"zerofs/fs"
)

// Exports are the regular files in the directory /.nbd of the filesystem,
// named after the file. They are looked up when a client negotiates, so they
// can be created, resized and deleted (through these functions, or over NFS:
// `truncate -s 20G /mnt/zerofs/.nbd/db`) without restarting the server.
//
// Rules:
//   - An export's size is the file's size at negotiation; it stays fixed for
//     the life of that connection, as NBD requires. Growing an export is
//     seen by new connections. Shrinking it under connected clients is the
//     administrator's responsibility: those clients keep the old size, read
//     zeros past the new end, and their writes there extend the file again.
//   - An export is read-only (NBD_FLAG_READ_ONLY; writes, trims and zeroing
//     fail with EPERM) when its file has no owner write bit (mode &0200 == 0),
//     e.g. after `chmod a-w /mnt/zerofs/.nbd/golden`. The NBD server acts
//     as root, so no other permission bit matters.
//   - Deleting an export under connected clients makes their requests fail
//     with EIO.
//   - There is no default export: the empty name is unknown (NBD_REP_ERR_UNKNOWN,
//     or a closed connection for NBD_OPT_EXPORT_NAME). Attaching the wrong
//     block device because a name was forgotten is worse than an error.
//   - CreateExport and ResizeExport (and so the admin API and `zerofs nbd
//     create/resize`, which call them) take only sizes that are a multiple
//     of ExportSizeUnit (4096): Linux's nbd driver, with the block size
//     nbd-client -b 4096 and most tools set, makes the device
//     size/4096*4096 bytes and silently drops the tail. A file in /.nbd
//     truncated over NFS to any other size is still served: the server
//     advertises its exact size and minimum block size 1, and a client
//     using 4096-byte blocks sees it rounded down.

// ExportDir is the directory, under the filesystem root, that holds exports.
const ExportDir = ".nbd"

// ExportInfo describes an export.
type ExportInfo struct {
	Name     string
	Size     uint64
	ReadOnly bool // the file has no owner write bit
	// Interrupted: the export may have lost acknowledged writes when the
	// last run ended; its I/O fails until ClearExport (fs/marks.go).
	Interrupted bool
	// Snapshot names the snapshot of a DEVICE@SNAPSHOT export (snapshots.go).
	Snapshot string
}

// ValidateExportName checks that name can name an export: NBD export names
// are UTF-8 strings of up to 4096 bytes, and as file names they must be 1 to
// 255 bytes, without '/' or NUL, and not "." or "..". Errors wrap
// fs.ErrInvalid or fs.ErrNameTooLong.
func ValidateExportName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("export name is empty (there is no default export): %w", fs.ErrInvalid)
	case name == "." || name == "..":
		return fmt.Errorf("export name %q: %w", name, fs.ErrInvalid)
	case len(name) > fs.MaxNameLen:
		return fmt.Errorf("export name of %d bytes exceeds %d: %w", len(name), fs.MaxNameLen, fs.ErrNameTooLong)
	case !utf8.ValidString(name):
		return fmt.Errorf("export name %q is not valid UTF-8: %w", name, fs.ErrInvalid)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("export name %q contains '/' or NUL: %w", name, fs.ErrInvalid)
	}
	return nil
}

// ExportSizeUnit is what export sizes must be a multiple of: the 4 KiB
// block size of Linux's nbd devices (nbd-client -b 4096, the preferred block
// size this server advertises).
const ExportSizeUnit = 4096

// ValidateExportSize checks that size can be an export's size given to
// CreateExport or ResizeExport: a multiple of ExportSizeUnit, at most
// fs.MaxFileSize. The error names the nearest valid sizes and wraps
// fs.ErrInvalid, or fs.ErrFileTooBig for a size over the maximum.
func ValidateExportSize(size uint64) error {
	if size > fs.MaxFileSize {
		return fmt.Errorf("size %d exceeds the maximum %d: %w", size, uint64(fs.MaxFileSize), fs.ErrFileTooBig)
	}
	if size%ExportSizeUnit == 0 {
		return nil
	}
	down := size &^ (ExportSizeUnit - 1)
	up := down + ExportSizeUnit // fs.MaxFileSize is a multiple: up is valid
	use := fmt.Sprintf("use %d (%s) or %d (%s)", down, human(down), up, human(up))
	if down == 0 {
		use = fmt.Sprintf("use %d (%s)", up, human(up))
	}
	return fmt.Errorf("size %d is not a multiple of %d bytes (Linux's nbd devices use 4096-byte blocks and would drop the last %d bytes): %s: %w",
		size, ExportSizeUnit, size-down, use, fs.ErrInvalid)
}

// human writes a byte count the way --size takes it when it is exact in a
// binary unit (64M), else in bytes.
func human(n uint64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{50, "P"}, {40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift && n&(1<<u.shift-1) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// ListExports lists the exports in name order (the directory's listing
// order). A filesystem without /.nbd has none.
func ListExports(ctx context.Context, f *fs.FS) ([]ExportInfo, error) {
	dir, err := f.Lookup(ctx, fs.Root, fs.RootIno, ExportDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list exports: look up /%s: %w", ExportDir, err)
	}
	if !dir.IsDir() {
		return nil, fmt.Errorf("list exports: /%s is not a directory: %w", ExportDir, fs.ErrNotDir)
	}
	out, err := listExportDir(ctx, f, dir.Ino)
	if err != nil {
		return nil, fmt.Errorf("list exports: %w", err)
	}
	return out, nil
}

// listExportDir lists the exports in directory dir (a live /.nbd or a
// snapshot's).
func listExportDir(ctx context.Context, f *fs.FS, dir uint64) ([]ExportInfo, error) {
	var out []ExportInfo
	for cookie := uint64(0); ; {
		ents, eof, err := f.ReadDir(ctx, fs.Root, dir, cookie, 256)
		if err != nil {
			return nil, fmt.Errorf("read /%s: %w", ExportDir, err)
		}
		for _, e := range ents {
			cookie = e.Cookie
			if e.Type != fs.TypeRegular || ValidateExportName(e.Name) != nil {
				continue
			}
			n, err := f.GetAttr(ctx, e.Ino)
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since the listing
			}
			if err != nil {
				return nil, fmt.Errorf("%q: %w", e.Name, err)
			}
			out = append(out, ExportInfo{Name: e.Name, Size: n.Size, ReadOnly: n.Mode&0o200 == 0, Interrupted: f.Interrupted(e.Ino)})
		}
		if eof || len(ents) == 0 {
			break
		}
	}
	return out, nil
}

// CreateExport creates export name of size bytes (see ValidateExportSize): a
// 0644 file in /.nbd, creating the 0755 directory if missing. It fails with an error wrapping
// fs.ErrExist if the export exists. The export is durable when it returns.
func CreateExport(ctx context.Context, f *fs.FS, name string, size uint64) error {
	if err := validateNewExportName(name); err != nil {
		return fmt.Errorf("create export: %w", err)
	}
	if err := ValidateExportSize(size); err != nil {
		return fmt.Errorf("create export %q: %w", name, err)
	}
	dir, err := ensureExportDir(ctx, f)
	if err != nil {
		return fmt.Errorf("create export %q: %w", name, err)
	}
	n, _, err := f.Create(ctx, fs.Root, dir, name, fs.NewNode{Mode: fs.TypeRegular | 0o644, Exclusive: true})
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create export %q: it already exists: %w", name, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("create export %q: %w", name, err)
	}
	if size > 0 {
		if _, _, err := f.SetAttr(ctx, fs.Root, n.Ino, fs.SetAttrs{Size: &size}); err != nil {
			// Do not leave a half-made export behind.
			if _, rerr := f.Remove(ctx, fs.Root, dir, name); rerr != nil {
				err = errors.Join(err, fmt.Errorf("removing the new file: %w", rerr))
			}
			return fmt.Errorf("create export %q: set size %d: %w", name, size, err)
		}
	}
	if err := f.Flush(ctx); err != nil {
		return fmt.Errorf("create export %q: flush: %w", name, err)
	}
	return nil
}

// ensureExportDir returns /.nbd's inode, creating the directory if missing.
func ensureExportDir(ctx context.Context, f *fs.FS) (uint64, error) {
	for range 2 {
		d, err := f.Lookup(ctx, fs.Root, fs.RootIno, ExportDir)
		if err == nil {
			if !d.IsDir() {
				return 0, fmt.Errorf("/%s is not a directory: %w", ExportDir, fs.ErrNotDir)
			}
			return d.Ino, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("look up /%s: %w", ExportDir, err)
		}
		d, _, err = f.Create(ctx, fs.Root, fs.RootIno, ExportDir, fs.NewNode{Mode: fs.TypeDir | 0o755})
		if err == nil {
			return d.Ino, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("create /%s: %w", ExportDir, err)
		}
		// Created concurrently: look it up again.
	}
	return 0, fmt.Errorf("create /%s: it keeps appearing and disappearing: %w", ExportDir, fs.ErrIO)
}

// ResizeExport sets export name's size (see ValidateExportSize). Connected
// clients keep the size they negotiated (see the package rules above).
// Durable when it returns.
func ResizeExport(ctx context.Context, f *fs.FS, name string, size uint64) error {
	if err := ValidateExportName(name); err != nil {
		return fmt.Errorf("resize export: %w", err)
	}
	if err := ValidateExportSize(size); err != nil {
		return fmt.Errorf("resize export %q: %w", name, err)
	}
	n, err := lookupExportFile(ctx, f, name)
	if err != nil {
		return fmt.Errorf("resize export: %w", err)
	}
	if _, _, err := f.SetAttr(ctx, fs.Root, n.Ino, fs.SetAttrs{Size: &size}); err != nil {
		return fmt.Errorf("resize export %q to %d: %w", name, size, err)
	}
	if err := f.Flush(ctx); err != nil {
		return fmt.Errorf("resize export %q: flush: %w", name, err)
	}
	return nil
}

// DeleteExport deletes export name and its data. Connected clients' requests
// fail from then on. Durable when it returns.
func DeleteExport(ctx context.Context, f *fs.FS, name string) error {
	if err := ValidateExportName(name); err != nil {
		return fmt.Errorf("delete export: %w", err)
	}
	dir, err := f.Lookup(ctx, fs.Root, fs.RootIno, ExportDir)
	if err != nil {
		return fmt.Errorf("delete export %q: look up /%s: %w", name, ExportDir, err)
	}
	n, err := lookupExportFile(ctx, f, name)
	if err != nil {
		return fmt.Errorf("delete export: %w", err)
	}
	if _, err := f.Remove(ctx, fs.Root, dir.Ino, name); err != nil {
		return fmt.Errorf("delete export %q: %w", name, err)
	}
	// A deleted export's mark and interruption have nothing left to protect.
	if err := f.ForgetMarks(ctx, n.Ino); err != nil {
		return fmt.Errorf("delete export %q: %w", name, err)
	}
	if err := f.Flush(ctx); err != nil {
		return fmt.Errorf("delete export %q: flush: %w", name, err)
	}
	return nil
}

// lookupExportFile finds the regular file behind export name.
func lookupExportFile(ctx context.Context, f *fs.FS, name string) (fs.Inode, error) {
	dir, err := f.Lookup(ctx, fs.Root, fs.RootIno, ExportDir)
	if err != nil {
		return fs.Inode{}, fmt.Errorf("export %q: look up /%s: %w", name, ExportDir, err)
	}
	n, err := f.Lookup(ctx, fs.Root, dir.Ino, name)
	if err != nil {
		return fs.Inode{}, fmt.Errorf("export %q: %w", name, err)
	}
	if !n.IsReg() {
		return fs.Inode{}, fmt.Errorf("export %q: /%s/%s is not a regular file: %w", name, ExportDir, name, fs.ErrInvalid)
	}
	return n, nil
}

// export is an export as one connection sees it, fixed at negotiation.
type export struct {
	name     string
	ino      uint64
	size     uint64
	readOnly bool
}

// exportSource is what negotiation needs from the outside world; an
// interface so negotiation can be tested and fuzzed without a filesystem.
type exportSource interface {
	lookup(ctx context.Context, name string) (export, error)
	list(ctx context.Context) ([]ExportInfo, error)
}

// fsExports serves exports from a filesystem.
type fsExports struct{ f *fs.FS }

func (e fsExports) lookup(ctx context.Context, name string) (export, error) {
	if err := ValidateExportName(name); err != nil {
		return export{}, err
	}
	n, snapshot, err := lookupAnyExport(ctx, e.f, name)
	if err != nil {
		return export{}, err
	}
	return export{name: name, ino: n.Ino, size: n.Size, readOnly: snapshot || n.Mode&0o200 == 0}, nil
}

// list lists the live exports, then every snapshot's.
func (e fsExports) list(ctx context.Context) ([]ExportInfo, error) {
	live, err := ListExports(ctx, e.f)
	if err != nil {
		return nil, err
	}
	snaps, err := ListSnapshotExports(ctx, e.f)
	if err != nil {
		return nil, err
	}
	return append(live, snaps...), nil
}

// ClearExport ends the interruption of export name (fs.FS.ClearInterrupted):
// the operator has made its client deal with the writes it may have lost.
// Its I/O works again at once, on connections already open too. Clearing
// an export that is not interrupted does nothing and returns an error
// wrapping fs.ErrNotInterrupted.
func ClearExport(ctx context.Context, f *fs.FS, name string) error {
	if err := ValidateExportName(name); err != nil {
		return err
	}
	n, err := lookupExportFile(ctx, f, name)
	if err != nil {
		return fmt.Errorf("clear export: %w", err)
	}
	if err := f.ClearInterrupted(ctx, n.Ino); err != nil {
		return fmt.Errorf("clear export %q: %w", name, err)
	}
	return nil
}
