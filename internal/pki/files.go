package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Reading and checking the files. Each failure is one line that names the
// file and says what is wrong with it, because the operator who reads it is
// looking at a directory of PEM files made by some other tool, and the
// generic errors of crypto/tls ("tls: private key does not match public
// key") say neither which files nor what to do.

// readFile reads path. need, said when the file is missing, is which files
// the directory must hold, so the operator learns all of them at once.
func readFile(path, need string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fsError(path, need, err)
	}
	return data, nil
}

// fsError turns an error of reading or stat'ing path into a fileError.
func fsError(path, need string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return &fileError{path: path, errs: []error{ErrMissing, err},
			msg: fmt.Sprintf("pki: %s: no such file (%s)", path, need)}
	}
	cause := err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		cause = pe.Err // the path is said once, first
	}
	return &fileError{path: path, errs: []error{err},
		msg: fmt.Sprintf("pki: %s: %v", path, cause)}
}

// checkDir says, better than "no such file" about a file in it, that a
// certificates directory does not exist at all, or is not a directory.
func checkDir(dir, need string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &fileError{path: dir, errs: []error{ErrMissing, err},
			msg: fmt.Sprintf("pki: %s: no such directory (%s)", dir, need)}
	case err != nil:
		return fsError(dir, need, err)
	case !fi.IsDir():
		return &fileError{path: dir, errs: []error{ErrInvalid},
			msg: fmt.Sprintf("pki: %s: not a directory (%s)", dir, need)}
	}
	return nil
}

// parseCerts returns every CERTIFICATE block of a PEM file, in order. Other
// blocks are skipped, as tls.X509KeyPair skips them.
func parseCerts(path string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, &fileError{path: path, errs: []error{ErrInvalid, err},
				msg: fmt.Sprintf("pki: %s: certificate %d: %v", path, len(certs)+1, err)}
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, &fileError{path: path, errs: []error{ErrInvalid},
			msg: fmt.Sprintf("pki: %s: no certificate in it", path)}
	}
	return certs, nil
}

// parseKey returns the first private key of a PEM file, in any encoding
// tls.X509KeyPair accepts: PKCS#1 (RSA), PKCS#8, or SEC 1 (EC).
func parseKey(path string, data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, &fileError{path: path, errs: []error{ErrInvalid},
				msg: fmt.Sprintf("pki: %s: no private key in it", path)}
		}
		// "EC PARAMETERS" may come first (openssl ecparam -genkey writes it).
		if b.Type != "PRIVATE KEY" && !strings.HasSuffix(b.Type, " PRIVATE KEY") {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
			return nil, &fileError{path: path, errs: []error{ErrInvalid},
				msg: fmt.Sprintf("pki: %s: the private key is encrypted; it must be stored unencrypted (qemu and nbdkit read it so too)", path)}
		}
		var key any
		var err error
		if key, err = x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
			if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
				key, err = x509.ParseECPrivateKey(b.Bytes)
			}
		}
		if err != nil {
			return nil, &fileError{path: path, errs: []error{ErrInvalid},
				msg: fmt.Sprintf("pki: %s: unparsable private key (neither PKCS#1, PKCS#8 nor SEC 1 EC)", path)}
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, &fileError{path: path, errs: []error{ErrInvalid},
				msg: fmt.Sprintf("pki: %s: unsupported private key type %T", path, key)}
		}
		return signer, nil
	}
}

// loadKeyPair reads a certificate (then its intermediates) and its key, and
// checks that they belong together and that the certificate is valid now.
func loadKeyPair(certPath, keyPath, need string, now time.Time) (tls.Certificate, error) {
	certPEM, err := readFile(certPath, need)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readFile(keyPath, need)
	if err != nil {
		return tls.Certificate{}, err
	}
	certs, err := parseCerts(certPath, certPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := parseKey(keyPath, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf := certs[0]
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return tls.Certificate{}, &fileError{path: keyPath, errs: []error{ErrKeyMismatch},
			msg: fmt.Sprintf("pki: %s does not match %s", keyPath, certPath)}
	}
	if err := checkValidity(certPath, leaf, now); err != nil {
		return tls.Certificate{}, err
	}
	c := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// checkValidity fails for a certificate that peers would refuse now. Better
// at load, in one line naming the file, than in every handshake, as a
// "bad certificate" alert at the peer.
func checkValidity(path string, c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return &fileError{path: path, errs: []error{ErrExpired},
			msg: fmt.Sprintf("pki: %s: expired on %s", path, c.NotAfter.UTC().Format(time.RFC3339))}
	}
	if now.Before(c.NotBefore) {
		return &fileError{path: path, errs: []error{ErrNotYetValid},
			msg: fmt.Sprintf("pki: %s: not yet valid: valid from %s (is this machine's clock right?)",
				path, c.NotBefore.UTC().Format(time.RFC3339))}
	}
	return nil
}

// loadCAs reads a file of one or more CA certificates into a pool.
func loadCAs(path, need string) (*x509.CertPool, []*x509.Certificate, error) {
	data, err := readFile(path, need)
	if err != nil {
		return nil, nil, err
	}
	certs, err := parseCerts(path, data)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}
