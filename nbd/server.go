package nbd

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"zerofs/fs"
	"zerofs/internal/budget"
	"zerofs/internal/netserve"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Logger receives connection and protocol-violation logs; nil means
	// slog.Default().
	Logger *slog.Logger
	// Workers is the number of requests one connection executes at once
	// (default 32). Replies may be sent out of order.
	Workers int
	// HandshakeTimeout bounds the whole negotiation phase of a connection
	// (default 30s).
	HandshakeTimeout time.Duration
	// ConnBufferBytes bounds the payload bytes one connection holds in
	// memory (write data read ahead, read data waiting to be sent); the
	// reader stops reading requests when it is exhausted. Default 64 MiB;
	// never less than MaxPayload.
	ConnBufferBytes int64
	// MaxPayload is the largest READ or WRITE served (default
	// DefaultMaxPayload, at most MaxMaxPayload). 32 MiB is advertised
	// whatever it is (protocol.go says why). WRITE payloads count in
	// Requests, so it must not exceed that budget.
	MaxPayload int64
	// Requests bounds the WRITE payload bytes read from all connections but
	// not yet applied; when it is full, readers stop reading their sockets
	// (TCP back-pressure) instead of buffering. Share one with the NFS
	// server. Nil means a budget of DefaultRequestBytes for this server.
	Requests *budget.Budget
	// MaxReadWait bounds how long a connection's reader waits for memory
	// or a worker before the connection is reset (see netserve.ReadWait);
	// zero means netserve.DefaultMaxReadWait. Keep it below the clients'
	// timeouts (nbd-client -timeout).
	MaxReadWait time.Duration
	// Observe, if set, is called once per command after its reply is queued
	// (metrics hook): the command name ("read", "write", "flush", "trim",
	// "write_zeroes", "cache", "block_status", "disc", "unknown"), the
	// request's length in bytes, the time from the request being read to
	// its reply being queued, and the error replied (nil on success; a
	// *reqError otherwise). It must be safe for concurrent use and fast.
	Observe func(cmd string, bytes int, dur time.Duration, err error)

	// AllowedNetworks are the client networks served; connections from
	// elsewhere are closed at accept and logged. Empty means loopback only.
	AllowedNetworks []netip.Prefix
	// TLSMode and TLS: whether NBD_OPT_STARTTLS is offered or required
	// (tls.go), and the configuration of the sessions (certificates,
	// client verification). TLS is required unless TLSMode is TLSOff; a
	// GetConfigForClient in it picks up reloaded certificates. (Without
	// TLS, STARTTLS is refused: with TLSRequire that fails closed.)
	TLSMode TLSMode
	TLS     *tls.Config
	// Access limits which exports each client certificate may use
	// (access.go). Nil: every client that connects may use every export.
	Access *Access
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Workers <= 0 {
		o.Workers = 32
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.ConnBufferBytes <= 0 {
		o.ConnBufferBytes = 64 << 20
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	o.MaxPayload = min(max(o.MaxPayload, advertisedMaxPayload), MaxMaxPayload)
	if o.ConnBufferBytes < o.MaxPayload {
		o.ConnBufferBytes = o.MaxPayload
	}
	if o.Requests == nil {
		o.Requests = budget.New(DefaultRequestBytes)
	}
	if o.MaxReadWait <= 0 {
		o.MaxReadWait = netserve.DefaultMaxReadWait
	}
}

// DefaultRequestBytes is the request budget when Options.Requests is nil.
const DefaultRequestBytes = 128 << 20

// Server serves the exports of one filesystem over NBD.
type Server struct {
	f       *fs.FS
	opts    Options
	log     *slog.Logger
	exports exportSource

	// ctx is passed to filesystem calls; it is cancelled only when Shutdown
	// gives up waiting, so that requests finish normally otherwise.
	ctx    context.Context
	cancel context.CancelFunc

	group netserve.Group // listeners, connections, shutdown

	requests *budget.Budget // Options.Requests

	attachMu sync.Mutex
	attached map[*conn]Attachment // connections in transmission (snapshots.go)
}

// NewServer returns a server for f's exports (see ExportDir).
func NewServer(f *fs.FS, opts Options) *Server {
	opts.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		f: f, opts: opts, log: opts.Logger, exports: fsExports{f},
		ctx: ctx, cancel: cancel,
		group:    netserve.Group{Name: "nbd", Log: opts.Logger},
		requests: opts.Requests,
	}
}

// Serve accepts connections on ln until Shutdown, then returns nil. It may be
// called for several listeners at once. Transient accept errors (e.g. out of
// file descriptors) are retried with a backoff; others are returned.
func (s *Server) Serve(ln net.Listener) error {
	err := s.group.Serve(ln, func(nc net.Conn) netserve.Conn {
		remote := netserve.RemoteAddr(nc)
		if !netserve.Allowed(s.opts.AllowedNetworks, remote.Addr()) {
			s.log.Warn("nbd: refused connection from a network not in allowed_networks", "remote", remote.String())
			nc.Close()
			return nil
		}
		return newConn(s, nc)
	})
	if err != nil {
		return fmt.Errorf("nbd: accept on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections, lets requests already read finish
// and their replies go out, then closes every connection (connections still
// negotiating are closed at once). If ctx ends first, filesystem calls in
// flight are cancelled, remaining connections closed, and ctx's error is
// returned at once (requests stuck inside the filesystem end when it is
// closed). Shutdown does not flush or close the filesystem: the caller
// closes it afterwards, which flushes.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.group.Shutdown(ctx, s.cancel)
	s.cancel()
	if err != nil {
		return fmt.Errorf("nbd: shutdown: %w", err)
	}
	return nil
}

func (s *Server) observe(cmd string, n int, d time.Duration, err error) {
	if s.opts.Observe != nil {
		s.opts.Observe(cmd, n, d, err)
	}
}
