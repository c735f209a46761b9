package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
)

// Fuzz targets for everything that parses client bytes. scripts/fuzz.sh
// finds them by name.

// FuzzDecodeRequest: any 28 bytes decode or fail cleanly, and the verdict
// respects the protocol's invariants whatever the session.
func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []request{
		{typ: cmdRead, off: 0, length: 4096},
		{typ: cmdWrite, flags: cmdFlagFUA, off: 1 << 20, length: 65536},
		{typ: cmdWrite, length: advertisedMaxPayload + 1},
		{typ: cmdFlush},
		{typ: cmdTrim, off: 1<<64 - 1, length: 1},
		{typ: cmdWriteZeroes, flags: cmdFlagNoHole | cmdFlagFastZero, length: 1 << 31},
		{typ: cmdBlockStatus, flags: cmdFlagReqOne, length: 0},
		{typ: cmdCache, length: 1},
		{typ: cmdDisc},
		{typ: 99, flags: 0xffff, off: 1 << 63, length: 1<<32 - 1},
	} {
		for _, sess := range []byte{0, 1, 2, 7, 15} {
			f.Add(encodeRequest(r), sess, uint64(1<<30))
		}
	}
	f.Add(bytes.Repeat([]byte{0xff}, requestHeaderLen), byte(3), uint64(0))
	f.Add([]byte{0x25, 0x60}, byte(0), uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, sessBits byte, size uint64) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeRequest(r), b) {
			t.Fatalf("decode/encode round trip differs: %x -> %+v", b, r)
		}
		s := session{size: size, readOnly: sessBits&1 != 0, structured: sessBits&2 != 0, meta: sessBits&4 != 0}
		v := checkRequest(r, s)
		if r.typ != cmdWrite && v.payload != 0 {
			t.Fatalf("%s announced a payload", cmdName(r.typ))
		}
		if r.typ == cmdWrite && v.payload != r.length {
			t.Fatalf("write payload %d, header says %d", v.payload, r.length)
		}
		if v.disc != (r.typ == cmdDisc) {
			t.Fatalf("disc %v for command %d", v.disc, r.typ)
		}
		if v.err == nil && !v.disc {
			switch {
			case r.typ != cmdFlush && r.off+uint64(r.length) > size:
				t.Fatalf("accepted %+v past the end %d", r, size)
			case r.typ != cmdFlush && r.off+uint64(r.length) < r.off:
				t.Fatalf("accepted %+v with an overflowing range", r)
			case (r.typ == cmdRead || r.typ == cmdWrite) && r.length > advertisedMaxPayload:
				t.Fatalf("accepted %+v above the maximum payload", r)
			case s.readOnly && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes):
				t.Fatalf("accepted a write on a read-only export")
			case r.flags&^flagsAllowed(r.typ, s) != 0:
				t.Fatalf("accepted undocumented flags %#x", r.flags)
			}
		}
		if v.err != nil {
			switch v.err.code {
			case errPerm, errIO, errInval, errNoSpc, errOverflow, errNotSup, errShutdown:
			default:
				t.Fatalf("error value %d is not one the spec allows", v.err.code)
			}
		}
	})
}

// FuzzDecodeOption: option data of any shape decodes or yields an error
// reply, never a panic, and decoded strings obey the protocol's limits.
func FuzzDecodeOption(f *testing.F) {
	f.Add(optExportName, []byte("disk"))
	f.Add(optAbort, []byte("x"))
	f.Add(optList, []byte{})
	f.Add(optList, []byte{1})
	f.Add(optStartTLS, []byte{})
	f.Add(optStructuredReply, []byte{})
	f.Add(optGo, nameData("disk", 0, 2, 0, 1, 0, 3))
	f.Add(optInfo, nameData("", 0, 0))
	f.Add(optInfo, binary.BigEndian.AppendUint32(nil, 1<<31))
	f.Add(optGo, nameData("disk", 0xff, 0xff))
	f.Add(optListMetaContext, metaData("disk"))
	f.Add(optListMetaContext, metaData("disk", "base:"))
	f.Add(optSetMetaContext, metaData("disk", "base:allocation", "qemu:dirty-bitmap:x"))
	f.Add(optSetMetaContext, append(nameData("disk"), 0xff, 0xff, 0xff, 0xff))
	f.Add(optSetMetaContext, metaData("disk", "nocolon"))
	f.Add(uint32(12345), []byte("whatever"))
	f.Fuzz(func(t *testing.T, code uint32, data []byte) {
		o, oerr := decodeOption(code, data)
		if oerr != nil {
			if oerr.rep&repFlagError == 0 {
				t.Fatalf("error reply %#x lacks the error bit", oerr.rep)
			}
			return
		}
		if len(o.name) > maxStringLen {
			t.Fatalf("accepted a %d-byte name", len(o.name))
		}
		for _, q := range o.queries {
			if len(q) > maxStringLen {
				t.Fatalf("accepted a %d-byte query", len(q))
			}
		}
		selectMeta(o.queries, true)
		selectMeta(o.queries, false)
	})
}

