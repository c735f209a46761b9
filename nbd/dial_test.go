package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestDial(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 8<<20)
	_, addr := startServer(t, f, Options{})
	ctx := context.Background()

	t.Run("export", func(t *testing.T) {
		nc, info, err := Dial(ctx, addr, "disk", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if info.Size != 8<<20 || info.ReadOnly() || info.Flags&tflagCanMultiConn == 0 {
			t.Fatalf("negotiated %+v", info)
		}
		// The connection is in the transmission phase with simple replies:
		// what the kernel will speak on it.
		c := &testClient{nc: nc, br: bufio.NewReader(nc), size: info.Size, flags: info.Flags}
		if _, err := c.send(cmdWrite, cmdFlagFUA, 4096, 4, []byte("abcd")); err != nil {
			t.Fatal(err)
		}
		if r, _, err := c.reply(0, 0); err != nil || r.errno != 0 {
			t.Fatalf("write: %v errno %d", err, r.errno)
		}
	})
	t.Run("unknown export", func(t *testing.T) {
		_, _, err := Dial(ctx, addr, "nope", nil)
		if !errors.Is(err, ErrNoExport) {
			t.Fatalf("got %v, want ErrNoExport", err)
		}
	})
	t.Run("silent server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				defer c.Close()
				io.Copy(io.Discard, c)
			}
		}()
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, _, err := Dial(ctx, ln.Addr().String(), "disk", nil); err == nil {
			t.Fatal("handshake with a silent server succeeded")
		}
	})
}

// FuzzNegotiateGo feeds the client side of the handshake arbitrary server
// bytes: it must return an error or a result, never panic or hang.
func FuzzNegotiateGo(f *testing.F) {
	greet := binary.BigEndian.AppendUint64(nil, nbdMagic)
	greet = binary.BigEndian.AppendUint64(greet, optMagic)
	greet = binary.BigEndian.AppendUint16(greet, flagFixedNewstyle|flagNoZeroes)
	reply := func(typ uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, optReplyMagic)
		b = binary.BigEndian.AppendUint32(b, optGo)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, 1<<30)
	info = binary.BigEndian.AppendUint16(info, tflagHasFlags|tflagSendFlush)
	f.Add(bytes.Join([][]byte{greet, reply(repInfo, info), reply(repAck, nil)}, nil))
	f.Add(bytes.Join([][]byte{greet, reply(repErrUnknown, []byte("no such export"))}, nil))
	f.Add(bytes.Join([][]byte{greet, reply(repAck, nil)}, nil))
	f.Add(greet[:10])
	tlsReply := binary.BigEndian.AppendUint64(nil, optReplyMagic)
	tlsReply = binary.BigEndian.AppendUint32(tlsReply, optStartTLS)
	tlsReply = binary.BigEndian.AppendUint32(tlsReply, repAck)
	tlsReply = binary.BigEndian.AppendUint32(tlsReply, 0)
	f.Add(bytes.Join([][]byte{greet, tlsReply, {0x16, 3, 3, 0, 5, 1, 2, 3, 4, 5}}, nil))
	conf := &tls.Config{InsecureSkipVerify: true}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, c := range []*tls.Config{nil, conf} {
			clientHandshake(context.Background(), &byteConn{r: bytes.NewReader(in)}, "disk", c)
		}
	})
}

// byteConn is a net.Conn that reads a fixed input and discards writes.
type byteConn struct {
	net.Conn // nil: only the methods below may be called
	r        io.Reader
}

func (c *byteConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }
func (c *byteConn) Close() error                     { return nil }
