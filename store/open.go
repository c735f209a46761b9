package store

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	mib = 1 << 20
	gib = 1 << 30

	// S3's limits: a part is 5 MiB..5 GiB (the last may be smaller), a single
	// PUT at most 5 GiB, an upload at most 10,000 parts.
	minPartSize = 5 * mib
	maxPutSize  = 5 * gib
	maxParts    = 10000

	defaultMultipartThreshold = 64 * mib
	defaultPartSize           = 16 * mib
	defaultMaxAttempts        = 10
	defaultMaxBackoff         = 20 * time.Second
)

// Options holds the S3 backend's settings; mem:// and file:// ignore them.
// The zero value is valid: AWS, the SDK's default region and credential
// chain, and the defaults listed on each field.
type Options struct {
	// Region of the bucket. Empty: the SDK's default (AWS_REGION, the shared
	// config), else us-east-1, which S3-compatible servers generally accept.
	Region string `toml:"region"`
	// Endpoint is the S3 server's base URL, e.g. https://minio.local:9000.
	// Empty means AWS.
	Endpoint string `toml:"endpoint"`
	// AccessKeyID and SecretAccessKey are static credentials; set both or
	// neither. Neither: the SDK's default credential chain (environment,
	// shared credentials file, instance/container role).
	AccessKeyID     string `toml:"access_key_id"`
	SecretAccessKey string `toml:"secret_access_key"`
	// AllowHTTP permits an http:// Endpoint. Off by default, since
	// plain HTTP exposes the data to anyone on the path.
	AllowHTTP bool `toml:"allow_http"`
	// UsePathStyle addresses the bucket as endpoint/bucket instead of
	// bucket.endpoint. Nil: true when Endpoint is set (what S3-compatible
	// servers expect), false for AWS.
	UsePathStyle *bool `toml:"use_path_style"`
	// MultipartThreshold: objects larger than this many bytes are uploaded in
	// parts. 0 means 64 MiB; at most 5 GiB (S3's single-PUT limit).
	MultipartThreshold int64 `toml:"multipart_threshold"`
	// PartSize of multipart uploads in bytes. 0 means 16 MiB; 5 MiB..5 GiB.
	// Raised automatically if an object would need more than 10,000 parts.
	PartSize int64 `toml:"part_size"`
	// MaxAttempts per request, the first included, for transient failures
	// (network errors, 5xx, throttling). 0 means 10.
	MaxAttempts int `toml:"max_attempts"`
	// MaxBackoff caps the (jittered, exponential) wait between attempts.
	// 0 means 20s.
	MaxBackoff time.Duration `toml:"max_backoff"`
	// HTTPClient replaces the default HTTP client (tests). Nil: a client
	// tuned for many concurrent requests to one host.
	HTTPClient *http.Client `toml:"-"`
}

// withDefaults validates o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.MultipartThreshold == 0 {
		o.MultipartThreshold = defaultMultipartThreshold
	}
	if o.PartSize == 0 {
		o.PartSize = defaultPartSize
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	switch {
	case o.MultipartThreshold < 0 || o.MultipartThreshold > maxPutSize:
		return o, fmt.Errorf("multipart_threshold %d: must be between 1 and %d (5 GiB, the largest single PUT)", o.MultipartThreshold, int64(maxPutSize))
	case o.PartSize < minPartSize || o.PartSize > maxPutSize:
		return o, fmt.Errorf("part_size %d: must be between %d (5 MiB) and %d (5 GiB)", o.PartSize, minPartSize, int64(maxPutSize))
	case o.MaxAttempts < 0:
		return o, fmt.Errorf("max_attempts %d: must be positive", o.MaxAttempts)
	case o.MaxBackoff < 0:
		return o, fmt.Errorf("max_backoff %s: must be positive", o.MaxBackoff)
	case (o.AccessKeyID == "") != (o.SecretAccessKey == ""):
		return o, fmt.Errorf("access_key_id and secret_access_key: set both or neither")
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil {
			return o, fmt.Errorf("endpoint %q: %w", o.Endpoint, err)
		}
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			return o, fmt.Errorf("endpoint %q: want an http:// or https:// URL", o.Endpoint)
		case u.Host == "":
			return o, fmt.Errorf("endpoint %q: no host", o.Endpoint)
		case u.User != nil:
			return o, fmt.Errorf("endpoint %q: credentials belong in access_key_id/secret_access_key, not the URL", u.Redacted())
		case u.Scheme == "http" && !o.AllowHTTP:
			return o, fmt.Errorf("endpoint %q is plain http, which sends data unencrypted; set allow_http to permit it", o.Endpoint)
		}
	}
	if o.UsePathStyle == nil {
		pathStyle := o.Endpoint != ""
		o.UsePathStyle = &pathStyle
	}
	return o, nil
}

// Open opens the store a URL names:
//
//	mem://anything         a new, empty in-memory store (every Open its own)
//	file:///abs/path       a directory, created if missing
//	file://rel/path        a directory relative to the working directory
//	file://./rel/path      (same)
//	s3://bucket[/prefix]   an S3 bucket; keys live under prefix/, configured by opts
//
// opts matters only for s3:// and is validated only then.
func Open(ctx context.Context, rawURL string, opts Options) (Store, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, errUnsupported(rawURL)
	}
	if u, err := url.Parse(rawURL); err == nil && u.User != nil {
		rawURL = u.Redacted() // errors below name the URL; not its password
	}
	switch strings.ToLower(scheme) {
	case "mem":
		return newMem(rawURL), nil
	case "file":
		// Taken literally after "file://": a leading '/' makes it absolute,
		// anything else is relative to the working directory.
		if rest == "" {
			return nil, fmt.Errorf("open %s: no directory in file URL", rawURL)
		}
		s, err := openFile(rest)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", rawURL, err)
		}
		return s, nil
	case "s3":
		bucket, prefix, err := parseS3URL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", rawURL, err)
		}
		o, err := opts.withDefaults()
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", rawURL, err)
		}
		s, err := openS3(ctx, bucket, prefix, o)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", rawURL, err)
		}
		return s, nil
	}
	return nil, errUnsupported(rawURL)
}

func errUnsupported(rawURL string) error {
	return fmt.Errorf("open %q: unsupported store URL; want s3://bucket/prefix, file:///path or mem://name", rawURL)
}

// parseS3URL splits s3://bucket/a/b into "bucket" and "a/b/" (the prefix
// keys are stored under, "" for none).
func parseS3URL(rawURL string) (bucket, prefix string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", err
	}
	switch {
	case u.User != nil:
		return "", "", fmt.Errorf("credentials belong in Options, not the URL")
	case u.Host == "":
		return "", "", fmt.Errorf("no bucket in URL")
	case u.RawQuery != "" || u.Fragment != "":
		return "", "", fmt.Errorf("unexpected query or fragment; S3 settings go in Options")
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := checkKey(prefix); err != nil {
			return "", "", fmt.Errorf("prefix: %w", err)
		}
		prefix += "/"
	}
	return u.Host, prefix, nil
}