// fakeExports is an exportSource without a filesystem.
type fakeExports map[string]export

func (f fakeExports) lookup(ctx context.Context, name string) (export, error) {
	if e, ok := f[name]; ok {
		return e, nil
	}
	return export{}, errors.New("no such export")
}

func (f fakeExports) list(ctx context.Context) ([]ExportInfo, error) {
	var out []ExportInfo
	for _, e := range f {
		out = append(out, ExportInfo{Name: e.name, Size: e.size, ReadOnly: e.readOnly})
	}
	return out, nil
}

var fuzzExports = fakeExports{
	"disk": {name: "disk", ino: 5, size: 1 << 30},
	"ro":   {name: "ro", ino: 6, size: 1 << 20, readOnly: true},
}

// FuzzNegotiate drives the whole negotiation state machine with arbitrary
// client bytes: it must end (the input runs out) without panicking, and a
// successful negotiation must name a known export.
func FuzzNegotiate(f *testing.F) {
	flags := binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)
	seq := func(opts ...[]byte) []byte { return bytes.Join(append([][]byte{flags}, opts...), nil) }
	f.Add(seq(optionBytes(optGo, nameData("disk", 0, 0))))
	f.Add(seq(optionBytes(optExportName, []byte("disk"))))
	f.Add(seq(optionBytes(optList, nil), optionBytes(optAbort, nil)))
	f.Add(seq(optionBytes(optStructuredReply, nil), optionBytes(optSetMetaContext, metaData("disk", "base:allocation")),
		optionBytes(optInfo, nameData("disk", 0, 1, 0, 3)), optionBytes(optGo, nameData("disk", 0, 0))))
	f.Add(seq(optionBytes(optStartTLS, nil), optionBytes(99, []byte{1, 2, 3}), optionBytes(optGo, nameData("nope", 0, 0))))
	f.Add(seq(binary.BigEndian.AppendUint32(optionBytes(optInfo, nil)[:12], maxOptionLen+1)))
	f.Add([]byte{0, 0, 0, 0x10})
	f.Add(seq(optionBytes(optStartTLS, nil)))
	f.Add(seq(optionBytes(optStartTLS, []byte{1})))
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13}
	f.Fuzz(func(t *testing.T, in []byte) {
		// Each input runs without TLS and with TLS required. With TLS, a
		// STARTTLS that is the last option starts a handshake on a socket
		// whose peer is gone (the handshake must fail cleanly); with more
		// input after it, the connection must be refused.
		for _, mode := range []TLSMode{TLSOff, TLSRequire} {
			var access *Access
			if mode == TLSRequire {
				access = &Access{Rules: []AccessRule{{Client: "a", Exports: []string{"disk"}}}}
			}
			raw, peer := net.Pipe()
			peer.Close()
			h := &handshake{
				br: bufio.NewReader(bytes.NewReader(in)), bw: bufio.NewWriter(io.Discard),
				src: fuzzExports, shuttingDown: func() bool { return false }, log: slog.New(slog.DiscardHandler),
				tlsMode: mode, tlsConf: tlsConf, raw: raw,
				access: access,
			}
			n, err := h.negotiate(context.Background())
			raw.Close()
			if err == nil {
				if _, ok := fuzzExports[n.exp.name]; !ok {
					t.Fatalf("negotiated unknown export %q", n.exp.name)
				}
				if n.meta && !n.structured {
					t.Fatal("metadata context without structured replies")
				}
				if mode == TLSRequire && n.tls.conn == nil {
					t.Fatal("TLS required, but transmission began in plaintext")
				}
				if access != nil && n.tls.names == nil {
					t.Fatalf("export %q opened by a client no access rule allows", n.exp.name)
				}
			}
		}
	})
}
