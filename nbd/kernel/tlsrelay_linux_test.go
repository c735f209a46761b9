package kernel

import (
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestKernelSocketsRelay: a connection that is not a TCP socket (a TLS
// session) reaches the kernel through a relay that carries bytes both ways,
// outlives the caller's descriptors (the kernel holds its own reference),
// and ends when the server's side ends.
func TestKernelSocketsRelay(t *testing.T) {
	server, ours := net.Pipe() // ours stands for the *tls.Conn
	defer server.Close()
	files, err := kernelSockets([]net.Conn{ours})
	if err != nil {
		t.Fatal(err)
	}
	// What the kernel does: take its own reference, then we close ours.
	fd, err := syscall.Dup(int(files[0].Fd()))
	if err != nil {
		t.Fatal(err)
	}
	files[0].Close()
	kf := os.NewFile(uintptr(fd), "kernel")
	kernel, err := net.FileConn(kf)
	kf.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer kernel.Close()
	deadline := time.Now().Add(time.Minute)
	kernel.SetDeadline(deadline)
	server.SetDeadline(deadline)

	if _, err := kernel.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	go server.Write([]byte("reply"))
	got = make([]byte, 5)
	if _, err := io.ReadFull(kernel, got); err != nil || string(got) != "reply" {
		t.Fatalf("kernel read %q, %v", got, err)
	}
	server.Close()
	if n, err := kernel.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the server's side closed, the kernel's read: %d, %v; want EOF", n, err)
	}
}

// TestKernelSocketsTCP: a TCP connection's own socket goes to the kernel;
// the connection is closed, the socket lives on in the file.
func TestKernelSocketsTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	files, err := kernelSockets([]net.Conn{nc})
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := net.FileConn(files[0])
	files[0].Close()
	if err != nil {
		t.Fatal(err)
	}
	defer kernel.Close()
	kernel.SetDeadline(time.Now().Add(time.Minute))
	peer.SetDeadline(time.Now().Add(time.Minute))
	if _, err := kernel.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte("y")); err == nil {
		t.Fatal("the caller's connection is still open after the hand-over")
	}
}
