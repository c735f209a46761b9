package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

const procChildEnv = "ZEROFS_TESTUTIL_PROC_CHILD"

// TestProcChild is the child of TestProc.
func TestProcChild(t *testing.T) {
	switch os.Getenv(procChildEnv) {
	case "wait":
		ExitWithParent()
		fmt.Println("ready 1")
		fmt.Fprintln(os.Stderr, "on stderr")
		fmt.Println("ready 2")
		time.Sleep(time.Hour) // until killed
	case "exit":
		fmt.Print("bye") // no newline: still a line
		os.Exit(0)
	default:
		t.Skip("the child of TestProc")
	}
}

func TestProc(t *testing.T) {
	if os.Getenv(procChildEnv) != "" {
		t.Skip("in the child")
	}
	prefix := func(s string) func(string) bool {
		return func(l string) bool { return strings.HasPrefix(l, s) }
	}
	p := Child{Run: "^TestProcChild$", Env: []string{procChildEnv + "=wait"}}.Start(t)
	if l, err := p.WaitLine(time.Minute, prefix("ready ")); err != nil || l != "ready 1" {
		t.Fatalf("WaitLine = %q, %v; want the first line, ready 1\n%s", l, err, p.Output())
	}
	if _, err := p.WaitLine(time.Minute, prefix("on stderr")); err != nil {
		t.Fatalf("stderr line: %v\n%s", err, p.Output())
	}
	if _, err := p.WaitLine(time.Minute, prefix("ready 2")); err != nil {
		t.Fatalf("%v\n%s", err, p.Output())
	}
	if l, ok := p.LastLine(prefix("ready ")); !ok || l != "ready 2" {
		t.Fatalf("LastLine = %q, %v; want ready 2", l, ok)
	}
	select {
	case <-p.Exited():
		t.Fatalf("child exited (%v)\n%s", p.Err(), p.Output())
	default:
	}
	for range 2 {
		if err := p.Kill(); err != nil {
			t.Fatalf("Kill of a running child: %v", err)
		}
	}

	q := Child{Run: "^TestProcChild$", Env: []string{procChildEnv + "=exit"}}.Start(t)
	if _, err := q.WaitLine(time.Minute, prefix("never")); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("WaitLine for a line an exiting child never prints: %v", err)
	}
	if l, ok := q.LastLine(prefix("bye")); !ok || l != "bye" {
		t.Fatalf("last line without newline: %q, %v\n%s", l, ok, q.Output())
	}
	if err := q.Err(); err != nil {
		t.Fatalf("Err of a child that exited 0: %v", err)
	}
	if err := q.Kill(); err == nil {
		t.Fatal("Kill of a child that had exited on its own returned nil")
	}
}
