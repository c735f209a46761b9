package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTemplateIsDefaultsAndExample(t *testing.T) {
	c, err := Parse("template.toml", Template)
	if err != nil {
		t.Fatalf("the template does not parse: %v", err)
	}
	d := Defaults()
	c.path, c.src = "", nil
	d.Storage.EncryptionPassword = c.Storage.EncryptionPassword
	if !reflect.DeepEqual(*c, d) {
		t.Fatalf("the template's values differ from Defaults():\n%+v\n%+v", *c, d)
	}
	root, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if string(root) != string(Template) {
		t.Fatal("config.example.toml differs from config/template.toml: copy one onto the other")
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	base := string(Template)
	cases := []struct {
		name    string
		edit    func(string) string
		env     map[string]string
		wantKey string
		wantIn  string
	}{
		{"unknown key", func(s string) string {
			return strings.Replace(s, "disk_size_gb = 1.0", "disk_size_gb = 1.0\ndisk_sise_gb = 3", 1)
		}, nil, "cache.disk_sise_gb", "unknown key"},
		{"unknown table", func(s string) string { return s + "\n[cahce]\ndir = \"x\"\n" }, nil, "cahce", "unknown key"},
		{"bad type", func(s string) string {
			return strings.Replace(s, "disk_size_gb = 1.0", `disk_size_gb = "ten"`, 1)
		}, nil, "cache.disk_size_gb", "wrong type"},
		{"missing password", func(s string) string {
			return strings.Replace(s, `encryption_password = "${ZEROFS_PASSWORD:-zerofs-example-insecure-password}"`, `encryption_password = ""`, 1)
		}, nil, "storage.encryption_password", "must be set"},
		{"unset environment variable", func(s string) string {
			return strings.Replace(s, `"${ZEROFS_PASSWORD:-zerofs-example-insecure-password}"`, `"${ZEROFS_TEST_UNSET_VAR}"`, 1)
		}, nil, "storage.encryption_password", "ZEROFS_TEST_UNSET_VAR is not set"},
		{"bad url", func(s string) string {
			return strings.Replace(s, `url = "file://./data/store"`, `url = "ftp://host/x"`, 1)
		}, nil, "storage.url", "unsupported store"},
		{"http endpoint without allow_http", func(s string) string {
			s = strings.Replace(s, `url = "file://./data/store"`, `url = "s3://bucket/p"`, 1)
			return strings.Replace(s, `endpoint = ""`, `endpoint = "http://127.0.0.1:9000"`, 1)
		}, nil, "aws.endpoint", "allow_http"},
		{"out of range", func(s string) string {
			return strings.Replace(s, "chunk_size_kb = 64", "chunk_size_kb = 48", 1)
		}, nil, "storage.chunk_size_kb", "power of two"},
		{"max_requests out of range", func(s string) string {
			return strings.Replace(s, "max_requests = 64", "max_requests = 0", 1)
		}, nil, "storage.max_requests", "between 1 and 4096"},
		{"bad duration", func(s string) string {
			return strings.Replace(s, `flush_interval = "1s"`, `flush_interval = "soon"`, 1)
		}, nil, "wal.flush_interval", "duration"},
		{"bad address", func(s string) string {
			return strings.Replace(s, `addresses = ["127.0.0.1:10809"]`, `addresses = ["localhost"]`, 1)
		}, nil, "servers.nbd.addresses", "host:port"},
		{"bad NBD network", func(s string) string {
			return strings.Replace(s, `allowed_networks = ["127.0.0.0/8", "::1/128"]`, `allowed_networks = ["10.0.0.0/33"]`, 1)
		}, nil, "servers.nbd.allowed_networks", "is not a network"},
		{"bad tls mode", func(s string) string {
			return strings.Replace(s, `tls = "off"`, `tls = "yes"`, 1)
		}, nil, "servers.nbd.tls", `"require"`},
		{"tls without certificates", func(s string) string {
			return strings.Replace(s, `tls = "off"`, `tls = "require"`, 1)
		}, nil, "servers.nbd.tls_certificates", "ca-cert.pem"},
		{"verify peer without tls", func(s string) string {
			return strings.Replace(s, `tls_verify_peer = false`, `tls_verify_peer = true`, 1)
		}, nil, "servers.nbd.tls_verify_peer", "needs servers.nbd.tls"},
		{"access rules without verified peers", func(s string) string {
			s = strings.Replace(s, `tls = "off"`, `tls = "require"`, 1)
			s = strings.Replace(s, `tls_certificates = ""`, `tls_certificates = "/etc/zerofs/pki"`, 1)
			return strings.Replace(s, "# [[servers.nbd.access]]\n# client = \"db-b.example.com\"\n# exports = [\"region-b-*\"]", "[[servers.nbd.access]]\nclient = \"db-b\"\nexports = [\"b-*\"]", 1)
		}, nil, "servers.nbd.access", "tls_verify_peer = true"},
		{"access rule with a bad pattern", func(s string) string {
			s = strings.Replace(s, `tls = "off"`, `tls = "require"`, 1)
			s = strings.Replace(s, `tls_certificates = ""`, `tls_certificates = "/etc/zerofs/pki"`, 1)
			s = strings.Replace(s, `tls_verify_peer = false`, `tls_verify_peer = true`, 1)
			return strings.Replace(s, "# [[servers.nbd.access]]\n# client = \"db-b.example.com\"\n# exports = [\"region-b-*\"]", "[[servers.nbd.access]]\nclient = \"db-b\"\nexports = [\"b-[\"]", 1)
		}, nil, "servers.nbd.access", "syntax error in pattern"},
		{"bad tls version", func(s string) string {
			return strings.Replace(s, `tls_min_version = "1.3"`, `tls_min_version = "1.1"`, 1)
		}, nil, "servers.nbd.tls_min_version", `"1.2" or "1.3"`},
		{"payload limit out of range", func(s string) string {
			return strings.Replace(s, "max_payload_mb = 64", "max_payload_mb = 16", 1)
		}, nil, "servers.nbd.max_payload_mb", "between 32 and 256"},
		{"snapshot schedule with a bad name", func(s string) string {
			return s + "\n[[snapshots.schedule]]\nname = \"Hour/ly\"\nevery = \"1h\"\nkeep = 24\n"
		}, nil, "snapshots.schedule", "a-z 0-9"},
		{"snapshot schedule too often", func(s string) string {
			return s + "\n[[snapshots.schedule]]\nname = \"often\"\nevery = \"10s\"\nkeep = 24\n"
		}, nil, "snapshots.schedule", "whole minutes"},
		{"snapshot schedule keeping none", func(s string) string {
			return s + "\n[[snapshots.schedule]]\nname = \"hourly\"\nevery = \"1h\"\nkeep = 0\n"
		}, nil, "snapshots.schedule", "keep must be"},
		{"snapshot schedules with one name", func(s string) string {
			return s + "\n[[snapshots.schedule]]\nname = \"h\"\nevery = \"1h\"\nkeep = 1\n[[snapshots.schedule]]\nname = \"h\"\nevery = \"2h\"\nkeep = 1\n"
		}, nil, "snapshots.schedule", "used twice"},
		{"syntax error", func(s string) string { return s + "\n[gc\n" }, nil, "", "config.toml:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.edit(base)
			if src == base {
				t.Fatal("the edit did not apply")
			}
			_, err := Parse("config.toml", []byte(src))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
			if tc.wantKey != "" && !strings.Contains(msg, tc.wantKey) {
				t.Fatalf("error does not name %s: %s", tc.wantKey, msg)
			}
			if !strings.Contains(msg, tc.wantIn) {
				t.Fatalf("error %q does not say %q", msg, tc.wantIn)
			}
			if e, ok := err.(*Error); ok && tc.wantKey != "" && e.Line == 0 {
				t.Fatalf("error has no line: %s", msg)
			}
			t.Log(msg)
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("ZEROFS_PASSWORD", "from-env")
	t.Setenv("ZFS_TEST_BUCKET", "b1")
	src := strings.Replace(string(Template), `url = "file://./data/store"`, `url = "s3://${ZFS_TEST_BUCKET}/x"`, 1)
	c, err := Parse("c.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.EncryptionPassword != "from-env" || c.Storage.URL != "s3://b1/x" {
		t.Fatalf("expansion: %q %q", c.Storage.EncryptionPassword, c.Storage.URL)
	}
	if c.WAL.FlushInterval.Duration != time.Second {
		t.Fatalf("flush interval %v", c.WAL.FlushInterval)
	}
}
