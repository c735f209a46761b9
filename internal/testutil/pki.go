package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throwaway certificate authority for tests, written in qemu/nbdkit's
// layout: a directory of ca-cert.pem, server-cert.pem and server-key.pem,
// and client directories of ca-cert.pem, client-cert.pem and client-key.pem.
// The same directories are read by zerofs (internal/pki), qemu
// (tls-creds-x509,dir=DIR), nbdkit (--tls-certificates=DIR) and libnbd
// (tls-certificates=DIR), so a test can hand them to any of these.
//
// The certificates carry what GnuTLS-based peers check, not only what Go
// checks: qemu refuses a leaf whose critical key usage lacks key
// encipherment, or whose basic constraints are absent on a CA or say CA on a
// leaf.
type PKI struct {
	Dir    string            // the server's directory
	CA     *x509.Certificate // signs the server and every client certificate
	Server *x509.Certificate // the server certificate last written to Dir

	caKey *ecdsa.PrivateKey
}

// The file names, repeated here rather than imported from internal/pki so
// that the helper stays independent of the package it helps test.
const (
	pkiCAFile         = "ca-cert.pem"
	pkiServerCertFile = "server-cert.pem"
	pkiServerKeyFile  = "server-key.pem"
	pkiClientCertFile = "client-cert.pem"
	pkiClientKeyFile  = "client-key.pem"
)

// NewPKI creates a CA and, in dir (t.TempDir() if "", created if missing), ca-cert.pem,
// server-cert.pem and server-key.pem: a server certificate with subject
// CN=zerofs-test-server for DNS "localhost" and IPs 127.0.0.1 and ::1, valid
// from an hour ago to a year from now. Keys are ECDSA P-256: generating
// them is fast, unlike RSA.
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testutil.NewPKI: %v", err)
	}
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "zerofs test CA", Organization: []string{"zerofs tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testutil.NewPKI: create CA: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testutil.NewPKI: %v", err)
	}
	p := &PKI{Dir: dir, CA: ca, caKey: key}
	writePEM(t, filepath.Join(dir, pkiCAFile), 0o644, "CERTIFICATE", der)
	p.ServerCert(t, "zerofs-test-server", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	return p
}

// ClientDir writes a new directory with ca-cert.pem (this CA, to verify the
// server), client-cert.pem and client-key.pem for a client certificate with
// CommonName cn and DNS SAN cn, signed by this CA, and returns its path.
func (p *PKI) ClientDir(t testing.TB, cn string) string {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    []string{cn},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(365 * 24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certDER, keyDER := p.issue(t, tmpl)
	writePEM(t, filepath.Join(dir, pkiCAFile), 0o644, "CERTIFICATE", p.CA.Raw)
	writePEM(t, filepath.Join(dir, pkiClientKeyFile), 0o600, "PRIVATE KEY", keyDER)
	writePEM(t, filepath.Join(dir, pkiClientCertFile), 0o644, "CERTIFICATE", certDER)
	return dir
}

// ServerCert re-issues server-cert.pem and server-key.pem in p.Dir with a
// new key, subject CN cn and the given validity (for expiry and reload
// tests). Each file is replaced by a rename, as a careful operator would,
// so a reader sees the old file or the new one, never half of one; the two
// files are still replaced one after the other (the key first).
func (p *PKI) ServerCert(t testing.TB, cn string, notBefore, notAfter time.Time) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	certDER, keyDER := p.issue(t, tmpl)
	writePEM(t, filepath.Join(p.Dir, pkiServerKeyFile), 0o600, "PRIVATE KEY", keyDER)
	writePEM(t, filepath.Join(p.Dir, pkiServerCertFile), 0o644, "CERTIFICATE", certDER)
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		t.Fatalf("testutil.PKI: %v", err)
	}
	p.Server = cert
}

// issue signs tmpl, a leaf, with a new key, and returns the certificate's
// and the key's (PKCS#8) DER.
func (p *PKI) issue(t testing.TB, tmpl *x509.Certificate) (certDER, keyDER []byte) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	tmpl.BasicConstraintsValid = true // CA:FALSE, which qemu wants on a leaf
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("testutil.PKI: issue %q: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testutil.PKI: %v", err)
	}
	return certDER, keyDER
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testutil.PKI: generate key: %v", err)
	}
	return key
}

// serial returns a random 127-bit serial number: unique without bookkeeping,
// positive as RFC 5280 requires.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testutil.PKI: %v", err)
	}
	return n
}

// writePEM replaces path with one PEM block, through a temporary file and a
// rename.
func writePEM(t testing.TB, path string, perm os.FileMode, typ string, der []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err == nil {
		err = tmp.Chmod(perm)
		if err == nil {
			err = pem.Encode(tmp, &pem.Block{Type: typ, Bytes: der})
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
	}
	if err != nil {
		t.Fatalf("testutil.PKI: write %s: %v", path, err)
	}
}

// CAOnlyDir writes a client directory with only ca-cert.pem: a client that
// trusts the server but has no certificate to present.
func (p *PKI) CAOnlyDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, pkiCAFile), 0o644, "CERTIFICATE", p.CA.Raw)
	return dir
}

// TrustIn makes the client directory dir (from another PKI's ClientDir)
// trust this PKI's server: the client then passes its own side of the
// handshake and meets the server's verdict on its certificate.
func (p *PKI) TrustIn(t testing.TB, dir string) {
	t.Helper()
	writePEM(t, filepath.Join(dir, pkiCAFile), 0o644, "CERTIFICATE", p.CA.Raw)
}
