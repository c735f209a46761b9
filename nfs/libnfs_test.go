package nfs

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zerofs/internal/testutil"
)

// Real clients: libnfs's command-line tools (Debian libnfs-utils). There is
// no kernel NFS client on the test machines; libnfs is a complete NFSv3
// client in user space, with its own MOUNT, READDIRPLUS and WRITE/COMMIT.

// libnfsTool returns the path of a libnfs tool, failing the test with
// instructions when it is missing.
func libnfsTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (package libnfs-utils): run scripts/install-test-deps.sh (make test runs it)", name)
	}
	return p
}

// nfsURL is a libnfs URL for path on the fixture's server.
func nfsURL(addr, path string, extra ...string) string {
	_, port, _ := net.SplitHostPort(addr)
	q := []string{"nfsport=" + port, "mountport=" + port, "version=3"}
	q = append(q, extra...)
	return fmt.Sprintf("nfs://127.0.0.1%s?%s", path, strings.Join(q, "&"))
}

func runTool(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(libnfsTool(t, name), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
		}
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s: no result after %v\nstderr: %s", name, strings.Join(args, " "), timeout, errb.String())
	}
	return out.String()
}

// TestLibnfsRoundTrip copies a 200 MiB file in and out with nfs-cp, reads a
// small one with nfs-cat, and lists a tree with nfs-ls -R.
func TestLibnfsRoundTrip(t *testing.T) {
	for _, tool := range []string{"nfs-cp", "nfs-cat", "nfs-ls"} {
		libnfsTool(t, tool)
	}
	f := newFixture(t, Options{})
	tmp := t.TempDir()

	src := filepath.Join(tmp, "src.bin")
	size := 200 << 20
	if testing.Short() {
		size = 16 << 20
	}
	writeRandomFile(t, src, size)
	start := time.Now()
	runTool(t, 5*time.Minute, "nfs-cp", src, nfsURL(f.addr, "//big.bin"))
	t.Logf("nfs-cp in: %d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))
	dst := filepath.Join(tmp, "dst.bin")
	start = time.Now()
	runTool(t, 5*time.Minute, "nfs-cp", nfsURL(f.addr, "//big.bin"), dst)
	t.Logf("nfs-cp out: %d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))
	if testutil.FileSHA256(t, src) != testutil.FileSHA256(t, dst) {
		t.Fatal("file copied through NFS differs")
	}
	c := f.client(0, 0)
	if _, fh, a := c.lookup(c.root, "big.bin"); a.size != uint64(size) || fh == nil {
		t.Fatalf("big.bin has size %d", a.size)
	}

	// A tree, made over the wire by our client; listed by libnfs.
	tree := c.mustMkdir(c.root, "tree")
	a := c.mustMkdir(tree, "a")
	b := c.mustMkdir(a, "b")
	c.mustWrite(c.mustCreate(b, "deep.txt"), 0, []byte("deep\n"))
	c.mustWrite(c.mustCreate(a, "one.txt"), 0, []byte("one\n"))
	c.mustWrite(c.mustCreate(tree, "two.txt"), 0, []byte("two\n"))
	c.mustWrite(c.mustCreate(c.root, "top.txt"), 0, []byte("top\n"))
	c.symlink(tree, "link", "two.txt")

	// libnfs mounts the directory part of a file URL, so reading a file
	// below the root mounts that subdirectory.
	if got := runTool(t, time.Minute, "nfs-cat", nfsURL(f.addr, "//top.txt")); got != "top\n" {
		t.Fatalf("nfs-cat: %q", got)
	}
	if got := runTool(t, time.Minute, "nfs-cat", nfsURL(f.addr, "//tree/a/b/deep.txt")); got != "deep\n" {
		t.Fatalf("nfs-cat of a file below the root: %q", got)
	}
	out := runTool(t, time.Minute, "nfs-ls", "-R", nfsURL(f.addr, "/", "auto-traverse-mounts=0"))
	listed := map[string]string{} // path -> the line's first field (type and mode)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if i := strings.Index(line, " -> "); i >= 0 {
			line = line[:i] // symlink: "path -> target"
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		listed[fields[len(fields)-1]] = fields[0]
	}
	for path, mode := range map[string]string{
		"big.bin": "-rw-rw----", "top.txt": "-rw-r--r--", "tree": "drwxr-xr-x", "tree/a": "drwxr-xr-x",
		"tree/a/b": "drwxr-xr-x", "tree/a/b/deep.txt": "-rw-r--r--", "tree/a/one.txt": "-rw-r--r--",
		"tree/two.txt": "-rw-r--r--", "tree/link": "lrwxrwxrwx",
	} {
		if listed[path] != mode {
			t.Errorf("nfs-ls -R lists %q as %q, want %q", path, listed[path], mode)
		}
	}
	if t.Failed() {
		t.Fatalf("nfs-ls -R output:\n%s", out)
	}

	// Without auto-traverse-mounts=0, libnfs lists the exports (MOUNT
	// EXPORT) to look for nested ones: that works too.
	if out := runTool(t, time.Minute, "nfs-ls", nfsURL(f.addr, "/")); !strings.Contains(out, "top.txt") {
		t.Fatalf("nfs-ls with mount traversal:\n%s", out)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// writeRandomFile writes n pseudo-random (incompressible) bytes.
func writeRandomFile(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := mrand.NewChaCha8([32]byte{1, 2, 3})
	buf := make([]byte, 1<<20)
	for done := 0; done < n; done += len(buf) {
		rng.Read(buf)
		if _, err := f.Write(buf[:min(len(buf), n-done)]); err != nil {
			t.Fatal(err)
		}
	}
}
