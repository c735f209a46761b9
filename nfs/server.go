// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"zerofs/fs"
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

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	connWG    sync.WaitGroup

	mounts mountTable
}

// NewServer returns a server for f. It serves nothing until Serve.
func NewServer(f *fs.FS, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Workers <= 0 {
		opts.Workers = defaultWorkers
	}
	s := &Server{
		fs: f, opts: opts, log: opts.Logger,
		fsid:      fsidOf(f.FSID()),
		allowed:   opts.AllowedNetworks,
		drc:       newDRC(),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// allowedAddr reports whether a client at a may connect.
func (s *Server) allowedAddr(a netip.Addr) bool {
	a = a.Unmap()
	if len(s.allowed) == 0 {
		return a.IsLoopback()
	}
	for _, p := range s.allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
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
// until ln fails. It may be called for several listeners.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	s.log.Info("nfs: serving NFSv3 and MOUNT v3", "addr", ln.Addr().String(), "allowed", s.allowedNames())

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return nil
			}
			if transientAcceptError(err) {
				// Out of file descriptors and the like: back off instead
				// of spinning, and keep serving the connections we have.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("nfs: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		remote := addrOf(nc.RemoteAddr())
		if !s.allowedAddr(remote.Addr()) {
			s.log.Warn("nfs: refused connection from a network not in allowed_networks",
				"remote", remote.String(), "allowed", s.allowedNames())
			nc.Close()
			continue
		}
		c := newConn(s, nc, remote)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

func transientAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

func addrOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// Shutdown stops accepting connections, stops reading new requests, and
// waits for the requests in progress to be answered. If ctx ends first, it
// cancels those requests, closes every connection and returns ctx's error
// without waiting further.
// Serve returns nil after Shutdown. The filesystem is not closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	// Not waiting for done: a request stuck in fs where it cannot see the
	// canceled context (a write waiting for memory during a store outage)
	// finishes, or fails, when the caller closes the filesystem.
	return ctx.Err()
}

// observe reports one request to Options.Observe.
func (s *Server) observe(proc string, start time.Time, err error) {
	if s.opts.Observe != nil {
		s.opts.Observe(proc, time.Since(start), err)
	}
}
