package testutil

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// LogEnv names the environment variable that, set (to anything), makes
// Logger write everything, debug included, to stderr instead.
const LogEnv = "ZEROFS_TEST_LOG"

// Logger returns a logger for the code under test that writes warnings and
// errors through t.Log, so they show with the test that caused them.
//
// It forwards only while the test runs: once t's cleanup starts, records
// are dropped. Background goroutines (pebble, flushers, servers) may log
// after the test has completed, and t.Log then panics the whole binary
// ("Log in goroutine after Test... has completed"). Cleanups run last
// registered first, so a resource opened after Logger and closed in its own
// t.Cleanup still logs through t while it closes.
//
// With ZEROFS_TEST_LOG set it logs everything to stderr instead.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv(LogEnv) != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter forwards to t.Log until stop. The mutex is held across t.Logf,
// so stop cannot return (and the test complete) while a write is still
// logging.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// CaptureLogs returns a logger (every level) and a function that returns
// what it has logged so far; both are safe while goroutines log.
func CaptureLogs() (*slog.Logger, func() string) {
	b := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b.String
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
