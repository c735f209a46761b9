// Package admin is zerofs's local HTTP endpoint: the JSON API the CLI uses to
// manage NBD devices and read the server's status, and the Prometheus
// /metrics page. It listens on loopback by default and has no authentication:
// anyone who can reach it can create and delete devices.
//
//	GET    /v1/status              Status (fs.Status, and the NBD TLS certificate)
//	GET    /v1/exports             [{"name":..., "size":...}]
//	POST   /v1/exports             {"name":..., "size":...}  create
//	PUT    /v1/exports/{name}      {"size":...}              resize
//	DELETE /v1/exports/{name}                                delete
//	POST   /v1/exports/{name}/clear                          end an interruption (fs/marks.go)
//	POST   /v1/exports/{name}/clone  {"name": NEW}           clone a device or DEVICE@SNAPSHOT
//	POST   /v1/exports/{name}/restore                        DEVICE@SNAPSHOT: put the snapshot's content back
//	GET    /v1/snapshots           [Snapshot]
//	POST   /v1/snapshots           {"name":..., "held":...}  create
//	DELETE /v1/snapshots/{name}                              delete
//	PUT    /v1/snapshots/{name}    {"held": true|false}      hold or release
//	POST   /v1/files/clone         {"source": PATH, "target": PATH}  clone a file (PATH may be in /.snapshots)
//	GET    /metrics                Prometheus text format (when a handler is given)
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"syscall"

	"zerofs/fs"
	"zerofs/internal/pki"
	"zerofs/nbd"
)

// Config is what the admin endpoint serves besides the filesystem.
type Config struct {
	// Metrics, if not nil, serves /metrics.
	Metrics http.Handler
	Log     *slog.Logger
	// TLSStatus, if set, describes the NBD server's TLS certificate for
	// GET /v1/status.
	TLSStatus func() pki.Status
	// Attachments, if set, says who has an export attached (the NBD
	// servers' Attachments), asked before a snapshot is deleted or a
	// device restored.
	Attachments func(match func(export string) bool) []nbd.Attachment
}

// Handler returns the admin HTTP handler for f.
func Handler(f *fs.FS, c Config) http.Handler {
	mux := http.NewServeMux()
	h := &handler{f: f, log: c.Log, tlsStatus: c.TLSStatus, attachments: c.Attachments}
	metrics := c.Metrics
	mux.HandleFunc("GET /v1/status", h.status)
	mux.HandleFunc("GET /v1/exports", h.listExports)
	mux.HandleFunc("POST /v1/exports", h.createExport)
	mux.HandleFunc("PUT /v1/exports/{name}", h.resizeExport)
	mux.HandleFunc("DELETE /v1/exports/{name}", h.deleteExport)
	mux.HandleFunc("POST /v1/exports/{name}/clear", h.clearExport)
	mux.HandleFunc("POST /v1/exports/{name}/clone", h.cloneExport)
	mux.HandleFunc("POST /v1/exports/{name}/restore", h.restoreExport)
	mux.HandleFunc("GET /v1/snapshots", h.listSnapshots)
	mux.HandleFunc("POST /v1/snapshots", h.createSnapshot)
	mux.HandleFunc("DELETE /v1/snapshots/{name}", h.deleteSnapshot)
	mux.HandleFunc("PUT /v1/snapshots/{name}", h.holdSnapshot)
	mux.HandleFunc("POST /v1/files/clone", h.cloneFile)
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}

type handler struct {
	f           *fs.FS
	log         *slog.Logger
	tlsStatus   func() pki.Status
	attachments func(match func(export string) bool) []nbd.Attachment
}

// Status is the reply to GET /v1/status: the filesystem's status and, when
// NBD serves TLS, its certificate.
type Status struct {
	fs.Status
	NBDTLS *pki.Status `json:"nbd_tls,omitempty"`
}

// Export is one NBD device as the API shows it.
type Export struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
	// Interrupted: the export may have lost acknowledged writes when the
	// last run ended, and its I/O fails until it is cleared.
	Interrupted bool `json:"interrupted,omitempty"`
}

type apiError struct {
	Error string `json:"error"`
}

