package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serverSpec is one attempt at starting a test server.
type serverSpec struct {
	cmd      *exec.Cmd // not yet started; Stdout and Stderr unset
	endpoint string    // what the caller gets: http://127.0.0.1:port
	// ready is polled until it answers, with a status readyStatus accepts
	// (nil: any status, any answer means the server listens).
	ready       string
	readyStatus func(int) bool
	within      time.Duration // how long it may take
}

// exitedEarly: the server exited before it answered, typically because
// another process took its port between freePorts and its bind. Worth
// another attempt on other ports.
type exitedEarly struct{ err error }

func (e *exitedEarly) Error() string { return e.err.Error() }

// startRetrying starts the server name with spec(ports), nports fresh ports
// per attempt, retrying while it exits before serving (a port race). It
// fails the test with the server's output if no attempt comes up.
func startRetrying(t testing.TB, name string, nports int, spec func(ports []int) serverSpec) (endpoint string) {
	t.Helper()
	var lastErr error
	for range 5 {
		ports, err := freePorts(nports)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := spec(ports)
		err = startServer(t, name, s)
		if err == nil {
			return s.endpoint
		}
		lastErr = err
		var early *exitedEarly
		if !errors.As(err, &early) {
			break
		}
	}
	t.Fatalf("%s: %v", name, lastErr)
	return ""
}

// startServer runs s.cmd and waits until s.ready answers. If the server
// exits first (port taken) or does not answer within s.within, it returns an
// error with the server's output. Otherwise the server is stopped when the
// test ends, its output logged if the test failed.
func startServer(t testing.TB, name string, s serverSpec) error {
	cmd := s.cmd
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
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
	exitErr := func(err error) error {
		return &exitedEarly{fmt.Errorf("%s at %s exited before serving (%v): %s", name, s.endpoint, err, out.String())}
	}

	client := &http.Client{Timeout: time.Second}
	answers := func() bool {
		resp, err := client.Get(s.ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return s.readyStatus == nil || s.readyStatus(resp.StatusCode)
	}
	deadline := time.Now().Add(s.within)
	for !answers() {
		select {
		case err := <-exited:
			return exitErr(err)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("%s at %s did not answer %s within %v: %s", name, s.endpoint, s.ready, s.within, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// What answered may be another process that took the port first, while
	// ours is failing to bind it: give ours a moment to exit if it does.
	select {
	case err := <-exited:
		return exitErr(err)
	case <-time.After(100 * time.Millisecond):
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Keep the tail (the requests that led to a failure) within bounds: a
	// server may log every request.
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
