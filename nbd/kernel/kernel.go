// Package kernel attaches NBD exports to the Linux kernel's nbd driver
// through its generic netlink interface, and keeps them attached across
// server restarts: `zerofs nbd attach` is built on it.
//
// Why not nbd-client: Debian's nbd-client (3.24, bookworm) configures the
// device over netlink and exits, and in that mode ignores -persist; the
// kernel then fails all I/O the moment the server's connection drops
// ("Dead connection, failed to find a fallback"). With -nonetlink it stays
// and reconnects, but the kernel has already failed the requests of the gap.
// The netlink interface can do better: a device configured with a dead
// connection timeout holds I/O while a user-space helper hands it a new
// socket (NBD_CMD_RECONFIGURE). Device.Keep is that helper. docs/nbd.md
// says what an operator sees with each.
package kernel

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Options say what to attach and how the kernel should treat a lost server.
type Options struct {
	Addr   string // host:port of the NBD server
	Export string // export name
	Index  int    // /dev/nbd<Index>; -1 lets the kernel pick a free one

	Connections int           // sockets per device (the server must offer CAN_MULTI_CONN for more than one); default 1
	BlockSize   uint32        // logical block size; default 4096
	Timeout     time.Duration // a request unanswered this long is resent on a new connection; default 30 s
	DeadTimeout time.Duration // how long I/O waits for a reconnect before it fails; default 60 s

	Logf func(format string, args ...any) // progress and reconnects; default: discard

	// TLS, if set, is called before each connection (so renewed client
	// certificates are used at the next reconnect) and TLS is started
	// before selecting the export. The kernel speaks no TLS, so each
	// connection is then relayed through this process
	// (tlsrelay_linux.go): the device's connections live only as long as
	// the process does.
	TLS func() (*tls.Config, error)
}

func (o Options) withDefaults() Options {
	if o.Connections <= 0 {
		o.Connections = 1
	}
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.DeadTimeout <= 0 {
		o.DeadTimeout = 60 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// identifier is the backend string the kernel shows in
// /sys/block/nbdN/backend; Attach uses it to recognise its own device.
func (o Options) identifier() string { return fmt.Sprintf("zerofs:%s/%s", o.Addr, o.Export) }

// ErrDetached is returned by Keep when the device was disconnected by
// someone else.
var ErrDetached = errors.New("the device was detached")

// Device is an attached kernel nbd device.
type Device struct {
	Index    int    // /dev/nbd<Index>
	Size     uint64 // bytes, as the server said at attach time
	ReadOnly bool

	o      Options
	c      *genlConn
	watch  *genlConn
	family uint16
}
