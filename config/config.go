// Package config loads zerofs's TOML configuration: strict (an unknown key, a
// value of the wrong type or out of range is an error naming the key and its
// line), with ${VAR} and ${VAR:-default} expanded from the environment in
// string values. The keys users know from ZeroFS keep their names and meaning.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration file.
type Config struct {
	Cache     Cache     `toml:"cache"`
	Storage   Storage   `toml:"storage"`
	WAL       WAL       `toml:"wal"`
	AWS       AWS       `toml:"aws"`
	Servers   Servers   `toml:"servers"`
	GC        GC        `toml:"gc"`
	Snapshots Snapshots `toml:"snapshots"`
	Log       Log       `toml:"log"`

	path string // the file it came from, for messages
	src  []byte
}

// Cache is local state: the metadata database and the caches.
type Cache struct {
	Dir          string  `toml:"dir"`
	DiskSizeGB   float64 `toml:"disk_size_gb"`
	MemorySizeGB float64 `toml:"memory_size_gb"`
	ReadAheadMB  int     `toml:"read_ahead_mb"`
}

// Storage is the object store holding the filesystem.
type Storage struct {
	URL                string `toml:"url"`
	EncryptionPassword string `toml:"encryption_password"`
	Compression        string `toml:"compression"`
	ChunkSizeKB        int    `toml:"chunk_size_kb"`
	// MaxRequests bounds the requests in flight to the store (and, with
	// [wal] url set, to the WAL's store, separately); see store/sched.
	MaxRequests int `toml:"max_requests"`
	// Hedge re-issues GETs that run far past the recent tail latency.
	Hedge bool `toml:"hedge"`
}

// WAL configures the write-ahead log and batching.
type WAL struct {
	URL           string   `toml:"url"`
	FlushInterval Duration `toml:"flush_interval"`
	BatchSizeMB   int      `toml:"batch_size_mb"`
	MaxDirtyMB    int      `toml:"max_dirty_mb"`
	MaxRequestMB  int      `toml:"max_request_mb"`
	MaxReadWait   Duration `toml:"max_read_wait"`
	InFlight      int      `toml:"in_flight"`
}

// AWS configures S3 access.
type AWS struct {
	Region          string `toml:"region"`
	Endpoint        string `toml:"endpoint"`
	AccessKeyID     string `toml:"access_key_id"`
	SecretAccessKey string `toml:"secret_access_key"`
	AllowHTTP       bool   `toml:"allow_http"`
	PathStyle       *bool  `toml:"path_style"`
}

// Servers lists the listening addresses.
type Servers struct {
	NBD   NBD   `toml:"nbd"`
	NFS   NFS   `toml:"nfs"`
	Admin Admin `toml:"admin"`
}

// NBD is the NBD server: where it listens, who may connect, TLS, and which
// client certificate may use which export (docs/security.md).
type NBD struct {
	Addresses       []string `toml:"addresses"`
	AllowedNetworks []string `toml:"allowed_networks"`
	// TLS is "off", "on" (offered) or "require"; the certificates
	// directory has qemu's and nbdkit's layout (ca-cert.pem,
	// server-cert.pem, server-key.pem).
	TLS             string      `toml:"tls"`
	TLSCertificates string      `toml:"tls_certificates"`
	TLSVerifyPeer   bool        `toml:"tls_verify_peer"`
	TLSMinVersion   string      `toml:"tls_min_version"`
	Access          []NBDAccess `toml:"access"`
	// MaxPayloadMB is the largest READ or WRITE served (32 MiB is
	// advertised whatever it is).
	MaxPayloadMB int `toml:"max_payload_mb"`
}

// NBDAccess lets clients whose verified certificate name matches Client use
// the exports matching Exports (path.Match patterns).
type NBDAccess struct {
	Client  string   `toml:"client"`
	Exports []string `toml:"exports"`
}

type NFS struct {
	Addresses       []string `toml:"addresses"`
	AllowedNetworks []string `toml:"allowed_networks"`
	RootSquash      bool     `toml:"root_squash"`
}

// Admin is the local HTTP endpoint for the CLI, status and /metrics.
type Admin struct {
	Address string `toml:"address"`
}

type GC struct {
	Interval           Duration `toml:"interval"`
	CheckpointInterval Duration `toml:"checkpoint_interval"`
	SegmentSizeMB      int      `toml:"segment_size_mb"`
}

// Snapshots configures scheduled snapshots (docs/snapshots.md).
type Snapshots struct {
	Schedule []SnapshotSchedule `toml:"schedule"`
}

// SnapshotSchedule takes a snapshot named NAME-YYYYMMDDTHHMMZ every Every
// (at multiples of it since the Unix epoch, UTC: "1h" on the hour) and
// keeps the newest Keep of its own, deleting older ones unless held.
type SnapshotSchedule struct {
	Name  string   `toml:"name"`
	Every Duration `toml:"every"`
	Keep  int      `toml:"keep"`
}

