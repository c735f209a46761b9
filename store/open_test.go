package store_test

import (
	"context"
	"strings"
	"testing"

	"zerofs/store"
)

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	ok := store.Options{Endpoint: "https://s3.example.com", AccessKeyID: "k", SecretAccessKey: "s"}
	with := func(f func(o *store.Options)) store.Options {
		o := ok
		f(&o)
		return o
	}
	tests := []struct {
		url  string
		opts store.Options
		want string // in the error
	}{
		{"ftp://host/x", ok, "unsupported store URL"},
		{"just-a-path", ok, "s3://bucket/prefix, file:///path or mem://name"},
		{"file://", ok, "no directory"},
		{"s3://", ok, "no bucket"},
		{"s3:///prefix", ok, "no bucket"},
		{"s3://bucket/a//b", ok, "empty path segment"},
		{"s3://bucket/../x", ok, `".." segment`},
		{"s3://bucket/x?region=eu", ok, "settings go in Options"},
		{"s3://key:secret@bucket/x", ok, "credentials belong in Options"},
		{"s3://bucket", with(func(o *store.Options) { o.Endpoint = "http://127.0.0.1:9000" }), "set allow_http"},
		{"s3://bucket", with(func(o *store.Options) { o.Endpoint = "ftp://x" }), "http:// or https://"},
		{"s3://bucket", with(func(o *store.Options) { o.Endpoint = "https://" }), "no host"},
		{"s3://bucket", with(func(o *store.Options) { o.Endpoint = "https://u:p@host" }), "credentials belong"},
		{"s3://bucket", with(func(o *store.Options) { o.PartSize = 1 << 20 }), "part_size"},
		{"s3://bucket", with(func(o *store.Options) { o.PartSize = 6 << 30 }), "part_size"},
		{"s3://bucket", with(func(o *store.Options) { o.MultipartThreshold = 6 << 30 }), "multipart_threshold"},
		{"s3://bucket", with(func(o *store.Options) { o.MultipartThreshold = -1 }), "multipart_threshold"},
		{"s3://bucket", with(func(o *store.Options) { o.MaxAttempts = -1 }), "max_attempts"},
		{"s3://bucket", with(func(o *store.Options) { o.MaxBackoff = -1 }), "max_backoff"},
		{"s3://bucket", with(func(o *store.Options) { o.SecretAccessKey = "" }), "set both or neither"},
	}
	for _, tc := range tests {
		_, err := store.Open(ctx, tc.url, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): err = %v, want one containing %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(tc.url, "secret") && strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): error %q repeats the credentials", tc.url, err)
		}
	}
}

func TestOpenS3Names(t *testing.T) {
	ctx := context.Background()
	opts := store.Options{Endpoint: "http://127.0.0.1:1", AllowHTTP: true, AccessKeyID: "k", SecretAccessKey: "s"}
	for url, want := range map[string]string{
		"s3://bucket":        "s3://bucket",
		"s3://bucket/":       "s3://bucket",
		"s3://bucket/a/b":    "s3://bucket/a/b",
		"s3://bucket/a/b/":   "s3://bucket/a/b",
		"S3://bucket/prefix": "s3://bucket/prefix",
	} {
		s, err := store.Open(ctx, url, opts)
		if err != nil {
			t.Fatalf("Open(%q): %v", url, err)
		}
		if s.String() != want {
			t.Errorf("Open(%q).String() = %q, want %q", url, s.String(), want)
		}
	}
}
