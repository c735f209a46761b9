package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Retry timing. Transient errors start small, so a blip costs milliseconds;
// throttling starts at a second, as S3 asks of clients that see SlowDown.
const (
	retryBaseDelay    = 100 * time.Millisecond
	throttleBaseDelay = time.Second
)

func newS3Client(ctx context.Context, o Options) (*s3.Client, error) {
	// Built here, not by the SDK, to tune the transport; a BuildableClient
	// also lets the SDK apply AWS_CA_BUNDLE to it.
	buildable := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		// The WAL and segment uploads run many requests at once against one
		// host; Go's default of 2 idle connections per host would make most
		// of them open a new connection.
		tr.MaxIdleConns = 256
		tr.MaxIdleConnsPerHost = 64
		// A server that accepts a request and never answers would otherwise
		// hang a caller without a deadline forever. Counted from the end of
		// the request body, so large uploads are not cut short.
		tr.ResponseHeaderTimeout = 2 * time.Minute
	})
	loadOpts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(buildable),
		config.WithRetryer(func() aws.Retryer { return newRetryer(o) }),
		// Checksums only where the API requires them: the SDK's default
		// CRC32 headers are rejected by some S3-compatible servers.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	if o.AccessKeyID != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if o.HTTPClient != nil {
		cfg.HTTPClient = o.HTTPClient
	}
	cfg.HTTPClient = attemptObserver{cfg.HTTPClient}
	return s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = *o.UsePathStyle
		so.DisableLogOutputChecksumValidationSkipped = true
	}), nil
}

// newRetryer is the SDK's standard retryer (retries network errors, 5xx,
// throttling and request timeouts) with our attempt count and backoff, and
// without its client-side rate limiter: that limiter fails requests outright
// once many retries have happened across the client, which under a burst of
// 503s turns a slowdown into errors for every caller.
func newRetryer(o Options) aws.Retryer {
	return retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = o.MaxAttempts
		so.MaxBackoff = o.MaxBackoff
		so.RateLimiter = ratelimit.None
		so.Backoff = jitterBackoff{max: o.MaxBackoff, throttle: retry.IsErrorThrottles(so.Throttles)}
		// AWS answers concurrent conditional writes to one key with 409
		// ConditionalRequestConflict and asks for a retry.
		so.Retryables = append(so.Retryables, retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			if apiErrorCode(err) == "ConditionalRequestConflict" {
				return aws.TrueTernary
			}
			return aws.UnknownTernary
		}))
	})
}

// jitterBackoff is exponential backoff with full jitter: attempt n waits a
// uniformly random time in [0, min(max, base·2^n)).
type jitterBackoff struct {
	max      time.Duration
	throttle retry.IsErrorThrottle
}

func (b jitterBackoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	base := retryBaseDelay
	if b.throttle.IsErrorThrottle(err) == aws.TrueTernary {
		base = throttleBaseDelay
	}
	return backoffDelay(base, b.max, attempt), nil
}

func backoffDelay(base, max time.Duration, attempt int) time.Duration {
	d := max
	if attempt < 30 && base<<attempt < max {
		d = base << attempt
	}
	return rand.N(d + 1)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// attemptObserver notes, for requests whose context carries an attemptLog,
// whether any attempt ended without a definite answer: a network error, a
// 5xx, or a response body cut short, after which the server may or may not
// have applied the request. A conditional write that then fails its
// condition on a retry may have failed against its own first attempt (see
// s3Store.put).
//
// It also marks errors reading a response body as connection errors, so the
// SDK retries an operation whose XML answer was cut short (it otherwise
// gives up with a deserialization error).
type attemptObserver struct{ next aws.HTTPClient }

type attemptLog struct{ uncertain atomic.Bool }

type attemptLogKey struct{}

func withAttemptLog(ctx context.Context) (context.Context, *attemptLog) {
	l := &attemptLog{}
	return context.WithValue(ctx, attemptLogKey{}, l), l
}

func (c attemptObserver) Do(req *http.Request) (*http.Response, error) {
	l, _ := req.Context().Value(attemptLogKey{}).(*attemptLog)
	resp, err := c.next.Do(req)
	if l != nil && mayHaveApplied(resp, err) {
		l.uncertain.Store(true)
	}
	if err == nil && resp.Body != nil {
		resp.Body = &observedBody{ReadCloser: resp.Body, log: l}
	}
	return resp, err
}

// mayHaveApplied reports whether a failed attempt may nevertheless have
// changed the object. A 503 (SlowDown, or a balancer with no backend) and a
// failed dial mean the request was turned away; other 5xx and network errors
// leave it open.
func mayHaveApplied(resp *http.Response, err error) bool {
	if err != nil {
		var opErr *net.OpError
		return !(errors.As(err, &opErr) && opErr.Op == "dial")
	}
	return resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable
}

type observedBody struct {
	io.ReadCloser
	log *attemptLog
}

func (b *observedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if b.log != nil {
			b.log.uncertain.Store(true)
		}
		err = &connectionError{err}
	}
	return n, err
}

// connectionError is recognised as retryable by the SDK's
// retry.RetryableConnectionError.
type connectionError struct{ err error }

func (e *connectionError) Error() string         { return e.err.Error() }
func (e *connectionError) Unwrap() error         { return e.err }
func (e *connectionError) ConnectionError() bool { return true }
