package netserve

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestPeerGone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peer watching needs Linux")
	}
	for _, tc := range []struct {
		name   string
		act    func(t *testing.T, server, client net.Conn)
		wantGo bool
	}{
		{"idle", func(*testing.T, net.Conn, net.Conn) {}, false},
		{"unread data, peer still there", func(t *testing.T, _, c net.Conn) { c.Write([]byte("request")) }, false},
		{"close with nothing queued", func(t *testing.T, _, c net.Conn) { c.Close() }, true},
		{"close behind unread requests", func(t *testing.T, _, c net.Conn) {
			c.Write(make([]byte, 4096))
			c.Close()
		}, true},
		{"half close", func(t *testing.T, _, c net.Conn) { c.(*net.TCPConn).CloseWrite() }, true},
		{"reset", func(t *testing.T, _, c net.Conn) {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}, true},
		{"closed on our side", func(t *testing.T, s, _ net.Conn) { s.Close() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := tcpPair(t)
			tc.act(t, s, c)
			// The FIN or RST crosses loopback asynchronously: wait for the
			// expected answer with a bound that only catches hangs.
			deadline := time.Now().Add(10 * time.Second)
			for PeerGone(s) != tc.wantGo {
				if !tc.wantGo || time.Now().After(deadline) {
					t.Fatalf("PeerGone = %v, want %v", !tc.wantGo, tc.wantGo)
				}
				time.Sleep(time.Millisecond)
			}
			if !tc.wantGo {
				// Still there after a while, and the data is intact.
				time.Sleep(50 * time.Millisecond)
				if PeerGone(s) {
					t.Fatal("PeerGone = true for a live peer")
				}
			}
		})
	}
}

func TestWatchPeer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peer watching needs Linux")
	}
	s, c := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone := make(chan struct{})
	WatchPeer(ctx, s, func() { close(gone) })
	c.Write([]byte("unread"))
	c.Close()
	select {
	case <-gone:
	case <-time.After(30 * time.Second):
		t.Fatal("WatchPeer did not notice the peer closing")
	}
	// The unread bytes are still there for the reader.
	b, _ := io.ReadAll(s)
	if string(b) != "unread" {
		t.Fatalf("read %q after watching", b)
	}
}
