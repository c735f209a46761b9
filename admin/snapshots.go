package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"zerofs/fs"
	"zerofs/nbd"
)

// Snapshot is a snapshot as the API shows it.
type Snapshot struct {
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Held     bool      `json:"held,omitempty"`
	Schedule string    `json:"schedule,omitempty"`
	// ExclusiveBytes: held by this snapshot alone, freed by deleting it.
	ExclusiveBytes int64 `json:"exclusive_bytes"`
	// Freed is set in the reply to a deletion: ExclusiveBytes then.
	Freed int64 `json:"freed,omitempty"`
}

// Clone is the body of POST /v1/exports/{name}/clone and /v1/files/clone.
type Clone struct {
	Name   string `json:"name,omitempty"`   // the new device
	Source string `json:"source,omitempty"` // files: the path cloned
	Target string `json:"target,omitempty"` // files: the new path
}

func snapshotOf(s fs.Snapshot) Snapshot {
	return Snapshot{Name: s.Name, Created: s.Created, Held: s.Held, Schedule: s.Schedule, ExclusiveBytes: s.ExclusiveBytes}
}

func (h *handler) listSnapshots(w http.ResponseWriter, r *http.Request) {
	list, err := h.f.Snapshots(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	out := make([]Snapshot, 0, len(list))
	for _, s := range list {
		out = append(out, snapshotOf(s))
	}
	h.reply(w, http.StatusOK, out)
}

func (h *handler) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var s Snapshot
	if !h.decode(w, r, &s, `{"name": ..., "held": false}`) {
		return
	}
	got, err := h.f.CreateSnapshot(r.Context(), s.Name, fs.SnapshotOptions{Held: s.Held})
	if err != nil {
		h.fail(w, err)
		return
	}
	h.reply(w, http.StatusCreated, snapshotOf(got))
}

func (h *handler) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.inUse(func(export string) bool {
		_, snap, ok := nbd.SplitSnapshotExport(export)
		return ok && snap == name
	}, "delete snapshot "+name); err != nil {
		h.fail(w, err)
		return
	}
	freed, err := h.f.DeleteSnapshot(r.Context(), name)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.reply(w, http.StatusOK, Snapshot{Name: name, Freed: freed})
}

func (h *handler) holdSnapshot(w http.ResponseWriter, r *http.Request) {
	var s Snapshot
	if !h.decode(w, r, &s, `{"held": true}`) {
		return
	}
	s.Name = r.PathValue("name")
	if err := h.f.HoldSnapshot(r.Context(), s.Name, s.Held); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("snapshot hold changed", "snapshot", s.Name, "held", s.Held)
	h.reply(w, http.StatusOK, s)
}

func (h *handler) cloneExport(w http.ResponseWriter, r *http.Request) {
	var c Clone
	if !h.decode(w, r, &c, `{"name": NEW}`) {
		return
	}
	src := r.PathValue("name")
	started := time.Now()
	if err := nbd.CloneExport(r.Context(), h.f, src, c.Name); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("cloned NBD device", "source", src, "name", c.Name, "elapsed", time.Since(started).Round(time.Millisecond))
	h.reply(w, http.StatusCreated, c)
}

func (h *handler) restoreExport(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	dev, _, _ := nbd.SplitSnapshotExport(name)
	if err := h.inUse(func(export string) bool { return export == dev }, "restore "+dev); err != nil {
		h.fail(w, err)
		return
	}
	if err := nbd.RestoreExport(r.Context(), h.f, name); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("restored NBD device from a snapshot", "export", name)
	h.reply(w, http.StatusOK, Export{Name: dev})
}

