// Package testutil holds helpers shared by zerofs's tests, notably a real S3
// server (versitygw, or MinIO) for integration tests.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"zerofs/store"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of the test servers; they guard nothing but a temp dir on
// 127.0.0.1. MinIO wants at least 3 characters for the user and 8 for the
// secret.
const (
	AccessKey = "zerofs-test"
	SecretKey = "zerofs-test-secret"
)

// SkipS3Env names the environment variable that, set to 1, turns "the S3
// server is not installed" from a test failure into a skip.
const SkipS3Env = "ZEROFS_SKIP_S3"

// ServerEnv names the environment variable that selects the S3 server the
// tests run against: "versitygw" (the default, also when unset) or "minio"
// (make test-minio).
const ServerEnv = "ZEROFS_S3_SERVER"

// portRange is where servers listen, away from the kernel's ephemeral range
// start so that parallel test binaries rarely pick the same port.
const portLo, portHi = 30000, 39999

// StartS3Server starts the S3 server that ZEROFS_S3_SERVER selects
// (StartVersityGW or StartMinIO) on 127.0.0.1, backed by a fresh temp dir,
// waits until it answers, and stops it when the test ends. It returns the
// endpoint URL (http://127.0.0.1:port) and credentials.
func StartS3Server(t testing.TB) (endpoint, accessKey, secretKey string) {
	t.Helper()
	switch v := os.Getenv(ServerEnv); v {
	case "", "versitygw":
		return StartVersityGW(t)
	case "minio":
		return StartMinIO(t)
	default:
		t.Fatalf("%s=%q: want versitygw (the default) or minio", ServerEnv, v)
		return "", "", ""
	}
}

// CreateBucket creates bucket on the server at endpoint and returns the
// s3:// URL of prefix in it and the Options to open it with. prefix may be "".
func CreateBucket(t testing.TB, endpoint, accessKey, secretKey, bucket, prefix string) (url string, opts store.Options) {
	t.Helper()
	client := s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s on %s: %v", bucket, endpoint, err)
	}
	url = "s3://" + bucket
	if prefix != "" {
		url += "/" + prefix
	}
	return url, Options(endpoint, accessKey, secretKey)
}

// Options returns store.Options for a test server.
func Options(endpoint, accessKey, secretKey string) store.Options {
	return store.Options{
		Region:          "us-east-1",
		Endpoint:        endpoint,
		AccessKeyID:     accessKey,
		SecretAccessKey: secretKey,
		AllowHTTP:       true,
	}
}

// S3Bucket starts a server, creates a bucket "zerofs-test" and returns the
// URL of prefix in it and the Options to open it with.
func S3Bucket(t testing.TB, prefix string) (url string, opts store.Options) {
	t.Helper()
	endpoint, ak, sk := StartS3Server(t)
	return CreateBucket(t, endpoint, ak, sk, "zerofs-test", prefix)
}

// serverBinary returns <repo root>/.bin/<name>. If it is missing the test
// fails, naming the script that installs it, unless ZEROFS_SKIP_S3=1, in
// which case it is skipped.
func serverBinary(t testing.TB, name, install string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	bin := filepath.Join(root, ".bin", name)
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("%s (the S3 server the S3 tests run against) is not installed at %s: "+
			"run %s to install it, or set %s=1 to skip S3 tests", name, bin, install, SkipS3Env)
		if os.Getenv(SkipS3Env) == "1" {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	return bin
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// freePorts returns n distinct ports that were free a moment ago. Another
// process may take one before the server binds it: startServer's callers
// retry with new ports when the server exits early.
func freePorts(n int) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for range 100 * n {
		port := portLo + rand.IntN(portHi-portLo+1)
		if seen[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		seen[port] = true
		if ports = append(ports, port); len(ports) == n {
			return ports, nil
		}
	}
	return nil, fmt.Errorf("no %d free ports in %d-%d", n, portLo, portHi)
}
