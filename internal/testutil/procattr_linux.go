package testutil

import "syscall"

// gatewayProcAttr kills the gateway if the test binary dies without cleaning
// up (a timeout panic, a kill), so no orphan keeps the port and temp dir.
func gatewayProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
