package netserve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// testConn serves until told to stop reading (if it obeys) or closed.
type testConn struct {
	nc      net.Conn
	obeys   bool
	stop    chan struct{}
	closed  chan struct{}
	once    sync.Once
	serving chan struct{}
}

func (c *testConn) Serve() {
	close(c.serving)
	select {
	case <-c.stop:
	case <-c.closed:
	}
	c.nc.Close()
}
func (c *testConn) StopReading() {
	if c.obeys {
		close(c.stop)
	}
}
func (c *testConn) Close() { c.once.Do(func() { close(c.closed) }) }

func TestShutdown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		obeys   bool
		timeout time.Duration // generous when Shutdown must not give up
		wantErr error
	}{
		{"graceful: connections finish what they read", true, time.Minute, nil},
		{"forced: a stuck connection is closed when ctx ends", false, 200 * time.Millisecond, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Group{Name: "test", Log: slog.Default()}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			conns := make(chan *testConn, 4)
			served := make(chan error, 1)
			go func() {
				served <- g.Serve(ln, func(nc net.Conn) Conn {
					c := &testConn{nc: nc, obeys: tc.obeys, stop: make(chan struct{}), closed: make(chan struct{}), serving: make(chan struct{})}
					conns <- c
					return c
				})
			}()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			c := <-conns
			<-c.serving
			gaveUp := false
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			err = g.Shutdown(ctx, func() { gaveUp = true })
			if !errors.Is(err, tc.wantErr) || gaveUp != (tc.wantErr != nil) {
				t.Fatalf("Shutdown: %v (gave up: %v), want %v", err, gaveUp, tc.wantErr)
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve after Shutdown: %v", err)
			}
			if !g.Closing() {
				t.Fatal("not closing after Shutdown")
			}
		})
	}
}

func TestRefusedConnections(t *testing.T) {
	g := &Group{Name: "test", Log: slog.Default()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln, func(nc net.Conn) Conn { nc.Close(); return nil })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a refused connection was not closed")
	}
	if err := g.Shutdown(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
}
