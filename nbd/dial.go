package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Negotiated is what a server tells a client about an export in the
// handshake.
type Negotiated struct {
	Size  uint64
	Flags uint16 // transmission flags (NBD_FLAG_*)
}

// ReadOnly reports whether the server serves the export read-only.
func (e Negotiated) ReadOnly() bool { return e.Flags&tflagReadOnly != 0 }

// ErrNoExport is returned by Dial when the server has no export of that
// name (NBD_REP_ERR_UNKNOWN).
var ErrNoExport = errors.New("nbd: no such export")

// Dial connects to an NBD server, selects export name with NBD_OPT_GO and
// returns the connection in the transmission phase. It negotiates nothing
// else: no structured replies, no metadata contexts, because its user is the
// Linux kernel's nbd driver (package nbd/kernel), which speaks simple replies
// only. The handshake is bounded by ctx and by a 30 s deadline, so a server
// that accepts but never answers cannot hold a reconnect loop forever.
//
// With tlsConf, Dial starts TLS before anything else (the spec's advice:
// STARTTLS as the first option, so no option crosses in plaintext) and
// fails if the server declines; the connection returned is the *tls.Conn.
func Dial(ctx context.Context, addr, name string, tlsConf *tls.Config) (net.Conn, Negotiated, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, Negotiated{}, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	nc.SetDeadline(deadline)
	// A cancelled ctx interrupts a handshake blocked in a read.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	conn, info, err := clientHandshake(ctx, nc, name, tlsConf)
	stop()
	if err != nil {
		nc.Close()
		return nil, Negotiated{}, fmt.Errorf("nbd handshake with %s for %q: %w", addr, name, err)
	}
	nc.SetDeadline(time.Time{})
	return conn, info, nil
}

func clientHandshake(ctx context.Context, nc net.Conn, name string, tlsConf *tls.Config) (net.Conn, Negotiated, error) {
	var g [18]byte
	if _, err := io.ReadFull(nc, g[:]); err != nil {
		return nil, Negotiated{}, fmt.Errorf("read greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[:]) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic {
		return nil, Negotiated{}, errors.New("not a newstyle NBD server")
	}
	hs := binary.BigEndian.Uint16(g[16:])
	if hs&flagFixedNewstyle == 0 {
		return nil, Negotiated{}, errors.New("server does not speak fixed newstyle")
	}
	if len(name) > 4096 {
		return nil, Negotiated{}, errors.New("export name longer than 4096 bytes")
	}
	cf := clientFlagFixedNewstyle
	if hs&flagNoZeroes != 0 {
		cf |= clientFlagNoZeroes
	}
	if _, err := nc.Write(binary.BigEndian.AppendUint32(nil, cf)); err != nil {
		return nil, Negotiated{}, fmt.Errorf("send client flags: %w", err)
	}
	var rw net.Conn = nc
	if tlsConf != nil {
		if err := sendOption(nc, optStartTLS, nil); err != nil {
			return nil, Negotiated{}, err
		}
		typ, data, err := readOptReply(nc, optStartTLS)
		if err != nil {
			return nil, Negotiated{}, err
		}
		if typ != repAck {
			return nil, Negotiated{}, fmt.Errorf("server refused TLS (%s): %s", repName(typ), data)
		}
		tc := tls.Client(nc, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, Negotiated{}, fmt.Errorf("TLS handshake: %w", err)
		}
		rw = tc
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0) // no NBD_INFO requests: NBD_INFO_EXPORT always comes
	if err := sendOption(rw, optGo, data); err != nil {
		return nil, Negotiated{}, err
	}
	var info Negotiated
	gotInfo := false
	for {
		typ, data, err := readOptReply(rw, optGo)
		if err != nil {
			return nil, Negotiated{}, err
		}
		switch {
		case typ == repAck:
			if !gotInfo {
				return nil, Negotiated{}, errors.New("server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT")
			}
			return rw, info, nil
		case typ == repInfo && len(data) == 12 && binary.BigEndian.Uint16(data) == infoExport:
			info = Negotiated{Size: binary.BigEndian.Uint64(data[2:]), Flags: binary.BigEndian.Uint16(data[10:])}
			gotInfo = true
		case typ == repErrUnknown:
			return nil, Negotiated{}, fmt.Errorf("%w: %s", ErrNoExport, data)
		case typ == repErrTLSReqd:
			return nil, Negotiated{}, fmt.Errorf("server requires TLS (%s): %s", repName(typ), data)
		case typ&repFlagError != 0:
			return nil, Negotiated{}, fmt.Errorf("server refused NBD_OPT_GO (%s): %s", repName(typ), data)
		}
	}
}

func sendOption(w io.Writer, code uint32, data []byte) error {
	msg := binary.BigEndian.AppendUint64(nil, optMagic)
	msg = binary.BigEndian.AppendUint32(msg, code)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	if _, err := w.Write(append(msg, data...)); err != nil {
		return fmt.Errorf("send %s: %w", optName(code), err)
	}
	return nil
}

// readOptReply reads one reply to option code.
func readOptReply(r io.Reader, code uint32) (typ uint32, data []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read %s reply: %w", optName(code), err)
	}
	if binary.BigEndian.Uint64(h[:]) != optReplyMagic {
		return 0, nil, errors.New("bad option reply magic")
	}
	if got := binary.BigEndian.Uint32(h[8:]); got != code {
		return 0, nil, fmt.Errorf("reply to option %d, want %s", got, optName(code))
	}
	typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if n > 64<<10 {
		return 0, nil, fmt.Errorf("option reply of %d bytes", n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("read %s reply: %w", optName(code), err)
	}
	return typ, data, nil
}