type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Duration is a time.Duration written as "1s", "500ms", "2m".
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. \"500ms\", \"1s\", \"5m\")", b)
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults returns the configuration every key defaults to.
func Defaults() Config {
	return Config{
		Cache:   Cache{Dir: "./data/cache", DiskSizeGB: 1, MemorySizeGB: 0.5, ReadAheadMB: 128},
		Storage: Storage{URL: "file://./data/store", Compression: "zstd", ChunkSizeKB: 64, MaxRequests: 64, Hedge: true},
		WAL:     WAL{FlushInterval: Duration{time.Second}, BatchSizeMB: 16, MaxDirtyMB: 256, MaxRequestMB: 128, MaxReadWait: Duration{20 * time.Second}, InFlight: 4},
		AWS:     AWS{Region: "us-east-1"},
		Servers: Servers{
			NBD: NBD{Addresses: []string{"127.0.0.1:10809"}, AllowedNetworks: []string{"127.0.0.0/8", "::1/128"},
				TLS: "off", TLSMinVersion: "1.3", MaxPayloadMB: 64},
			NFS:   NFS{Addresses: []string{"127.0.0.1:2049"}, AllowedNetworks: []string{"127.0.0.0/8", "::1/128"}},
			Admin: Admin{Address: "127.0.0.1:7311"},
		},
		GC:  GC{Interval: Duration{time.Minute}, CheckpointInterval: Duration{time.Minute}, SegmentSizeMB: 64},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Error is a configuration error: the file, the line (0 if unknown) and the key.
type Error struct {
	Path string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	loc := e.Path
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.Path, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// Load reads, expands and validates a configuration file.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, src)
}

// Parse is Load for configuration text; path names it in errors.
func Parse(path string, src []byte) (*Config, error) {
	c := Defaults()
	c.path, c.src = path, src
	md, err := toml.Decode(string(src), &c)
	if err != nil {
		// A value of the wrong type: the message names line and key.
		if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &Error{Path: path, Line: line, Key: m[2], Msg: "wrong type: " + m[3]}
		}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// A bad value (e.g. a duration that does not parse) is reported at
			// its key's line; a syntax error's last key is just the one before.
			if pe.LastKey != "" && lineOf(src, pe.LastKey) == pe.Position.Line {
				return nil, &Error{Path: path, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
			}
			return nil, &Error{Path: path, Line: pe.Position.Line, Msg: "syntax error: " + pe.Message}
		}
		return nil, &Error{Path: path, Msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return nil, &Error{Path: path, Line: lineOf(src, k), Key: k, Msg: "unknown key (see config.example.toml for every key)"}
	}
	if err := c.expand(); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var typeErr = regexp.MustCompile(`line (\d+) \(last key "([^"]*)"\): incompatible types: (.*)`)

// keyErr makes an error for key with its line in the file.
func (c *Config) keyErr(key, format string, args ...any) error {
	return &Error{Path: c.path, Line: lineOf(c.src, key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expand replaces ${VAR} and ${VAR:-default} in every string value.
func (c *Config) expand() error {
	var firstErr error
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		switch v.Kind() {
		case reflect.Struct:
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				tag := t.Field(i).Tag.Get("toml")
				if tag == "" || !t.Field(i).IsExported() {
					continue
				}
				k := tag
				if key != "" {
					k = key + "." + tag
				}
				walk(v.Field(i), k)
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), key)
			}
		case reflect.String:
			s := v.String()
			out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
				m := envRef.FindStringSubmatch(ref)
				if val, ok := os.LookupEnv(m[1]); ok && val != "" {
					return val
				}
				if m[2] != "" {
					return m[3]
				}
				if firstErr == nil {
					firstErr = c.keyErr(key, "environment variable %s is not set (it is referenced as ${%s})", m[1], m[1])
				}
				return ""
			})
			v.SetString(out)
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return firstErr
}

func (c *Config) validate() error {
	switch {
	case c.Cache.Dir == "":
		return c.keyErr("cache.dir", "must be set: the directory for local state and caches")
	case c.Cache.DiskSizeGB < 0:
		return c.keyErr("cache.disk_size_gb", "must not be negative, got %g", c.Cache.DiskSizeGB)
	case c.Cache.MemorySizeGB < 0 || c.Cache.MemorySizeGB > 1024:
		return c.keyErr("cache.memory_size_gb", "must be between 0 and 1024, got %g", c.Cache.MemorySizeGB)
	case c.Cache.ReadAheadMB < 0 || c.Cache.ReadAheadMB > 1024:
		return c.keyErr("cache.read_ahead_mb", "must be between 0 (off) and 1024, got %d", c.Cache.ReadAheadMB)
	case c.Storage.URL == "":
		return c.keyErr("storage.url", "must be set, e.g. \"s3://bucket/prefix\" or \"file:///var/lib/zerofs\"")
	case c.Storage.EncryptionPassword == "":
		return c.keyErr("storage.encryption_password", "must be set: it protects the data key (use \"${ZEROFS_PASSWORD}\" to take it from the environment)")
	case c.Storage.ChunkSizeKB < 4 || c.Storage.ChunkSizeKB > 1024 || c.Storage.ChunkSizeKB&(c.Storage.ChunkSizeKB-1) != 0:
		return c.keyErr("storage.chunk_size_kb", "must be a power of two from 4 to 1024, got %d", c.Storage.ChunkSizeKB)
	case c.Storage.MaxRequests < 1 || c.Storage.MaxRequests > 4096:
		return c.keyErr("storage.max_requests", "must be between 1 and 4096, got %d", c.Storage.MaxRequests)
	case c.WAL.FlushInterval.Duration < 10*time.Millisecond || c.WAL.FlushInterval.Duration > time.Hour:
		return c.keyErr("wal.flush_interval", "must be between 10ms and 1h, got %s", c.WAL.FlushInterval)
	case c.WAL.BatchSizeMB < 1 || c.WAL.BatchSizeMB > 1024:
		return c.keyErr("wal.batch_size_mb", "must be between 1 and 1024, got %d", c.WAL.BatchSizeMB)
	case c.WAL.MaxDirtyMB < 2*c.WAL.BatchSizeMB:
		return c.keyErr("wal.max_dirty_mb", "must be at least twice wal.batch_size_mb (%d), got %d", c.WAL.BatchSizeMB, c.WAL.MaxDirtyMB)
	case c.WAL.MaxRequestMB < 4 || c.WAL.MaxRequestMB > 1<<20:
		return c.keyErr("wal.max_request_mb", "must be between 4 and 1048576, got %d", c.WAL.MaxRequestMB)
	case c.WAL.MaxReadWait.Duration < time.Second || c.WAL.MaxReadWait.Duration > time.Hour:
		return c.keyErr("wal.max_read_wait", "must be between 1s and 1h, got %s", c.WAL.MaxReadWait)
	case c.WAL.InFlight < 1 || c.WAL.InFlight > 64:
		return c.keyErr("wal.in_flight", "must be between 1 and 64, got %d", c.WAL.InFlight)
	case c.GC.SegmentSizeMB < 1 || c.GC.SegmentSizeMB > 4096:
		return c.keyErr("gc.segment_size_mb", "must be between 1 and 4096, got %d", c.GC.SegmentSizeMB)
	}
	if err := c.validateSnapshots(); err != nil {
		return err
	}
	if err := checkStoreURL(c.Storage.URL); err != nil {
		return c.keyErr("storage.url", "%v", err)
	}
	if c.WAL.URL != "" {
		if err := checkStoreURL(c.WAL.URL); err != nil {
			return c.keyErr("wal.url", "%v", err)
		}
	}
	if strings.HasPrefix(c.Storage.URL, "s3://") || strings.HasPrefix(c.WAL.URL, "s3://") {
		if strings.HasPrefix(c.AWS.Endpoint, "http://") && !c.AWS.AllowHTTP {
			return c.keyErr("aws.endpoint", "is plain http: set aws.allow_http = true to allow it (credentials and data then cross the network unencrypted)")
		}
	}
	switch strings.ToLower(c.Storage.Compression) {
	case "zstd", "lz4", "none":
	default:
		return c.keyErr("storage.compression", "must be \"zstd\", \"lz4\" or \"none\", got %q", c.Storage.Compression)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return c.keyErr("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return c.keyErr("log.format", "must be \"text\" or \"json\", got %q", c.Log.Format)
	}
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"servers.nbd.addresses", c.Servers.NBD.Addresses}, {"servers.nfs.addresses", c.Servers.NFS.Addresses}} {
		for _, a := range l.addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return c.keyErr(l.key, "%q is not host:port", a)
			}
		}
	}
	if a := c.Servers.Admin.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return c.keyErr("servers.admin.address", "%q is not host:port", a)
		}
	}
	for _, l := range []struct {
		key  string
		nets []string
	}{{"servers.nbd.allowed_networks", c.Servers.NBD.AllowedNetworks}, {"servers.nfs.allowed_networks", c.Servers.NFS.AllowedNetworks}} {
		for _, n := range l.nets {
			if _, err := netip.ParsePrefix(n); err != nil {
				return c.keyErr(l.key, "%q is not a network like \"10.0.0.0/8\"", n)
			}
		}
	}
	return c.validateNBD()
}

