package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"zerofs/fs"
	"zerofs/internal/budget"
	"zerofs/internal/testutil"
)

// protoEnv is a server with a writable export "disk" (16 MiB) and a
// read-only export "ro" (1 MiB).
type protoEnv struct {
	f    *fs.FS
	srv  *Server
	addr string
	ops  *opCounter
}

const protoDiskSize = 16 << 20

func newProtoEnv(t *testing.T, opts Options) *protoEnv {
	t.Helper()
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", protoDiskSize)
	mustCreateExport(t, f, "ro", 1<<20)
	ro, err := lookupExportFile(context.Background(), f, "ro")
	if err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o444)
	if _, _, err := f.SetAttr(context.Background(), fs.Root, ro.Ino, fs.SetAttrs{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	ops := newOpCounter()
	if opts.Observe == nil {
		opts.Observe = ops.observe
	}
	srv, addr := startServer(t, f, opts)
	return &protoEnv{f: f, srv: srv, addr: addr, ops: ops}
}

func (e *protoEnv) dial(t *testing.T, name string, o clientOptions) *testClient {
	t.Helper()
	c, err := dialClient(e.addr, name, o)
	if err != nil {
		t.Fatalf("connect to %q: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkAlive proves the server still serves: a fresh connection writes and
// reads back.
func (e *protoEnv) checkAlive(t *testing.T) {
	t.Helper()
	c, err := dialClient(e.addr, "disk", clientOptions{structured: true})
	if err != nil {
		t.Fatalf("server no longer accepts connections: %v", err)
	}
	defer c.Close()
	p := []byte("still alive")
	if err := c.Write(protoDiskSize-4096, p, 0); err != nil {
		t.Fatalf("server no longer writes: %v", err)
	}
	got, err := c.Read(protoDiskSize-4096, uint32(len(p)))
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("server no longer reads: %q, %v", got, err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
}

func TestReadWriteShapes(t *testing.T) {
	env := newProtoEnv(t, Options{})
	data := make([]byte, 300_000)
	rand.Read(data)
	for _, tc := range []struct {
		name string
		o    clientOptions
	}{
		{"simple replies via NBD_OPT_GO", clientOptions{}},
		{"structured replies", clientOptions{structured: true}},
		{"NBD_OPT_EXPORT_NAME", clientOptions{exportName: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := env.dial(t, "disk", tc.o)
			if c.size != protoDiskSize {
				t.Fatalf("size %d, want %d", c.size, protoDiskSize)
			}
			off := uint64(1<<20 + 1000) // unaligned, across chunks
			if err := c.Write(off, data, 0); err != nil {
				t.Fatal(err)
			}
			got, err := c.Read(off, uint32(len(data)))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back differs (err %v)", err)
			}
			// A range spanning a hole, data and a hole again.
			got, err = c.Read(off-200_000, uint32(len(data)+400_000))
			if err != nil {
				t.Fatal(err)
			}
			want := append(append(make([]byte, 200_000), data...), make([]byte, 200_000)...)
			if !bytes.Equal(got, want) {
				t.Fatal("read around the data differs")
			}
			if err := c.Disconnect(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStructuredReadChunks(t *testing.T) {
	env := newProtoEnv(t, Options{})
	c := env.dial(t, "disk", clientOptions{structured: true})
	block := bytes.Repeat([]byte{0xab}, 4096)
	if err := c.Write(8192, block, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		flags  uint16
		off    uint64
		length uint32
		want   []uint16 // chunk types
	}{
		{"all hole", 0, 1 << 20, 8192, []uint16{replyTypeOffsetHole}},
		{"hole data hole", 0, 4096, 12288, []uint16{replyTypeOffsetHole, replyTypeOffsetData, replyTypeOffsetHole}},
		{"large sparse read through extents", 0, 0, 1 << 20, []uint16{replyTypeOffsetHole, replyTypeOffsetData, replyTypeOffsetHole}},
		{"DF: one data chunk", cmdFlagDF, 4096, 12288, []uint16{replyTypeOffsetData}},
		{"DF on a hole: one hole chunk", cmdFlagDF, 1 << 20, 8192, []uint16{replyTypeOffsetHole}},
		{"unaligned zero edges are data", 0, 100, 200, []uint16{replyTypeOffsetData}},
		{"zero length: NONE", 0, 0, 0, []uint16{replyTypeNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.do(cmdRead, tc.flags, tc.off, tc.length, nil)
			if err := asErr(res, err); err != nil {
				t.Fatal(err)
			}
			var types []uint16
			for _, ch := range res.chunks {
				types = append(types, ch.typ)
			}
			if !equalSlices(types, tc.want) {
				t.Fatalf("chunk types %v, want %v", types, tc.want)
			}
			want := make([]byte, tc.length)
			for i := range want {
				if pos := tc.off + uint64(i); pos >= 8192 && pos < 12288 {
					want[i] = 0xab
				}
			}
			if !bytes.Equal(res.data, want) {
				t.Fatal("reassembled data differs")
			}
			if last := res.chunks[len(res.chunks)-1]; last.flags&replyFlagDone == 0 {
				t.Fatal("last chunk lacks NBD_REPLY_FLAG_DONE")
			}
		})
	}
}

func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBlockStatus(t *testing.T) {
	env := newProtoEnv(t, Options{})
	c := env.dial(t, "disk", clientOptions{meta: true})
	if err := c.Write(1<<20, bytes.Repeat([]byte{1}, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	const hz = stateHole | stateZero
	for _, tc := range []struct {
		name   string
		flags  uint16
		off    uint64
		length uint32
		want   [][2]uint32
	}{
		{"hole data hole", 0, 0, 2 << 20, [][2]uint32{{1 << 20, hz}, {64 << 10, 0}, {1<<20 - 64<<10, hz}}},
		{"REQ_ONE", cmdFlagReqOne, 0, 2 << 20, [][2]uint32{{1 << 20, hz}}},
		{"inside data", 0, 1<<20 + 10, 100, [][2]uint32{{100, 0}}},
		{"to the end", 0, protoDiskSize - 4096, 4096, [][2]uint32{{4096, hz}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.do(cmdBlockStatus, tc.flags, tc.off, tc.length, nil)
			if err := asErr(res, err); err != nil {
				t.Fatal(err)
			}
			if !equalSlices(res.descs, tc.want) {
				t.Fatalf("descriptors %v, want %v", res.descs, tc.want)
			}
		})
	}
	// Trimming and zeroing make holes.
	if err := asErr(c.do(cmdTrim, 0, 1<<20, 32<<10, nil)); err != nil {
		t.Fatal(err)
	}
	if err := asErr(c.do(cmdWriteZeroes, cmdFlagFastZero, 1<<20+32<<10, 32<<10, nil)); err != nil {
		t.Fatal(err)
	}
	res, err := c.do(cmdBlockStatus, 0, 1<<20, 64<<10, nil)
	if err := asErr(res, err); err != nil {
		t.Fatal(err)
	}
	if want := [][2]uint32{{64 << 10, hz}}; !equalSlices(res.descs, want) {
		t.Fatalf("after trim and zero: %v, want %v", res.descs, want)
	}
	// NO_HOLE writes zeros over data; they read back as zeros. (Package fs
	// stores written zeros as a hole when it seals the batch, so the status
	// may say hole or data: both are allowed.)
	if err := c.Write(1<<20, bytes.Repeat([]byte{9}, 8192), 0); err != nil {
		t.Fatal(err)
	}
	if err := asErr(c.do(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFUA, 1<<20, 4096, nil)); err != nil {
		t.Fatal(err)
	}
	got, err := c.Read(1<<20, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(make([]byte, 4096), bytes.Repeat([]byte{9}, 4096)...); !bytes.Equal(got, want) {
		t.Fatal("NO_HOLE zeroing did not zero exactly its range")
	}
}

// TestRequestErrors sends every kind of bad request on one connection: each
// gets its error reply, and the connection (and the server) go on.
func TestRequestErrors(t *testing.T) {
	env := newProtoEnv(t, Options{})
	type tc struct {
		name    string
		export  string
		o       clientOptions
		typ     uint16
		flags   uint16
		off     uint64
		length  uint32
		payload int // bytes of payload sent after the header
		want    uint32
	}
	structured := clientOptions{structured: true}
	meta := clientOptions{meta: true}
	cases := []tc{
		{name: "read past the end", typ: cmdRead, off: protoDiskSize - 10, length: 20, want: errInval},
		{name: "read at offset overflow", typ: cmdRead, off: 1<<64 - 10, length: 20, want: errInval},
		{name: "write past the end", typ: cmdWrite, off: protoDiskSize - 10, length: 20, payload: 20, want: errNoSpc},
		{name: "write above the maximum payload", typ: cmdWrite, length: DefaultMaxPayload + 1, payload: DefaultMaxPayload + 1, want: errInval},
		{name: "read above the maximum (simple)", typ: cmdRead, length: DefaultMaxPayload + 1, want: errInval},
		{name: "read above the maximum (structured)", o: structured, typ: cmdRead, length: DefaultMaxPayload + 1, want: errOverflow},
		{name: "unknown command", typ: 99, off: 0, length: 512, want: errInval},
		{name: "unknown command (structured)", o: structured, typ: 42, want: errInval},
		{name: "unknown flag", typ: cmdRead, flags: 1 << 9, length: 512, want: errInval},
		{name: "DF without structured replies", typ: cmdRead, flags: cmdFlagDF, length: 512, want: errInval},
		{name: "REQ_ONE on a read", o: structured, typ: cmdRead, flags: cmdFlagReqOne, length: 512, want: errInval},
		{name: "NO_HOLE on a trim", typ: cmdTrim, flags: cmdFlagNoHole, length: 512, want: errInval},
		{name: "flush with an offset", typ: cmdFlush, off: 4096, want: errInval},
		{name: "block status without a context", o: structured, typ: cmdBlockStatus, length: 4096, want: errInval},
		{name: "block status past the end", o: meta, typ: cmdBlockStatus, off: protoDiskSize, length: 1, want: errInval},
		{name: "block status of 0 bytes", o: meta, typ: cmdBlockStatus, off: 0, length: 0, want: errInval},
		{name: "trim past the end", typ: cmdTrim, off: protoDiskSize, length: 1, want: errInval},
		{name: "write zeroes past the end", typ: cmdWriteZeroes, off: protoDiskSize - 1, length: 2, want: errNoSpc},
		{name: "fast zero with NO_HOLE", typ: cmdWriteZeroes, flags: cmdFlagFastZero | cmdFlagNoHole, length: 4096, want: errNotSup},
		{name: "cache past the end", typ: cmdCache, off: protoDiskSize, length: 4096, want: errInval},
		{name: "write to a read-only export", export: "ro", typ: cmdWrite, length: 512, payload: 512, want: errPerm},
		{name: "trim on a read-only export", export: "ro", typ: cmdTrim, length: 512, want: errPerm},
		{name: "zero on a read-only export", export: "ro", typ: cmdWriteZeroes, length: 512, want: errPerm},
		// Zero-length requests within the export succeed and do nothing.
		{name: "read of 0 bytes", typ: cmdRead, off: 4096, want: 0},
		{name: "read of 0 bytes at the end", typ: cmdRead, off: protoDiskSize, want: 0},
		{name: "write of 0 bytes", typ: cmdWrite, off: 4096, want: 0},
		{name: "trim of 0 bytes", typ: cmdTrim, off: 4096, want: 0},
		{name: "write zeroes of 0 bytes", typ: cmdWriteZeroes, off: 4096, want: 0},
		{name: "cache of 0 bytes", typ: cmdCache, off: 4096, want: 0},
		{name: "read of 0 bytes past the end", typ: cmdRead, off: protoDiskSize + 1, want: errInval},
		// FUA is accepted on every command.
		{name: "FUA on a read", typ: cmdRead, flags: cmdFlagFUA, length: 512, want: 0},
		{name: "FUA on a flush", typ: cmdFlush, flags: cmdFlagFUA, want: 0},
		{name: "cache", typ: cmdCache, length: 1 << 20, want: 0},
		{name: "read on a read-only export", export: "ro", typ: cmdRead, length: 512, want: 0},
	}
	conns := map[string]*testClient{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			export := c.export
			if export == "" {
				export = "disk"
			}
			key := export + "/" + map[bool]string{false: "s", true: "S"}[c.o.structured] + map[bool]string{false: "", true: "m"}[c.o.meta]
			cl := conns[key]
			if cl == nil {
				var err error
				if cl, err = dialClient(env.addr, export, c.o); err != nil {
					t.Fatal(err)
				}
				conns[key] = cl
			}
			readLen := uint32(0)
			if c.typ == cmdRead {
				readLen = c.length
			}
			cookie, err := cl.send(c.typ, c.flags, c.off, c.length, make([]byte, c.payload))
			if err != nil {
				t.Fatal(err)
			}
			res, got, err := cl.reply(readLen, c.off)
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if got != cookie {
				t.Fatalf("reply cookie %d, want %d", got, cookie)
			}
			if res.errno != c.want {
				t.Fatalf("error %s, want %s", errnoName(res.errno), errnoName(c.want))
			}
			if cl.structured && c.want != 0 {
				if len(res.chunks) != 1 || res.chunks[0].typ != replyTypeError || len(res.chunks[0].payload) <= 6 {
					t.Fatalf("structured error reply %+v: want one NBD_REPLY_TYPE_ERROR chunk with a message", res.chunks)
				}
			}
			// The same connection still works.
			if _, err := cl.Read(0, 512); err != nil {
				t.Fatalf("connection broken after the error: %v", err)
			}
		})
	}
	env.checkAlive(t)
	if _, _, errs := env.ops.get("unknown"); errs != 2 {
		t.Errorf("Observe saw %d failed unknown commands, want 2", errs)
	}
}

// rawConn is a connection to drive byte by byte.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return nc
}

// expectClosed waits for the server to close nc (EOF or reset).
func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue // replies sent before the close
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("server did not close the connection")
		}
		return
	}
}

func TestBrokenStreams(t *testing.T) {
	env := newProtoEnv(t, Options{HandshakeTimeout: 2 * time.Second})
	newClient := func(t *testing.T, o clientOptions) *testClient { return env.dial(t, "disk", o) }
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"bad request magic closes", func(t *testing.T) {
			c := newClient(t, clientOptions{})
			b := encodeRequest(request{typ: cmdRead, length: 512})
			b[0] ^= 0xff
			c.nc.Write(b)
			expectClosed(t, c.nc)
		}},
		{"payload after an unknown command closes", func(t *testing.T) {
			c := newClient(t, clientOptions{})
			c.send(77, 0, 0, 64, bytes.Repeat([]byte{0x55}, 64))
			res, _, err := c.reply(0, 0)
			if err != nil || res.errno != errInval {
				t.Fatalf("unknown command: %v %v", res.errno, err)
			}
			expectClosed(t, c.nc) // the payload is not a request header
		}},
		{"disconnect mid-payload", func(t *testing.T) {
			c := newClient(t, clientOptions{})
			b := encodeRequest(request{typ: cmdWrite, length: 1 << 20})
			c.nc.Write(append(b, make([]byte, 1000)...))
			c.nc.Close()
		}},
		{"disconnect mid-header", func(t *testing.T) {
			c := newClient(t, clientOptions{})
			c.nc.Write(encodeRequest(request{typ: cmdRead, length: 1 << 20})[:10])
			c.nc.Close()
		}},
		{"disconnect with requests in flight", func(t *testing.T) {
			c := newClient(t, clientOptions{})
			for range 64 {
				c.send(cmdRead, 0, 0, 1<<20, nil)
			}
			c.nc.Close()
		}},
		{"requests after NBD_CMD_DISC are not served", func(t *testing.T) {
			c := newClient(t, clientOptions{})
			c.send(cmdDisc, 0, 0, 0, nil)
			c.send(cmdRead, 0, 0, 512, nil)
			expectClosed(t, c.nc)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			env.checkAlive(t)
		})
	}
}

// optionBytes encodes one option.
func optionBytes(code uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func nameData(name string, tail ...byte) []byte {
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	return append(append(d, name...), tail...)
}

func metaData(name string, queries ...string) []byte {
	d := nameData(name)
	d = binary.BigEndian.AppendUint32(d, uint32(len(queries)))
	for _, q := range queries {
		d = binary.BigEndian.AppendUint32(d, uint32(len(q)))
		d = append(d, q...)
	}
	return d
}

func TestNegotiation(t *testing.T) {
	env := newProtoEnv(t, Options{HandshakeTimeout: 2 * time.Second})
	type exchange struct {
		opt  []byte   // option bytes to send
		want []uint32 // reply types expected, in order (the last is final)
	}
	for _, tc := range []struct {
		name        string
		clientFlags uint32
		steps       []exchange
		closed      bool // the server closes after the steps
	}{
		{name: "unknown option", steps: []exchange{{optionBytes(99, []byte("x")), []uint32{repErrUnsup}}}},
		{name: "extended headers are not offered", steps: []exchange{{optionBytes(optExtendedHeaders, nil), []uint32{repErrUnsup}}}},
		{name: "STARTTLS is refused by policy", steps: []exchange{{optionBytes(optStartTLS, nil), []uint32{repErrPolicy}}}},
		{name: "LIST", steps: []exchange{{optionBytes(optList, nil), []uint32{repServer, repServer, repAck}}}},
		{name: "LIST with data", steps: []exchange{{optionBytes(optList, []byte{1}), []uint32{repErrInvalid}}}},
		{name: "STRUCTURED_REPLY with data", steps: []exchange{{optionBytes(optStructuredReply, []byte{1}), []uint32{repErrInvalid}}}},
		{name: "INFO", steps: []exchange{{optionBytes(optInfo, nameData("disk", 0, 2, 0, 1, 0, 2)), []uint32{repInfo, repInfo, repInfo, repInfo, repAck}}}},
		{name: "INFO on an unknown export", steps: []exchange{{optionBytes(optInfo, nameData("nope", 0, 0)), []uint32{repErrUnknown}}}},
		{name: "GO on the default export", steps: []exchange{{optionBytes(optGo, nameData("", 0, 0)), []uint32{repErrUnknown}}}},
		{name: "GO with a name past the data", steps: []exchange{{optionBytes(optGo, binary.BigEndian.AppendUint32(nil, 100)), []uint32{repErrInvalid}}}},
		{name: "GO with an invalid export name", steps: []exchange{{optionBytes(optGo, nameData("../x", 0, 0)), []uint32{repErrUnknown}}}},
		{name: "meta context before structured replies", steps: []exchange{{optionBytes(optSetMetaContext, metaData("disk", metaBaseAllocation)), []uint32{repErrInvalid}}}},
		{name: "meta contexts", steps: []exchange{
			{optionBytes(optStructuredReply, nil), []uint32{repAck}},
			{optionBytes(optListMetaContext, metaData("disk")), []uint32{repMetaContext, repAck}},
			{optionBytes(optListMetaContext, metaData("disk", "base:")), []uint32{repMetaContext, repAck}},
			{optionBytes(optListMetaContext, metaData("disk", "qemu:dirty-bitmap:x")), []uint32{repAck}},
			{optionBytes(optSetMetaContext, metaData("disk", "base:")), []uint32{repAck}},
			{optionBytes(optSetMetaContext, metaData("disk", "base:allocation", "base:allocation")), []uint32{repMetaContext, repAck}},
			{optionBytes(optSetMetaContext, metaData("disk", "nocolon")), []uint32{repErrInvalid}},
			{optionBytes(optSetMetaContext, metaData("nope", "base:allocation")), []uint32{repErrUnknown}},
		}},
		{name: "oversized option is refused and skipped", steps: []exchange{
			{optionBytes(optGo, make([]byte, maxOptionLen+1)), []uint32{repErrTooBig}},
			{optionBytes(optList, nil), []uint32{repServer, repServer, repAck}},
		}},
		{name: "ABORT", steps: []exchange{{optionBytes(optAbort, []byte("ignored")), []uint32{repAck}}}, closed: true},
		{name: "bad option magic closes", steps: []exchange{{append([]byte("garbage!"), optionBytes(optList, nil)[8:]...), nil}}, closed: true},
		{name: "huge option closes", steps: []exchange{{binary.BigEndian.AppendUint32(optionBytes(optInfo, nil)[:12], 1<<31), nil}}, closed: true},
		{name: "EXPORT_NAME of an unknown export closes", steps: []exchange{{optionBytes(optExportName, []byte("nope")), nil}}, closed: true},
		{name: "EXPORT_NAME of the default export closes", steps: []exchange{{optionBytes(optExportName, nil), nil}}, closed: true},
		{name: "unknown client flags close", clientFlags: 1 << 5, closed: true},
		{name: "handshake timeout closes", closed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawDial(t, env.addr)
			c := &testClient{nc: nc, br: bufio.NewReader(nc)}
			flags := tc.clientFlags
			if flags == 0 {
				flags = clientFlagFixedNewstyle | clientFlagNoZeroes
			}
			if err := c.greet(flags); err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				if _, err := nc.Write(st.opt); err != nil {
					t.Fatal(err)
				}
				for j, want := range st.want {
					r, err := c.readOptReply()
					if err != nil {
						t.Fatalf("step %d reply %d: %v", i, j, err)
					}
					if r.typ != want {
						t.Fatalf("step %d reply %d: %s (%q), want %s", i, j, repName(r.typ), r.data, repName(want))
					}
				}
			}
			if tc.closed {
				expectClosed(t, nc)
			} else {
				// Still negotiating: finish properly.
				if _, err := nc.Write(optionBytes(optAbort, nil)); err != nil {
					t.Fatal(err)
				}
				if r, err := c.readOptReply(); err != nil || r.typ != repAck {
					t.Fatalf("ABORT: %v %v", r, err)
				}
			}
			env.checkAlive(t)
		})
	}
}

func TestExportNameNoZeroes(t *testing.T) {
	env := newProtoEnv(t, Options{})
	for _, tc := range []struct {
		name     string
		flags    uint32
		replyLen int
	}{
		{"with zeroes", clientFlagFixedNewstyle, 10 + exportNameZero},
		{"NO_ZEROES", clientFlagFixedNewstyle | clientFlagNoZeroes, 10},
		{"old client without fixed newstyle", 0, 10 + exportNameZero},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawDial(t, env.addr)
			c := &testClient{nc: nc, br: bufio.NewReader(nc)}
			if err := c.greet(tc.flags); err != nil {
				t.Fatal(err)
			}
			nc.Write(optionBytes(optExportName, []byte("disk")))
			b, err := c.readFull(tc.replyLen)
			if err != nil {
				t.Fatal(err)
			}
			if size := binary.BigEndian.Uint64(b); size != protoDiskSize {
				t.Fatalf("size %d", size)
			}
			if !isZero(b[10:]) {
				t.Fatal("padding is not zeros")
			}
			// The very next bytes are transmission: a read works.
			res, err := c.do(cmdRead, 0, 0, 512, nil)
			if err := asErr(res, err); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConcurrentClients writes from several connections in parallel,
// pipelined, and checks every connection sees every write after a FLUSH
// (CAN_MULTI_CONN).
func TestConcurrentClients(t *testing.T) {
	env := newProtoEnv(t, Options{})
	const conns, perConn, size = 4, 64, 16 << 10
	errc := make(chan error, conns)
	for i := range conns {
		go func() {
			c, err := dialClient(env.addr, "disk", clientOptions{structured: true})
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			// Pipeline: send everything, then read the replies.
			go func() {
				for j := range perConn {
					off := uint64((i*perConn + j) * size)
					c.send(cmdWrite, 0, off, size, bytes.Repeat([]byte{byte(i*perConn + j)}, size))
				}
			}()
			for range perConn {
				res, _, err := c.reply(0, 0)
				if err := asErr(res, err); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range conns {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	c := env.dial(t, "disk", clientOptions{})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for k := range conns * perConn {
		got, err := c.Read(uint64(k*size), size)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(k)}, size)) {
			t.Fatalf("block %d differs (err %v)", k, err)
		}
	}
}

// TestShutdownFinishesInFlight: requests already read are answered before
// Shutdown closes the connection, and Serve returns nil.
// serveOneClient serves f and connects one client to export "disk", for
// tests that shut the server down themselves: Serve's result comes on
// served.
func serveOneClient(t *testing.T, f *fs.FS, opts Options) (*Server, <-chan error, *testClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = testutil.Logger(t)
	s := NewServer(f, opts)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c, err := dialClient(ln.Addr().String(), "disk", clientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, served, c
}

func TestShutdownFinishesInFlight(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 64<<20)
	ops := newOpCounter()
	s, served, c := serveOneClient(t, f, Options{Observe: ops.observe})
	const n = 32
	data := bytes.Repeat([]byte{7}, 1<<20)
	go func() {
		for i := range n {
			if _, err := c.send(cmdWrite, cmdFlagFUA, uint64(i)<<20, 1<<20, data); err != nil {
				return
			}
		}
	}()
	// The first reply shows the server at work; then shut down while the
	// rest are in flight.
	if res, _, err := c.reply(0, 0); err != nil || res.errno != 0 {
		t.Fatalf("first reply: %v %v", res.errno, err)
	}
	got := 1
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: it must not give up
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	for {
		res, _, err := c.reply(0, 0)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("after %d replies: %v", got, err)
			}
			break
		}
		if res.errno != 0 {
			t.Fatalf("reply %d: %s", got, errnoName(res.errno))
		}
		got++
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Shutdown", err)
	}
	if executed, _, _ := ops.get("write"); executed != got {
		t.Fatalf("the server executed %d writes but the client got %d replies: shutdown dropped replies", executed, got)
	}
	if got == 0 {
		t.Fatal("no request in flight was answered")
	}
	t.Logf("%d of %d pipelined writes answered before the shutdown closed the connection", got, n)
	// Every answered FUA write is durable and readable.
	buf := make([]byte, 1<<20)
	exp, _ := lookupExportFile(context.Background(), f, "disk")
	for i := range got {
		if _, _, err := f.Read(context.Background(), fs.Root, exp.Ino, uint64(i)<<20, buf); err != nil || !bytes.Equal(buf, data) {
			t.Fatalf("write %d answered but not in the filesystem (err %v)", i, err)
		}
	}
}

// TestShutdownDrains: a request the client sends after the shutdown began,
// while the connection is still draining, is answered, not left for the
// kernel's request timeout (see drainIdle in transmission.go). The drain
// window is widened so that a loaded machine cannot make the test miss it.
func TestShutdownDrains(t *testing.T) {
	oldIdle, oldMax := drainIdle, drainMax
	drainIdle, drainMax = 3*time.Second, 6*time.Second
	t.Cleanup(func() { drainIdle, drainMax = oldIdle, oldMax })
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 1<<20)
	s, served, c := serveOneClient(t, f, Options{})
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	for !s.group.Closing() {
		time.Sleep(time.Millisecond)
	}
	for i := range 3 {
		if _, err := c.send(cmdWrite, cmdFlagFUA, uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096)); err != nil {
			t.Fatal(err)
		}
		if res, _, err := c.reply(0, 0); err != nil || res.errno != 0 {
			t.Fatalf("write %d sent during the drain: errno %d, %v", i, res.errno, err)
		}
	}
	// Then quiet: the drain ends and the connection closes.
	if _, _, err := c.reply(0, 0); !errors.Is(err, io.EOF) {
		t.Fatalf("after the drain: %v, want EOF", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownFinishesPayload: a shutdown that begins while a WRITE's
// payload is still arriving lets the payload finish and answers the write
// (cutting it would leave it to the kernel's request timeout).
func TestShutdownFinishesPayload(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 4<<20)
	s, served, c := serveOneClient(t, f, Options{})
	data := bytes.Repeat([]byte{9}, 1<<20)
	hdr := encodeRequest(request{flags: cmdFlagFUA, typ: cmdWrite, cookie: 1, off: 0, length: 1 << 20})
	if _, err := c.nc.Write(append(hdr, data[:512<<10]...)); err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	for !s.group.Closing() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(3 * drainIdle) // past the drain's quiet window
	if _, err := c.nc.Write(data[512<<10:]); err != nil {
		t.Fatal(err)
	}
	if res, _, err := c.reply(0, 0); err != nil || res.errno != 0 {
		t.Fatalf("write whose payload spanned the shutdown: errno %d, %v", res.errno, err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestExportChangesUnderConnection: the size is fixed at negotiation; new
// connections see a resize; deleting an export fails its connected clients'
// requests with EIO, without closing them.
func TestExportChangesUnderConnection(t *testing.T) {
	env := newProtoEnv(t, Options{})
	ctx := context.Background()
	mustCreateExport(t, env.f, "grow", 1<<20)
	old := env.dial(t, "grow", clientOptions{})
	if err := ResizeExport(ctx, env.f, "grow", 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := old.Write(1<<20, []byte("x"), 0); !errors.Is(err, errnoError(errNoSpc)) {
		t.Fatalf("write past the negotiated size: %v, want ENOSPC", err)
	}
	grown := env.dial(t, "grow", clientOptions{})
	if grown.size != 2<<20 {
		t.Fatalf("new connection sees size %d, want %d", grown.size, 2<<20)
	}
	if err := grown.Write(1<<20, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := DeleteExport(ctx, env.f, "grow"); err != nil {
		t.Fatal(err)
	}
	if _, err := grown.Read(0, 512); !errors.Is(err, errnoError(errIO)) {
		t.Fatalf("read of a deleted export: %v, want EIO", err)
	}
	if err := grown.Write(0, []byte("x"), 0); !errors.Is(err, errnoError(errIO)) {
		t.Fatalf("write to a deleted export: %v, want EIO", err)
	}
	if err := grown.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := dialClient(env.addr, "grow", clientOptions{}); err == nil {
		t.Fatal("connected to a deleted export")
	}
}

// TestRandomOpsAgainstModel runs random writes, trims, zeroings, flushes,
// reads and block-status queries at unaligned offsets over two connections,
// checking every read against an in-memory model of the export, and that
// every range reported as a hole reads as zeros in the model.
func TestRandomOpsAgainstModel(t *testing.T) {
	env := newProtoEnv(t, Options{})
	const size = 4 << 20
	mustCreateExport(t, env.f, "model", size)
	conns := []*testClient{
		env.dial(t, "model", clientOptions{meta: true}),
		env.dial(t, "model", clientOptions{}),
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ZEROFS_NBD_MODEL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with ZEROFS_NBD_MODEL_SEED=%d)", seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	model := make([]byte, size)
	span := func(max int) (uint64, int) {
		n := 1 + rng.IntN(max)
		return uint64(rng.IntN(size - n + 1)), n
	}
	for i := range 1000 {
		c := conns[rng.IntN(len(conns))]
		switch op := rng.IntN(10); {
		case op < 4:
			off, n := span(200 << 10)
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.IntN(255) + 1)
			}
			if err := c.Write(off, p, uint16(rng.IntN(2))*cmdFlagFUA); err != nil {
				t.Fatalf("op %d write: %v", i, err)
			}
			copy(model[off:], p)
		case op == 4:
			off, n := span(300 << 10)
			if err := asErr(c.do(cmdTrim, 0, off, uint32(n), nil)); err != nil {
				t.Fatalf("op %d trim: %v", i, err)
			}
			clear(model[off : off+uint64(n)])
		case op == 5:
			off, n := span(300 << 10)
			flags := []uint16{0, cmdFlagNoHole, cmdFlagFastZero}[rng.IntN(3)]
			if err := asErr(c.do(cmdWriteZeroes, flags, off, uint32(n), nil)); err != nil {
				t.Fatalf("op %d zero: %v", i, err)
			}
			clear(model[off : off+uint64(n)])
		case op == 6:
			if err := c.Flush(); err != nil {
				t.Fatalf("op %d flush: %v", i, err)
			}
		case op == 7 && c.structured:
			off, n := span(1 << 20)
			res, err := c.do(cmdBlockStatus, 0, off, uint32(n), nil)
			if err := asErr(res, err); err != nil {
				t.Fatalf("op %d block status: %v", i, err)
			}
			pos := off
			for _, d := range res.descs {
				if d[1]&stateZero != 0 && !isZero(model[pos:min(pos+uint64(d[0]), size)]) {
					t.Fatalf("op %d: [%d, +%d) reported as zeros but holds data", i, pos, d[0])
				}
				pos += uint64(d[0])
			}
		default:
			off, n := span(1 << 20)
			got, err := c.Read(off, uint32(n))
			if err != nil {
				t.Fatalf("op %d read: %v", i, err)
			}
			if want := model[off : off+uint64(n)]; !bytes.Equal(got, want) {
				j := 0
				for got[j] == want[j] {
					j++
				}
				t.Fatalf("op %d: read [%d, +%d) differs from the model at %d", i, off, n, off+uint64(j))
			}
		}
	}
}

// TestLargeRequests: a client that negotiated no block size
// (NBD_OPT_EXPORT_NAME, as nbd-tester-client's integrityhuge does) may send
// READs and WRITEs above the advertised 32 MiB; they are served up to
// Options.MaxPayload, with the payload counted in the request budget.
func TestLargeRequests(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 128<<20)
	requests := budget.New(DefaultRequestBytes)
	_, addr := startServer(t, f, Options{Requests: requests})
	c, err := dialClient(addr, "disk", clientOptions{exportName: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 48<<20)
	rand.Read(data)
	if err := c.Write(3<<20, data, 0); err != nil {
		t.Fatalf("48 MiB WRITE: %v", err)
	}
	got, err := c.Read(3<<20, uint32(len(data)))
	if err != nil {
		t.Fatalf("48 MiB READ: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("48 MiB READ returned other data")
	}
	if n := requests.InUse(); n != 0 {
		t.Fatalf("%d request bytes still held after the WRITE was applied", n)
	}
	if err := c.Write(0, make([]byte, DefaultMaxPayload+1), 0); !errors.Is(err, errnoError(errInval)) {
		t.Fatalf("WRITE above MaxPayload: %v, want EINVAL", err)
	}
}
