package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"
)

// expiryWarning is how long before its certificate expires a load warns:
// enough for whoever renews certificates to notice in the logs and act.
const expiryWarning = 30 * 24 * time.Hour

// Load reads the server's certificates from o.Dir and checks them (see
// package pki for the files). Every error is one line naming the file at
// fault, and matches one of the sentinel errors.
func Load(o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("pki: no certificates directory given")
	}
	switch o.MinVersion {
	case 0:
		o.MinVersion = tls.VersionTLS13
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		// TLS 1.0 and 1.1 are broken; nothing zerofs talks to needs them.
		return nil, fmt.Errorf("pki: minimum TLS version %s: must be TLS 1.2 or TLS 1.3", tls.VersionName(o.MinVersion))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{opts: o}
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(st)
	s.logLoaded(st)
	return s, nil
}

// Reload re-reads the directory. On any error the current certificates stay
// in use, Status().ReloadError says why, and the error is returned for the
// caller to log. On success it logs at Info what was loaded.
func (s *Server) Reload() error {
	// One reload at a time: two racing could otherwise store the older
	// read last, or record an error after the success that follows it.
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.load()
	if err != nil {
		msg := err.Error()
		s.reloadErr.Store(&msg)
		return err
	}
	s.cur.Store(st)
	s.reloadErr.Store(nil)
	s.logLoaded(st)
	return nil
}

// files returns the paths of the files the server reads.
func (s *Server) files() []string {
	f := []string{
		filepath.Join(s.opts.Dir, ServerCertFile),
		filepath.Join(s.opts.Dir, ServerKeyFile),
	}
	if s.opts.VerifyPeer {
		f = append(f, filepath.Join(s.opts.Dir, CAFile))
	}
	return f
}

// need says, in the error about a missing file, which files the directory
// must hold.
func (s *Server) need() string {
	if s.opts.VerifyPeer {
		return "the certificates directory needs " + CAFile + ", " + ServerCertFile + " and " + ServerKeyFile
	}
	return "the certificates directory needs " + ServerCertFile + " and " + ServerKeyFile
}

// load reads and checks the directory into a new state. It neither stores
// nor logs it.
func (s *Server) load() (*state, error) {
	need := s.need()
	if err := checkDir(s.opts.Dir, need); err != nil {
		return nil, err
	}
	// Stat before reading: a file replaced after this is seen as changed by
	// Watch, even if this load read the new contents already.
	stamps := stampFiles(s.files())
	now := s.opts.Now()

	cfg := &tls.Config{
		MinVersion:                  s.opts.MinVersion,
		ClientAuth:                  s.clientAuth(),
		DynamicRecordSizingDisabled: true, // NBD carries bulk data: full-size records from the start
		SessionTicketsDisabled:      true, // see Config
		Time:                        s.opts.Now,
	}
	// The server certificate is not checked against ca-cert.pem: that CA
	// is for clients. In qemu's convention one CA usually signs both, but
	// nothing requires it.
	if s.opts.VerifyPeer {
		caPath := filepath.Join(s.opts.Dir, CAFile)
		pool, cas, err := loadCAs(caPath, need)
		if err != nil {
			return nil, err
		}
		for _, ca := range cas {
			if now.After(ca.NotAfter) {
				s.opts.Logger.Warn("pki: a client CA certificate has expired; clients it signed are refused",
					"file", caPath, "subject", ca.Subject.String(), "not_after", ca.NotAfter)
			}
		}
		cfg.ClientCAs = pool
	}
	cert, err := loadKeyPair(filepath.Join(s.opts.Dir, ServerCertFile), filepath.Join(s.opts.Dir, ServerKeyFile), need, now)
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{cert}

	return &state{
		config: cfg,
		files:  stamps,
		status: Status{
			Dir:        s.opts.Dir,
			Subject:    cert.Leaf.Subject.String(),
			DNSNames:   cert.Leaf.DNSNames,
			NotAfter:   cert.Leaf.NotAfter,
			VerifyPeer: s.opts.VerifyPeer,
			LoadedAt:   now,
		},
	}, nil
}

// logLoaded says what a load put in use, and warns if it expires soon: a
// renewed certificate that was not installed shows here.
func (s *Server) logLoaded(st *state) {
	log := s.opts.Logger
	log.Info("pki: loaded TLS certificates", "dir", st.status.Dir, "subject", st.status.Subject,
		"dns_names", st.status.DNSNames, "not_after", st.status.NotAfter, "verify_peer", st.status.VerifyPeer)
	if left := st.status.NotAfter.Sub(st.status.LoadedAt); left < expiryWarning {
		log.Warn("pki: the server certificate expires soon; renew it",
			"file", filepath.Join(st.status.Dir, ServerCertFile), "subject", st.status.Subject,
			"not_after", st.status.NotAfter, "expires_in", left.Round(time.Minute))
	}
}
