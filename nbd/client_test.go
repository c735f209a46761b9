package nbd

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// testClient is a minimal synchronous NBD client for tests that need control
// no real client gives (raw requests, exact reply shapes) or that run where
// spawning a client per operation would be slow (the crash test).
type testClient struct {
	nc         net.Conn
	br         *bufio.Reader
	size       uint64
	flags      uint16
	structured bool
	cookie     uint64
}

type clientOptions struct {
	structured bool // negotiate structured replies
	meta       bool // select base:allocation (implies structured)
	exportName bool // use NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO
}

// dialClient connects and negotiates export name.
func dialClient(addr, name string, o clientOptions) (*testClient, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &testClient{nc: nc, br: bufio.NewReader(nc)}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.handshake(name, o); err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *testClient) Close() error { return c.nc.Close() }

func (c *testClient) readFull(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c.br, b)
	return b, err
}

// greet reads the server greeting and sends client flags.
func (c *testClient) greet(clientFlags uint32) error {
	g, err := c.readFull(18)
	if err != nil {
		return err
	}
	if binary.BigEndian.Uint64(g) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic {
		return fmt.Errorf("bad greeting %x", g)
	}
	_, err = c.nc.Write(binary.BigEndian.AppendUint32(nil, clientFlags))
	return err
}

func (c *testClient) sendOption(code uint32, data []byte) error { return sendOption(c.nc, code, data) }

// greetedClient connects and exchanges the greeting and flags (fixed
// newstyle, no zeroes), leaving the negotiation to the test.
func greetedClient(t testing.TB, addr string) *testClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(time.Minute))
	c := &testClient{nc: nc, br: bufio.NewReader(nc)}
	if err := c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes); err != nil {
		t.Fatal(err)
	}
	return c
}

// option sends an option and returns the type of its final reply.
func (c *testClient) option(t testing.TB, code uint32, data []byte) uint32 {
	t.Helper()
	if err := c.sendOption(code, data); err != nil {
		t.Fatal(err)
	}
	replies, err := c.readOptReplies()
	if err != nil {
		t.Fatalf("%s: %v", optName(code), err)
	}
	return replies[len(replies)-1].typ
}

