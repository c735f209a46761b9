package testutil

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

const loggerChildEnv = "ZEROFS_TESTUTIL_LOGGER_CHILD"

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv(loggerChildEnv) != "" {
		// All tests have completed: t.Log of any of them now panics.
		close(lateLogging.runDone)
		lateLogging.wg.Wait()
		fmt.Println("late logging done")
	}
	os.Exit(code)
}

// TestLoggerAfterTest runs TestLoggerChildOwner in a child process, whose
// goroutines log through the test's Logger while it runs, while its cleanup
// runs, and after the whole test run has completed, when t.Log panics
// ("Log in goroutine after ... has completed"; before that, a completed
// test's t.Log goes to its parent). The panic would kill the binary, hence
// the child process.
func TestLoggerAfterTest(t *testing.T) {
	if os.Getenv(loggerChildEnv) != "" {
		t.Skip("in the child")
	}
	p := Child{
		Run:  "^TestLoggerChildOwner$",
		Env:  []string{loggerChildEnv + "=1", LogEnv + "="},
		Args: []string{"-test.v"},
	}.Start(t)
	<-p.Exited()
	out := p.Output()
	if err := p.Err(); err != nil || !strings.Contains(out, "--- PASS: TestLoggerChildOwner") || !strings.Contains(out, "late logging done") {
		t.Fatalf("logging after the test ended: child failed (%v):\n%s", err, out)
	}
}

var lateLogging = struct {
	runDone chan struct{}
	wg      sync.WaitGroup
}{runDone: make(chan struct{})}

// TestLoggerChildOwner owns the logger; see TestLoggerAfterTest.
func TestLoggerChildOwner(t *testing.T) {
	if os.Getenv(loggerChildEnv) == "" {
		t.Skip("the child of TestLoggerAfterTest")
	}
	log := Logger(t)
	log.Warn("while the test runs")
	started := make(chan struct{})
	for range 4 {
		lateLogging.wg.Add(1)
		go func() {
			defer lateLogging.wg.Done()
			started <- struct{}{}
			for {
				log.Warn("from a background goroutine")
				select {
				case <-lateLogging.runDone:
					for range 100 {
						log.Error("after the test run")
					}
					return
				default:
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
}
