package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"zerofs/config"
	"zerofs/internal/pki"
	"zerofs/nbd/kernel"
)

// cmdNBDAttach attaches an export to a kernel nbd device and stays running
// to keep it attached across zerofs restarts (nbd/kernel explains how; the
// operator's view is in docs/nbd.md). SIGTERM or SIGINT detaches the device
// and exits; --keep leaves it attached on exit, for replacing this process
// (the next `zerofs nbd attach` with the same --device adopts it).
func cmdNBDAttach(args []string) error {
	fl := newFlags("nbd attach", "nbd attach NAME [--device /dev/nbdN] [--server HOST:PORT | -c FILE] [--connections N] [--timeout 30s] [--dead-timeout 60s] [--block-size 4096] [--tls DIR [--tls-name NAME]] [--keep]")
	cfgPath := fl.String("c", "", "configuration file (for the NBD address)")
	server := fl.String("server", "", "NBD server HOST:PORT (default: the first [servers.nbd] address of -c, else 127.0.0.1:10809)")
	device := fl.String("device", "", "device to use, e.g. /dev/nbd0 (default: the first free one)")
	conns := fl.Int("connections", 1, "sockets per device")
	blockSize := fl.Uint("block-size", 4096, "logical block size")
	timeout := fl.Duration("timeout", 30*time.Second, "a request unanswered this long is resent on a new connection")
	deadTimeout := fl.Duration("dead-timeout", 60*time.Second, "how long I/O waits for the server to come back before it fails (in a mirror, the member then faults and the pool goes on)")
	keep := fl.Bool("keep", false, "leave the device attached when this process exits (not with --tls: the TLS relay ends with the process)")
	tlsDir := fl.String("tls", "", "connect with TLS using the certificates in DIR: ca-cert.pem (verifies the server), client-cert.pem and client-key.pem (qemu's layout)")
	tlsName := fl.String("tls-name", "", "the name the server's certificate must carry (default: the host of the server address)")
	pos, err := parseFlags(fl, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fl.Usage()
		return errors.New("nbd attach needs exactly one export NAME")
	}
	if *cfgPath != "" && *server != "" {
		return errors.New("give --server or -c, not both")
	}
	if *conns < 1 || *conns > 64 {
		return fmt.Errorf("--connections %d: want 1 to 64", *conns)
	}
	if *blockSize < 512 || *blockSize > 65536 || *blockSize&(*blockSize-1) != 0 {
		return fmt.Errorf("--block-size %d: want a power of two from 512 (the kernel also caps it at its page size)", *blockSize)
	}
	addr, err := nbdAddress(*cfgPath, *server)
	if err != nil {
		return err
	}
	index, err := parseDevice(*device)
	if err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--timeout", *timeout}, {"--dead-timeout", *deadTimeout}} {
		if d.v < time.Second || d.v%time.Second != 0 {
			return fmt.Errorf("%s %s: the kernel takes whole seconds, at least 1s", d.name, d.v)
		}
	}
	var loadTLS func() (*tls.Config, error)
	if *tlsDir != "" {
		if *keep {
			return errors.New("--keep with --tls: the kernel speaks no TLS, so this process relays the device's connections and cannot leave it attached when it exits")
		}
		name := *tlsName
		if name == "" {
			name, _, _ = net.SplitHostPort(addr)
		}
		// Read at every connection, so a renewed client certificate is
		// used from the next reconnect on; checked once now.
		loadTLS = func() (*tls.Config, error) { return pki.LoadClient(*tlsDir, name) }
		if _, err := loadTLS(); err != nil {
			return err
		}
	} else if *tlsName != "" {
		return errors.New("--tls-name needs --tls DIR")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	dev, err := kernel.Attach(ctx, kernel.Options{
		Addr: addr, Export: pos[0], Index: index,
		Connections: *conns, BlockSize: uint32(*blockSize),
		Timeout: *timeout, DeadTimeout: *deadTimeout, TLS: loadTLS,
		Logf: func(format string, a ...any) { log.Info(fmt.Sprintf(format, a...)) },
	})
	if err != nil {
		return err
	}
	log.Info("attached", "device", fmt.Sprintf("/dev/nbd%d", dev.Index), "export", pos[0], "server", addr,
		"size", dev.Size, "read_only", dev.ReadOnly, "dead_timeout", *deadTimeout, "tls", loadTLS != nil)
	notifyReady()
	err = dev.Keep(ctx)
	if errors.Is(err, kernel.ErrDetached) {
		log.Info("device detached by someone else; exiting", "device", fmt.Sprintf("/dev/nbd%d", dev.Index))
		return nil
	}
	if err != nil && ctx.Err() == nil {
		// Not asked to stop: leave the device attached (its user would get
		// EIO otherwise); a restarted attach adopts it.
		return fmt.Errorf("%w; /dev/nbd%d stays attached: start zerofs nbd attach with --device /dev/nbd%d again to keep it connected", err, dev.Index, dev.Index)
	}
	if *keep {
		log.Info("exiting; the device stays attached (--keep)", "device", fmt.Sprintf("/dev/nbd%d", dev.Index))
		return err
	}
	if derr := dev.Detach(); derr != nil {
		return errors.Join(err, derr)
	}
	log.Info("detached", "device", fmt.Sprintf("/dev/nbd%d", dev.Index))
	return err
}

func cmdNBDDetach(args []string) error {
	fl := newFlags("nbd detach", "nbd detach /dev/nbdN")
	pos, err := parseFlags(fl, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fl.Usage()
		return errors.New("nbd detach needs exactly one DEVICE, e.g. /dev/nbd0")
	}
	index, err := parseDevice(pos[0])
	if err != nil {
		return err
	}
	if index < 0 {
		return errors.New("nbd detach needs a DEVICE, e.g. /dev/nbd0")
	}
	if err := kernel.Detach(index); err != nil {
		return err
	}
	fmt.Printf("detached %s\n", pos[0])
	return nil
}

// parseDevice reads /dev/nbdN (or nbdN, or N) as N; "" is -1: any free one.
func parseDevice(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "/dev/"), "nbd")
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("device %q: want /dev/nbdN", s)
	}
	return n, nil
}

// nbdAddress is where attach connects: --server, else the first NBD
// address of the configuration (a wildcard host becomes loopback), else
// NBD's registered port on loopback.
func nbdAddress(cfgPath, server string) (string, error) {
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			return "", fmt.Errorf("--server %q: want HOST:PORT", server)
		}
		return server, nil
	}
	if cfgPath == "" {
		return "127.0.0.1:10809", nil
	}
	c, err := config.Load(cfgPath)
	if err != nil {
		return "", err
	}
	if len(c.Servers.NBD.Addresses) == 0 {
		return "", fmt.Errorf("%s serves no NBD ([servers.nbd] addresses is empty): give --server", cfgPath)
	}
	host, port, err := net.SplitHostPort(c.Servers.NBD.Addresses[0])
	if err != nil {
		return "", fmt.Errorf("%s: NBD address %q: %w", cfgPath, c.Servers.NBD.Addresses[0], err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// notifyReady tells systemd (Type=notify) that the device is attached, so
// that units ordered after this one (a pool import, a mount) find it.
func notifyReady() {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte("READY=1"))
}
