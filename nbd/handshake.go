package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
)

// Fixed-newstyle negotiation (the only style served: oldstyle is obsolete and
// cannot name exports).
//
// Decisions where the spec leaves a choice:
//   - Clients that do not set NBD_FLAG_C_FIXED_NEWSTYLE are still answered
//     in fixed newstyle (the spec allows it; such clients only ever send
//     NBD_OPT_EXPORT_NAME, whose reply is the same either way).
//   - NBD_OPT_STARTTLS: per Options.TLSMode (tls.go). A client that sends
//     bytes after STARTTLS before the reply is closed: they were sent in
//     plaintext and cannot be part of the TLS session.
//   - Exports a client may not use (access.go) are left out of
//     NBD_OPT_LIST and refused with NBD_REP_ERR_POLICY.
//   - NBD_OPT_INFO/GO always send NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE
//     (minimum 1, preferred 4096, maximum payload 32 MiB: the spec's
//     defaults; larger requests are served up to Options.MaxPayload, see
//     protocol.go), and
//     NBD_INFO_NAME / NBD_INFO_DESCRIPTION when asked.
//   - Metadata-context options on an unknown export: NBD_REP_ERR_UNKNOWN.
//   - NBD_OPT_LIST when the export directory cannot be read: the error
//     reply NBD_REP_ERR_UNKNOWN with the reason.
//   - Option data above 64 KiB (no legitimate option comes close) is read
//     and discarded up to 16 MiB and answered NBD_REP_ERR_TOO_BIG; beyond
//     that, or for NBD_OPT_EXPORT_NAME (which has no error reply), the
//     connection is closed without reading it.
//   - At most 4096 options per connection, and the whole negotiation within
//     Options.HandshakeTimeout; then the connection is closed.
//   - While the server shuts down, every option but NBD_OPT_ABORT is
//     answered NBD_REP_ERR_SHUTDOWN.

// negotiated is the outcome of a successful negotiation.
type negotiated struct {
	exp        export
	structured bool
	meta       bool     // base:allocation selected for exp
	tls        tlsState // the TLS session, if one was started
}

// errAbort: the client ended negotiation with NBD_OPT_ABORT (a soft
// disconnect, not an error).
var errAbort = errors.New("client aborted negotiation")

// handshake carries negotiation state. Build one with its fields, then
// call negotiate.
type handshake struct {
	br           *bufio.Reader
	bw           *bufio.Writer
	src          exportSource
	shuttingDown func() bool
	log          *slog.Logger

	// TLS: the mode, the configuration (nil with TLSOff), and the socket
	// the session is started on. startTLS replaces br and bw with readers
	// and writers of the TLS session.
	tlsMode TLSMode
	tlsConf *tls.Config
	raw     net.Conn
	tls     tlsState
	access  *Access
	refused bool // a plaintext option was refused for lack of TLS (logged once)

	noZeroes   bool
	structured bool
	metaSet    bool   // a SET_META_CONTEXT selected base:allocation...
	metaExport string // ...for this export name
}

