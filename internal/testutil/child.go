package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child processes.
//
// A test that kills a process with SIGKILL (to test crash recovery), or that
// must survive a panic that would take down the test binary, runs the code
// in a child: this test binary again, in a mode selected by an environment
// variable that the child's test function (or TestMain) checks. The child
// talks to the parent by printing lines on stdout ("listening ADDR",
// "flushed N"), which the parent waits for.
//
// In the parent:
//
//	p := testutil.Child{Run: "^TestServerProcess$", Env: []string{"ZEROFS_X_CHILD=1"}}.Start(t)
//	line, err := p.WaitLine(time.Minute, func(l string) bool { return strings.HasPrefix(l, "listening ") })
//	if err != nil {
//		t.Fatalf("%v\n%s", err, p.Output())
//	}
//	... use the server ...
//	if err := p.Kill(); err != nil { // SIGKILL; an error if it had died on its own
//		t.Fatalf("%v\n%s", err, p.Output())
//	}
//
// In the child:
//
//	func TestServerProcess(t *testing.T) {
//		if os.Getenv("ZEROFS_X_CHILD") != "1" {
//			t.Skip("the child of TestX")
//		}
//		...
//		fmt.Println("listening", ln.Addr())
//		...
//	}

// Child describes a run of this test binary as a child process.
type Child struct {
	// Run is the -test.run pattern selecting the child's test. "" means
	// "^$", no test: for a child that TestMain dispatches on Env.
	Run string
	// Env is added to the environment (KEY=value), typically the variable
	// that selects the child mode and the child's parameters.
	Env []string
	// Args are more test flags, such as "-test.v" or "-test.timeout=5m".
	// -test.count=1 is always passed.
	Args []string
}

// Command returns the command that runs the child. On Linux the child gets
// SIGKILL if the test binary dies, so no orphan outlives a crashed test.
func (c Child) Command() *exec.Cmd {
	run := c.Run
	if run == "" {
		run = "^$"
	}
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=" + run, "-test.count=1"}, c.Args...)...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.SysProcAttr = childProcAttr()
	return cmd
}

// Start starts the child; see the package function Start.
func (c Child) Start(t testing.TB) *Proc {
	t.Helper()
	return Start(t, c.Command())
}

// ExitWithParent, called in a child, exits the child with status 3 when the
// parent goes away: Start gives the child a stdin pipe that the parent
// holds open until the child has exited. It complements the SIGKILL on the
// parent's death that Command arranges on Linux only.
func ExitWithParent() {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
}

// Proc is a running process started by Start.
type Proc struct {
	cmd    *exec.Cmd
	stdin  io.Closer // our end of its stdin pipe; nil if the caller set Stdin
	exited chan struct{}
	err    error // Wait's result, once exited is closed

	mu      sync.Mutex
	lines   []string // stdout and stderr, one line each, in the order written
	partial []byte
	changed chan struct{} // closed (and replaced) when a line arrives

	killOnce sync.Once
	killErr  error
}

// Start starts cmd, whose Stdout and Stderr must be unset: they go into one
// log of lines, in the order the process writes them, which WaitLine and
// LastLine search and Output returns. Unless cmd.Stdin is set, the process
// reads a pipe that stays open until it exits (see ExitWithParent). The
// process is killed (SIGKILL) at the test's cleanup if it still runs. Start
// fails the test if cmd cannot start.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	if cmd.Stdout != nil || cmd.Stderr != nil {
		t.Fatalf("testutil.Start: %s: Stdout and Stderr must be unset", cmd.Path)
	}
	p := &Proc{cmd: cmd, exited: make(chan struct{}), changed: make(chan struct{})}
	// The same writer for both: exec then uses one pipe, so stdout and
	// stderr lines interleave as written.
	cmd.Stdout, cmd.Stderr = (*procLog)(p), (*procLog)(p)
	var childStdin *os.File
	if cmd.Stdin == nil {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin, childStdin, p.stdin = r, r, w
	}
	if cmd.WaitDelay == 0 {
		// A grandchild holding the output pipe must not hang Wait.
		cmd.WaitDelay = 10 * time.Second
	}
	err := cmd.Start()
	if childStdin != nil {
		childStdin.Close()
	}
	if err != nil {
		if p.stdin != nil {
			p.stdin.Close()
		}
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		if len(p.partial) > 0 {
			p.lines = append(p.lines, string(p.partial))
			p.partial = nil
		}
		p.mu.Unlock()
		if p.stdin != nil {
			p.stdin.Close()
		}
		close(p.exited)
	}()
	t.Cleanup(func() { p.Kill() })
	return p
}

