// Package testutil holds helpers shared by zerofs's tests, notably a real S3
// server (versitygw) for integration tests.
package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zerofs/store"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of the test gateways; they guard nothing but a temp dir on
// 127.0.0.1.
const (
	AccessKey = "zerofs-test"
	SecretKey = "zerofs-test-secret"
)

// SkipS3Env names the environment variable that, set to 1, turns "versitygw
// is not installed" from a test failure into a skip.
const SkipS3Env = "ZEROFS_SKIP_S3"

// portRange is where gateways listen, away from the kernel's ephemeral range
// start so that parallel test binaries rarely pick the same port.
const portLo, portHi = 30000, 39999

// StartVersityGW starts a versitygw S3 server on 127.0.0.1 backed by a fresh
// temp dir, waits until it answers, and stops it when the test ends. It
// returns the endpoint URL (http://127.0.0.1:port) and credentials.
//
// The binary is <repo root>/.bin/versitygw (installed by
// scripts/install-test-deps.sh). If it is missing the test fails, unless
// ZEROFS_SKIP_S3=1, in which case it is skipped.
func StartVersityGW(t testing.TB) (endpoint, accessKey, secretKey string) {
	t.Helper()
	bin := versityBinary(t)
	dir := t.TempDir()
	var lastErr error
	for range 5 { // another process may take the port between probe and bind
		port, err := freePort()
		if err != nil {
			t.Fatalf("versitygw: %v", err)
		}
		endpoint, err := startGateway(t, bin, dir, port)
		if err == nil {
			return endpoint, AccessKey, SecretKey
		}
		lastErr = err
	}
	t.Fatalf("versitygw: %v", lastErr)
	return "", "", ""
}

// CreateBucket creates bucket on the gateway at endpoint and returns the
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

// Options returns store.Options for a test gateway.
func Options(endpoint, accessKey, secretKey string) store.Options {
	return store.Options{
		Region:          "us-east-1",
		Endpoint:        endpoint,
		AccessKeyID:     accessKey,
		SecretAccessKey: secretKey,
		AllowHTTP:       true,
	}
}

// S3Bucket starts a gateway, creates a bucket "zerofs-test" and returns the
// URL of prefix in it and the Options to open it with.
func S3Bucket(t testing.TB, prefix string) (url string, opts store.Options) {
	t.Helper()
	endpoint, ak, sk := StartVersityGW(t)
	return CreateBucket(t, endpoint, ak, sk, "zerofs-test", prefix)
}

func versityBinary(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	bin := filepath.Join(root, ".bin", "versitygw")
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("versitygw (the S3 server the S3 tests run against) is not installed at %s: "+
			"run `make test` or scripts/install-test-deps.sh to install it, or set %s=1 to skip S3 tests", bin, SkipS3Env)
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

func freePort() (int, error) {
	for range 100 {
		port := portLo + rand.IntN(portHi-portLo+1)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d", portLo, portHi)
}

// startGateway runs versitygw on port and waits for it to answer HTTP. If it
// exits first (port taken) or does not answer in time, it returns an error
// with the gateway's output.
func startGateway(t testing.TB, bin, dir string, port int) (string, error) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--port", addr, "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}

	endpoint := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return "", fmt.Errorf("versitygw on %s exited before serving (%v): %s", addr, err, out.String())
		default:
		}
		if resp, err := client.Get(endpoint); err == nil {
			resp.Body.Close()
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("versitygw output:\n%s", out.String())
				}
			})
			return endpoint, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("versitygw on %s did not answer within 15s: %s", addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Keep the tail (the requests that led to a failure) within bounds: the
	// gateway logs every request.
	if b.buf.Len() > 256<<10 {
		tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-128<<10:]...)
		b.buf.Reset()
		b.buf.WriteString("[... earlier output dropped ...]\n")
		b.buf.Write(tail)
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.String())
}
