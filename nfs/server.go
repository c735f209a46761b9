// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"zerofs/fs"
	"zerofs/internal/budget"
	"zerofs/internal/netserve"
)

// Options configures a Server.
type Options struct {
	// Logger receives the server's log; nil means slog.Default().
	Logger *slog.Logger
	// AllowedNetworks are the client networks served. Connections from
	// anywhere else are closed when accepted (and logged). Empty means
	// loopback only: NFSv3 with AUTH_UNIX trusts the client's word for who
	// the user is, so being reachable is being trusted.
	AllowedNetworks []netip.Prefix
	// RootSquash maps uid 0 (and gid 0) of clients to 65534 (nobody).
	RootSquash bool
	// Workers bounds the requests served concurrently per connection
	// (default 16). A client with more outstanding requests waits for one
	// to finish before the next is read: back-pressure, not buffering.
	Workers int
	// Requests bounds the bytes of requests read from all connections but
	// not yet served; when it is full, readers stop reading their sockets
	// (TCP back-pressure). Share one with the NBD server. Nil means a
	// budget of DefaultRequestBytes for this server.
	Requests *budget.Budget
	// MaxReadWait bounds how long a connection's reader waits for memory
	// or a worker before the connection is reset (see netserve.ReadWait);
	// zero means netserve.DefaultMaxReadWait. Keep it below the clients'
	// timeouts (the mount's timeo).
	MaxReadWait time.Duration
	// Observe, if set, is called after every request with the procedure
	// (e.g. "nfs3.WRITE", "mount3.MNT"), how long it took and its outcome:
	// nil, a Status for NFS error results, or an RPC-level error.
	Observe func(proc string, dur time.Duration, err error)
}

const defaultWorkers = 16

// Server serves one zerofs filesystem over NFSv3 and MOUNT v3 on TCP.
type Server struct {
	fs      *fs.FS
	opts    Options
	log     *slog.Logger
	fsid    uint64
	allowed []netip.Prefix
	drc     *drc // replies of recent non-idempotent requests

	// ctx is the context of every request; it is canceled when Shutdown
	// gives up waiting, so requests blocked in fs (a flush during a store
	// outage) return.
	ctx    context.Context
	cancel context.CancelFunc

	group netserve.Group // listeners, connections, shutdown

	mounts mountTable

	requests *budget.Budget // Options.Requests
}

// DefaultRequestBytes is the request budget when Options.Requests is nil.
const DefaultRequestBytes = 128 << 20

// NewServer returns a server for f. It serves nothing until Serve.
func NewServer(f *fs.FS, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Workers <= 0 {
		opts.Workers = defaultWorkers
	}
	if opts.Requests == nil {
		opts.Requests = budget.New(DefaultRequestBytes)
	}
	if opts.MaxReadWait <= 0 {
		opts.MaxReadWait = netserve.DefaultMaxReadWait
	}
	s := &Server{
		fs: f, opts: opts, log: opts.Logger,
		fsid:     fsidOf(f.FSID()),
		allowed:  opts.AllowedNetworks,
		drc:      newDRC(),
		requests: opts.Requests,
		group:    netserve.Group{Name: "nfs", Log: opts.Logger},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// allowedNames lists the allowed networks (MOUNT EXPORT's groups).
func (s *Server) allowedNames() []string {
	if len(s.allowed) == 0 {
		return []string{"127.0.0.0/8", "::1/128"}
	}
	out := make([]string, len(s.allowed))
	for i, p := range s.allowed {
		out[i] = p.String()
	}
	return out
}

// Serve accepts connections on ln until Shutdown (then it returns nil) or
// until ln fails. It may be called for several listeners. Clients outside
// the allowed networks are refused at accept.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("nfs: serving NFSv3 and MOUNT v3", "addr", ln.Addr().String(), "allowed", s.allowedNames())
	return s.group.Serve(ln, func(nc net.Conn) netserve.Conn {
		remote := netserve.RemoteAddr(nc)
		if !netserve.Allowed(s.allowed, remote.Addr()) {
			s.log.Warn("nfs: refused connection from a network not in allowed_networks",
				"remote", remote.String(), "allowed", s.allowedNames())
			nc.Close()
			return nil
		}
		return newConn(s, nc, remote)
	})
}

// Shutdown stops accepting connections, stops reading new requests, and
// waits for the requests in progress to be answered. If ctx ends first, it
// cancels those requests, closes every connection and returns ctx's error
// without waiting further: a request stuck in fs where it cannot see the
// canceled context (a write waiting for memory during a store outage)
// finishes, or fails, when the caller closes the filesystem.
// Serve returns nil after Shutdown. The filesystem is not closed.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.group.Shutdown(ctx, s.cancel)
	s.cancel()
	return err
}

// observe reports one request to Options.Observe.
func (s *Server) observe(proc string, start time.Time, err error) {
	if s.opts.Observe != nil {
		s.opts.Observe(proc, time.Since(start), err)
	}
}
