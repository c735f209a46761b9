package testutil

import (
	"crypto/sha256"
	"io"
	"os"
	"testing"
)

// FileSHA256 is the SHA-256 of the file at path, read as a stream (copies
// of whole devices do not fit a test's memory).
func FileSHA256(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
