package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Socket activation (systemd's sd_listen_fds(3) protocol, docs/operations.md
// "Restarts without refused connections").
//
// A restart closes zerofs's listening sockets: between the old process
// exiting and the new one listening, a client that reconnects
// (zerofs nbd attach, an NFS hard mount) is refused and must retry; some
// clients give up on a refused connection. When systemd (or any supervisor speaking the
// same protocol) holds the sockets instead and passes them to each process,
// they never close: connections made during the restart wait in the
// kernel's backlog and are served as soon as the new process is up.
//
// The protocol: file descriptors 3 .. 3+LISTEN_FDS-1 are listening sockets,
// meant for the process whose pid is LISTEN_PID. zerofs uses each for the
// configured address it is bound to (an unspecified address, 0.0.0.0 or
// [::], matches either); configured addresses with no inherited socket are
// listened on as usual.

const listenFDsStart = 3

// inheritedListeners returns the listening sockets passed to this process,
// and unsets the variables so that nothing started later takes them too.
func inheritedListeners() ([]net.Listener, error) {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil // not for us
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	var lns []net.Listener
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		ln, err := net.FileListener(f) // dups fd
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: file descriptor %d is not a listening socket: %w", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// takeListener removes from lns and returns the inherited listener bound to
// addr (host:port from the configuration), or nil.
func takeListener(lns *[]net.Listener, addr string) net.Listener {
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil
	}
	for i, ln := range *lns {
		got, ok := ln.Addr().(*net.TCPAddr)
		if !ok || got.Port != want.Port {
			continue
		}
		if got.IP.Equal(want.IP) || (isUnspecified(got.IP) && isUnspecified(want.IP)) {
			*lns = append((*lns)[:i], (*lns)[i+1:]...)
			return ln
		}
	}
	return nil
}

func isUnspecified(ip net.IP) bool { return ip == nil || ip.IsUnspecified() }

// listenerAddrs lists lns' addresses, for a log line.
func listenerAddrs(lns []net.Listener) string {
	var s []string
	for _, ln := range lns {
		s = append(s, ln.Addr().String())
	}
	return strings.Join(s, ", ")
}
