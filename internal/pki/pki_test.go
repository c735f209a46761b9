package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"zerofs/internal/testutil"
)

// result is what both ends of a handshake saw.
type result struct {
	serverErr, clientErr error
	server, client       tls.ConnectionState
}

// handshake runs a TLS handshake over a loopback TCP connection, then
// sends one byte from the server to the client. The byte matters: in TLS 1.3
// the client's Handshake returns before the server has verified the
// client's certificate, so the client learns of a refusal (an alert) only
// by reading.
//
// Not net.Pipe: its writes block until the other end reads, and when the
// client refuses the server's certificate both ends write at once (the
// client its alert, the server the rest of its flight), which deadlocks
// until the deadline. A socket's buffers let each end finish as a real peer
// does.
func handshake(t *testing.T, server, client *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(testutil.HangBound) // a bound on hangs only
	var r result
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc, err := ln.Accept()
		if err != nil {
			r.serverErr = err
			return
		}
		defer sc.Close()
		sc.SetDeadline(deadline)
		s := tls.Server(sc, server)
		if r.serverErr = s.Handshake(); r.serverErr == nil {
			r.server = s.ConnectionState()
			_, r.serverErr = s.Write([]byte{1})
		}
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.SetDeadline(deadline)
	c := tls.Client(cc, client)
	if r.clientErr = c.Handshake(); r.clientErr == nil {
		r.client = c.ConnectionState()
		_, r.clientErr = io.ReadFull(c, make([]byte, 1))
	}
	<-done
	return r
}

func (r result) ok() bool { return r.serverErr == nil && r.clientErr == nil }

// servedLeaf is the certificate the client was served.
func (r result) servedLeaf(t *testing.T) *x509.Certificate {
	t.Helper()
	if len(r.client.PeerCertificates) == 0 {
		t.Fatalf("no server certificate (server: %v, client: %v)", r.serverErr, r.clientErr)
	}
	return r.client.PeerCertificates[0]
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, o Options) *Server {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testutil.Logger(t)
	}
	s, err := Load(o)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func loadClient(t *testing.T, dir string) *tls.Config {
	t.Helper()
	c, err := LoadClient(dir, "localhost")
	if err != nil {
		t.Fatalf("LoadClient: %v", err)
	}
	return c
}

