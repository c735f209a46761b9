package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/fs"
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
	// never less than the 32 MiB maximum payload.
	ConnBufferBytes int64
	// Observe, if set, is called once per command after its reply is queued
	// (metrics hook): the command name ("read", "write", "flush", "trim",
	// "write_zeroes", "cache", "block_status", "disc", "unknown"), the
	// request's length in bytes, the time from the request being read to
	// its reply being queued, and the error replied (nil on success; a
	// *reqError otherwise). It must be safe for concurrent use and fast.
	Observe func(cmd string, bytes int, dur time.Duration, err error)
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
	if o.ConnBufferBytes < maxPayload {
		o.ConnBufferBytes = maxPayload
	}
}

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

	mu        sync.Mutex
	closing   atomic.Bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	connWG    sync.WaitGroup
}

// NewServer returns a server for f's exports (see ExportDir).
func NewServer(f *fs.FS, opts Options) *Server {
	opts.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		f: f, opts: opts, log: opts.Logger, exports: fsExports{f},
		ctx: ctx, cancel: cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
}

// Serve accepts connections on ln until Shutdown, then returns nil. It may be
// called for several listeners at once. Other accept errors are returned
// after closing ln, except transient ones (e.g. out of file descriptors),
// which are retried with a backoff.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
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
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("nbd: accept on %s: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nbd: accept failed; retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.connWG.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			c.serve()
		}()
	}
}

// Shutdown stops accepting connections, lets requests already read finish
// and their replies go out, then closes every connection (connections still
// negotiating are closed at once). If ctx ends first, remaining connections
// are closed, filesystem calls in flight are cancelled, and ctx's error is
// returned at once (requests stuck inside the filesystem end when it is
// closed). Shutdown does not flush or close the filesystem: the caller
// closes it afterwards, which flushes.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.interrupt()
	}
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
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		// Requests blocked inside the filesystem (e.g. back-pressure while
		// the store is unreachable) end when the caller closes it; do not
		// wait for them here.
		return fmt.Errorf("nbd: shutdown: %w", ctx.Err())
	}
}

func (s *Server) observe(cmd string, n int, d time.Duration, err error) {
	if s.opts.Observe != nil {
		s.opts.Observe(cmd, n, d, err)
	}
}