func (h *handler) reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (h *handler) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch fs.Errno(err) {
	case syscall.ENOENT:
		code = http.StatusNotFound
	case syscall.EEXIST, syscall.EBUSY:
		code = http.StatusConflict
	case syscall.EINVAL, syscall.ENAMETOOLONG, syscall.EFBIG:
		code = http.StatusBadRequest
	case syscall.EROFS:
		code = http.StatusServiceUnavailable
	}
	h.reply(w, code, apiError{Error: err.Error()})
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	s := Status{Status: h.f.Status()}
	if h.tlsStatus != nil {
		st := h.tlsStatus()
		s.NBDTLS = &st
	}
	h.reply(w, http.StatusOK, s)
}

func (h *handler) listExports(w http.ResponseWriter, r *http.Request) {
	list, err := nbd.ListExports(r.Context(), h.f)
	if err != nil {
		h.fail(w, err)
		return
	}
	out := make([]Export, 0, len(list))
	for _, e := range list {
		out = append(out, Export{Name: e.Name, Size: e.Size, Interrupted: e.Interrupted})
	}
	h.reply(w, http.StatusOK, out)
}

func (h *handler) createExport(w http.ResponseWriter, r *http.Request) {
	var e Export
	if !h.decode(w, r, &e, `{"name": ..., "size": ...}`) {
		return
	}
	if err := nbd.CreateExport(r.Context(), h.f, e.Name, e.Size); err != nil {
		h.fail(w, err)
		return
	}
	if err := h.f.Flush(r.Context()); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("created NBD device", "name", e.Name, "size", e.Size)
	h.reply(w, http.StatusCreated, e)
}

func (h *handler) resizeExport(w http.ResponseWriter, r *http.Request) {
	var e Export
	if !h.decode(w, r, &e, `{"size": ...}`) {
		return
	}
	e.Name = r.PathValue("name")
	if err := nbd.ResizeExport(r.Context(), h.f, e.Name, e.Size); err != nil {
		h.fail(w, err)
		return
	}
	if err := h.f.Flush(r.Context()); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("resized NBD device", "name", e.Name, "size", e.Size)
	h.reply(w, http.StatusOK, e)
}

// Cleared is the reply to POST /v1/exports/{name}/clear.
type Cleared struct {
	Name string `json:"name"`
	// Cleared is false if the export was not interrupted: nothing changed.
	Cleared bool `json:"cleared"`
}

func (h *handler) clearExport(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := nbd.ClearExport(r.Context(), h.f, name)
	if errors.Is(err, fs.ErrNotInterrupted) {
		h.reply(w, http.StatusOK, Cleared{Name: name})
		return
	}
	if err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("cleared NBD device's interruption", "name", name)
	h.reply(w, http.StatusOK, Cleared{Name: name, Cleared: true})
}

func (h *handler) deleteExport(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := nbd.DeleteExport(r.Context(), h.f, name); err != nil {
		h.fail(w, err)
		return
	}
	if err := h.f.Flush(r.Context()); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("deleted NBD device", "name", name)
	h.reply(w, http.StatusOK, Export{Name: name})
}

// Client calls a running server's admin endpoint.
type Client struct {
	Base string // "http://127.0.0.1:7311"
	HTTP *http.Client
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd *bytesReader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = &bytesReader{b: b}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd.reader())
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the zerofs admin endpoint at %s (is zerofs running, and is [servers.admin] address right?): %w", c.Base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

func (c *Client) Exports(ctx context.Context) ([]Export, error) {
	var out []Export
	return out, c.do(ctx, http.MethodGet, "/v1/exports", nil, &out)
}

func (c *Client) CreateExport(ctx context.Context, name string, size uint64) error {
	return c.do(ctx, http.MethodPost, "/v1/exports", Export{Name: name, Size: size}, nil)
}

func (c *Client) ResizeExport(ctx context.Context, name string, size uint64) error {
	return c.do(ctx, http.MethodPut, "/v1/exports/"+pathEscape(name), Export{Size: size}, nil)
}

func (c *Client) DeleteExport(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/exports/"+pathEscape(name), nil, nil)
}

// ClearExport ends export name's interruption (POST /v1/exports/{name}/clear)
// and says whether there was one.
func (c *Client) ClearExport(ctx context.Context, name string) (cleared bool, err error) {
	var out Cleared
	err = c.do(ctx, http.MethodPost, "/v1/exports/"+pathEscape(name)+"/clear", nil, &out)
	return out.Cleared, err
}
