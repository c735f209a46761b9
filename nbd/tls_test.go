package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zerofs/internal/pki"
	"zerofs/internal/testutil"
)

// tlsEnv is a server with TLS, client certificates and an access rule, and
// the client directories the tests hand to real clients.
type tlsEnv struct {
	addr  string // 127.0.0.1:port
	port  string
	ops   *opCounter
	ca    *testutil.PKI
	dbB   string // client certificate CN=db-b: may use b-*
	dbC   string // client certificate CN=db-c: may use c-*
	other string // a client certificate from another CA (trusting ours)
	noCrt string // only ca-cert.pem: TLS without a client certificate
}

const tlsDiskSize = 64 << 20

func startTLSServer(t *testing.T, mode TLSMode, verify bool, rules []AccessRule) *tlsEnv {
	t.Helper()
	f := openTestFS(t)
	for _, n := range []string{"b-disk", "c-disk"} {
		mustCreateExport(t, f, n, tlsDiskSize)
	}
	ca := testutil.NewPKI(t, "")
	certs, err := pki.Load(pki.Options{Dir: ca.Dir, VerifyPeer: verify, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	access, err := NewAccess(rules)
	if err != nil {
		t.Fatal(err)
	}
	e := &tlsEnv{ops: newOpCounter(), ca: ca}
	_, e.addr = startServer(t, f, Options{TLSMode: mode, TLS: certs.Config(), Access: access, Observe: e.ops.observe})
	_, e.port, _ = net.SplitHostPort(e.addr)
	e.dbB = ca.ClientDir(t, "db-b")
	e.dbC = ca.ClientDir(t, "db-c")
	e.other = testutil.NewPKI(t, "").ClientDir(t, "db-b")
	ca.TrustIn(t, e.other)
	e.noCrt = ca.CAOnlyDir(t)
	return e
}

// uri is the nbds:// URI of export for a client with the certificates in
// dir (libnbd's syntax, which nbdinfo, nbdcopy and fio's nbd engine take).
func (e *tlsEnv) uri(export, dir string) string {
	return fmt.Sprintf("nbds://127.0.0.1:%s/%s?tls-certificates=%s", e.port, export, dir)
}

func (e *tlsEnv) plainURI(export string) string { return nbdURI(e.addr, export) }

var dbRules = []AccessRule{{Client: "db-b", Exports: []string{"b-*"}}, {Client: "db-c", Exports: []string{"c-*"}}}

// TestTLSRealClients drives libnbd's tools, qemu and fio over TLS with client
// certificates, and checks that every way in without the right certificate
// is refused (docs/security.md).
func TestTLSRealClients(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	e := startTLSServer(t, TLSRequire, true, dbRules)

	t.Run("nbdinfo over TLS", func(t *testing.T) {
		out := runTool(t, time.Minute, nbdinfo, e.uri("b-disk", e.dbB))
		if !strings.Contains(out, "with TLS") || !strings.Contains(out, fmt.Sprint(tlsDiskSize)) {
			t.Fatalf("nbdinfo:\n%s", out)
		}
	})
	t.Run("list shows only the exports the certificate may use", func(t *testing.T) {
		out := runTool(t, time.Minute, nbdinfo, "--list", "--json", e.uri("", e.dbB))
		if !strings.Contains(out, `"b-disk"`) || strings.Contains(out, `"c-disk"`) {
			t.Fatalf("nbdinfo --list as db-b:\n%s", out)
		}
	})
	t.Run("nbdcopy round trip", func(t *testing.T) {
		nbdcopy := requireTool(t, "nbdcopy")
		dir := t.TempDir()
		src, back := filepath.Join(dir, "src"), filepath.Join(dir, "back")
		data := make([]byte, tlsDiskSize)
		rand.Read(data[:tlsDiskSize/2]) // the rest stays zero: sparse copies too
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		runTool(t, 2*time.Minute, nbdcopy, src, e.uri("b-disk", e.dbB))
		runTool(t, 2*time.Minute, nbdcopy, e.uri("b-disk", e.dbB), back)
		got, err := os.ReadFile(back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("nbdcopy over TLS: the data read back differs")
		}
	})
	t.Run("qemu-img and qemu-io with tls-creds-x509", func(t *testing.T) {
		qemuIO := requireTool(t, "qemu-io")
		qemuImg := requireTool(t, "qemu-img")
		object := "tls-creds-x509,id=tls0,endpoint=client,dir=" + e.dbB
		image := fmt.Sprintf("driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=%s,export=b-disk,tls-creds=tls0,tls-hostname=localhost", e.port)
		out := runTool(t, time.Minute, qemuImg, "info", "--object", object, "--image-opts", image)
		if !strings.Contains(out, "virtual size: 64 MiB") {
			t.Fatalf("qemu-img info:\n%s", out)
		}
		out = runTool(t, time.Minute, qemuIO, "--object", object, "--image-opts", image,
			"-c", "write -P 0x5a 1M 3M", "-c", "flush", "-c", "read -P 0x5a 1M 3M", "-c", "read -P 0 40M 1M")
		if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "error") {
			t.Fatalf("qemu-io:\n%s", out)
		}
	})
	// Refusals: each must fail, and none may reach an export.
	refused := []struct {
		name string
		args []string
	}{
		{"plaintext client", []string{e.plainURI("b-disk")}},
		{"plaintext list", []string{"--list", e.plainURI("")}},
		{"TLS without a client certificate", []string{e.uri("b-disk", e.noCrt)}},
		{"client certificate from another CA", []string{e.uri("b-disk", e.other)}},
		{"certificate no rule allows for this export", []string{e.uri("c-disk", e.dbB)}},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			out, stderr, err := runToolErr(time.Minute, nbdinfo, tc.args...)
			if err == nil {
				t.Fatalf("nbdinfo %s succeeded:\n%s", strings.Join(tc.args, " "), out)
			}
			if strings.Contains(out, "b-disk") || strings.Contains(out, "c-disk") {
				t.Fatalf("nbdinfo %s named an export:\n%s", strings.Join(tc.args, " "), out)
			}
			t.Logf("refused as expected: %s", strings.TrimSpace(stderr))
		})
	}
	t.Run("the server still serves", func(t *testing.T) {
		runTool(t, time.Minute, nbdinfo, e.uri("c-disk", e.dbC))
	})
}

