package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSocketActivationRestart: with its NBD socket passed by a service
// manager (systemd's protocol, activation.go), a client that connects while
// zerofs restarts is not refused: it waits in the socket's backlog and is
// served by the new process.
func TestSocketActivationRestart(t *testing.T) {
	need(t, "nbdinfo")
	bin := zerofsBinary(t)
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// The service manager's socket: it stays open across the restart.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newServer(t)
	s.nbd = ln.Addr().String()
	s.nfs = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.command = func(bin string) *exec.Cmd {
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		// LISTEN_PID must be zerofs's pid: the shell's, which exec keeps.
		cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" run -c zerofs.toml`, bin)
		cmd.ExtraFiles = []*os.File{f} // descriptor 3
		return cmd
	}
	cfg := cfgWithPorts(string(example), s)
	s.start(t, bin, cfg)
	if !strings.Contains(s.log(), "using the listening socket the service manager passed") {
		t.Fatalf("the passed socket was not used:\n%s", s.log())
	}
	if out, err := run(t, bin, "", "nbd", "create", "dev", "--size", "64M", "--admin", s.admin); err != nil {
		t.Fatalf("nbd create: %v\n%s", err, out)
	}
	uri := "nbd://" + s.nbd + "/dev"
	if out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "67108864" {
		t.Fatalf("nbdinfo: %v %s", err, out)
	}

	s.stop(t)
	// zerofs is down: a client connects (the kernel queues it) and waits.
	client := exec.Command("nbdinfo", "--size", uri)
	var out strings.Builder
	client.Stdout, client.Stderr = &out, &out
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- client.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("a client connecting during the restart ended before zerofs was back: %v\n%s", err, out.String())
	case <-time.After(500 * time.Millisecond):
	}
	s2 := newServer(t)
	s2.dir, s2.nbd, s2.nfs, s2.admin, s2.command = s.dir, s.nbd, s.nfs, s.admin, s.command
	s2.start(t, bin, cfg)
	select {
	case err := <-done:
		if err != nil || strings.TrimSpace(out.String()) != "67108864" {
			t.Fatalf("the client that connected during the restart: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the client that connected during the restart was not served")
	}
}
