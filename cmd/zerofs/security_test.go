package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"zerofs/config"
	"zerofs/internal/testutil"
)

// tlsConfig is the example configuration with NBD TLS required from the
// certificates in dir.
func tlsConfig(t *testing.T, dir string) string {
	t.Helper()
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(`tls = "off"`, `tls = "require"`,
		`tls_certificates = ""`, fmt.Sprintf("tls_certificates = %q", dir)).Replace(string(example))
}

// TestBadTLSConfigFailsStart: a certificates directory that cannot serve
// fails the start with one line naming the file, before anything is
// created.
func TestBadTLSConfigFailsStart(t *testing.T) {
	bin := zerofsBinary(t)
	other := testutil.NewPKI(t, "")
	cases := []struct {
		name string
		// spoil spoils a good directory; it returns the file the error must name.
		spoil func(t *testing.T, p *testutil.PKI) string
	}{
		{"missing key", func(t *testing.T, p *testutil.PKI) string {
			f := filepath.Join(p.Dir, "server-key.pem")
			os.Remove(f)
			return f
		}},
		{"key of another certificate", func(t *testing.T, p *testutil.PKI) string {
			b, _ := os.ReadFile(filepath.Join(other.Dir, "server-key.pem"))
			f := filepath.Join(p.Dir, "server-key.pem")
			os.WriteFile(f, b, 0o600)
			return f
		}},
		{"expired certificate", func(t *testing.T, p *testutil.PKI) string {
			p.ServerCert(t, "old", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
			return filepath.Join(p.Dir, "server-cert.pem")
		}},
		{"not a certificate", func(t *testing.T, p *testutil.PKI) string {
			f := filepath.Join(p.Dir, "server-cert.pem")
			os.WriteFile(f, []byte("hello\n"), 0o644)
			return f
		}},
		{"no such directory", func(t *testing.T, p *testutil.PKI) string {
			os.RemoveAll(p.Dir)
			return p.Dir
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := testutil.NewPKI(t, "")
			file := tc.spoil(t, p)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "zerofs.toml"), []byte(tlsConfig(t, p.Dir)), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "run", "-c", "zerofs.toml")
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("zerofs run started with a bad certificates directory:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, file) {
				t.Fatalf("the error does not name %s:\n%s", file, out)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
				t.Fatal("the failed start created ./data")
			}
			t.Log(last)
		})
	}
}

// TestTLSStatusAndReload: zerofs status shows the certificate; SIGHUP
// reloads a renewed one; a server without TLS survives SIGHUP.
func TestTLSStatusAndReload(t *testing.T) {
	need(t, "nbdinfo")
	bin := zerofsBinary(t)
	p := testutil.NewPKI(t, "")
	s := startServer(t, bin, tlsConfig(t, p.Dir))
	status := func() string {
		out, err := run(t, bin, "", "status", "--admin", s.admin)
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		return out
	}
	if out := status(); !strings.Contains(out, "NBD TLS certificate") || !strings.Contains(out, "CN=zerofs-test-server") {
		t.Fatalf("zerofs status does not show the certificate:\n%s", out)
	}
	if out, err := run(t, bin, "", "nbd", "create", "d", "--size", "1M", "--admin", s.admin); err != nil {
		t.Fatalf("nbd create: %v\n%s", err, out)
	}
	client := p.ClientDir(t, "db")
	uri := fmt.Sprintf("nbds://%s/d?tls-certificates=%s", s.nbd, client)
	if _, stderr, err := runCmd("nbdinfo", uri); err != nil {
		t.Fatalf("nbdinfo over TLS: %v\n%s", err, stderr)
	}
	p.ServerCert(t, "renewed", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	s.proc.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(time.Minute); !strings.Contains(status(), "CN=renewed"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("status does not name the renewed certificate a minute after SIGHUP:\n%s", status())
		}
	}
	if _, stderr, err := runCmd("nbdinfo", uri); err != nil {
		t.Fatalf("nbdinfo after the reload: %v\n%s", err, stderr)
	}
	if out := status(); strings.Contains(out, "renew it soon") {
		t.Fatalf("a certificate with 90 days left is flagged:\n%s", out)
	}
	s.stop(t)

	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	plain := startServer(t, bin, string(example))
	plain.proc.Signal(syscall.SIGHUP)
	if _, err := plain.proc.WaitLine(time.Minute, func(l string) bool { return strings.Contains(l, "SIGHUP: nothing to reload") }); err != nil {
		t.Fatalf("no log line for SIGHUP without TLS: %v\n%s", err, plain.log())
	}
	plain.stop(t) // still running, and stops cleanly
}

func runCmd(name string, args ...string) (string, string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// TestWarnExposure: each listener more exposed than its protection covers
// gets its warning, and safe ones get none.
func TestWarnExposure(t *testing.T) {
	cases := []struct {
		name string
		edit func(c *config.Config)
		want []string // substrings of warnings, in any order; none if empty
	}{
		{"defaults", func(c *config.Config) {}, nil},
		{"NBD on all interfaces without TLS", func(c *config.Config) {
			c.Servers.NBD.Addresses = []string{"0.0.0.0:10809"}
			c.Servers.NBD.AllowedNetworks = []string{"10.0.0.0/8"}
		}, []string{"NBD listens beyond loopback without TLS"}},
		{"NBD with optional TLS and no client certificates", func(c *config.Config) {
			c.Servers.NBD.Addresses = []string{"10.1.2.3:10809"}
			c.Servers.NBD.AllowedNetworks = []string{"10.0.0.0/8"}
			c.Servers.NBD.TLS = "on"
		}, []string{"TLS optional"}},
		{"NBD with optional TLS and client certificates", func(c *config.Config) {
			c.Servers.NBD.Addresses = []string{"10.1.2.3:10809"}
			c.Servers.NBD.AllowedNetworks = []string{"10.0.0.0/8"}
			c.Servers.NBD.TLS, c.Servers.NBD.TLSVerifyPeer = "on", true
		}, []string{"TLS optional"}},
		{"NBD with TLS required and verified clients", func(c *config.Config) {
			c.Servers.NBD.Addresses = []string{"10.1.2.3:10809"}
			c.Servers.NBD.AllowedNetworks = []string{"10.0.0.0/8"}
			c.Servers.NBD.TLS, c.Servers.NBD.TLSVerifyPeer = "require", true
		}, nil},
		{"NBD beyond loopback admitting only loopback", func(c *config.Config) {
			c.Servers.NBD.Addresses = []string{"10.1.2.3:10809"}
			c.Servers.NBD.TLS, c.Servers.NBD.TLSVerifyPeer = "require", true
		}, []string{"remote clients will be refused"}},
		{"NFS open to everyone", func(c *config.Config) {
			c.Servers.NFS.Addresses = []string{"[::]:2049"}
			c.Servers.NFS.AllowedNetworks = []string{"0.0.0.0/0"}
		}, []string{"NFS listens beyond loopback and servers.nfs.allowed_networks admits every address"}},
		{"NFS on a private network", func(c *config.Config) {
			c.Servers.NFS.Addresses = []string{"10.1.2.3:2049"}
			c.Servers.NFS.AllowedNetworks = []string{"10.1.0.0/16"}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Defaults()
			tc.edit(&c)
			var buf bytes.Buffer
			warnExposure(&c, slog.New(slog.NewTextHandler(&buf, nil)))
			got := buf.String()
			if len(tc.want) == 0 && got != "" {
				t.Fatalf("unexpected warnings:\n%s", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("no warning %q in:\n%s", w, got)
				}
			}
		})
	}
}
