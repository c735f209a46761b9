package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// StartVersityGW starts a versitygw S3 server on 127.0.0.1 backed by a fresh
// temp dir, waits until it answers, and stops it when the test ends. It
// returns the endpoint URL (http://127.0.0.1:port) and credentials. Tests
// call StartS3Server, which picks this unless ZEROFS_S3_SERVER says otherwise.
//
// The binary is <repo root>/.bin/versitygw (installed by
// scripts/install-test-deps.sh). If it is missing the test fails, unless
// ZEROFS_SKIP_S3=1, in which case it is skipped.
func StartVersityGW(t testing.TB) (endpoint, accessKey, secretKey string) {
	t.Helper()
	bin := serverBinary(t, "versitygw", "`make test` or scripts/install-test-deps.sh")
	dir := t.TempDir()
	endpoint = startRetrying(t, "versitygw", 1, func(ports []int) serverSpec {
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		cmd := exec.Command(bin, "--quiet", "--port", addr, "posix", dir)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
		// Any answer, even a 403 to an unsigned request, means it serves.
		return serverSpec{cmd: cmd, endpoint: "http://" + addr, ready: "http://" + addr, within: 15 * time.Second}
	})
	return endpoint, AccessKey, SecretKey
}
