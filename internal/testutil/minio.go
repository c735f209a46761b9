package testutil

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// StartMinIO starts a MinIO server (single drive) on 127.0.0.1 backed by a
// fresh temp dir, waits until it is ready for S3 requests, and stops it when
// the test ends. It returns the endpoint URL (http://127.0.0.1:port) and
// credentials. Tests call StartS3Server, which picks this when
// ZEROFS_S3_SERVER=minio (make test-minio).
//
// The binary is <repo root>/.bin/minio (installed by
// scripts/install-minio.sh; MinIO is AGPL and only ever run as a separate
// process). If it is missing the test fails, unless ZEROFS_SKIP_S3=1, in
// which case it is skipped.
func StartMinIO(t testing.TB) (endpoint, accessKey, secretKey string) {
	t.Helper()
	bin := serverBinary(t, "minio", "`make test-minio` or scripts/install-minio.sh")
	endpoint = startRetrying(t, "minio", 2, func(ports []int) serverSpec {
		dir := t.TempDir() // fresh per attempt: a failed one may leave a half-made drive
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		console := "127.0.0.1:" + strconv.Itoa(ports[1])
		cmd := exec.Command(bin, "server", "--address", addr, "--console-address", console,
			"--certs-dir", filepath.Join(dir, "certs"), // not ~/.minio/certs
			filepath.Join(dir, "data"))
		cmd.Env = append(withoutMinIOEnv(os.Environ()),
			"MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey,
			"MINIO_UPDATE=off")
		endpoint := "http://" + addr
		return serverSpec{
			cmd:      cmd,
			endpoint: endpoint,
			// /minio/health/live answers 200 before the object layer is up;
			// the cluster check waits for it, IAM and bucket metadata.
			ready:       endpoint + "/minio/health/cluster",
			readyStatus: func(code int) bool { return code == http.StatusOK },
			within:      HangBound,
		}
	})
	return endpoint, AccessKey, SecretKey
}

// withoutMinIOEnv drops MINIO_* variables of the caller's environment
// (MINIO_DOMAIN, MINIO_VOLUMES, …), which would change what the test server
// is.
func withoutMinIOEnv(env []string) []string {
	var kept []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MINIO_") {
			kept = append(kept, kv)
		}
	}
	return kept
}
