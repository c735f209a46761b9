package nbd

import (
	"context"
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
func Dial(ctx context.Context, addr, name string) (net.Conn, Negotiated, error) {
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
	info, err := negotiateGo(nc, name)
	stop()
	if err != nil {
		nc.Close()
		return nil, Negotiated{}, fmt.Errorf("nbd handshake with %s for %q: %w", addr, name, err)
	}
	nc.SetDeadline(time.Time{})
	return nc, info, nil
}

func negotiateGo(rw io.ReadWriter, name string) (Negotiated, error) {
	var g [18]byte
	if _, err := io.ReadFull(rw, g[:]); err != nil {
		return Negotiated{}, fmt.Errorf("read greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[:]) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic {
		return Negotiated{}, errors.New("not a newstyle NBD server")
	}
	hs := binary.BigEndian.Uint16(g[16:])
	if hs&flagFixedNewstyle == 0 {
		return Negotiated{}, errors.New("server does not speak fixed newstyle")
	}
	cf := clientFlagFixedNewstyle
	if hs&flagNoZeroes != 0 {
		cf |= clientFlagNoZeroes
	}
	if len(name) > 4096 {
		return Negotiated{}, errors.New("export name longer than 4096 bytes")
	}
	msg := binary.BigEndian.AppendUint32(nil, cf)
	msg = binary.BigEndian.AppendUint64(msg, optMagic)
	msg = binary.BigEndian.AppendUint32(msg, optGo)
	msg = binary.BigEndian.AppendUint32(msg, uint32(4+len(name)+2))
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(name)))
	msg = append(msg, name...)
	msg = binary.BigEndian.AppendUint16(msg, 0) // no NBD_INFO requests: NBD_INFO_EXPORT always comes
	if _, err := rw.Write(msg); err != nil {
		return Negotiated{}, fmt.Errorf("send NBD_OPT_GO: %w", err)
	}
	var info Negotiated
	gotInfo := false
	for {
		var h [20]byte
		if _, err := io.ReadFull(rw, h[:]); err != nil {
			return Negotiated{}, fmt.Errorf("read option reply: %w", err)
		}
		if binary.BigEndian.Uint64(h[:]) != optReplyMagic {
			return Negotiated{}, errors.New("bad option reply magic")
		}
		typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
		if n > 64<<10 {
			return Negotiated{}, fmt.Errorf("option reply of %d bytes", n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(rw, data); err != nil {
			return Negotiated{}, fmt.Errorf("read option reply: %w", err)
		}
		switch {
		case typ == repAck:
			if !gotInfo {
				return Negotiated{}, errors.New("server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT")
			}
			return info, nil
		case typ == repInfo && len(data) == 12 && binary.BigEndian.Uint16(data) == infoExport:
			info = Negotiated{Size: binary.BigEndian.Uint64(data[2:]), Flags: binary.BigEndian.Uint16(data[10:])}
			gotInfo = true
		case typ == repErrUnknown:
			return Negotiated{}, fmt.Errorf("%w: %s", ErrNoExport, data)
		case typ&repFlagError != 0:
			return Negotiated{}, fmt.Errorf("server refused NBD_OPT_GO (%s): %s", repName(typ), data)
		}
	}
}
