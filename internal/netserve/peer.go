package netserve

import (
	"context"
	"errors"
	"net"
	"time"
)

// ErrPeerGone is the cause of a connection context canceled because the
// client closed or reset the connection.
var ErrPeerGone = errors.New("client connection gone")

// Why watch the peer at all: a server that stops reading a socket (all
// workers busy, the memory budget full: TCP back-pressure) no longer sees
// the client hang up, because the EOF sits behind unread requests. Requests
// of that connection already read would then wait on and, once memory
// frees, be applied after newer writes that other connections made and
// flushed meanwhile — silently reverting flushed data. So a connection's
// context is canceled as soon as the kernel knows the peer is gone, read or
// not (POLLRDHUP is set on a FIN even with data still queued), and nothing
// of that connection that has not begun may begin.

// WatchInterval is how often WatchPeer asks the kernel.
const WatchInterval = 100 * time.Millisecond

// WatchPeer calls gone once, from its own goroutine, when the peer of nc has
// closed or reset the connection, and stops when ctx ends. Where the kernel
// cannot tell (other systems, connections without a socket), it never calls
// gone; the reader's EOF remains the only sign there.
func WatchPeer(ctx context.Context, nc net.Conn, gone func()) {
	if !canWatch(nc) {
		return
	}
	go func() {
		t := time.NewTicker(WatchInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if PeerGone(nc) {
					gone()
					return
				}
			}
		}
	}()
}

// rawConn finds the socket under nc (through wrappers such as TLS that
// expose NetConn).
func rawConn(nc net.Conn) net.Conn {
	for {
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nc
		}
		nc = w.NetConn()
	}
}
