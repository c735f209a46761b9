// Package pki holds the TLS certificates of zerofs's NBD server, and of the
// client that `zerofs nbd attach --tls` is.
//
// Certificates live in a directory laid out as qemu (tls-creds-x509) and
// nbdkit (--tls-certificates) expect, so that one PKI directory, made with
// one set of tools and instructions, serves zerofs and all of them:
//
//	ca-cert.pem      CA certificate(s) that sign client certificates
//	server-cert.pem  the server certificate, then any intermediates
//	server-key.pem   its private key
//
// and, for a client, ca-cert.pem (verifies the server), client-cert.pem and
// client-key.pem (what libnbd's tls-certificates=DIR reads too).
//
// Certificates expire and are renewed while the server runs for months, so
// the server's certificates can be reloaded (Reload, or Watch for changed
// files) without a restart: every new TLS session takes the certificates in
// use at its start. Connections already established keep theirs.
package pki

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The files of a certificates directory, named as qemu and nbdkit name them.
const (
	CAFile         = "ca-cert.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
	ClientCertFile = "client-cert.pem"
	ClientKeyFile  = "client-key.pem"
)

// Sentinel errors, for errors.Is. Every error of Load, Reload and LoadClient
// is one line that names the file at fault; these say what kind of fault.
var (
	// ErrMissing: a file the configuration needs does not exist. Such
	// errors also match os.ErrNotExist.
	ErrMissing = errors.New("pki: missing file")
	// ErrExpired: a certificate's NotAfter has passed.
	ErrExpired = errors.New("pki: certificate expired")
	// ErrNotYetValid: a certificate's NotBefore is still to come (often a
	// clock that is wrong, or a certificate issued with a skewed one).
	ErrNotYetValid = errors.New("pki: certificate not yet valid")
	// ErrKeyMismatch: the private key is not the certificate's.
	ErrKeyMismatch = errors.New("pki: private key does not match certificate")
	// ErrInvalid: a file holds no usable PEM certificate or key.
	ErrInvalid = errors.New("pki: unusable PEM")
)

// fileError is an error about one file: a whole one-line message that names
// it, and what it matches with errors.Is/As.
type fileError struct {
	path string
	msg  string
	errs []error // the sentinel first, then the cause, if any
}

func (e *fileError) Error() string   { return e.msg }
func (e *fileError) Unwrap() []error { return e.errs }

// ErrorFile is the file a load error names ("" if none), for logs.
func ErrorFile(err error) string {
	var fe *fileError
	if errors.As(err, &fe) {
		return fe.path
	}
	return ""
}

// Options for a server's certificates.
type Options struct {
	Dir        string
	VerifyPeer bool             // require a client certificate signed by ca-cert.pem
	MinVersion uint16           // tls.VersionTLS13 if 0
	Logger     *slog.Logger     // nil: slog.Default()
	Now        func() time.Time // nil: time.Now (tests)
}

// Server holds the server's current certificate and CA pool and hands them
// to every new TLS session, so a reload takes effect for new connections
// without a restart.
//
// The state is immutable and swapped whole through an atomic pointer: TLS
// handshakes read it concurrently with Reload and Watch, and must never see
// a new certificate with the old key, nor take a lock per handshake.
type Server struct {
	opts Options // normalized: Logger, Now and MinVersion set
	mu   sync.Mutex
	// cur changes only when a load succeeds: Watch tells a reload done
	// elsewhere (SIGHUP) by it. A failed reload leaves it and sets
	// reloadErr.
	cur       atomic.Pointer[state]
	reloadErr atomic.Pointer[string] // the last reload's error; nil after a success
}

// state is one loaded set of certificates. Never modified once stored.
type state struct {
	config *tls.Config // what a handshake that starts now uses
	status Status
	files  []fileStamp // the files it was read from, as stat saw them just before
}

// Status describes the certificate in use, for `zerofs status` and metrics.
type Status struct {
	Dir         string    `json:"dir"`
	Subject     string    `json:"subject"` // the leaf's subject, e.g. "CN=zerofs-a"
	DNSNames    []string  `json:"dns_names,omitempty"`
	NotAfter    time.Time `json:"not_after"`
	VerifyPeer  bool      `json:"verify_peer"`
	LoadedAt    time.Time `json:"loaded_at"`
	ReloadError string    `json:"reload_error,omitempty"` // the last reload's error, cleared by a successful one
}

// Config returns the *tls.Config to give tls.Server.
//
// It holds no certificate itself: its GetConfigForClient hands each new
// session the configuration built from the certificates in use at that
// moment, so one listener serves renewed certificates after Reload.
//
// Session tickets are off, here and in every configuration it hands out. A
// resumed TLS 1.3 session skips client-certificate verification, so
// after a reload that drops a CA, tickets issued before it would still let
// its clients in. NBD connections are few and long-lived: resumption saves
// nothing worth that.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion:                  s.opts.MinVersion,
		ClientAuth:                  s.clientAuth(),
		DynamicRecordSizingDisabled: true,
		SessionTicketsDisabled:      true,
		Time:                        s.opts.Now,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().config, nil
		},
	}
}

func (s *Server) clientAuth() tls.ClientAuthType {
	if s.opts.VerifyPeer {
		return tls.RequireAndVerifyClientCert
	}
	return tls.NoClientCert
}

// Status describes the certificate in use, for `zerofs status` and metrics.
func (s *Server) Status() Status {
	st := s.cur.Load().status
	st.DNSNames = slices.Clone(st.DNSNames) // the state's own slice stays immutable
	if e := s.reloadErr.Load(); e != nil {
		st.ReloadError = *e
	}
	return st
}

// Identity returns the names a verified client certificate proves: its
// subject CN, DNS SANs, email SANs and URI SANs (as strings), deduplicated,
// in that order. It is nil when the peer's certificate was not verified
// (no certificate, or a server that does not verify peers): an unverified
// certificate proves nothing, so it must not name anyone.
func Identity(cs tls.ConnectionState) []string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	c := cs.VerifiedChains[0][0]
	var ids []string
	add := func(s string) {
		if s != "" && !slices.Contains(ids, s) {
			ids = append(ids, s)
		}
	}
	add(c.Subject.CommonName)
	for _, n := range c.DNSNames {
		add(n)
	}
	for _, n := range c.EmailAddresses {
		add(n)
	}
	for _, u := range c.URIs {
		add(u.String())
	}
	return ids
}
