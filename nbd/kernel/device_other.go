//go:build !linux

package kernel

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("attaching an NBD device needs the Linux kernel's nbd driver")

// Attach needs Linux.
func Attach(context.Context, Options) (*Device, error) { return nil, errNotLinux }

// Keep needs Linux.
func (d *Device) Keep(context.Context) error { return errNotLinux }

// Detach needs Linux.
func (d *Device) Detach() error { return errNotLinux }

// Detach needs Linux.
func Detach(int) error { return errNotLinux }

type genlConn struct{}