// negotiate runs the handshake: greeting, client flags, then options until
// the client enters transmission (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), aborts
// (errAbort), or something fails. It reads from h.br and writes to h.bw; the
// caller enforces the handshake deadline on the underlying connection.
func (h *handshake) negotiate(ctx context.Context) (*negotiated, error) {
	greeting := binary.BigEndian.AppendUint64(nil, nbdMagic)
	greeting = binary.BigEndian.AppendUint64(greeting, optMagic)
	greeting = binary.BigEndian.AppendUint16(greeting, flagFixedNewstyle|flagNoZeroes)
	if err := h.send(greeting); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(h.br, cf[:]); err != nil {
		return nil, fmt.Errorf("read client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^clientFlagsKnown != 0 {
		// The spec: the server MUST drop the connection.
		return nil, fmt.Errorf("client flags %#x include unknown bits", flags)
	}
	h.noZeroes = flags&clientFlagNoZeroes != 0

	for count := 0; ; count++ {
		if count >= maxOptions {
			return nil, fmt.Errorf("more than %d options: closing", maxOptions)
		}
		var hdr [16]byte
		if _, err := io.ReadFull(h.br, hdr[:]); err != nil {
			return nil, fmt.Errorf("read option header: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[:]); m != optMagic {
			return nil, fmt.Errorf("option magic %#016x, want %#016x", m, optMagic)
		}
		code := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLen {
			if code == optExportName || length > maxOptionDiscard {
				return nil, fmt.Errorf("%s with %d bytes of data: closing", optName(code), length)
			}
			if _, err := io.CopyN(io.Discard, h.br, int64(length)); err != nil {
				return nil, fmt.Errorf("discard %d bytes of %s: %w", length, optName(code), err)
			}
			e := optErrorf(repErrTooBig, "%d bytes of option data exceed this server's limit of %d", length, maxOptionLen)
			if h.plaintextRefused(code) {
				e = errTLSRequired // FORCEDTLS answers every plaintext option so
			}
			if err := h.replyError(code, e); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(h.br, data); err != nil {
			return nil, fmt.Errorf("read %d bytes of %s: %w", length, optName(code), err)
		}
		n, err := h.option(ctx, code, data)
		if n != nil || err != nil {
			return n, err
		}
	}
}

// option handles one option. It returns a non-nil result when transmission
// begins, an error when the connection must end.
func (h *handshake) option(ctx context.Context, code uint32, data []byte) (*negotiated, error) {
	o, oerr := decodeOption(code, data)
	if code == optAbort {
		// Reply, but tolerate a client that has already gone.
		_ = h.reply(code, repAck, nil)
		return nil, errAbort
	}
	if h.plaintextRefused(code) {
		// FORCEDTLS: nothing is answered in plaintext, not even errors
		// about the option's data.
		if code == optExportName {
			return nil, errors.New("NBD_OPT_EXPORT_NAME before TLS with tls = \"require\": closing (this option has no error reply)")
		}
		return nil, h.replyError(code, errTLSRequired)
	}
	if code == optExportName {
		if oerr != nil {
			return nil, fmt.Errorf("%s: %v: closing (this option has no error reply)", optName(code), oerr)
		}
		return h.exportName(ctx, o.name)
	}
	if oerr != nil {
		return nil, h.replyError(code, oerr)
	}
	if h.shuttingDown() {
		return nil, h.replyError(code, optErrorf(repErrShutdown, "the server is shutting down"))
	}
	switch code {
	case optList:
		return nil, h.list(ctx)
	case optStartTLS:
		return nil, h.startTLS(ctx)
	case optStructuredReply:
		h.structured = true
		return nil, h.reply(code, repAck, nil)
	case optInfo, optGo:
		return h.info(ctx, o)
	case optListMetaContext, optSetMetaContext:
		return nil, h.metaContext(ctx, o)
	}
	// decodeOption rejects every other option; this is defence in depth.
	return nil, h.replyError(code, optErrorf(repErrUnsup, "option %d is not supported by this server", code))
}

// exportName handles NBD_OPT_EXPORT_NAME, which cannot fail politely: an
// unknown export closes the connection.
func (h *handshake) exportName(ctx context.Context, name string) (*negotiated, error) {
	if h.shuttingDown() {
		return nil, errors.New("NBD_OPT_EXPORT_NAME while shutting down: closing")
	}
	if err := h.mayUse(optExportName, name); err != nil {
		return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %s: closing (this option has no error reply)", name, err.msg)
	}
	exp, err := h.src.lookup(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %w: closing (this option has no error reply)", name, err)
	}
	n := h.result(exp)
	if err := h.send(exportNameReply(exp.size, transmissionFlags(exp, n.structured), h.noZeroes)); err != nil {
		return nil, err
	}
	return n, nil
}

func (h *handshake) result(exp export) *negotiated {
	return &negotiated{exp: exp, structured: h.structured, meta: h.metaSet && h.metaExport == exp.name, tls: h.tls}
}

// transmissionFlags are the flags advertised for exp.
func transmissionFlags(exp export, structured bool) uint16 {
	// FLUSH and FUA: fs.Flush seals and appends the open batch to the WAL.
	// CAN_MULTI_CONN: fs.Flush is filesystem-wide, so a FLUSH on any
	// connection covers writes completed on all of them, and there is no
	// per-connection cache.
	// CACHE: fs.Prefetch warms the shared cache.
	flags := tflagHasFlags | tflagSendFlush | tflagSendCache | tflagCanMultiConn
	if exp.readOnly {
		flags |= tflagReadOnly
	} else {
		// FAST_ZERO: zeroing without NO_HOLE punches a hole, one metadata
		// operation whatever the length, which is truly faster than writing.
		flags |= tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagSendFastZero
	}
	if structured {
		flags |= tflagSendDF
	}
	return flags
}

// list handles NBD_OPT_LIST.
func (h *handshake) list(ctx context.Context) error {
	exps, err := h.src.list(ctx)
	if err != nil {
		return h.replyError(optList, optErrorf(repErrUnknown, "cannot list exports: %v", err))
	}
	for _, e := range exps {
		if !h.access.allows(h.tls.names, e.Name) {
			continue
		}
		if err := h.queue(optList, repServer, serverReplyData(e.Name, "")); err != nil {
			return err
		}
	}
	return h.reply(optList, repAck, nil)
}

// info handles NBD_OPT_INFO and NBD_OPT_GO.
func (h *handshake) info(ctx context.Context, o option) (*negotiated, error) {
	if err := h.mayUse(o.code, o.name); err != nil {
		return nil, h.replyError(o.code, err)
	}
	exp, err := h.src.lookup(ctx, o.name)
	if err != nil {
		return nil, h.replyError(o.code, optErrorf(repErrUnknown, "export %q: %v", o.name, err))
	}
	n := h.result(exp)
	if err := h.queue(o.code, repInfo, infoExportData(exp.size, transmissionFlags(exp, n.structured))); err != nil {
		return nil, err
	}
	var sentName, sentDesc bool
	for _, typ := range o.infos {
		switch {
		case typ == infoName && !sentName:
			sentName = true
			if err := h.queue(o.code, repInfo, infoStringData(infoName, exp.name)); err != nil {
				return nil, err
			}
		case typ == infoDescription && !sentDesc:
			sentDesc = true
			if err := h.queue(o.code, repInfo, infoStringData(infoDescription, exportDescription(exp))); err != nil {
				return nil, err
			}
		}
	}
	if err := h.queue(o.code, repInfo, infoBlockSizeData(minBlockSize, preferredBlockSize, advertisedMaxPayload)); err != nil {
		return nil, err
	}
	if err := h.reply(o.code, repAck, nil); err != nil {
		return nil, err
	}
	if o.code == optGo {
		return n, nil
	}
	return nil, nil
}

func exportDescription(exp export) string {
	if exp.readOnly {
		return fmt.Sprintf("zerofs block device /%s/%s (read-only)", ExportDir, exp.name)
	}
	return fmt.Sprintf("zerofs block device /%s/%s", ExportDir, exp.name)
}

// metaContext handles NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
func (h *handshake) metaContext(ctx context.Context, o option) error {
	set := o.code == optSetMetaContext
	if set {
		// SET replaces the selection, even when it fails.
		h.metaSet, h.metaExport = false, ""
	}
	if !h.structured {
		return h.replyError(o.code, optErrorf(repErrInvalid, "%s requires NBD_OPT_STRUCTURED_REPLY first", optName(o.code)))
	}
	if err := h.mayUse(o.code, o.name); err != nil {
		return h.replyError(o.code, err)
	}
	if _, err := h.src.lookup(ctx, o.name); err != nil {
		return h.replyError(o.code, optErrorf(repErrUnknown, "export %q: %v", o.name, err))
	}
	if selectMeta(o.queries, !set) {
		id := uint32(0) // the spec: reserved in LIST replies
		if set {
			id = metaBaseAllocationID
			h.metaSet, h.metaExport = true, o.name
		}
		if err := h.queue(o.code, repMetaContext, metaContextData(id, metaBaseAllocation)); err != nil {
			return err
		}
	}
	return h.reply(o.code, repAck, nil)
}

// queue buffers an option reply; reply buffers and flushes.
func (h *handshake) queue(opt, rep uint32, data []byte) error {
	if _, err := h.bw.Write(appendOptReply(nil, opt, rep, data)); err != nil {
		return fmt.Errorf("send %s: %w", repName(rep), err)
	}
	return nil
}

func (h *handshake) reply(opt, rep uint32, data []byte) error {
	if err := h.queue(opt, rep, data); err != nil {
		return err
	}
	return h.flush()
}

func (h *handshake) replyError(opt uint32, e *optError) error {
	h.log.Debug("nbd: option refused", "option", optName(opt), "reply", repName(e.rep), "reason", e.msg)
	return h.reply(opt, e.rep, []byte(clipMessage(e.msg)))
}

func (h *handshake) send(b []byte) error {
	if _, err := h.bw.Write(b); err != nil {
		return fmt.Errorf("handshake write: %w", err)
	}
	return h.flush()
}

func (h *handshake) flush() error {
	if err := h.bw.Flush(); err != nil {
		return fmt.Errorf("handshake write: %w", err)
	}
	return nil
}
