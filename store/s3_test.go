package store_test

import (
	"context"
	"errors"
	"testing"

	"zerofs/internal/testutil"
	"zerofs/store"
	"zerofs/store/storetest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// smallParts makes the suite's large object (13 MiB) a 3-part upload.
func smallParts(o store.Options) store.Options {
	o.PartSize = 5 << 20
	o.MultipartThreshold = 6 << 20
	return o
}

func TestS3(t *testing.T) {
	endpoint, ak, sk := testutil.StartS3Server(t)
	url, opts := testutil.CreateBucket(t, endpoint, ak, sk, "zerofs-suite", "")
	opts = smallParts(opts)
	raw := rawClient(endpoint, ak, sk)
	storetest.Run(t, func(t *testing.T) store.Store {
		// Each subtest gets its own prefix, several levels deep.
		s, err := store.Open(context.Background(), url+"/prefix/"+t.Name(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// No multipart upload may be left behind, completed or aborted.
			out, err := raw.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String("zerofs-suite")})
			if err != nil {
				t.Errorf("list multipart uploads: %v", err)
			} else if len(out.Uploads) != 0 {
				t.Errorf("%d multipart uploads left behind", len(out.Uploads))
			}
		})
		return s
	})
}

// TestS3Prefix checks that keys live under the URL's prefix and that stores
// with overlapping prefixes do not see each other's objects.
func TestS3Prefix(t *testing.T) {
	endpoint, ak, sk := testutil.StartS3Server(t)
	url, opts := testutil.CreateBucket(t, endpoint, ak, sk, "zerofs-prefix", "")
	ctx := context.Background()
	open := func(u string) store.Store {
		s, err := store.Open(ctx, u, opts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ab, abc, root := open(url+"/a/b"), open(url+"/a/bc/"), open(url)
	if _, err := ab.Put(ctx, "wal/1", []byte("in a/b")); err != nil {
		t.Fatal(err)
	}
	if _, err := abc.Put(ctx, "wal/1", []byte("in a/bc")); err != nil {
		t.Fatal(err)
	}
	infos, err := root.List(ctx, "")
	if err != nil || len(infos) != 2 || infos[0].Key != "a/b/wal/1" || infos[1].Key != "a/bc/wal/1" {
		t.Fatalf("bucket holds %+v, %v; want a/b/wal/1 and a/bc/wal/1", infos, err)
	}
	infos, err = ab.List(ctx, "")
	if err != nil || len(infos) != 1 || infos[0].Key != "wal/1" {
		t.Fatalf("List under a/b = %+v, %v; want just wal/1", infos, err)
	}
	got, err := ab.Get(ctx, "wal/1", 0, -1)
	if err != nil || string(got) != "in a/b" {
		t.Fatalf("Get = %q, %v", got, err)
	}
}

func TestS3MissingBucket(t *testing.T) {
	endpoint, ak, sk := testutil.StartS3Server(t)
	s, err := store.Open(context.Background(), "s3://no-such-bucket/x", testutil.Options(endpoint, ak, sk))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(context.Background(), "k", 0, -1)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get from a missing bucket: err = %v; want an error that is not ErrNotFound", err)
	}
	_, err = s.List(context.Background(), "")
	if err == nil {
		t.Fatal("List of a missing bucket succeeded")
	}
}

func rawClient(endpoint, ak, sk string) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(ak, sk, ""),
	})
}
