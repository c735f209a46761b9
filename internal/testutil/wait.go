package testutil

import (
	"testing"
	"time"
)

// HangBound is how long Eventually waits: long enough that only a hang,
// never a slow or loaded machine, runs out of it. Tests assert what
// happens, never how fast.
const HangBound = time.Minute

// Eventually waits until cond holds, polling every millisecond, and fails
// the test with the message from what (called once, at the end) if it does
// not within HangBound.
func Eventually(t testing.TB, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(HangBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not so after %v: %s", HangBound, what())
		}
		time.Sleep(time.Millisecond)
	}
}
