package testutil

import (
	"os/exec"
	"testing"
)

// Python is the interpreter with the libnbd module (python3-libnbd): the
// system one, since another python3 earlier in PATH may lack it.
const Python = "/usr/bin/python3"

// RequirePythonNBD fails the test, naming the script that installs it, if
// Python cannot import libnbd's module.
func RequirePythonNBD(t testing.TB) {
	t.Helper()
	out, err := exec.Command(Python, "-c", "import nbd").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import nbd (python3-libnbd): run scripts/install-test-deps.sh (make test does): %v\n%s", Python, err, out)
	}
}