func (c *Config) validateSnapshots() error {
	seen := make(map[string]bool)
	for i, s := range c.Snapshots.Schedule {
		key := fmt.Sprintf("snapshots.schedule[%d]", i)
		ok := s.Name != "" && len(s.Name) <= 32
		for _, r := range s.Name {
			ok = ok && (r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}
		switch {
		case !ok:
			return c.keyErr("snapshots.schedule", "%s: name %q must be 1 to 32 of a-z 0-9 - _ (it starts the snapshots' names)", key, s.Name)
		case seen[s.Name]:
			return c.keyErr("snapshots.schedule", "%s: name %q is used twice", key, s.Name)
		case s.Every.Duration < time.Minute || s.Every.Duration > 366*24*time.Hour || s.Every.Duration%time.Minute != 0:
			return c.keyErr("snapshots.schedule", "%s (%s): every must be whole minutes from 1m to 8784h, got %s", key, s.Name, s.Every)
		case s.Keep < 1 || s.Keep > 10000:
			return c.keyErr("snapshots.schedule", "%s (%s): keep must be between 1 and 10000, got %d", key, s.Name, s.Keep)
		}
		seen[s.Name] = true
	}
	return nil
}

func (c *Config) validateNBD() error {
	n := c.Servers.NBD
	switch n.TLS {
	case "off", "on", "require":
	default:
		return c.keyErr("servers.nbd.tls", "must be \"off\", \"on\" (offered) or \"require\", got %q", n.TLS)
	}
	switch {
	case n.TLS != "off" && n.TLSCertificates == "":
		return c.keyErr("servers.nbd.tls_certificates", "must name the certificates directory (ca-cert.pem, server-cert.pem, server-key.pem) when tls is %q", n.TLS)
	case n.TLSVerifyPeer && n.TLS == "off":
		return c.keyErr("servers.nbd.tls_verify_peer", "needs servers.nbd.tls = \"on\" or \"require\"")
	case len(n.Access) > 0 && !n.TLSVerifyPeer:
		return c.keyErr("servers.nbd.access", "rules match verified client certificates: set servers.nbd.tls_verify_peer = true")
	case n.TLSMinVersion != "1.2" && n.TLSMinVersion != "1.3":
		return c.keyErr("servers.nbd.tls_min_version", "must be \"1.2\" or \"1.3\", got %q", n.TLSMinVersion)
	case n.MaxPayloadMB < 32 || n.MaxPayloadMB > 256:
		return c.keyErr("servers.nbd.max_payload_mb", "must be between 32 and 256, got %d", n.MaxPayloadMB)
	}
	for i, a := range n.Access {
		if a.Client == "" {
			return c.keyErr("servers.nbd.access", "rule %d: client is empty (a certificate name or pattern such as \"db-*.example.com\")", i+1)
		}
		if len(a.Exports) == 0 {
			return c.keyErr("servers.nbd.access", "rule %d (client %q): exports is empty", i+1, a.Client)
		}
		for _, p := range append([]string{a.Client}, a.Exports...) {
			if _, err := path.Match(p, ""); err != nil {
				return c.keyErr("servers.nbd.access", "rule %d: pattern %q: %v", i+1, p, err)
			}
		}
	}
	return nil
}

func checkStoreURL(u string) error {
	for _, p := range []string{"s3://", "file://", "mem://"} {
		if strings.HasPrefix(u, p) {
			if p == "s3://" && len(u) == len(p) {
				return errors.New("names no bucket: use \"s3://bucket/prefix\"")
			}
			if p == "file://" && len(u) == len(p) {
				return errors.New("names no directory: use \"file:///var/lib/zerofs\" or \"file://./data\"")
			}
			return nil
		}
	}
	return fmt.Errorf("%q: unsupported store, use s3://bucket/prefix, file:///path or file://./relative/path", u)
}

// lineOf finds the line where a dotted key is set, by scanning table headers
// and key assignments. 0 if not found (the key came from defaults).
func lineOf(src []byte, key string) int {
	table := ""
	for i, line := range strings.Split(string(src), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			name := strings.Trim(t, "[] \t")
			if j := strings.IndexByte(name, '#'); j >= 0 {
				name = strings.TrimSpace(name[:j])
			}
			table = strings.Trim(name, "[] ")
			if table == key {
				return i + 1
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if eq <= 0 || strings.HasPrefix(t, "#") {
			continue
		}
		k := strings.Trim(strings.TrimSpace(t[:eq]), `"`)
		full := k
		if table != "" {
			full = table + "." + k
		}
		if full == key {
			return i + 1
		}
	}
	return 0
}

// Path is the file the configuration came from.
func (c *Config) Path() string { return c.path }
