package nbd

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"zerofs/fs"
)

// nbdinfoJSON is the part of `nbdinfo --json` output the tests check.
type nbdinfoJSON struct {
	Protocol   string `json:"protocol"`
	Structured bool   `json:"structured"`
	Exports    []struct {
		Name         string   `json:"export-name"`
		Description  string   `json:"description"`
		Size         uint64   `json:"export-size"`
		Contexts     []string `json:"contexts"`
		ReadOnly     bool     `json:"is_read_only"`
		CanCache     bool     `json:"can_cache"`
		CanDF        bool     `json:"can_df"`
		CanFastZero  bool     `json:"can_fast_zero"`
		CanFlush     bool     `json:"can_flush"`
		CanFUA       bool     `json:"can_fua"`
		CanMultiConn bool     `json:"can_multi_conn"`
		CanTrim      bool     `json:"can_trim"`
		CanZero      bool     `json:"can_zero"`
		BlockMin     uint32   `json:"block_size_minimum"`
		BlockPref    uint32   `json:"block_size_preferred"`
		BlockMax     uint32   `json:"block_size_maximum"`
	} `json:"exports"`
}

func runNbdinfo(t *testing.T, args ...string) nbdinfoJSON {
	t.Helper()
	out := runTool(t, 30*time.Second, requireTool(t, "nbdinfo"), append([]string{"--json"}, args...)...)
	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo output is not JSON: %v\n%s", err, out)
	}
	return info
}

func TestNbdinfoListsExports(t *testing.T) {
	ctx := context.Background()
	f := openTestFS(t)
	mustCreateExport(t, f, "disk-a", 1<<30)
	mustCreateExport(t, f, "golden", 10<<20)
	// No owner write bit: a read-only export.
	mode := uint32(0o444)
	golden, err := lookupExportFile(ctx, f, "golden")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.SetAttr(ctx, fs.Root, golden.Ino, fs.SetAttrs{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, f, Options{})

	type want struct {
		size     uint64
		readOnly bool
	}
	check := func(t *testing.T, info nbdinfoJSON, wantExports map[string]want) {
		t.Helper()
		if info.Protocol != "newstyle-fixed" || !info.Structured {
			t.Errorf("protocol %q structured %v, want newstyle-fixed with structured replies", info.Protocol, info.Structured)
		}
		if len(info.Exports) != len(wantExports) {
			t.Fatalf("nbdinfo shows %d exports, want %d: %+v", len(info.Exports), len(wantExports), info.Exports)
		}
		for _, e := range info.Exports {
			w, ok := wantExports[e.Name]
			if !ok {
				t.Errorf("unexpected export %q", e.Name)
				continue
			}
			if e.Size != w.size {
				t.Errorf("%s: size %d, want %d", e.Name, e.Size, w.size)
			}
			if e.BlockMin != minBlockSize || e.BlockPref != preferredBlockSize || e.BlockMax != advertisedMaxPayload {
				t.Errorf("%s: block sizes %d/%d/%d, want %d/%d/%d", e.Name, e.BlockMin, e.BlockPref, e.BlockMax, minBlockSize, preferredBlockSize, advertisedMaxPayload)
			}
			if e.ReadOnly != w.readOnly {
				t.Errorf("%s: read-only %v, want %v", e.Name, e.ReadOnly, w.readOnly)
			}
			writable := !w.readOnly
			for _, flag := range []struct {
				name      string
				got, want bool
			}{
				{"can_flush", e.CanFlush, true},
				{"can_multi_conn", e.CanMultiConn, true},
				{"can_cache", e.CanCache, true},
				{"can_df", e.CanDF, true},
				{"can_fua", e.CanFUA, writable},
				{"can_trim", e.CanTrim, writable},
				{"can_zero", e.CanZero, writable},
				{"can_fast_zero", e.CanFastZero, writable},
			} {
				if flag.got != flag.want {
					t.Errorf("%s: %s is %v, want %v", e.Name, flag.name, flag.got, flag.want)
				}
			}
			if len(e.Contexts) != 1 || e.Contexts[0] != metaBaseAllocation {
				t.Errorf("%s: metadata contexts %q, want [%s]", e.Name, e.Contexts, metaBaseAllocation)
			}
		}
	}

	t.Run("list", func(t *testing.T) {
		check(t, runNbdinfo(t, "--list", "nbd://"+addr), map[string]want{
			"disk-a": {1 << 30, false},
			"golden": {10 << 20, true},
		})
	})
	t.Run("one export", func(t *testing.T) {
		check(t, runNbdinfo(t, nbdURI(addr, "disk-a")), map[string]want{"disk-a": {1 << 30, false}})
	})
	t.Run("created resized deleted without restart", func(t *testing.T) {
		mustCreateExport(t, f, "new", 5<<20)
		check(t, runNbdinfo(t, nbdURI(addr, "new")), map[string]want{"new": {5 << 20, false}})
		if err := ResizeExport(ctx, f, "new", 7<<20); err != nil {
			t.Fatal(err)
		}
		check(t, runNbdinfo(t, "--list", "nbd://"+addr), map[string]want{
			"disk-a": {1 << 30, false},
			"golden": {10 << 20, true},
			"new":    {7 << 20, false},
		})
		if err := DeleteExport(ctx, f, "new"); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := runToolErr(30*time.Second, "nbdinfo", nbdURI(addr, "new")); err == nil {
			t.Fatalf("nbdinfo on a deleted export succeeded:\n%s", out)
		} else {
			t.Logf("nbdinfo on the deleted export failed as expected: %s", stderr)
		}
	})
}
