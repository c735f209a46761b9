package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LoadClient returns the TLS configuration of a client (zerofs nbd attach
// --tls) from a directory laid out as libnbd's tls-certificates=DIR and
// qemu's tls-creds-x509,endpoint=client read it: ca-cert.pem, required, to
// verify the server, and client-cert.pem with client-key.pem, optional
// (both or neither), for a server that verifies its peers.
//
// serverName is the name the server's certificate must carry: the host part
// of the address (an IP works if the certificate has that IP SAN). Give
// one: the configuration goes to tls.Client, which has no address to take
// a name from.
//
// The minimum version is TLS 1.2: the server enforces its own minimum, and
// the client should reach any server that is configured with one zerofs
// accepts.
func LoadClient(dir, serverName string) (*tls.Config, error) {
	const need = "the client certificates directory needs " + CAFile + " to verify the server, and " +
		ClientCertFile + " with " + ClientKeyFile + " to present a certificate"
	if err := checkDir(dir, need); err != nil {
		return nil, err
	}
	pool, _, err := loadCAs(filepath.Join(dir, CAFile), need)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		RootCAs:                     pool,
		ServerName:                  serverName,
		MinVersion:                  tls.VersionTLS12,
		DynamicRecordSizingDisabled: true, // bulk data, as on the server
	}

	certPath, keyPath := filepath.Join(dir, ClientCertFile), filepath.Join(dir, ClientKeyFile)
	certOK, err := exists(certPath, need)
	if err != nil {
		return nil, err
	}
	keyOK, err := exists(keyPath, need)
	if err != nil {
		return nil, err
	}
	switch {
	case !certOK && !keyOK:
		return cfg, nil // no client certificate: fine for a server that does not ask for one
	case !keyOK:
		return nil, missingPair(keyPath, ClientCertFile, ClientKeyFile)
	case !certOK:
		return nil, missingPair(certPath, ClientKeyFile, ClientCertFile)
	}
	cert, err := loadKeyPair(certPath, keyPath, need, time.Now())
	if err != nil {
		return nil, err
	}
	// Present the certificate whenever the server asks, rather than
	// through Certificates: from those crypto/tls sends nothing when the
	// issuer is not among the CAs the server lists, and the server then
	// says "no certificate" instead of why it refuses this one.
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}
	return cfg, nil
}

// exists says whether path exists; errors other than its absence (such as
// permission denied) are returned.
func exists(path, need string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fsError(path, need, err)
}

// missingPair is the error for one file of a certificate and key pair
// without the other.
func missingPair(missing, present, absent string) error {
	return &fileError{path: missing, errs: []error{ErrMissing, fs.ErrNotExist},
		msg: fmt.Sprintf("pki: %s: no such file (%s is there, and needs %s with it)", missing, present, absent)}
}
