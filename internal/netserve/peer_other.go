//go:build !linux

package netserve

import "net"

func canWatch(net.Conn) bool { return false }

// PeerGone always reports false where the kernel cannot be asked cheaply.
func PeerGone(net.Conn) bool { return false }
