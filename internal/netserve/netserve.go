// Package netserve holds what the NBD and NFS servers share around their
// protocols: accept loops on any number of listeners, the set of live
// connections, and a two-step shutdown — stop accepting and ask every
// connection to stop reading, wait for the requests already read to be
// answered, and only if that takes too long close everything.
package netserve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is one served connection.
type Conn interface {
	// Serve runs the connection until it ends. After StopReading it must
	// answer the requests already read and return; after Close, return.
	Serve()
	// StopReading makes the connection read no new request.
	StopReading()
	// Close closes the connection at once.
	Close()
}

// Group serves connections on listeners until Shutdown.
type Group struct {
	Name string // for log lines: "nbd", "nfs"
	Log  *slog.Logger

	mu        sync.Mutex
	closing   atomic.Bool
	listeners map[net.Listener]struct{}
	conns     map[Conn]struct{}
	wg        sync.WaitGroup
}

// Closing reports whether Shutdown has begun.
func (g *Group) Closing() bool { return g.closing.Load() }

// Serve accepts connections on ln until Shutdown (then it returns nil) or
// until ln fails for good. Transient accept errors (out of file descriptors,
// a connection aborted before it was accepted) are retried with a backoff
// while the connections already open go on being served. newConn makes the
// connection for an accepted socket; it may refuse one by closing it and
// returning nil.
func (g *Group) Serve(ln net.Listener, newConn func(net.Conn) Conn) error {
	g.mu.Lock()
	if g.closing.Load() {
		g.mu.Unlock()
		ln.Close()
		return nil
	}
	if g.listeners == nil {
		g.listeners = make(map[net.Listener]struct{})
		g.conns = make(map[Conn]struct{})
	}
	g.listeners[ln] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.listeners, ln)
		g.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if g.closing.Load() {
				return nil
			}
			if !transient(err) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			g.Log.Warn(g.Name+": accept failed; retrying", "addr", ln.Addr().String(), "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := newConn(nc)
		if c == nil {
			continue
		}
		g.mu.Lock()
		if g.closing.Load() {
			g.mu.Unlock()
			c.Close()
			return nil
		}
		g.conns[c] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		go func() {
			defer g.wg.Done()
			defer func() {
				g.mu.Lock()
				delete(g.conns, c)
				g.mu.Unlock()
			}()
			c.Serve()
		}()
	}
}

func transient(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// Shutdown stops accepting, asks every connection to stop reading, and waits
// until the requests already read are answered and the connections are done.
// If ctx ends first, it calls giveUp (to cancel requests still running, e.g.
// blocked on a store outage), closes every connection and returns ctx's
// error without waiting further: such requests end when the caller closes
// the filesystem.
func (g *Group) Shutdown(ctx context.Context, giveUp func()) error {
	g.mu.Lock()
	g.closing.Store(true)
	for ln := range g.listeners {
		ln.Close()
	}
	conns := make([]Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.StopReading()
	}
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	giveUp()
	g.mu.Lock()
	for c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	return ctx.Err()
}
