package netserve

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

func canWatch(nc net.Conn) bool {
	_, ok := rawConn(nc).(syscall.Conn)
	return ok
}

// PeerGone reports whether the client of nc has closed its side or reset
// the connection, without reading from it: one non-blocking poll(2) for
// POLLRDHUP, which the kernel sets when the FIN arrives even if requests are
// still queued unread before it. A socket already closed on our side counts
// as gone.
func PeerGone(nc net.Conn) bool {
	sc, ok := rawConn(nc).(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		gone = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	})
	return gone || err != nil
}
