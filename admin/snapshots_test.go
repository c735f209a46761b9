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
	"zerofs/nbd"
	"zerofs/store"
)

// TestSnapshotAPI drives snapshots, clones and restores through the
// client, with the status codes of bad input, a snapshot in use and a
// fenced filesystem.
func TestSnapshotAPI(t *testing.T) {
	ctx := context.Background()
	st := store.NewMem()
	open := func() *fs.FS {
		f, err := fs.Open(ctx, fs.Options{
			Main: st, Dir: t.TempDir(), Password: "test password", KeyParams: crypt.TestParams,
			BatchAge: 50 * time.Millisecond, CheckpointInterval: -1, GCInterval: -1,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open()
	defer f.Close()
	var attached []nbd.Attachment
	srv := httptest.NewServer(Handler(f, Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Attachments: func(match func(string) bool) []nbd.Attachment {
			var out []nbd.Attachment
			for _, a := range attached {
				if match(a.Export) {
					out = append(out, a)
				}
			}
			return out
		}}))
	defer srv.Close()
	c := &Client{Base: srv.URL}
	status := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.CreateExport(ctx, "d", 1<<20))
	if _, err := c.CreateSnapshot(ctx, "s1", false); err != nil {
		t.Fatal(err)
	}
	must(c.CloneExport(ctx, "d@s1", "d2"))
	must(c.CloneFile(ctx, "/.snapshots/s1/.nbd/d", "/copy"))
	must(c.HoldSnapshot(ctx, "s1", true))
	list, err := c.Snapshots(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "s1" || !list[0].Held {
		t.Fatalf("snapshots %+v %v", list, err)
	}

	cases := []struct {
		name, method, path, body string
		want                     int
	}{
		{"bad snapshot name", "POST", "/v1/snapshots", `{"name":"a/b"}`, 400},
		{"name with @", "POST", "/v1/snapshots", `{"name":"a@b"}`, 400},
		{"too long", "POST", "/v1/snapshots", `{"name":"` + strings.Repeat("a", 65) + `"}`, 400},
		{"existing", "POST", "/v1/snapshots", `{"name":"s1"}`, 409},
		{"bad body", "POST", "/v1/snapshots", `{`, 400},
		{"delete unknown", "DELETE", "/v1/snapshots/nope", ``, 404},
		{"clone of unknown", "POST", "/v1/exports/d@nope/clone", `{"name":"x"}`, 404},
		{"clone over existing", "POST", "/v1/exports/d/clone", `{"name":"d2"}`, 409},
		{"restore without snapshot", "POST", "/v1/exports/d/restore", ``, 400},
		{"file clone of a relative path", "POST", "/v1/files/clone", `{"source":"x","target":"/y"}`, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := status(tc.method, tc.path, tc.body); got != tc.want {
				t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, got, tc.want)
			}
		})
	}

	// In use: deleting the snapshot, restoring the device.
	attached = []nbd.Attachment{{Export: "d@s1", Remote: "10.0.0.7:5000"}, {Export: "d", Remote: "10.0.0.8:5001"}}
	if _, err := c.DeleteSnapshot(ctx, "s1"); err == nil || !strings.Contains(err.Error(), "d@s1 attached by 10.0.0.7:5000") {
		t.Fatalf("delete of a snapshot in use: %v", err)
	}
	if err := c.RestoreExport(ctx, "d@s1"); err == nil || !strings.Contains(err.Error(), "d attached by 10.0.0.8:5001") {
		t.Fatalf("restore of a device in use: %v", err)
	}
	if got := status("DELETE", "/v1/snapshots/s1", ""); got != 409 {
		t.Fatalf("delete in use: %d, want 409", got)
	}
	attached = nil
	must(c.RestoreExport(ctx, "d@s1"))
	if _, err := c.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}

	// Fenced: another server took the bucket.
	if _, err := c.CreateSnapshot(ctx, "s2", false); err != nil {
		t.Fatal(err)
	}
	g := open()
	defer g.Close()
	for f.Err() == nil {
		f.Flush(ctx) // the next append finds the fence
		time.Sleep(10 * time.Millisecond)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/snapshots", `{"name":"s3"}`},
		{"DELETE", "/v1/snapshots/s2", ""},
		{"PUT", "/v1/snapshots/s2", `{"held":true}`},
		{"POST", "/v1/exports/d/clone", `{"name":"x"}`},
		{"POST", "/v1/exports/d@s2/restore", ""},
	} {
		if got := status(tc.method, tc.path, tc.body); got != 503 {
			t.Errorf("%s %s on a fenced server: %d, want 503", tc.method, tc.path, got)
		}
	}
}
