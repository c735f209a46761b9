package testutil

import "syscall"

// childProcAttr kills a child (a gateway, a re-executed test binary) if the
// test binary dies without cleaning up (a timeout panic, a kill), so no
// orphan keeps a port or a temp dir.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
