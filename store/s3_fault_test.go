package store_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"zerofs/internal/s3proxy"
	"zerofs/internal/testutil"
	"zerofs/store"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// isPart selects the requests of part n of multipart uploads.
func isPart(n string) s3proxy.Match {
	return func(r *http.Request) bool { return r.URL.Query().Get("partNumber") == n }
}

// TestS3Faults puts internal/s3proxy between the store and the S3 test server and
// injects faults per request.
func TestS3Faults(t *testing.T) {
	endpoint, ak, sk := testutil.StartS3Server(t)
	const bucket = "zerofs-faults"
	testutil.CreateBucket(t, endpoint, ak, sk, bucket, "")
	raw := rawClient(endpoint, ak, sk)
	proxy, err := s3proxy.Start(endpoint, s3proxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	open := func(t *testing.T, maxAttempts int, maxBackoff time.Duration) store.Store {
		opts := smallParts(testutil.Options(proxy.URL(), ak, sk))
		opts.MaxAttempts = maxAttempts
		opts.MaxBackoff = maxBackoff
		s, err := store.Open(context.Background(), "s3://"+bucket+"/"+t.Name(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.SetRule(nil) })
		return s
	}
	uploadsLeft := func(t *testing.T) int {
		out, err := raw.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{
			Bucket: aws.String(bucket), Prefix: aws.String(t.Name() + "/"),
		})
		if err != nil {
			t.Fatalf("list multipart uploads: %v", err)
		}
		return len(out.Uploads)
	}
	large := bytes.Repeat([]byte("0123456789abcdef"), (13<<20)/16+1)

	// Every request fails once, in each way; every operation must still
	// succeed, through the SDK's retries or the store's own.
	for _, f := range []s3proxy.Fault{s3proxy.Unavailable, s3proxy.Drop, s3proxy.ApplyThenDrop, s3proxy.TruncateBody} {
		t.Run("Transient/"+f.String(), func(t *testing.T) {
			s := open(t, 5, 20*time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			proxy.SetRule(s3proxy.FirstAttempt(f))

			etag, err := s.Put(ctx, "small", []byte("small object"))
			check(t, "Put", err)
			_, err = s.Put(ctx, "large", large)
			check(t, "Put (multipart)", err)
			_, err = s.PutIfAbsent(ctx, "new", []byte("created"))
			check(t, "PutIfAbsent", err)
			_, err = s.PutIfMatch(ctx, "small", []byte("swapped"), etag)
			check(t, "PutIfMatch", err)
			_, err = s.PutIfAbsent(ctx, "new-large", large)
			check(t, "PutIfAbsent (multipart)", err)
			info, err := s.Head(ctx, "large")
			check(t, "Head", err)
			_, err = s.PutIfMatch(ctx, "large", large[1:], info.ETag)
			check(t, "PutIfMatch (multipart)", err)

			got, err := s.Get(ctx, "small", 0, -1)
			if check(t, "Get", err); string(got) != "swapped" {
				t.Fatalf("Get = %q, want %q", got, "swapped")
			}
			got, err = s.Get(ctx, "large", 1000, 6<<20)
			if check(t, "Get range", err); !bytes.Equal(got, large[1001:1001+6<<20]) {
				t.Fatalf("Get range: wrong bytes")
			}
			infos, err := s.List(ctx, "")
			if check(t, "List", err); len(infos) != 4 {
				t.Fatalf("List = %d objects, want 4", len(infos))
			}
			check(t, "Delete", s.Delete(ctx, "new"))
			_, err = s.Head(ctx, "new")
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Head after Delete: %v, want ErrNotFound", err)
			}
			proxy.SetRule(nil)
			// A create whose answer is lost leaves an unused upload behind (as
			// on AWS: the retry creates another; a bucket lifecycle rule
			// collects it). Nothing else may.
			if n := uploadsLeft(t); n != 0 && f != s3proxy.ApplyThenDrop && f != s3proxy.TruncateBody {
				t.Fatalf("%d multipart uploads left behind", n)
			}
		})
	}

	// A conditional write whose answer is lost, and whose retry then finds
	// its own write, reports success; a real conflict still fails.
	t.Run("LostAnswerOfConditionalWrite", func(t *testing.T) {
		s := open(t, 5, 20*time.Millisecond)
		ctx := context.Background()
		lostPuts := func() s3proxy.Rule { // the first answer to each PUT is lost
			return s3proxy.When(s3proxy.Methods(http.MethodPut), s3proxy.FirstAttempt(s3proxy.ApplyThenDrop))
		}
		proxy.SetRule(lostPuts())
		etag, err := s.PutIfAbsent(ctx, "lease", []byte("writer A"))
		check(t, "PutIfAbsent with lost answer", err)
		_, err = s.PutIfMatch(ctx, "lease", []byte("writer A, renewed"), etag)
		check(t, "PutIfMatch with lost answer", err)
		proxy.SetRule(lostPuts())
		_, err = s.PutIfAbsent(ctx, "lease", []byte("writer B"))
		if !errors.Is(err, store.ErrExists) {
			t.Fatalf("PutIfAbsent on a key another writer holds: %v, want ErrExists", err)
		}
		_, err = s.PutIfMatch(ctx, "lease", []byte("writer B"), etag)
		if !errors.Is(err, store.ErrPrecondition) {
			t.Fatalf("PutIfMatch with a stale ETag: %v, want ErrPrecondition", err)
		}
		proxy.SetRule(nil)
		got, err := s.Get(ctx, "lease", 0, -1)
		if check(t, "Get", err); string(got) != "writer A, renewed" {
			t.Fatalf("lease = %q", got)
		}

		// A 503 turns a request away unapplied: when another writer stores
		// the very same bytes before the retry, the retry's conflict is real.
		var once sync.Once
		proxy.SetRule(func(r *http.Request) s3proxy.Fault {
			if r.Method != http.MethodPut {
				return s3proxy.Pass
			}
			f := s3proxy.Pass
			once.Do(func() {
				_, err := raw.PutObject(context.Background(), &s3.PutObjectInput{
					Bucket: aws.String(bucket), Key: aws.String(t.Name() + "/same"), Body: strings.NewReader("same bytes"),
				})
				if err != nil {
					t.Errorf("concurrent writer's PutObject: %v", err) // not Fatal: this is the proxy's goroutine
				}
				f = s3proxy.Unavailable
			})
			return f
		})
		_, err = s.PutIfAbsent(ctx, "same", []byte("same bytes"))
		if !errors.Is(err, store.ErrExists) {
			t.Fatalf("PutIfAbsent turned away by a 503 while another writer created the key: %v, want ErrExists", err)
		}
	})

	// The condition that counts is the one on CompleteMultipartUpload: a
	// writer that changes the key while the parts upload wins.
	t.Run("ConditionAtComplete", func(t *testing.T) {
		s := open(t, 3, 20*time.Millisecond)
		ctx := context.Background()
		interfere := func(key string) {
			var once sync.Once
			proxy.SetRule(func(r *http.Request) s3proxy.Fault {
				if r.Method == http.MethodPost && r.URL.Query().Has("uploadId") {
					once.Do(func() {
						_, err := raw.PutObject(context.Background(), &s3.PutObjectInput{
							Bucket: aws.String(bucket), Key: aws.String(t.Name() + "/" + key), Body: strings.NewReader("other writer"),
						})
						if err != nil {
							t.Errorf("other writer's PutObject: %v", err) // not Fatal: this is the proxy's goroutine
						}
					})
				}
				return s3proxy.Pass
			})
		}
		interfere("created")
		_, err := s.PutIfAbsent(ctx, "created", large)
		if !errors.Is(err, store.ErrExists) {
			t.Fatalf("PutIfAbsent (multipart) racing a create: %v, want ErrExists", err)
		}
		etag, err := s.Put(ctx, "swapped", []byte("v1"))
		check(t, "Put", err)
		interfere("swapped")
		_, err = s.PutIfMatch(ctx, "swapped", large, etag)
		if !errors.Is(err, store.ErrPrecondition) {
			t.Fatalf("PutIfMatch (multipart) racing a write: %v, want ErrPrecondition", err)
		}
		proxy.SetRule(nil)
		for _, key := range []string{"created", "swapped"} {
			got, err := s.Get(ctx, key, 0, -1)
			if check(t, "Get", err); string(got) != "other writer" {
				t.Fatalf("%s = %q, want the other writer's", key, got)
			}
		}
		if n := uploadsLeft(t); n != 0 {
			t.Fatalf("failed conditional uploads left %d multipart uploads", n)
		}
	})

	t.Run("PersistentOutage", func(t *testing.T) {
		s := open(t, 3, 20*time.Millisecond)
		for _, f := range []s3proxy.Fault{s3proxy.Unavailable, s3proxy.Drop} {
			proxy.SetRule(s3proxy.Always(f))
			start := time.Now()
			for name, err := range allOps(context.Background(), s) {
				if err == nil {
					t.Fatalf("%s during a %s outage succeeded", name, f)
				}
				if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrPrecondition) {
					t.Fatalf("%s during a %s outage: %v; an outage must not look like an answer", name, f, err)
				}
				if f == s3proxy.Unavailable && !strings.Contains(err.Error(), "503") {
					t.Fatalf("%s during a 503 outage: %v; want the status in the error", name, err)
				}
			}
			if d := time.Since(start); d > time.Minute { // a hang, not a timing: the retry budget is seconds
				t.Fatalf("%s outage: operations took %v to give up", f, d)
			}
		}
	})

	// With many attempts and long backoff, a deadline still ends every
	// operation promptly: during backoff, and while a request hangs.
	t.Run("DeadlineDuringOutage", func(t *testing.T) {
		s := open(t, 10, 20*time.Second)
		for _, f := range []s3proxy.Fault{s3proxy.Unavailable, s3proxy.Hang} {
			proxy.SetRule(s3proxy.Always(f))
			for name, err := range allOps(context.Background(), s, 300*time.Millisecond) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s during a %s outage with a deadline: %v; want DeadlineExceeded", name, f, err)
				}
			}
		}
	})

	t.Run("MultipartAbortedOnFailure", func(t *testing.T) {
		s := open(t, 3, 20*time.Millisecond)
		ctx := context.Background()
		_, err := s.Put(ctx, "obj", []byte("previous"))
		check(t, "Put", err)
		proxy.SetRule(s3proxy.When(isPart("2"), s3proxy.Always(s3proxy.Unavailable)))
		if _, err := s.Put(ctx, "obj", large); err == nil {
			t.Fatal("Put succeeded although part 2 always fails")
		}
		proxy.SetRule(nil)
		if n := uploadsLeft(t); n != 0 {
			t.Fatalf("failed upload left %d multipart uploads", n)
		}
		got, err := s.Get(ctx, "obj", 0, -1)
		if check(t, "Get", err); string(got) != "previous" {
			t.Fatalf("after a failed upload, obj = %q, want the previous object", got)
		}
	})

	t.Run("MultipartCanceled", func(t *testing.T) {
		s := open(t, 3, 20*time.Millisecond)
		proxy.SetRule(s3proxy.When(isPart("3"), s3proxy.Always(s3proxy.Hang)))
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := s.Put(ctx, "obj", large)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put with a hanging part: %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 30*time.Second { // a hang, not a timing
			t.Fatalf("Put returned %v after its deadline", d)
		}
		// The upload is aborted in the background.
		for deadline := time.Now().Add(60 * time.Second); uploadsLeft(t) != 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("canceled upload was not aborted")
			}
		}
	})
}

