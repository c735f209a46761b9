package kernel

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// The kernel's nbd driver reads and writes plain sockets; it has no TLS.
// A TLS connection is therefore handed to it as one end of a socket pair,
// and two goroutines of this process relay bytes between the other end and
// the TLS session (nbd-client does the same in its TLS mode).
//
// Either side ending ends both: a server that goes away closes the pair,
// so the kernel sees its connection die and Keep reconnects; a device
// detached by the kernel closes its end, and the TLS session is closed.

// relayBuffer is each direction's copy buffer: large enough that a 1 MiB
// READ reply crosses in a few system calls.
const relayBuffer = 256 << 10

// kernelSockets hands conns over to the kernel: it returns the file of the
// socket to give it for each (kernelSocket), and conns are no longer the
// caller's. A TCP connection's own socket goes to the kernel (the file is a
// duplicate, so the connection is closed here); a TLS connection is owned
// by its relay from then on, which ends it when the kernel's side ends —
// closing it here would end the device's connection at once. On error,
// everything is closed.
func kernelSockets(conns []net.Conn) ([]*os.File, error) {
	var files []*os.File
	for i, nc := range conns {
		f, err := kernelSocket(nc)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			for _, nc := range conns[i:] {
				nc.Close()
			}
			return nil, err
		}
		if _, ok := nc.(*net.TCPConn); ok {
			nc.Close()
		}
		files = append(files, f)
	}
	return files, nil
}

// kernelSocket returns the file of the socket to give the kernel for nc:
// nc's own for a TCP connection, one end of a relayed pair otherwise. The
// caller closes the file once the kernel has taken its reference.
func kernelSocket(nc net.Conn) (*os.File, error) {
	if tc, ok := nc.(*net.TCPConn); ok {
		return tc.File()
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket pair for the TLS relay: %w", err)
	}
	kernelEnd := os.NewFile(uintptr(fds[0]), "nbd-kernel")
	ours := os.NewFile(uintptr(fds[1]), "nbd-relay")
	local, err := net.FileConn(ours)
	ours.Close() // FileConn made its own copy
	if err != nil {
		kernelEnd.Close()
		return nil, fmt.Errorf("socket pair for the TLS relay: %w", err)
	}
	go relay(local, nc)
	return kernelEnd, nil
}

// relay copies between the kernel's socket and the server's connection
// until either ends, then closes both.
func relay(local, remote net.Conn) {
	var once sync.Once
	done := func() {
		once.Do(func() {
			local.Close()
			remote.Close()
		})
	}
	pump := func(dst, src net.Conn) {
		defer done()
		io.CopyBuffer(dst, src, make([]byte, relayBuffer))
	}
	go pump(remote, local)
	pump(local, remote)
}