// startTLS sends NBD_OPT_STARTTLS, expects its acknowledgement, and goes on
// over the TLS session.
func (c *testClient) startTLS(t testing.TB, conf *tls.Config) {
	t.Helper()
	if typ := c.option(t, optStartTLS, nil); typ != repAck {
		t.Fatalf("STARTTLS: reply %s", repName(typ))
	}
	tc := tls.Client(c.nc, conf)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *testClient) readOptReply() (optReply, error) {
	h, err := c.readFull(20)
	if err != nil {
		return optReply{}, err
	}
	if m := binary.BigEndian.Uint64(h); m != optReplyMagic {
		return optReply{}, fmt.Errorf("option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data, err = c.readFull(int(binary.BigEndian.Uint32(h[16:])))
	return r, err
}

// readOptReplies reads replies to one option up to its final one (ACK or an
// error).
func (c *testClient) readOptReplies() ([]optReply, error) {
	var out []optReply
	for {
		r, err := c.readOptReply()
		if err != nil {
			return out, err
		}
		out = append(out, r)
		if r.typ == repAck || r.typ&repFlagError != 0 {
			return out, nil
		}
	}
}

func (c *testClient) handshake(name string, o clientOptions) error {
	if err := c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes); err != nil {
		return err
	}
	if o.structured || o.meta {
		if err := c.sendOption(optStructuredReply, nil); err != nil {
			return err
		}
		rs, err := c.readOptReplies()
		if err != nil {
			return err
		}
		if rs[len(rs)-1].typ != repAck {
			return fmt.Errorf("structured reply refused: %s", repName(rs[len(rs)-1].typ))
		}
		c.structured = true
	}
	if o.meta {
		d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		d = append(d, name...)
		d = binary.BigEndian.AppendUint32(d, 1)
		d = binary.BigEndian.AppendUint32(d, uint32(len(metaBaseAllocation)))
		d = append(d, metaBaseAllocation...)
		if err := c.sendOption(optSetMetaContext, d); err != nil {
			return err
		}
		rs, err := c.readOptReplies()
		if err != nil {
			return err
		}
		if len(rs) != 2 || rs[0].typ != repMetaContext {
			return fmt.Errorf("set meta context: replies %v", rs)
		}
	}
	if o.exportName {
		if err := c.sendOption(optExportName, []byte(name)); err != nil {
			return err
		}
		b, err := c.readFull(10)
		if err != nil {
			return err
		}
		c.size, c.flags = binary.BigEndian.Uint64(b), binary.BigEndian.Uint16(b[8:])
		return nil
	}
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	d = binary.BigEndian.AppendUint16(d, 0)
	if err := c.sendOption(optGo, d); err != nil {
		return err
	}
	rs, err := c.readOptReplies()
	if err != nil {
		return err
	}
	last := rs[len(rs)-1]
	if last.typ != repAck {
		return fmt.Errorf("NBD_OPT_GO: %s: %s", repName(last.typ), last.data)
	}
	for _, r := range rs {
		if r.typ == repInfo && len(r.data) == 12 && binary.BigEndian.Uint16(r.data) == infoExport {
			c.size, c.flags = binary.BigEndian.Uint64(r.data[2:]), binary.BigEndian.Uint16(r.data[10:])
		}
	}
	return nil
}

// send sends one request (with payload for writes) and returns its cookie.
func (c *testClient) send(typ, flags uint16, off uint64, length uint32, payload []byte) (uint64, error) {
	c.cookie++
	b := encodeRequest(request{flags: flags, typ: typ, cookie: c.cookie, off: off, length: length})
	_, err := c.nc.Write(append(b, payload...))
	return c.cookie, err
}

// chunk is one structured reply chunk.
type chunk struct {
	flags, typ uint16
	cookie     uint64
	payload    []byte
}

// result is a whole reply: the error and, for reads, the data.
type result struct {
	errno  uint32
	data   []byte  // READ data reassembled
	chunks []chunk // structured replies
	descs  [][2]uint32
}

// reply reads one reply (simple, or structured up to the DONE chunk). For a
// simple READ reply, readLen says how much data follows a success.
func (c *testClient) reply(readLen uint32, readOff uint64) (result, uint64, error) {
	var res result
	m, err := c.readFull(4)
	if err != nil {
		return res, 0, err
	}
	switch binary.BigEndian.Uint32(m) {
	case simpleReplyMagic:
		h, err := c.readFull(12)
		if err != nil {
			return res, 0, err
		}
		res.errno = binary.BigEndian.Uint32(h)
		cookie := binary.BigEndian.Uint64(h[4:])
		if res.errno == 0 && readLen > 0 {
			res.data, err = c.readFull(int(readLen))
		}
		return res, cookie, err
	case structuredReplyMagic:
		res.data = make([]byte, readLen)
		var cookie uint64
		for first := true; ; first = false {
			if !first {
				if m, err = c.readFull(4); err != nil {
					return res, 0, err
				}
				if binary.BigEndian.Uint32(m) != structuredReplyMagic {
					return res, 0, fmt.Errorf("chunk magic %x inside a structured reply", m)
				}
			}
			h, err := c.readFull(16)
			if err != nil {
				return res, 0, err
			}
			ch := chunk{flags: binary.BigEndian.Uint16(h), typ: binary.BigEndian.Uint16(h[2:]), cookie: binary.BigEndian.Uint64(h[4:])}
			if !first && ch.cookie != cookie {
				return res, 0, fmt.Errorf("interleaved replies: cookie %d inside %d (the test client is synchronous)", ch.cookie, cookie)
			}
			cookie = ch.cookie
			if ch.payload, err = c.readFull(int(binary.BigEndian.Uint32(h[12:]))); err != nil {
				return res, 0, err
			}
			res.chunks = append(res.chunks, ch)
			p := ch.payload
			switch ch.typ {
			case replyTypeOffsetData:
				off := binary.BigEndian.Uint64(p) - readOff
				copy(res.data[off:], p[8:])
			case replyTypeOffsetHole:
				off := binary.BigEndian.Uint64(p) - readOff
				clear(res.data[off : off+uint64(binary.BigEndian.Uint32(p[8:]))])
			case replyTypeBlockStatus:
				for i := 4; i+8 <= len(p); i += 8 {
					res.descs = append(res.descs, [2]uint32{binary.BigEndian.Uint32(p[i:]), binary.BigEndian.Uint32(p[i+4:])})
				}
			case replyTypeError, replyTypeErrorOffset:
				res.errno = binary.BigEndian.Uint32(p)
			}
			if ch.flags&replyFlagDone != 0 {
				return res, cookie, nil
			}
		}
	default:
		return res, 0, fmt.Errorf("reply magic %x", m)
	}
}

// do sends one request and waits for its reply.
func (c *testClient) do(typ, flags uint16, off uint64, length uint32, payload []byte) (result, error) {
	cookie, err := c.send(typ, flags, off, length, payload)
	if err != nil {
		return result{}, err
	}
	readLen := uint32(0)
	if typ == cmdRead {
		readLen = length
	}
	res, got, err := c.reply(readLen, off)
	if err == nil && got != cookie {
		err = fmt.Errorf("reply for cookie %d, want %d", got, cookie)
	}
	return res, err
}

// errnoError is a non-zero NBD error value from the server.
type errnoError uint32

func (e errnoError) Error() string { return errnoName(uint32(e)) }

func asErr(res result, err error) error {
	if err != nil {
		return err
	}
	if res.errno != 0 {
		return errnoError(res.errno)
	}
	return nil
}

func (c *testClient) Read(off uint64, n uint32) ([]byte, error) {
	res, err := c.do(cmdRead, 0, off, n, nil)
	if err := asErr(res, err); err != nil {
		return nil, err
	}
	return res.data, nil
}

func (c *testClient) Write(off uint64, p []byte, flags uint16) error {
	return asErr(c.do(cmdWrite, flags, off, uint32(len(p)), p))
}

func (c *testClient) Flush() error { return asErr(c.do(cmdFlush, 0, 0, 0, nil)) }

// Disconnect sends NBD_CMD_DISC and waits for the server to close.
func (c *testClient) Disconnect() error {
	if _, err := c.send(cmdDisc, 0, 0, 0, nil); err != nil {
		return err
	}
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after NBD_CMD_DISC: read %v, want EOF", err)
	}
	return c.nc.Close()
}