func TestHandshake(t *testing.T) {
	p := testutil.NewPKI(t, "")
	other := testutil.NewPKI(t, "")
	clientA := p.ClientDir(t, "client-a")
	// Trusts p's server, presents a certificate of another CA.
	stranger := other.ClientDir(t, "stranger")
	p.TrustIn(t, stranger)

	tests := []struct {
		name         string
		verifyPeer   bool
		clientDir    string
		serverName   string
		wantOK       bool
		wantIdentity []string
	}{
		{name: "verified client certificate", verifyPeer: true, clientDir: clientA, wantOK: true, wantIdentity: []string{"client-a"}},
		{name: "verify peer, no client certificate", verifyPeer: true, clientDir: p.CAOnlyDir(t)},
		{name: "verify peer, certificate of another CA", verifyPeer: true, clientDir: stranger},
		{name: "no verification, no client certificate", clientDir: p.CAOnlyDir(t), wantOK: true},
		{name: "no verification: a client certificate proves nothing", clientDir: clientA, wantOK: true},
		{name: "server name by IP SAN", clientDir: clientA, serverName: "127.0.0.1", wantOK: true},
		{name: "server name not in the certificate", clientDir: clientA, serverName: "zerofs.example"},
		{name: "client trusting another CA", clientDir: other.ClientDir(t, "x")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := load(t, Options{Dir: p.Dir, VerifyPeer: tc.verifyPeer})
			name := tc.serverName
			if name == "" {
				name = "localhost"
			}
			client, err := LoadClient(tc.clientDir, name)
			if err != nil {
				t.Fatalf("LoadClient: %v", err)
			}
			r := handshake(t, s.Config(), client)
			if r.ok() != tc.wantOK {
				t.Fatalf("handshake succeeded: %v, want %v (server: %v, client: %v)", r.ok(), tc.wantOK, r.serverErr, r.clientErr)
			}
			if !tc.wantOK {
				return
			}
			if id := Identity(r.server); !slices.Equal(id, tc.wantIdentity) {
				t.Errorf("Identity = %q, want %q", id, tc.wantIdentity)
			}
			if r.client.Version != tls.VersionTLS13 {
				t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(r.client.Version))
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		verifyPeer bool
		now        func() time.Time
		mangle     func(t *testing.T, p *testutil.PKI) // breaks p.Dir
		file       string                              // the file the error must name; "" for the directory
		want       error
		wantMsg    string // a substring of the message, if set
	}{
		{name: "good", verifyPeer: true},
		{name: "no ca-cert.pem, not verifying peers", mangle: remove(CAFile)},
		{name: "missing ca-cert.pem", verifyPeer: true, mangle: remove(CAFile), file: CAFile, want: ErrMissing,
			wantMsg: "no such file (the certificates directory needs ca-cert.pem, server-cert.pem and server-key.pem)"},
		{name: "missing server-cert.pem", mangle: remove(ServerCertFile), file: ServerCertFile, want: ErrMissing,
			wantMsg: "no such file (the certificates directory needs server-cert.pem and server-key.pem)"},
		{name: "missing server-key.pem", verifyPeer: true, mangle: remove(ServerKeyFile), file: ServerKeyFile, want: ErrMissing},
		{name: "missing directory", mangle: func(t *testing.T, p *testutil.PKI) {
			if err := os.RemoveAll(p.Dir); err != nil {
				t.Fatal(err)
			}
		}, want: ErrMissing, wantMsg: "no such directory"},
		{name: "key of another certificate", mangle: func(t *testing.T, p *testutil.PKI) {
			other := testutil.NewPKI(t, "")
			copyFile(t, filepath.Join(other.Dir, ServerKeyFile), filepath.Join(p.Dir, ServerKeyFile))
		}, file: ServerKeyFile, want: ErrKeyMismatch, wantMsg: "server-key.pem does not match "},
		{name: "expired", mangle: func(t *testing.T, p *testutil.PKI) {
			p.ServerCert(t, "old", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
		}, file: ServerCertFile, want: ErrExpired, wantMsg: "expired on "},
		{name: "expired by the clock", now: func() time.Time { return now.Add(2 * 365 * 24 * time.Hour) },
			file: ServerCertFile, want: ErrExpired},
		{name: "not yet valid", mangle: func(t *testing.T, p *testutil.PKI) {
			p.ServerCert(t, "future", now.Add(24*time.Hour), now.Add(48*time.Hour))
		}, file: ServerCertFile, want: ErrNotYetValid, wantMsg: "not yet valid"},
		{name: "garbage server-cert.pem", mangle: write(ServerCertFile, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"),
			file: ServerCertFile, want: ErrInvalid, wantMsg: "no certificate in it"},
		{name: "undecodable certificate", mangle: write(ServerCertFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
			file: ServerCertFile, want: ErrInvalid, wantMsg: "certificate 1: "},
		{name: "garbage ca-cert.pem", verifyPeer: true, mangle: write(CAFile, "hello\n"),
			file: CAFile, want: ErrInvalid, wantMsg: "no certificate in it"},
		{name: "garbage server-key.pem", mangle: write(ServerKeyFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
			file: ServerKeyFile, want: ErrInvalid, wantMsg: "unparsable private key"},
		{name: "certificate as key", mangle: func(t *testing.T, p *testutil.PKI) {
			copyFile(t, filepath.Join(p.Dir, ServerCertFile), filepath.Join(p.Dir, ServerKeyFile))
		}, file: ServerKeyFile, want: ErrInvalid, wantMsg: "no private key in it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testutil.NewPKI(t, filepath.Join(t.TempDir(), "pki"))
			if tc.mangle != nil {
				tc.mangle(t, p)
			}
			_, err := Load(Options{Dir: p.Dir, VerifyPeer: tc.verifyPeer, Now: tc.now, Logger: testutil.Logger(t)})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded, want %v", tc.want)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !errors.Is(err, tc.want) {
				t.Errorf("error does not match %v", tc.want)
			}
			if tc.want == ErrMissing && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("error does not match os.ErrNotExist")
			}
			path := p.Dir
			if tc.file != "" {
				path = filepath.Join(p.Dir, tc.file)
			}
			if !strings.HasPrefix(msg, "pki: "+path) {
				t.Errorf("error does not begin with pki: %s", path)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error does not say %q", tc.wantMsg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line")
			}
		})
	}
}

func remove(name string) func(*testing.T, *testutil.PKI) {
	return func(t *testing.T, p *testutil.PKI) {
		if err := os.Remove(filepath.Join(p.Dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func write(name, data string) func(*testing.T, *testutil.PKI) {
	return func(t *testing.T, p *testutil.PKI) {
		if err := os.WriteFile(filepath.Join(p.Dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExpiredMessage(t *testing.T) {
	p := testutil.NewPKI(t, "")
	notAfter := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	p.ServerCert(t, "old", notAfter.Add(-time.Hour), notAfter)
	_, err := Load(Options{Dir: p.Dir, Now: func() time.Time { return notAfter.Add(time.Second) }})
	want := "pki: " + filepath.Join(p.Dir, ServerCertFile) + ": expired on 2026-01-02T15:04:05Z"
	if err == nil || err.Error() != want {
		t.Fatalf("Load: %v, want %s", err, want)
	}
}

func TestMinVersion(t *testing.T) {
	p := testutil.NewPKI(t, "")
	tests := []struct {
		name       string
		minVersion uint16
		wantOK     bool
	}{
		{name: "default refuses TLS 1.2", wantOK: false},
		{name: "TLS 1.2 allowed", minVersion: tls.VersionTLS12, wantOK: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := load(t, Options{Dir: p.Dir, MinVersion: tc.minVersion})
			client := loadClient(t, p.CAOnlyDir(t))
			client.MaxVersion = tls.VersionTLS12
			r := handshake(t, s.Config(), client)
			if r.ok() != tc.wantOK {
				t.Fatalf("TLS 1.2 handshake succeeded: %v, want %v (server: %v, client: %v)", r.ok(), tc.wantOK, r.serverErr, r.clientErr)
			}
			if r.ok() && r.client.Version != tls.VersionTLS12 {
				t.Errorf("negotiated %s", tls.VersionName(r.client.Version))
			}
		})
	}
	if _, err := Load(Options{Dir: p.Dir, MinVersion: tls.VersionTLS11}); err == nil {
		t.Errorf("Load with MinVersion TLS 1.1 succeeded")
	}
}

func TestReload(t *testing.T) {
	p := testutil.NewPKI(t, "")
	s := load(t, Options{Dir: p.Dir, VerifyPeer: true})
	cfg := s.Config() // one listener's configuration, across reloads
	client := loadClient(t, p.ClientDir(t, "client-a"))

	leaf := handshake(t, cfg, client).servedLeaf(t)
	if leaf.Subject.CommonName != "zerofs-test-server" {
		t.Fatalf("served %s", leaf.Subject)
	}
	st := s.Status()
	if st.Subject != "CN=zerofs-test-server" || !st.NotAfter.Equal(leaf.NotAfter) || !st.VerifyPeer ||
		st.Dir != p.Dir || !slices.Equal(st.DNSNames, []string{"localhost"}) || st.ReloadError != "" {
		t.Fatalf("Status = %+v", st)
	}

	now := time.Now()
	p.ServerCert(t, "zerofs-b", now.Add(-time.Minute), now.Add(90*24*time.Hour))
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	leaf = handshake(t, cfg, client).servedLeaf(t)
	if leaf.Subject.CommonName != "zerofs-b" || !leaf.NotAfter.Equal(p.Server.NotAfter) {
		t.Fatalf("after Reload served %s until %v, want zerofs-b until %v", leaf.Subject, leaf.NotAfter, p.Server.NotAfter)
	}
	if st := s.Status(); st.Subject != "CN=zerofs-b" || !st.NotAfter.Equal(p.Server.NotAfter) {
		t.Fatalf("Status after Reload = %+v", st)
	}

	// A failed reload keeps the certificate in use.
	keyPath := filepath.Join(p.Dir, ServerKeyFile)
	goodKey, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = s.Reload()
	if err == nil {
		t.Fatal("Reload of a garbage key succeeded")
	}
	if st := s.Status(); st.ReloadError != err.Error() || st.Subject != "CN=zerofs-b" {
		t.Fatalf("Status after a failed Reload = %+v, want ReloadError %q", st, err)
	}
	if r := handshake(t, cfg, client); !r.ok() || r.servedLeaf(t).Subject.CommonName != "zerofs-b" {
		t.Fatalf("after a failed Reload: server %v, client %v", r.serverErr, r.clientErr)
	}

	// A successful one clears the error.
	if err := os.WriteFile(keyPath, goodKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if st := s.Status(); st.ReloadError != "" {
		t.Fatalf("ReloadError %q after a successful Reload", st.ReloadError)
	}
}

// TestReloadConcurrent runs handshakes during reloads, for the race
// detector.
func TestReloadConcurrent(t *testing.T) {
	p := testutil.NewPKI(t, "")
	s := load(t, Options{Dir: p.Dir, VerifyPeer: true})
	cfg := s.Config()
	client := loadClient(t, p.ClientDir(t, "client-a"))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for range 10 {
				if r := handshake(t, cfg, client); !r.ok() {
					t.Errorf("handshake: server %v, client %v", r.serverErr, r.clientErr)
				}
				_ = s.Status()
			}
		})
	}
	for range 20 {
		if err := s.Reload(); err != nil {
			t.Errorf("Reload: %v", err)
		}
	}
	wg.Wait()
}

func TestWatch(t *testing.T) {
	p := testutil.NewPKI(t, "")
	s := load(t, Options{Dir: p.Dir})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 20*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })

	waitFor := func(what string, cond func(Status) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(s.Status()) {
			if time.Now().After(deadline) {
				t.Fatalf("Watch: still not %s after 10s; Status = %+v", what, s.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	now := time.Now()
	p.ServerCert(t, "zerofs-renewed", now.Add(-time.Minute), now.Add(200*24*time.Hour))
	waitFor("renewed", func(st Status) bool {
		return st.Subject == "CN=zerofs-renewed" && st.NotAfter.Equal(p.Server.NotAfter) && st.ReloadError == ""
	})

	// A rewrite that breaks the files is reported and the renewed
	// certificate stays in use.
	if err := os.WriteFile(filepath.Join(p.Dir, ServerCertFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("failing", func(st Status) bool { return st.ReloadError != "" })
	if st := s.Status(); st.Subject != "CN=zerofs-renewed" || !strings.Contains(st.ReloadError, ServerCertFile) {
		t.Fatalf("Status = %+v", st)
	}
	r := handshake(t, s.Config(), loadClient(t, p.CAOnlyDir(t)))
	if !r.ok() || r.servedLeaf(t).Subject.CommonName != "zerofs-renewed" {
		t.Fatalf("handshake while the files are broken: server %v, client %v", r.serverErr, r.clientErr)
	}
}

// TestWatchFailedReloadOnce: files that fail to load are tried once per
// change, not again at every poll while they stay broken.
func TestWatchFailedReloadOnce(t *testing.T) {
	p := testutil.NewPKI(t, "")
	logger, logs := testutil.CaptureLogs()
	s := load(t, Options{Dir: p.Dir, Logger: logger})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 10*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })
	if err := os.WriteFile(filepath.Join(p.Dir, ServerCertFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); s.Status().ReloadError == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Watch did not try the broken files within 10s")
		}
	}
	time.Sleep(30 * 10 * time.Millisecond) // thirty polls with nothing changed
	if n := strings.Count(logs(), "reloading TLS certificates failed"); n != 1 {
		t.Fatalf("%d failed reloads logged for one change, want 1:\n%s", n, logs())
	}
}

func TestExpiryWarning(t *testing.T) {
	tests := []struct {
		name     string
		validFor time.Duration
		wantWarn bool
	}{
		{name: "expires in 10 days", validFor: 10 * 24 * time.Hour, wantWarn: true},
		{name: "expires in 60 days", validFor: 60 * 24 * time.Hour, wantWarn: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testutil.NewPKI(t, "")
			now := time.Now()
			p.ServerCert(t, "soon", now.Add(-time.Hour), now.Add(tc.validFor))
			var buf bytes.Buffer
			load(t, Options{Dir: p.Dir, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
			logs := buf.String()
			want := 0
			if tc.wantWarn {
				want = 1
			}
			if got := strings.Count(logs, "level=WARN"); got != want {
				t.Fatalf("%d warnings, want %d\n%s", got, want, logs)
			}
			if !strings.Contains(logs, "level=INFO") || !strings.Contains(logs, `subject="CN=soon"`) {
				t.Fatalf("no Info about the loaded certificate:\n%s", logs)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	u, _ := url.Parse("spiffe://example.org/zerofs/a")
	full := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "a"},
		DNSNames:       []string{"a", "a.example.org"},
		EmailAddresses: []string{"ops@example.org", "a.example.org"},
		URIs:           []*url.URL{u},
	}
	tests := []struct {
		name string
		cs   tls.ConnectionState
		want []string
	}{
		{name: "all kinds, deduplicated", cs: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{full}}},
			want: []string{"a", "a.example.org", "ops@example.org", "spiffe://example.org/zerofs/a"}},
		{name: "no CN", cs: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{DNSNames: []string{"b"}}}}},
			want: []string{"b"}},
		{name: "unverified certificate", cs: tls.ConnectionState{PeerCertificates: []*x509.Certificate{full}}},
		{name: "empty state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Identity(tc.cs); !slices.Equal(got, tc.want) {
				t.Fatalf("Identity = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoadClient(t *testing.T) {
	p := testutil.NewPKI(t, "")
	tests := []struct {
		name     string
		files    []string // of a client directory, kept; the others are removed
		file     string   // the file the error names; "" for success
		want     error
		wantCert bool
	}{
		{name: "certificate and key", files: []string{CAFile, ClientCertFile, ClientKeyFile}, wantCert: true},
		{name: "CA only", files: []string{CAFile}},
		{name: "missing ca-cert.pem", files: []string{ClientCertFile, ClientKeyFile}, file: CAFile, want: ErrMissing},
		{name: "certificate without key", files: []string{CAFile, ClientCertFile}, file: ClientKeyFile, want: ErrMissing},
		{name: "key without certificate", files: []string{CAFile, ClientKeyFile}, file: ClientCertFile, want: ErrMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := p.ClientDir(t, "client-a")
			for _, f := range []string{CAFile, ClientCertFile, ClientKeyFile} {
				if !slices.Contains(tc.files, f) {
					if err := os.Remove(filepath.Join(dir, f)); err != nil {
						t.Fatal(err)
					}
				}
			}
			cfg, err := LoadClient(dir, "localhost")
			if tc.want == nil {
				if err != nil {
					t.Fatalf("LoadClient: %v", err)
				}
				if hasCert := cfg.GetClientCertificate != nil; hasCert != tc.wantCert {
					t.Fatalf("client certificate: %v, want %v", hasCert, tc.wantCert)
				}
				if cfg.ServerName != "localhost" || cfg.MinVersion != tls.VersionTLS12 || cfg.RootCAs == nil {
					t.Fatalf("config: ServerName %q, MinVersion %x, RootCAs %v", cfg.ServerName, cfg.MinVersion, cfg.RootCAs)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadClient succeeded, want %v", tc.want)
			}
			t.Logf("error: %v", err)
			path := filepath.Join(dir, tc.file)
			if !errors.Is(err, tc.want) || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "pki: "+path+": ") {
				t.Fatalf("error %q: want one naming %s, matching %v and os.ErrNotExist", err, path, tc.want)
			}
		})
	}
}
