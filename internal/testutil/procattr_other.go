//go:build !linux

package testutil

import "syscall"

func gatewayProcAttr() *syscall.SysProcAttr { return nil }
