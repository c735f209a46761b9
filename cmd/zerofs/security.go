package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"zerofs/config"
	"zerofs/internal/pki"
	"zerofs/nbd"
)

// nbdSecurity is what [servers.nbd] says about who may connect and how.
type nbdSecurity struct {
	mode     nbd.TLSMode
	certs    *pki.Server // nil without TLS
	access   *nbd.Access
	networks []netip.Prefix
}

// certWatchInterval is how often the certificate files are checked for
// changes: a stat of three files, cheap at any rate; a renewal tool that
// replaces them is picked up within it (SIGHUP reloads at once).
const certWatchInterval = 10 * time.Second

// loadNBDSecurity loads the certificates and access rules. It runs before
// anything else at start, so that a bad TLS configuration (a missing file, a
// key that does not match, an expired certificate) fails the start with one
// line naming the file, and touches nothing.
func loadNBDSecurity(cfg *config.Config, log *slog.Logger) (nbdSecurity, error) {
	c := cfg.Servers.NBD
	sec := nbdSecurity{networks: parseNets(c.AllowedNetworks)}
	var err error
	if sec.mode, err = nbd.ParseTLSMode(c.TLS); err != nil {
		return sec, err
	}
	rules := make([]nbd.AccessRule, 0, len(c.Access))
	for _, a := range c.Access {
		rules = append(rules, nbd.AccessRule{Client: a.Client, Exports: a.Exports})
	}
	if sec.access, err = nbd.NewAccess(rules); err != nil {
		return sec, fmt.Errorf("%s: servers.nbd.access: %w", cfg.Path(), err)
	}
	if sec.mode == nbd.TLSOff {
		return sec, nil
	}
	minVersion := uint16(tls.VersionTLS13)
	if c.TLSMinVersion == "1.2" {
		minVersion = tls.VersionTLS12
	}
	sec.certs, err = pki.Load(pki.Options{Dir: c.TLSCertificates, VerifyPeer: c.TLSVerifyPeer, MinVersion: minVersion, Logger: log})
	if err != nil {
		return sec, fmt.Errorf("servers.nbd.tls_certificates: %w", err)
	}
	return sec, nil
}

// tlsConfig is the configuration for the NBD server's sessions (nil without
// TLS).
func (s nbdSecurity) tlsConfig() *tls.Config {
	if s.certs == nil {
		return nil
	}
	return s.certs.Config()
}

// serverName is a name the server's certificate carries, for the start-up
// hints: clients verify it, so the address alone may not do ("" without
// TLS, or a certificate without DNS names).
func (s nbdSecurity) serverName() string {
	if s.certs == nil {
		return ""
	}
	if names := s.certs.Status().DNSNames; len(names) > 0 {
		return names[0]
	}
	return ""
}

// status describes the certificate in use (nil without TLS).
func (s nbdSecurity) status() func() pki.Status {
	if s.certs == nil {
		return nil
	}
	return s.certs.Status
}

// watch reloads the certificates on SIGHUP (from hup) and when their files
// change, until ctx ends. A reload that fails keeps the certificates in use.
func (s nbdSecurity) watch(ctx context.Context, log *slog.Logger, hup <-chan os.Signal) {
	if s.certs != nil {
		go s.certs.Watch(ctx, certWatchInterval)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if s.certs == nil {
					log.Info("SIGHUP: nothing to reload (NBD serves no TLS); the rest of the configuration is read at start only")
					continue
				}
				if err := s.certs.Reload(); err != nil {
					log.Error("SIGHUP: reloading the NBD certificates failed; the ones in use stay", "file", pki.ErrorFile(err), "err", err)
				}
			}
		}
	}()
}

// warnExposure logs, at start, each listening address that exposes more
// than its protection covers: NBD beyond loopback without TLS (anyone who
// reaches the port reads and overwrites every device, in plaintext), NFS
// beyond loopback open to every address (NFS trusts the uid a client
// claims), and either beyond loopback with only loopback allowed (every
// remote client is refused).
func warnExposure(cfg *config.Config, log *slog.Logger) {
	nbdNets := parseNets(cfg.Servers.NBD.AllowedNetworks)
	nfsNets := parseNets(cfg.Servers.NFS.AllowedNetworks)
	for _, a := range cfg.Servers.NBD.Addresses {
		if loopbackAddr(a) {
			continue
		}
		if cfg.Servers.NBD.TLS == "off" {
			log.Warn("NBD listens beyond loopback without TLS: whoever can reach it can read and overwrite every device, and data crosses the network unencrypted; set [servers.nbd] tls = \"require\" (docs/security.md)", "address", a)
		} else if cfg.Servers.NBD.TLS == "on" {
			// tls_verify_peer checks certificates of TLS sessions only: a
			// client that never starts TLS presents none.
			log.Warn("NBD listens beyond loopback with TLS optional (tls = \"on\"): clients may still connect in plaintext, without a certificate; set tls = \"require\" (docs/security.md)", "address", a)
		}
		if onlyLoopback(nbdNets) {
			log.Warn("NBD listens beyond loopback but servers.nbd.allowed_networks admits only loopback: remote clients will be refused", "address", a)
		}
	}
	for _, a := range cfg.Servers.NFS.Addresses {
		if loopbackAddr(a) {
			continue
		}
		if admitsEverything(nfsNets) {
			log.Warn("NFS listens beyond loopback and servers.nfs.allowed_networks admits every address: NFS trusts the user ids clients claim; list only your clients' networks, and cross untrusted networks over WireGuard or IPsec (docs/security.md)", "address", a)
		}
		if onlyLoopback(nfsNets) {
			log.Warn("NFS listens beyond loopback but servers.nfs.allowed_networks admits only loopback: remote clients will be refused", "address", a)
		}
	}
}

func parseNets(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s)) // validated by config
	}
	return out
}

// loopbackAddr reports whether a listening address is reachable only from
// this machine.
func loopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func onlyLoopback(nets []netip.Prefix) bool {
	for _, p := range nets {
		if !p.Addr().IsLoopback() {
			return false
		}
	}
	return true
}

func admitsEverything(nets []netip.Prefix) bool {
	for _, p := range nets {
		if p.Bits() == 0 {
			return true
		}
	}
	return false
}
