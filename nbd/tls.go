package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"

	"zerofs/internal/pki"
)

// TLS (doc/proto.md, "TLS support"): the client sends NBD_OPT_STARTTLS,
// the server acknowledges it, and both run a TLS handshake on the same
// socket; every byte afterwards, the rest of the negotiation and the whole
// transmission phase, goes through TLS. There is no way back to plaintext.
//
// The three modes are the spec's:
//   - TLSOff: NOTLS. STARTTLS is refused with NBD_REP_ERR_POLICY.
//   - TLSOn: SELECTIVETLS with no TLS-only export: a client may upgrade or
//     not. (With access rules, a client that does not upgrade has no
//     identity, so every export is TLS-only for it: NBD_OPT_INFO/GO answer
//     NBD_REP_ERR_TLS_REQD and NBD_OPT_LIST leaves them out.)
//   - TLSRequire: FORCEDTLS. Before TLS every option but STARTTLS and
//     ABORT is answered NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME,
//     which has no error reply, closes the connection: nothing is listed
//     or opened in plaintext.
//
// After STARTTLS the spec requires forgetting the negotiation state set
// before it (structured replies, metadata contexts): a man in the middle
// could have injected it.

// TLSMode says whether the server offers or requires TLS.
type TLSMode int

const (
	TLSOff TLSMode = iota
	TLSOn
	TLSRequire
)

// ParseTLSMode reads the configuration's spelling: "off", "on", "require".
func ParseTLSMode(s string) (TLSMode, error) {
	switch s {
	case "off", "":
		return TLSOff, nil
	case "on":
		return TLSOn, nil
	case "require":
		return TLSRequire, nil
	}
	return TLSOff, fmt.Errorf("TLS mode %q: want \"off\", \"on\" or \"require\"", s)
}

func (m TLSMode) String() string {
	switch m {
	case TLSOn:
		return "on"
	case TLSRequire:
		return "require"
	}
	return "off"
}

// tlsState is what a connection knows about its TLS session.
type tlsState struct {
	conn    *tls.Conn // nil until STARTTLS succeeded
	batcher *recordBatcher
	names   []string // the verified client certificate's names (pki.Identity)
}

// startTLS handles NBD_OPT_STARTTLS.
func (h *handshake) startTLS(ctx context.Context) error {
	switch {
	case h.tlsMode == TLSOff || h.tlsConf == nil || h.raw == nil:
		// h.tlsConf or h.raw is nil only in tests of the negotiation alone.
		return h.replyError(optStartTLS, optErrorf(repErrPolicy, "TLS is off on this server (servers.nbd.tls)"))
	case h.tls.conn != nil:
		return h.replyError(optStartTLS, optErrorf(repErrInvalid, "TLS is already started"))
	case h.br.Buffered() > 0:
		// The client sent more before it could have seen our reply: those
		// bytes crossed in plaintext, and cannot begin a TLS session.
		return fmt.Errorf("client sent %d bytes after NBD_OPT_STARTTLS before its reply: closing", h.br.Buffered())
	}
	if err := h.reply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	// The negotiation's deadline is on the socket, so it bounds the TLS
	// handshake too: a client that stops halfway is closed with the rest.
	rb := &recordBatcher{Conn: h.raw}
	tc := tls.Server(rb, h.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	cs := tc.ConnectionState()
	h.tls = tlsState{conn: tc, batcher: rb, names: pki.Identity(cs)}
	h.br = bufio.NewReaderSize(tc, readBufferSize)
	h.bw = bufio.NewWriterSize(tc, writeBufferSize)
	h.structured, h.metaSet, h.metaExport = false, false, ""
	h.log.Debug("nbd: TLS started", "version", tls.VersionName(cs.Version), "cipher", tls.CipherSuiteName(cs.CipherSuite), "client", peerName(h.tls.names))
	return nil
}

var errTLSRequired = optErrorf(repErrTLSReqd, "this server requires TLS: send NBD_OPT_STARTTLS first")

// plaintextRefused reports whether option code must be refused because TLS
// is required and not started (every option but STARTTLS and ABORT); it
// logs, once per connection, that the client was refused.
func (h *handshake) plaintextRefused(code uint32) bool {
	if h.tlsMode != TLSRequire || h.tls.conn != nil || code == optStartTLS || code == optAbort {
		return false
	}
	if !h.refused {
		h.refused = true
		h.log.Warn("nbd: refused a client that did not start TLS (servers.nbd.tls = \"require\")", "option", optName(code))
	}
	return true
}

// mayUse decides whether this client may use export name (access.go): nil,
// or the error to reply. code is the option asking.
func (h *handshake) mayUse(code uint32, name string) *optError {
	if h.access.allows(h.tls.names, name) {
		return nil
	}
	if h.tls.conn == nil && (code == optInfo || code == optGo) {
		// SELECTIVETLS: the export is TLS-only for a client without a
		// certificate, and the spec has a reply that says so.
		h.log.Info("nbd: refused export to a client that did not start TLS", "export", name, "option", optName(code))
		return optErrorf(repErrTLSReqd, "export %q needs TLS with a client certificate", name)
	}
	h.log.Warn("nbd: refused export: no access rule allows this client", "export", name, "client", peerName(h.tls.names), "option", optName(code))
	return optErrorf(repErrPolicy, "this client (%s) may not use export %q", peerName(h.tls.names), name)
}

// recordBatcher sits between a TLS session and its socket. crypto/tls
// writes every record (at most 16 KiB of data) with a Write of its own: a
// system call per 16 KiB, which costs about as much CPU as encrypting the
// record. While the connection's writer holds it (a batch of replies), it
// gathers the records and writes them in pieces of up to batchBytes. Writes
// while not held (the handshake, alerts) pass straight through.
type recordBatcher struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
}

const batchBytes = 256 << 10

// NetConn is the socket (netserve watches it for the peer's hang-up).
func (b *recordBatcher) NetConn() net.Conn { return b.Conn }

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.held {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		return b.Conn.Write(p)
	}
	if len(b.buf)+len(p) > batchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// hold starts gathering records; release writes what was gathered and
// stops.
func (b *recordBatcher) hold() {
	b.mu.Lock()
	b.held = true
	b.mu.Unlock()
}

func (b *recordBatcher) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held = false
	return b.flushLocked()
}

func (b *recordBatcher) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}