// TestTLSFio runs fio's nbd engine, pipelined at queue depth 32, with
// verification, over TLS. fio hands its URI to libnbd, which reads no local
// file (tls-certificates) from a URI unless the program allows it, and fio
// does not: so this client neither presents a certificate nor verifies the
// server's (tls-verify-peer=false), and the server does not ask for one.
func TestTLSFio(t *testing.T) {
	fio := requireTool(t, "fio")
	e := startTLSServer(t, TLSRequire, false, nil)
	uri := fmt.Sprintf("nbds://127.0.0.1:%s/b-disk?tls-verify-peer=false", e.port)
	args := []string{
		"--name=tls", "--ioengine=nbd", "--uri=" + uri,
		"--iodepth=32", "--numjobs=2", "--size=16m", "--offset_increment=16m",
		"--rw=randwrite", "--bsrange=4k-256k", "--fsync=16",
		"--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
		"--group_reporting=1", "--output-format=terse", "--verify_state_save=0",
	}
	out, stderr, err := runToolErr(3*time.Minute, fio, args...)
	if err != nil || strings.Contains(stderr, "verify") || strings.Contains(out, "verify:") {
		t.Fatalf("fio %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, stderr)
	}
	for _, cmd := range []string{"write", "read", "flush"} {
		if n, _, errs := e.ops.get(cmd); n == 0 || errs != 0 {
			t.Errorf("%s: %d requests, %d errors", cmd, n, errs)
		}
	}
	// Nothing reached the server in plaintext: a plaintext fio is refused.
	args[2] = "--uri=" + e.plainURI("b-disk")
	if _, _, err := runToolErr(time.Minute, fio, args...); err == nil {
		t.Fatal("fio in plaintext against tls = require succeeded")
	}
}

// TestTLSOptional: with tls = "on", plaintext and TLS clients both work;
// without access rules, a client without a certificate may use everything.
func TestTLSOptional(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	e := startTLSServer(t, TLSOn, false, nil)
	runTool(t, time.Minute, nbdinfo, e.plainURI("b-disk"))
	out := runTool(t, time.Minute, nbdinfo, e.uri("c-disk", e.noCrt))
	if !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo:\n%s", out)
	}
}

// TestTLSSelectiveWithRules: with tls = "on" and access rules, a client that
// does not start TLS has no identity: NBD_OPT_GO answers NBD_REP_ERR_TLS_REQD
// (the spec's SELECTIVETLS reply for a TLS-only export) and the list is empty.
func TestTLSSelectiveWithRules(t *testing.T) {
	e := startTLSServer(t, TLSOn, true, dbRules)
	c := greetedClient(t, e.addr)
	if err := c.sendOption(optList, nil); err != nil {
		t.Fatal(err)
	}
	if replies, err := c.readOptReplies(); err != nil || len(replies) != 1 || replies[0].typ != repAck {
		t.Fatalf("NBD_OPT_LIST in plaintext: %v, %v; want an empty list", replies, err)
	}
	if typ := c.option(t, optGo, nameData("b-disk", 0, 0)); typ != repErrTLSReqd {
		t.Fatalf("NBD_OPT_GO in plaintext: reply %s, want NBD_REP_ERR_TLS_REQD", repName(typ))
	}
}

