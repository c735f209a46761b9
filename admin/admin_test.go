package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/store"
)

// TestExportSizeRules: the API refuses an export size that is not a
// multiple of 4096, naming the nearest valid sizes, with 400 Bad Request,
// for create and resize alike (nbd.ValidateExportSize decides).
func TestExportSizeRules(t *testing.T) {
	ctx := context.Background()
	f, err := fs.Open(ctx, fs.Options{
		Main: store.NewMem(), Dir: t.TempDir(), Password: "test password", KeyParams: crypt.TestParams,
		BatchAge: 50 * time.Millisecond, CheckpointInterval: -1, GCInterval: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := httptest.NewServer(Handler(f, Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	c := &Client{Base: srv.URL}

	cases := []struct {
		name string
		call func() error
		want string // "" for success
	}{
		{"create 1000001", func() error { return c.CreateExport(ctx, "a", 1000001) }, "use 999424 (976K) or 1003520 (980K)"},
		{"create 64M", func() error { return c.CreateExport(ctx, "a", 64<<20) }, ""},
		{"resize 100", func() error { return c.ResizeExport(ctx, "a", 100) }, "use 4096 (4K)"},
		{"resize 128M", func() error { return c.ResizeExport(ctx, "a", 128<<20) }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "not a multiple of 4096") {
				t.Fatalf("%v, want an error saying %q", err, tc.want)
			}
		})
	}
	list, err := c.Exports(ctx)
	if err != nil || len(list) != 1 || list[0].Size != 128<<20 {
		t.Fatalf("exports %+v %v", list, err)
	}

	// The status code, seen raw.
	resp, err := http.Post(srv.URL+"/v1/exports", "application/json", strings.NewReader(`{"name":"b","size":4097}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
}
