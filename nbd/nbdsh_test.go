package nbd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// nbdshScript drives libnbd with strict mode off, so it sends requests a
// careful client never would. For each case it records the errno the server
// replied (0 for success), then proves the server still serves a fresh
// connection and the same connection still works. It prints one JSON object.
const nbdshScript = `
import json, sys, nbd

uri, ro_uri = sys.argv[1], sys.argv[2]
size = 16 << 20

def connect(u):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(u)
    return h

def alive():
    h = connect(uri)
    h.pwrite(b"alive", size - 4096)
    assert h.pread(5, size - 4096) == b"alive"
    h.shutdown()

h = connect(uri)
ro = connect(ro_uri)
results = {}

def case(name, fn, conn=None):
    conn = conn or h
    try:
        fn()
        results[name] = 0
    except nbd.Error as e:
        results[name] = e.errnum if e.errnum is not None else -1
    # The connection and the server both go on.
    conn.pread(512, 0)
    alive()

big = 33 << 20  # above the 32 MiB this server serves (Options.MaxPayload)
case("read past the end", lambda: h.pread(20, size - 10))
case("write past the end", lambda: h.pwrite(b"x" * 20, size - 10))
case("trim past the end", lambda: h.trim(20, size - 10))
case("zero past the end", lambda: h.zero(20, size - 10))
case("cache past the end", lambda: h.cache(20, size - 10))
case("block status past the end", lambda: h.block_status(20, size, lambda *a: 0))
case("read of 0 bytes", lambda: h.pread(0, 4096))
case("write of 0 bytes", lambda: h.pwrite(b"", 4096))
case("trim of 0 bytes", lambda: h.trim(0, 4096))
case("read above the maximum payload", lambda: h.pread(big, 0))
case("write above the maximum payload", lambda: h.pwrite(b"\0" * big, 0))
case("read with a block-status flag", lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_REQ_ONE))
case("trim with NO_HOLE", lambda: h.trim(512, 0, flags=nbd.CMD_FLAG_NO_HOLE))
case("fast zero with NO_HOLE", lambda: h.zero(4096, 0, flags=nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE))
case("fast zero", lambda: h.zero(1 << 20, 0, flags=nbd.CMD_FLAG_FAST_ZERO))
case("unaligned write", lambda: h.pwrite(b"abc", 4097))
case("write to a read-only export", lambda: ro.pwrite(b"x", 0), ro)
case("trim on a read-only export", lambda: ro.trim(512, 0), ro)
case("zero on a read-only export", lambda: ro.zero(512, 0), ro)
case("flush", lambda: h.flush())
h.shutdown()
ro.shutdown()
print(json.dumps(results))
`

func TestNbdshMalformedRequests(t *testing.T) {
	requirePythonNBD(t)
	// Serving no more than it advertises: libnbd itself refuses requests
	// of 64 MiB and more, so the default limit cannot be crossed from it
	// (TestLargeRequests crosses it with a raw client).
	env := newProtoEnv(t, Options{MaxPayload: advertisedMaxPayload})
	script := filepath.Join(t.TempDir(), "malformed.py")
	if err := os.WriteFile(script, []byte(nbdshScript), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runTool(t, 2*time.Minute, python, script, nbdURI(env.addr, "disk"), nbdURI(env.addr, "ro"))
	var got map[string]int
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("script output: %v\n%s", err, out)
	}
	want := map[string]syscall.Errno{
		"read past the end":               syscall.EINVAL,
		"write past the end":              syscall.ENOSPC,
		"trim past the end":               syscall.EINVAL,
		"zero past the end":               syscall.ENOSPC,
		"cache past the end":              syscall.EINVAL,
		"block status past the end":       syscall.EINVAL,
		"read of 0 bytes":                 0,
		"write of 0 bytes":                0,
		"trim of 0 bytes":                 0,
		"read above the maximum payload":  syscall.EOVERFLOW, // structured replies: retry smaller
		"write above the maximum payload": syscall.EINVAL,
		"read with a block-status flag":   syscall.EINVAL,
		"trim with NO_HOLE":               syscall.EINVAL,
		"fast zero with NO_HOLE":          syscall.ENOTSUP,
		"fast zero":                       0,
		"unaligned write":                 0,
		"write to a read-only export":     syscall.EPERM,
		"trim on a read-only export":      syscall.EPERM,
		"zero on a read-only export":      syscall.EPERM,
		"flush":                           0,
	}
	t.Logf("errnos from libnbd: %v", got)
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: no result", name)
			continue
		}
		if syscall.Errno(g) != w {
			t.Errorf("%s: errno %d (%v), want %d (%v)", name, g, syscall.Errno(g), int(w), w)
		}
	}
}