// TestTLSNegotiation checks the option-level rules of doc/proto.md's "TLS
// support" with a hand-written client.
func TestTLSNegotiation(t *testing.T) {
	e := startTLSServer(t, TLSRequire, true, nil)
	clientConf := func(t *testing.T, dir string) *tls.Config {
		c, err := pki.LoadClient(dir, "localhost")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("options before TLS get NBD_REP_ERR_TLS_REQD", func(t *testing.T) {
		c := greetedClient(t, e.addr)
		for _, o := range []struct {
			code uint32
			data []byte
		}{{optList, nil}, {optInfo, nameData("b-disk", 0, 0)}, {optGo, nameData("b-disk", 0, 0)},
			{optStructuredReply, nil}, {99, []byte{1, 2}}, {optInfo, []byte{0xff}},
			{optList, make([]byte, maxOptionLen+1)}} {
			if typ := c.option(t, o.code, o.data); typ != repErrTLSReqd {
				t.Fatalf("%s before TLS: reply %s, want NBD_REP_ERR_TLS_REQD", optName(o.code), repName(typ))
			}
		}
	})
	t.Run("NBD_OPT_EXPORT_NAME before TLS closes the connection", func(t *testing.T) {
		c := greetedClient(t, e.addr)
		if err := c.sendOption(optExportName, []byte("b-disk")); err != nil {
			t.Fatal(err)
		}
		if n, err := c.br.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes: the connection is open", n)
		}
	})
	t.Run("STARTTLS with data is invalid; STARTTLS twice is invalid", func(t *testing.T) {
		c := greetedClient(t, e.addr)
		if typ := c.option(t, optStartTLS, []byte{1}); typ != repErrInvalid {
			t.Fatalf("STARTTLS with data: reply %s, want NBD_REP_ERR_INVALID", repName(typ))
		}
		c.startTLS(t, clientConf(t, e.dbB))
		if typ := c.option(t, optStartTLS, nil); typ != repErrInvalid {
			t.Fatalf("second STARTTLS: reply %s, want NBD_REP_ERR_INVALID", repName(typ))
		}
	})
	t.Run("state set before STARTTLS is forgotten", func(t *testing.T) {
		// With TLS "on" a client may set options in plaintext; the spec
		// says they must not survive STARTTLS (a man in the middle could
		// have sent them).
		e := startTLSServer(t, TLSOn, false, nil)
		c := greetedClient(t, e.addr)
		if typ := c.option(t, optStructuredReply, nil); typ != repAck {
			t.Fatalf("STRUCTURED_REPLY: %s", repName(typ))
		}
		c.startTLS(t, clientConf(t, e.noCrt))
		if typ := c.option(t, optListMetaContext, metaData("b-disk", "base:allocation")); typ != repErrInvalid {
			t.Fatalf("LIST_META_CONTEXT after STARTTLS without a new STRUCTURED_REPLY: reply %s, want NBD_REP_ERR_INVALID", repName(typ))
		}
	})
	t.Run("a TLS 1.2 client is refused by default", func(t *testing.T) {
		c := greetedClient(t, e.addr)
		conf := clientConf(t, e.dbB)
		conf.MaxVersion = tls.VersionTLS12
		if typ := c.option(t, optStartTLS, nil); typ != repAck {
			t.Fatalf("STARTTLS: %s", repName(typ))
		}
		if err := tls.Client(c.nc, conf).Handshake(); err == nil {
			t.Fatal("TLS 1.2 handshake succeeded against tls_min_version 1.3")
		}
	})
	t.Run("Dial with TLS", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		nc, info, err := Dial(ctx, e.addr, "b-disk", clientConf(t, e.dbB))
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
		if info.Size != tlsDiskSize {
			t.Fatalf("size %d", info.Size)
		}
		if _, _, err := Dial(ctx, e.addr, "b-disk", nil); err == nil || !strings.Contains(err.Error(), "requires TLS") {
			t.Fatalf("Dial in plaintext to a server requiring TLS: %v", err)
		}
	})
}

