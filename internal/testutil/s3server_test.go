package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records how StartS3Server ends a test without ending this one.
type fakeTB struct {
	testing.TB
	outcome, msg string
}

func (f *fakeTB) Helper()                      {}
func (f *fakeTB) TempDir() string              { return os.TempDir() }
func (f *fakeTB) Fatal(args ...any)            { f.end("fail", fmt.Sprint(args...)) }
func (f *fakeTB) Fatalf(s string, args ...any) { f.end("fail", fmt.Sprintf(s, args...)) }
func (f *fakeTB) Skip(args ...any)             { f.end("skip", fmt.Sprint(args...)) }
func (f *fakeTB) Skipf(s string, args ...any)  { f.end("skip", fmt.Sprintf(s, args...)) }
func (f *fakeTB) end(outcome, msg string) {
	f.outcome, f.msg = outcome, msg
	runtime.Goexit()
}

func startIn(t *testing.T, dir string) *fakeTB {
	t.Chdir(dir)
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		StartS3Server(f)
	}()
	<-done
	return f
}

func TestMissingBinary(t *testing.T) {
	dir := t.TempDir() // a "repo" without .bin/
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ server, bin, script string }{
		{"", "versitygw", "scripts/install-test-deps.sh"},
		{"versitygw", "versitygw", "scripts/install-test-deps.sh"},
		{"minio", "minio", "scripts/install-minio.sh"},
	} {
		t.Setenv(ServerEnv, tc.server)
		t.Setenv(SkipS3Env, "")
		f := startIn(t, sub)
		if f.outcome != "fail" || !strings.Contains(f.msg, tc.script) ||
			!strings.Contains(f.msg, filepath.Join(dir, ".bin", tc.bin)) {
			t.Fatalf("%s=%q without the binary: %s %q; want a failure naming %s and %s",
				ServerEnv, tc.server, f.outcome, f.msg, filepath.Join(dir, ".bin", tc.bin), tc.script)
		}

		t.Setenv(SkipS3Env, "1")
		f = startIn(t, sub)
		if f.outcome != "skip" {
			t.Fatalf("%s=%q without the binary and with %s=1: %s %q; want a skip", ServerEnv, tc.server, SkipS3Env, f.outcome, f.msg)
		}
	}
}

func TestUnknownServer(t *testing.T) {
	t.Setenv(ServerEnv, "ceph")
	t.Setenv(SkipS3Env, "1") // a typo must not turn into a silent skip
	f := startIn(t, t.TempDir())
	if f.outcome != "fail" || !strings.Contains(f.msg, "ceph") || !strings.Contains(f.msg, "minio") {
		t.Fatalf("%s=ceph: %s %q; want a failure naming the value and the choices", ServerEnv, f.outcome, f.msg)
	}
}
