package nbd

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Option decoding is kept free of I/O and state: decodeOption turns one
// option's type and data into an option or the error reply it deserves, so
// it can be unit-tested and fuzzed on its own (FuzzDecodeOption).

// option is a decoded client option.
type option struct {
	code    uint32
	name    string   // export name: EXPORT_NAME, INFO, GO, LIST/SET_META_CONTEXT
	infos   []uint16 // information requests: INFO, GO
	queries []string // metadata context queries: LIST/SET_META_CONTEXT
}

// optError is an option that cannot be honoured: the error reply to send and
// a message for the client.
type optError struct {
	rep uint32
	msg string
}

func (e *optError) Error() string { return fmt.Sprintf("%s: %s", repName(e.rep), e.msg) }

func optErrorf(rep uint32, format string, args ...any) *optError {
	return &optError{rep: rep, msg: fmt.Sprintf(format, args...)}
}

// decodeOption decodes option code with data. Unknown options decode to
// NBD_REP_ERR_UNSUP; malformed ones to NBD_REP_ERR_INVALID.
func decodeOption(code uint32, data []byte) (option, *optError) {
	o := option{code: code}
	switch code {
	case optExportName:
		// The whole data is the name. Errors cannot be replied to this
		// option; the caller closes the connection on any error.
		name, err := checkString(data, "export name")
		if err != nil {
			return o, err
		}
		o.name = name
	case optAbort:
		// The spec asks servers to ignore data sent with ABORT.
	case optList, optStartTLS, optStructuredReply:
		if len(data) != 0 {
			return o, optErrorf(repErrInvalid, "option %s takes no data, got %d bytes", optName(code), len(data))
		}
	case optInfo, optGo:
		name, rest, err := takeString(data, "export name")
		if err != nil {
			return o, err
		}
		if len(rest) < 2 {
			return o, optErrorf(repErrInvalid, "%s: missing number of information requests", optName(code))
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if len(rest) != 2*n {
			return o, optErrorf(repErrInvalid, "%s: %d information requests need %d bytes, got %d", optName(code), n, 2*n, len(rest))
		}
		o.name = name
		o.infos = make([]uint16, n)
		for i := range n {
			o.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
		}
	case optListMetaContext, optSetMetaContext:
		name, rest, err := takeString(data, "export name")
		if err != nil {
			return o, err
		}
		if len(rest) < 4 {
			return o, optErrorf(repErrInvalid, "%s: missing number of queries", optName(code))
		}
		n := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		// Each query takes at least its 4-byte length: a count the data
		// cannot hold is invalid, checked before allocating for it.
		if uint64(n)*4 > uint64(len(rest)) {
			return o, optErrorf(repErrInvalid, "%s: %d queries do not fit in %d bytes", optName(code), n, len(rest))
		}
		o.name = name
		o.queries = make([]string, 0, n)
		for range n {
			var q string
			q, rest, err = takeString(rest, "metadata context query")
			if err != nil {
				return o, err
			}
			if !strings.Contains(q, ":") {
				return o, optErrorf(repErrInvalid, "metadata context query %q has no namespace", q)
			}
			o.queries = append(o.queries, q)
		}
		if len(rest) != 0 {
			return o, optErrorf(repErrInvalid, "%s: %d bytes after the last query", optName(code), len(rest))
		}
	default:
		return o, optErrorf(repErrUnsup, "option %d is not supported by this server", code)
	}
	return o, nil
}

// takeString reads a 32-bit length and that many bytes of string.
func takeString(data []byte, what string) (string, []byte, *optError) {
	if len(data) < 4 {
		return "", nil, optErrorf(repErrInvalid, "%s: missing length", what)
	}
	n := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(n) > uint64(len(data)) {
		return "", nil, optErrorf(repErrInvalid, "%s of %d bytes overruns the option's %d bytes", what, n, len(data))
	}
	s, err := checkString(data[:n], what)
	return s, data[n:], err
}

// checkString applies the spec's rules for strings: UTF-8, no NUL, at most
// 4096 bytes.
func checkString(b []byte, what string) (string, *optError) {
	switch {
	case len(b) > maxStringLen:
		return "", optErrorf(repErrInvalid, "%s of %d bytes exceeds the protocol's %d", what, len(b), maxStringLen)
	case !utf8.Valid(b):
		return "", optErrorf(repErrInvalid, "%s is not valid UTF-8", what)
	case strings.IndexByte(string(b), 0) >= 0:
		return "", optErrorf(repErrInvalid, "%s contains NUL", what)
	}
	return string(b), nil
}

// selectMeta evaluates metadata-context queries against the contexts we
// implement (only base:allocation), following the rules for the base:
// namespace: an empty query list lists everything (LIST) or selects nothing
// (SET); "base:" is a wildcard when listing and ignored when setting;
// "base:allocation" names the context; queries in other namespaces, and
// unknown base: leaf names, are ignored.
func selectMeta(queries []string, list bool) (baseAllocation bool) {
	if len(queries) == 0 {
		return list
	}
	for _, q := range queries {
		switch {
		case q == metaBaseAllocation:
			return true
		case list && q == "base:":
			return true
		}
	}
	return false
}

// Option reply encoding.

// appendOptReply appends a fixed-newstyle option reply.
func appendOptReply(dst []byte, opt, rep uint32, data []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, optReplyMagic)
	dst = binary.BigEndian.AppendUint32(dst, opt)
	dst = binary.BigEndian.AppendUint32(dst, rep)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...)
}