// TestTLSBadHandshakes: malformed TLS, clients that stop or vanish halfway
// through the handshake, and bytes sent after STARTTLS before its reply end
// only their own connection.
func TestTLSBadHandshakes(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 1<<20)
	ca := testutil.NewPKI(t, "")
	certs, err := pki.Load(pki.Options{Dir: ca.Dir, VerifyPeer: true, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, f, Options{TLSMode: TLSRequire, TLS: certs.Config(), HandshakeTimeout: 2 * time.Second})
	client, err := pki.LoadClient(ca.ClientDir(t, "c"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	afterACK := func(t *testing.T) net.Conn {
		c := greetedClient(t, addr)
		if typ := c.option(t, optStartTLS, nil); typ != repAck {
			t.Fatalf("STARTTLS: %s", repName(typ))
		}
		return c.nc
	}
	// closed waits for the server to close nc.
	closed := func(t *testing.T, nc net.Conn) {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := io.Copy(io.Discard, nc); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("waiting for the server to close: %v", err)
		}
	}
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"garbage instead of a ClientHello", func(t *testing.T) {
			nc := afterACK(t)
			nc.Write(bytes.Repeat([]byte{0xde, 0xad}, 512))
			closed(t, nc)
		}},
		{"a TLS record header claiming 16 MiB", func(t *testing.T) {
			nc := afterACK(t)
			nc.Write([]byte{0x16, 3, 1, 0xff, 0xff})
			closed(t, nc)
		}},
		{"half a ClientHello, then hang up", func(t *testing.T) {
			nc := afterACK(t)
			hello := captureClientHello(t, client)
			nc.Write(hello[:len(hello)/2])
			nc.Close()
		}},
		{"half a ClientHello, then silence (handshake timeout)", func(t *testing.T) {
			nc := afterACK(t)
			hello := captureClientHello(t, client)
			nc.Write(hello[:len(hello)/2])
			closed(t, nc)
		}},
		{"bytes after STARTTLS before its reply", func(t *testing.T) {
			c := greetedClient(t, addr)
			c.nc.Write(append(optionBytes(optStartTLS, nil), 0x16, 3, 1, 0, 10))
			closed(t, c.nc)
		}},
		{"hang up right after STARTTLS", func(t *testing.T) {
			c := greetedClient(t, addr)
			c.sendOption(optStartTLS, nil)
			c.nc.Close()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			// Whatever that connection did, the next client is served.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			nc, _, err := Dial(ctx, addr, "disk", client)
			if err != nil {
				t.Fatalf("a good client after that: %v", err)
			}
			nc.Close()
		})
	}
}

// captureClientHello returns the first flight a TLS client with conf sends.
func captureClientHello(t *testing.T, conf *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go tls.Client(b, conf).Handshake()
	buf := make([]byte, 64<<10)
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := a.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	return buf[:n]
}

// TestAllowedNetworks: a client outside allowed_networks is closed at
// accept, before the greeting.
func TestAllowedNetworks(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 1<<20)
	for _, tc := range []struct {
		name     string
		networks []string
		allowed  bool
	}{
		{"loopback by default", nil, true},
		{"listed", []string{"10.0.0.0/8", "127.0.0.0/8"}, true},
		{"not listed", []string{"10.0.0.0/8"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nets []netip.Prefix
			for _, n := range tc.networks {
				nets = append(nets, netip.MustParsePrefix(n))
			}
			_, addr := startServer(t, f, Options{AllowedNetworks: nets})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			nc, _, err := Dial(ctx, addr, "disk", nil)
			if tc.allowed != (err == nil) {
				t.Fatalf("allowed %v, Dial: %v", tc.allowed, err)
			}
			if nc != nil {
				nc.Close()
			}
		})
	}
}

func TestAccessRules(t *testing.T) {
	a, err := NewAccess([]AccessRule{
		{Client: "db-a.example.com", Exports: []string{"pg-a", "scratch-*"}},
		{Client: "*.ops.example.com", Exports: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		names  []string
		export string
		want   bool
	}{
		{"its own device", []string{"db-a.example.com"}, "pg-a", true},
		{"names in another case", []string{"DB-A.Example.COM"}, "pg-a", true},
		{"an export pattern", []string{"db-a.example.com"}, "scratch-1", true},
		{"export names match exactly", []string{"db-a.example.com"}, "PG-A", false},
		{"another host's device", []string{"db-a.example.com"}, "pg-b", false},
		{"a SAN matches", []string{"db-x", "admin.ops.example.com"}, "pg-b", true},
		{"no verified certificate", nil, "pg-a", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.allows(tc.names, tc.export); got != tc.want {
				t.Fatalf("allows(%v, %q) = %v, want %v", tc.names, tc.export, got, tc.want)
			}
		})
	}
	if !(*Access)(nil).allows(nil, "anything") {
		t.Fatal("no rules must allow everything")
	}
	if _, err := NewAccess([]AccessRule{{Client: "x", Exports: []string{"["}}}); err == nil {
		t.Fatal("a malformed pattern was accepted")
	}
}
