package s3proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zerofs/internal/s3proxy"
	"zerofs/internal/testutil"
	"zerofs/store"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

const bucket = "s3proxy"

// gateway is one S3 test server for the whole test binary's S3 tests: each test
// gets its own proxy in front of it and its own keys.
type gateway struct {
	endpoint string
	raw      *s3.Client // straight to the gateway
}

func startGateway(t *testing.T) gateway {
	endpoint, ak, sk := testutil.StartS3Server(t)
	testutil.CreateBucket(t, endpoint, ak, sk, bucket, "")
	return gateway{endpoint: endpoint, raw: client(endpoint, 3)}
}

// client is an SDK client of endpoint making at most attempts attempts per
// request, with checksums only where required so that bodies cross the
// proxy byte for byte.
func client(endpoint string, attempts int) *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(testutil.AccessKey, testutil.SecretKey, ""),
		RetryMaxAttempts:           attempts,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func start(t *testing.T, target string, o s3proxy.Options) *s3proxy.Proxy {
	t.Helper()
	p, err := s3proxy.Start(target, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// openStore opens zerofs's S3 store through p with quick retries.
func openStore(t *testing.T, p *s3proxy.Proxy) store.Store {
	t.Helper()
	opts := testutil.Options(p.URL(), testutil.AccessKey, testutil.SecretKey)
	opts.MaxAttempts = 5
	opts.MaxBackoff = 20 * time.Millisecond
	s, err := store.Open(context.Background(), "s3://"+bucket+"/"+t.Name(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, c *s3.Client, key string, data []byte) {
	t.Helper()
	_, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("PutObject %s: %v", key, err)
	}
}

func get(c *s3.Client, key string) ([]byte, error) {
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func wantCounts(t *testing.T, got s3proxy.Counts, want map[s3proxy.Op]int64) {
	t.Helper()
	for op := s3proxy.OpGet; op <= s3proxy.OpOther; op++ {
		if got.Requests[op] != want[op] {
			t.Errorf("%v requests: %d, want %d (all: %v)", op, got.Requests[op], want[op], got.Requests)
		}
	}
}

func TestProxy(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()

	t.Run("Counts", func(t *testing.T) {
		p := start(t, gw.endpoint, s3proxy.Options{})
		c := client(p.URL(), 1)
		small := bytes.Repeat([]byte("x"), 1000)
		put(t, c, "counts/a", small)
		if got, err := get(c, "counts/a"); err != nil || !bytes.Equal(got, small) {
			t.Fatalf("GetObject through the proxy: %d bytes, %v", len(got), err)
		}
		if n := p.Counts(); n.BytesIn != 1000 || n.BytesOut != 1000 {
			t.Fatalf("after a 1000-byte PUT and GET: %d bytes in, %d out", n.BytesIn, n.BytesOut)
		}

		_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("counts/a")})
		check(t, "HeadObject", err)
		_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("counts/")})
		check(t, "ListObjectsV2", err)
		_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String("counts/b"), CopySource: aws.String(bucket + "/counts/a")})
		check(t, "CopyObject", err)
		up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("counts/c")})
		check(t, "CreateMultipartUpload", err)
		var parts []types.CompletedPart
		for i, data := range [][]byte{bytes.Repeat([]byte("p"), 5<<20), []byte("last part")} {
			out, err := c.UploadPart(ctx, &s3.UploadPartInput{
				Bucket: aws.String(bucket), Key: aws.String("counts/c"), UploadId: up.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(data),
			})
			check(t, "UploadPart", err)
			parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))})
		}
		_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: aws.String(bucket), Key: aws.String("counts/c"), UploadId: up.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		check(t, "CompleteMultipartUpload", err)
		_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("counts/b")})
		check(t, "DeleteObject", err)

		n := p.Counts()
		wantCounts(t, n, map[s3proxy.Op]int64{
			s3proxy.OpPut: 4, s3proxy.OpGet: 1, s3proxy.OpHead: 1, s3proxy.OpList: 1, s3proxy.OpPost: 2, s3proxy.OpDelete: 1,
		})
		if n.Total() != 10 || n.TotalFaults() != 0 {
			t.Errorf("%d requests, %d faults; want 10, 0", n.Total(), n.TotalFaults())
		}
		if min := int64(1000 + 5<<20 + len("last part")); n.BytesIn < min { // plus the CompleteMultipartUpload document
			t.Errorf("%d bytes in, want at least %d", n.BytesIn, min)
		}

		// The same counts over HTTP, which counts nothing itself.
		var fromHTTP s3proxy.Counts
		getJSON(t, p.URL()+"/_proxy/counts", &fromHTTP)
		getJSON(t, p.URL()+"/_proxy/counts", &fromHTTP)
		if fmt.Sprint(fromHTTP) != fmt.Sprint(p.Counts()) {
			t.Errorf("GET /_proxy/counts = %+v, want %+v", fromHTTP, p.Counts())
		}
		resp, err := http.Post(p.URL()+"/_proxy/reset", "", nil)
		check(t, "POST /_proxy/reset", err)
		resp.Body.Close()
		if n := p.Counts(); n.Total() != 0 || n.BytesIn != 0 || n.BytesOut != 0 {
			t.Errorf("after POST /_proxy/reset: %+v", n)
		}
		put(t, c, "counts/d", small)
		p.Reset()
		if n := p.Counts(); n.Total() != 0 || n.BytesIn != 0 {
			t.Errorf("after Reset: %+v", n)
		}
	})

	// Every request fails once; the store retries each and succeeds.
	for _, f := range []s3proxy.Fault{s3proxy.Unavailable, s3proxy.SlowDown, s3proxy.InternalError, s3proxy.Reset, s3proxy.Drop, s3proxy.TruncateBody} {
		t.Run("RetriedAfter/"+f.String(), func(t *testing.T) {
			p := start(t, gw.endpoint, s3proxy.Options{Rule: s3proxy.FirstAttempt(f)})
			s := openStore(t, p)
			data := bytes.Repeat([]byte("retried "), 1000)
			_, err := s.Put(ctx, "k", data)
			check(t, "Put", err)
			got, err := s.Get(ctx, "k", 0, -1)
			if check(t, "Get", err); !bytes.Equal(got, data) {
				t.Fatalf("Get: %d bytes, want the %d put", len(got), len(data))
			}
			n := p.Counts()
			puts := int64(2)
			if f == s3proxy.TruncateBody {
				puts = 1 // a PUT's answer has no body to cut: it arrives whole
			}
			wantCounts(t, n, map[s3proxy.Op]int64{s3proxy.OpPut: puts, s3proxy.OpGet: 2})
			if n.Faults[f] != 2 || n.TotalFaults() != 2 {
				t.Errorf("faults: %v, want 2 of %v", n.Faults, f)
			}
		})
	}

	t.Run("ErrorAnswers", func(t *testing.T) {
		p := start(t, gw.endpoint, s3proxy.Options{})
		c := client(p.URL(), 1)
		put(t, gw.raw, "errors/k", []byte("v"))
		for _, e := range []struct {
			f      s3proxy.Fault
			status int
			code   string
		}{
			{s3proxy.Unavailable, 503, "ServiceUnavailable"},
			{s3proxy.SlowDown, 503, "SlowDown"},
			{s3proxy.InternalError, 500, "InternalError"},
		} {
			p.SetRule(s3proxy.Always(e.f))
			_, err := get(c, "errors/k")
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != e.code || status(err) != e.status {
				t.Errorf("GetObject answered %v: %v; want %d %s", e.f, err, e.status, e.code)
			}
			_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("errors/k")})
			if status(err) != e.status {
				t.Errorf("HeadObject answered %v: %v; want %d", e.f, err, e.status)
			}
		}
	})

	t.Run("ConnectionFaults", func(t *testing.T) {
		p := start(t, gw.endpoint, s3proxy.Options{})
		c := client(p.URL(), 1)
		put(t, gw.raw, "conn/k", []byte("v"))

		p.SetRule(s3proxy.Always(s3proxy.Reset))
		_, err := get(c, "conn/k")
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("GetObject answered by a reset: %v; want connection reset", err)
		}
		p.SetRule(s3proxy.Always(s3proxy.Drop))
		_, err = get(c, "conn/k")
		if !errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("GetObject answered by a drop: %v; want EOF", err)
		}

		// Applied, though the client cannot know.
		p.SetRule(s3proxy.Always(s3proxy.ApplyThenDrop))
		_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("conn/applied"), Body: strings.NewReader("applied")})
		if err == nil {
			t.Error("PutObject answered by apply-then-drop succeeded")
		}
		if got, err := get(gw.raw, "conn/applied"); err != nil || string(got) != "applied" {
			t.Errorf("after apply-then-drop, the object is %q, %v; want it written", got, err)
		}

		// Half the body, then the connection ends.
		body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
		put(t, gw.raw, "conn/large", body)
		p.SetRule(s3proxy.Always(s3proxy.TruncateBody))
		p.Reset()
		got, err := get(c, "conn/large")
		if err == nil || len(got) >= len(body) {
			t.Errorf("GetObject with a truncated body: %d bytes, %v; want an error", len(got), err)
		}
		if n := p.Counts(); n.BytesOut != int64(len(body)/2) {
			t.Errorf("truncated body: %d bytes out, want %d", n.BytesOut, len(body)/2)
		}
		if got := p.Counts().Faults; got[s3proxy.TruncateBody] != 1 {
			t.Errorf("faults: %v", got)
		}
	})

	t.Run("Hang", func(t *testing.T) {
		p := start(t, gw.endpoint, s3proxy.Options{Rule: s3proxy.When(s3proxy.Ops(s3proxy.OpGet), s3proxy.Always(s3proxy.Hang))})
		s := openStore(t, p)
		_, err := s.Put(ctx, "k", []byte("v"))
		check(t, "Put", err) // only GETs hang
		const deadline = 200 * time.Millisecond
		dctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		start := time.Now()
		_, err = s.Get(dctx, "k", 0, -1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get of a hanging request: %v; want DeadlineExceeded", err)
		}
		if d := time.Since(start); d < deadline {
			t.Fatalf("Get gave up after %v, before its deadline", d)
		}

		// Close ends a request that hangs without a deadline.
		gets := p.Counts().Requests[s3proxy.OpGet]
		errc := make(chan error, 1)
		go func() {
			_, err := get(client(p.URL(), 1), t.Name()+"/k")
			errc <- err
		}()
		testutil.Eventually(t, func() bool { return p.Counts().Requests[s3proxy.OpGet] > gets },
			func() string { return fmt.Sprintf("the GET never arrived: %v", p.Counts().Requests) })
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err == nil {
			t.Fatal("a request hanging when the proxy closed succeeded")
		}
	})

	// Lower bounds only: sleeping guarantees them, a loaded machine only
	// makes things slower.
	t.Run("Latency", func(t *testing.T) {
		const latency = 50 * time.Millisecond
		p := start(t, gw.endpoint, s3proxy.Options{Latency: latency})
		c := client(p.URL(), 1)
		put(t, gw.raw, "latency/k", []byte("v"))
		for _, f := range []s3proxy.Fault{s3proxy.Pass, s3proxy.Unavailable} {
			p.SetRule(s3proxy.Always(f))
			start := time.Now()
			c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("latency/k")})
			if d := time.Since(start); d < latency {
				t.Errorf("HEAD (%v) with %v latency took %v", f, latency, d)
			}
		}
		p.SetRule(nil)
		p.SetLatency(0, 30*time.Millisecond) // jitter alone: nothing to bound, but it must work
		_, err := get(c, "latency/k")
		check(t, "GetObject with jitter", err)
		p.SetLatency(2*latency, 0)
		start := time.Now()
		_, err = get(c, "latency/k")
		check(t, "GetObject", err)
		if d := time.Since(start); d < 2*latency {
			t.Errorf("GET after SetLatency(%v) took %v", 2*latency, d)
		}
	})

	t.Run("Rate", func(t *testing.T) {
		const rate = 4 << 20
		const size = 1 << 20
		const atLeast = 200 * time.Millisecond // size/rate is 250 ms
		p := start(t, gw.endpoint, s3proxy.Options{Rate: rate})
		c := client(p.URL(), 1)
		data := bytes.Repeat([]byte("rate"), size/4)

		start := time.Now()
		put(t, c, "rate/k", data)
		if d := time.Since(start); d < atLeast {
			t.Errorf("a %d-byte upload at %d B/s took %v", size, rate, d)
		}
		start = time.Now()
		got, err := get(c, "rate/k")
		if check(t, "GetObject", err); !bytes.Equal(got, data) {
			t.Fatal("GetObject: wrong bytes")
		}
		if d := time.Since(start); d < atLeast {
			t.Errorf("a %d-byte download at %d B/s took %v", size, rate, d)
		}

		// The cap is per request: two at once each get the rate. The total
		// cap is shared: two at once take twice as long.
		p.SetRate(0)
		p.SetTotalRate(rate)
		start = time.Now()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if _, err := get(c, "rate/k"); err != nil {
					t.Errorf("GetObject: %v", err)
				}
			})
		}
		wg.Wait()
		if d := time.Since(start); d < 2*atLeast {
			t.Errorf("two %d-byte downloads at a total of %d B/s took %v", size, rate, d)
		}
	})

	// Reconfiguring while requests stream is safe (the race detector
	// checks) and every request still completes.
	t.Run("SetWhileBusy", func(t *testing.T) {
		p := start(t, gw.endpoint, s3proxy.Options{})
		s := openStore(t, p)
		data := bytes.Repeat([]byte("busy"), 64<<10)
		stop := make(chan struct{})
		var reconfigurer sync.WaitGroup
		reconfigurer.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p.SetLatency(time.Duration(i%3)*time.Millisecond, time.Millisecond)
				p.SetRate(int64(i%2) * 64 << 20)
				p.SetTotalRate(int64(i%3) * 128 << 20)
				if i%2 == 0 {
					// Rare enough that no request fails all 5 attempts.
					p.SetRule(s3proxy.Chance(0.05, s3proxy.Unavailable, uint64(i)))
				} else {
					p.SetRule(nil)
				}
				p.Counts()
				time.Sleep(time.Millisecond)
			}
		})
		var workers sync.WaitGroup
		for w := range 4 {
			workers.Go(func() {
				for i := range 5 {
					key := fmt.Sprintf("w%d/%d", w, i)
					if _, err := s.Put(ctx, key, data); err != nil {
						t.Errorf("Put %s: %v", key, err)
						return
					}
					if got, err := s.Get(ctx, key, 0, -1); err != nil || !bytes.Equal(got, data) {
						t.Errorf("Get %s: %d bytes, %v", key, len(got), err)
						return
					}
				}
			})
		}
		workers.Wait()
		close(stop)
		reconfigurer.Wait()
	})
}

func TestStartErrors(t *testing.T) {
	for _, target := range []string{"", "127.0.0.1:9000", "ftp://host", "http://"} {
		if p, err := s3proxy.Start(target, s3proxy.Options{}); err == nil {
			p.Close()
			t.Errorf("Start(%q) succeeded", target)
		}
	}
	if p, err := s3proxy.Start("http://127.0.0.1:1", s3proxy.Options{Latency: -time.Second}); err == nil {
		p.Close()
		t.Error("Start with a negative latency succeeded")
	}
}

// An unreachable target is a 502, which clients retry like any 5xx.
func TestUnreachableTarget(t *testing.T) {
	p := start(t, "http://127.0.0.1:1", s3proxy.Options{})
	_, err := get(client(p.URL(), 1), "k")
	if status(err) != http.StatusBadGateway {
		t.Fatalf("GetObject through a proxy to nothing: %v; want 502", err)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func check(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
