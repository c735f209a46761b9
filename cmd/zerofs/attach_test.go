package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{in: "", want: -1},
		{in: "/dev/nbd3", want: 3},
		{in: "nbd12", want: 12},
		{in: "7", want: 7},
		{in: "/dev/sda", bad: true},
		{in: "/dev/nbd-1", bad: true},
		{in: "/dev/nbd", bad: true},
		{in: "nbd+5", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDevice(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("parseDevice(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseDevice(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestNBDAddress(t *testing.T) {
	dir := t.TempDir()
	write := func(name, addrs string) string {
		p := filepath.Join(dir, name)
		conf := "[storage]\nurl = \"file://" + dir + "/s\"\nencryption_password = \"x\"\n[servers.nbd]\naddresses = " + addrs + "\n"
		if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, cfg, server, want string
		bad                     bool
	}{
		{name: "default", want: "127.0.0.1:10809"},
		{name: "server flag", server: "10.0.0.5:20809", want: "10.0.0.5:20809"},
		{name: "server without port", server: "10.0.0.5", bad: true},
		{name: "from config", cfg: write("a.toml", `["192.0.2.1:11000"]`), want: "192.0.2.1:11000"},
		{name: "wildcard host is loopback", cfg: write("b.toml", `["0.0.0.0:11001"]`), want: "127.0.0.1:11001"},
		{name: "empty host is loopback", cfg: write("c.toml", `[":11002"]`), want: "127.0.0.1:11002"},
		{name: "no NBD in config", cfg: write("d.toml", `[]`), bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nbdAddress(tc.cfg, tc.server)
			if tc.bad {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