// serverReplyData is NBD_REP_SERVER's data: the name, then a description.
func serverReplyData(name, description string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	return append(b, description...)
}

// infoExportData is NBD_INFO_EXPORT's payload.
func infoExportData(size uint64, flags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, flags)
}

// infoStringData is NBD_INFO_NAME's or NBD_INFO_DESCRIPTION's payload.
func infoStringData(typ uint16, s string) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	return append(b, s...)
}

// infoBlockSizeData is NBD_INFO_BLOCK_SIZE's payload.
func infoBlockSizeData(minimum, preferred, maximum uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, minimum)
	b = binary.BigEndian.AppendUint32(b, preferred)
	return binary.BigEndian.AppendUint32(b, maximum)
}

// metaContextData is NBD_REP_META_CONTEXT's data.
func metaContextData(id uint32, name string) []byte {
	b := binary.BigEndian.AppendUint32(nil, id)
	return append(b, name...)
}

// exportNameReply is the reply to NBD_OPT_EXPORT_NAME: size, flags and,
// unless the client negotiated NO_ZEROES, 124 bytes of zeros.
func exportNameReply(size uint64, flags uint16, noZeroes bool) []byte {
	b := binary.BigEndian.AppendUint64(nil, size)
	b = binary.BigEndian.AppendUint16(b, flags)
	if !noZeroes {
		b = append(b, make([]byte, exportNameZero)...)
	}
	return b
}

func optName(code uint32) string {
	switch code {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optAbort:
		return "NBD_OPT_ABORT"
	case optList:
		return "NBD_OPT_LIST"
	case optPeekExport:
		return "NBD_OPT_PEEK_EXPORT"
	case optStartTLS:
		return "NBD_OPT_STARTTLS"
	case optInfo:
		return "NBD_OPT_INFO"
	case optGo:
		return "NBD_OPT_GO"
	case optStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case optListMetaContext:
		return "NBD_OPT_LIST_META_CONTEXT"
	case optSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	case optExtendedHeaders:
		return "NBD_OPT_EXTENDED_HEADERS"
	}
	return fmt.Sprintf("option %d", code)
}

func repName(rep uint32) string {
	switch rep {
	case repAck:
		return "NBD_REP_ACK"
	case repServer:
		return "NBD_REP_SERVER"
	case repInfo:
		return "NBD_REP_INFO"
	case repMetaContext:
		return "NBD_REP_META_CONTEXT"
	case repErrUnsup:
		return "NBD_REP_ERR_UNSUP"
	case repErrPolicy:
		return "NBD_REP_ERR_POLICY"
	case repErrInvalid:
		return "NBD_REP_ERR_INVALID"
	case repErrPlatform:
		return "NBD_REP_ERR_PLATFORM"
	case repErrTLSReqd:
		return "NBD_REP_ERR_TLS_REQD"
	case repErrUnknown:
		return "NBD_REP_ERR_UNKNOWN"
	case repErrShutdown:
		return "NBD_REP_ERR_SHUTDOWN"
	case repErrBlockSizeReqd:
		return "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case repErrTooBig:
		return "NBD_REP_ERR_TOO_BIG"
	}
	return fmt.Sprintf("reply %#x", rep)
}
