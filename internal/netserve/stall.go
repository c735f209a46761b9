package netserve

import (
	"context"
	"errors"
	"net"
	"time"
)

// ErrStalled is the cause of a connection context canceled because its
// reader waited too long for room to read the next request.
var ErrStalled = errors.New("connection stalled: no memory to read its next request")

// DefaultMaxReadWait is how long a reader may wait for memory (or a
// worker) before its connection is reset, when the server is not told.
const DefaultMaxReadWait = 20 * time.Second

// Why a stalled connection is reset rather than waited on for ever: while
// the store is down, memory fills and the servers stop reading sockets.
// What a client sent and zerofs has not read yet sits in the kernel, and a
// client that gives up (its own timeout: nbd-client -timeout, NFS's timeo)
// closes the socket with a FIN queued *behind* that data — so the server
// cannot see it leave (PeerGone stays false), and when memory frees it
// would read and apply requests the client had abandoned and perhaps
// re-sent, with newer writes since, on another connection. After
// maxReadWait of waiting the connection is reset instead (SO_LINGER 0):
// the kernel drops the unread data, the client sees the reset and knows
// none of its unanswered requests will be applied late. maxReadWait must be
// shorter than the clients' timeouts; docs/durability.md says so.

// ReadWait returns a context for one wait of a connection's reader: it
// ends with ctx, or with ErrStalled as its cause after max.
func ReadWait(ctx context.Context, max time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, max, ErrStalled)
}

// Reset closes nc so that the peer gets a reset and the kernel discards
// whatever the peer sent that was not read.
func Reset(nc net.Conn) {
	if tc, ok := rawConn(nc).(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}