// procLog is Proc's output writer.
type procLog Proc

func (l *procLog) Write(b []byte) (int, error) {
	p := (*Proc)(l)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	n := 0
	for {
		i := bytes.IndexByte(p.partial[n:], '\n')
		if i < 0 {
			break
		}
		p.lines = append(p.lines, string(p.partial[n:n+i]))
		n += i + 1
	}
	if n > 0 {
		p.partial = append(p.partial[:0], p.partial[n:]...)
		close(p.changed)
		p.changed = make(chan struct{})
	}
	return len(b), nil
}

// WaitLine waits until the process has written a line (on stdout or
// stderr) for which match is true, and returns the first such line, however
// long ago it was written. It returns an error if the process exits without
// one, or after timeout.
func (p *Proc) WaitLine(timeout time.Duration, match func(line string) bool) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := 0
	for {
		p.mu.Lock()
		for ; next < len(p.lines); next++ {
			if match(p.lines[next]) {
				l := p.lines[next]
				p.mu.Unlock()
				return l, nil
			}
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.exited:
			// All output is in now: one more look.
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, l := range p.lines[next:] {
				if match(l) {
					return l, nil
				}
			}
			return "", fmt.Errorf("%s exited (%v) without printing the line waited for", p.name(), p.err)
		case <-timer.C:
			return "", fmt.Errorf("%s did not print the line waited for within %v", p.name(), timeout)
		}
	}
}

// LastLine returns the last line written so far for which match is true.
func (p *Proc) LastLine(match func(line string) bool) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.lines) - 1; i >= 0; i-- {
		if match(p.lines[i]) {
			return p.lines[i], true
		}
	}
	return "", false
}

// Exited is closed once the process has exited and all its output is in.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Err returns how the process ended (exec.Cmd.Wait's error); call it after
// Exited is closed.
func (p *Proc) Err() error {
	<-p.exited
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits until the process has exited and its output
// is in. It returns nil if the SIGKILL ended the process, and an error if
// the process had ended otherwise (exited on its own, crashed) before it.
// It is safe to call concurrently and repeatedly: every call returns the
// first call's result.
func (p *Proc) Kill() error {
	p.killOnce.Do(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
		}
		if err := p.Err(); !killedBySIGKILL(err) {
			p.killErr = fmt.Errorf("%s ended before it was killed (%v)", p.name(), err)
		}
	})
	return p.killErr
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return !ok || ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Output returns what the process wrote so far, stdout and stderr
// interleaved; of a very long output, the beginning and the end.
func (p *Proc) Output() string {
	p.mu.Lock()
	s := strings.Join(p.lines, "\n")
	if len(p.partial) > 0 {
		s += "\n" + string(p.partial)
	}
	p.mu.Unlock()
	const head, tail = 64 << 10, 1 << 20
	if len(s) > head+tail {
		s = s[:head] + fmt.Sprintf("\n[... %d bytes ...]\n", len(s)-head-tail) + s[len(s)-tail:]
	}
	return s
}

func (p *Proc) name() string {
	return fmt.Sprintf("%s (pid %d)", filepath.Base(p.cmd.Path), p.cmd.Process.Pid)
}