func (h *handler) cloneFile(w http.ResponseWriter, r *http.Request) {
	var c Clone
	if !h.decode(w, r, &c, `{"source": PATH, "target": PATH}`) {
		return
	}
	ctx := r.Context()
	src, err := resolvePath(ctx, h.f, c.Source)
	if err != nil {
		h.fail(w, err)
		return
	}
	dirPath, name := splitPath(c.Target)
	dir, err := resolvePath(ctx, h.f, dirPath)
	if err != nil {
		h.fail(w, err)
		return
	}
	if _, err := h.f.CloneFile(ctx, fs.Root, src.Ino, dir.Ino, name); err != nil {
		h.fail(w, err)
		return
	}
	if err := h.f.Flush(ctx); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("cloned file", "source", c.Source, "target", c.Target)
	h.reply(w, http.StatusCreated, c)
}

// inUse fails with fs.ErrBusy, naming who, if a client has an export
// attached that match accepts.
func (h *handler) inUse(match func(string) bool, what string) error {
	if h.attachments == nil {
		return nil
	}
	users := h.attachments(match)
	if len(users) == 0 {
		return nil
	}
	var names []string
	for _, a := range users {
		names = append(names, a.String())
	}
	return fmt.Errorf("%s: in use: %s (detach it first): %w", what, strings.Join(names, "; "), fs.ErrBusy)
}

func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any, form string) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(v); err != nil {
		h.reply(w, http.StatusBadRequest, apiError{Error: "body must be " + form + ": " + err.Error()})
		return false
	}
	return true
}

// resolvePath looks an absolute path up from the root, as root.
func resolvePath(ctx context.Context, f *fs.FS, p string) (fs.Inode, error) {
	if !strings.HasPrefix(p, "/") {
		return fs.Inode{}, fmt.Errorf("path %q is not absolute: %w", p, fs.ErrInvalid)
	}
	n, err := f.GetAttr(ctx, fs.RootIno)
	for _, c := range strings.Split(p, "/") {
		if err != nil {
			break
		}
		if c != "" {
			n, err = f.Lookup(ctx, fs.Root, n.Ino, c)
		}
	}
	if err != nil {
		return fs.Inode{}, fmt.Errorf("%s: %w", p, err)
	}
	return n, nil
}

func splitPath(p string) (dir, name string) {
	p = strings.TrimRight(p, "/")
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i+1], p[i+1:]
}

// Snapshots lists the snapshots.
func (c *Client) Snapshots(ctx context.Context) ([]Snapshot, error) {
	var out []Snapshot
	return out, c.do(ctx, http.MethodGet, "/v1/snapshots", nil, &out)
}

// CreateSnapshot takes a snapshot.
func (c *Client) CreateSnapshot(ctx context.Context, name string, held bool) (Snapshot, error) {
	var out Snapshot
	return out, c.do(ctx, http.MethodPost, "/v1/snapshots", Snapshot{Name: name, Held: held}, &out)
}

// DeleteSnapshot deletes a snapshot and returns the bytes it frees.
func (c *Client) DeleteSnapshot(ctx context.Context, name string) (int64, error) {
	var out Snapshot
	err := c.do(ctx, http.MethodDelete, "/v1/snapshots/"+pathEscape(name), nil, &out)
	return out.Freed, err
}

// HoldSnapshot holds or releases a snapshot.
func (c *Client) HoldSnapshot(ctx context.Context, name string, held bool) error {
	return c.do(ctx, http.MethodPut, "/v1/snapshots/"+pathEscape(name), Snapshot{Held: held}, nil)
}

// CloneExport clones device (or DEVICE@SNAPSHOT) source as newName.
func (c *Client) CloneExport(ctx context.Context, source, newName string) error {
	return c.do(ctx, http.MethodPost, "/v1/exports/"+pathEscape(source)+"/clone", Clone{Name: newName}, nil)
}

// RestoreExport restores DEVICE from DEVICE@SNAPSHOT.
func (c *Client) RestoreExport(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPost, "/v1/exports/"+pathEscape(name)+"/restore", nil, nil)
}

// CloneFile clones the file at source (an absolute path, possibly under
// /.snapshots) as target.
func (c *Client) CloneFile(ctx context.Context, source, target string) error {
	return c.do(ctx, http.MethodPost, "/v1/files/clone", Clone{Source: source, Target: target}, nil)
}