func check(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// allOps runs every operation at once, each with its own timeout if one is
// given, and returns their errors. None may take longer than 3s past its
// timeout.
func allOps(parent context.Context, s store.Store, timeout ...time.Duration) map[string]error {
	ops := map[string]func(ctx context.Context) error{
		"Put":         func(ctx context.Context) error { _, err := s.Put(ctx, "k", []byte("v")); return err },
		"PutIfAbsent": func(ctx context.Context) error { _, err := s.PutIfAbsent(ctx, "k", []byte("v")); return err },
		"PutIfMatch":  func(ctx context.Context) error { _, err := s.PutIfMatch(ctx, "k", []byte("v"), "e"); return err },
		"Get":         func(ctx context.Context) error { _, err := s.Get(ctx, "k", 0, -1); return err },
		"Head":        func(ctx context.Context) error { _, err := s.Head(ctx, "k"); return err },
		"List":        func(ctx context.Context) error { _, err := s.List(ctx, ""); return err },
		"Delete":      func(ctx context.Context) error { return s.Delete(ctx, "k") },
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := map[string]error{}
	for name, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := parent
			if len(timeout) > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(parent, timeout[0])
				defer cancel()
			}
			start := time.Now()
			err := op(ctx)
			if len(timeout) > 0 && time.Since(start) > timeout[0]+30*time.Second {
				err = errors.New(name + " ignored its deadline")
			}
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return errs
}
