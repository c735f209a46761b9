package store

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Store keeps objects in an S3 bucket under a key prefix.
//
// ETags are the server's, with the surrounding quotes removed everywhere
// (Put, Head, List); PutIfMatch quotes them again for If-Match.
type s3Store struct {
	client      *s3.Client
	bucket      string
	prefix      string // "" or ends in '/'
	threshold   int64
	partSize    int64
	maxAttempts int
	opts        Options
}

func openS3(ctx context.Context, bucket, prefix string, o Options) (*s3Store, error) {
	client, err := newS3Client(ctx, o)
	if err != nil {
		return nil, err
	}
	return &s3Store{
		client:      client,
		bucket:      bucket,
		prefix:      prefix,
		threshold:   o.MultipartThreshold,
		partSize:    o.PartSize,
		maxAttempts: o.MaxAttempts,
		opts:        o,
	}, nil
}

func (s *s3Store) String() string {
	if s.prefix == "" {
		return "s3://" + s.bucket
	}
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *s3Store) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if err := precheck(ctx, key); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("get %s: %w: negative offset %d", key, ErrInvalidRange, off)
	}
	if length == 0 {
		// No Range header can ask for zero bytes; only existence and
		// off <= size need checking.
		info, err := s.Head(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", key, errors.Unwrap(err))
		}
		if _, _, err := clampRange(info.Size, off, 0); err != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
		return []byte{}, nil
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.prefix + key)}
	if off > 0 || length > 0 {
		rng := fmt.Sprintf("bytes=%d-", off)
		if length > 0 {
			rng += fmt.Sprint(off + length - 1)
		}
		in.Range = &rng
	}
	// The SDK retries getting the response; a connection that breaks while
	// the body streams is retried here.
	for attempt := 1; ; attempt++ {
		data, err := s.getOnce(ctx, key, in, off, length)
		if err == nil {
			return data, nil
		}
		var bodyErr *bodyError
		if !errors.As(err, &bodyErr) || attempt >= s.maxAttempts || ctx.Err() != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
		if err := sleepCtx(ctx, backoffDelay(retryBaseDelay, s.opts.MaxBackoff, attempt)); err != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
	}
}

// bodyError is a failure while reading a response body (which the SDK does
// not retry), or another reason to send the request again.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "read body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

func (s *s3Store) getOnce(ctx context.Context, key string, in *s3.GetObjectInput, off, length int64) ([]byte, error) {
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		err = mapS3Error(err)
		if !errors.Is(err, ErrInvalidRange) {
			return nil, err
		}
		// 416 means off >= size, which includes the valid empty read at
		// off == size (and every range of an empty object). Only the size
		// tells which.
		info, herr := s.Head(ctx, key)
		if herr != nil {
			return nil, errors.Unwrap(herr)
		}
		switch {
		case off == info.Size:
			return []byte{}, nil
		case off > info.Size:
			return nil, fmt.Errorf("%w: offset %d, size %d", ErrInvalidRange, off, info.Size)
		default: // the object was replaced between the two requests
			return nil, &bodyError{fmt.Errorf("object changed while reading it")}
		}
	}
	defer out.Body.Close()
	data, err := readBody(out.Body, out.ContentLength)
	if err != nil {
		return nil, &bodyError{err}
	}
	if in.Range != nil && out.ContentRange == nil {
		// A server may ignore Range and send the whole object (200).
		start, end, err := clampRange(int64(len(data)), off, length)
		if err != nil {
			return nil, err
		}
		data = data[start:end]
	}
	return data, nil
}

// readBody reads a response body of the announced size in one allocation.
func readBody(body io.Reader, contentLength *int64) ([]byte, error) {
	if contentLength == nil || *contentLength < 0 {
		return io.ReadAll(body)
	}
	data := make([]byte, *contentLength)
	if _, err := io.ReadFull(body, data); err != nil {
		return nil, fmt.Errorf("got fewer bytes than the Content-Length of %d: %w", *contentLength, err)
	}
	return data, nil
}

func (s *s3Store) Head(ctx context.Context, key string) (Info, error) {
	if err := precheck(ctx, key); err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.prefix + key)})
	if err != nil {
		return Info{}, fmt.Errorf("head %s: %w", key, mapS3Error(err))
	}
	info := Info{Key: key, ETag: trimETag(out.ETag), Size: aws.ToInt64(out.ContentLength)}
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]Info, error) {
	infos := []Info{}
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: &s.bucket,
		Prefix: aws.String(s.prefix + prefix),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, mapS3Error(err))
		}
		for _, obj := range page.Contents {
			info := Info{
				Key:  strings.TrimPrefix(aws.ToString(obj.Key), s.prefix),
				Size: aws.ToInt64(obj.Size),
				ETag: trimETag(obj.ETag),
			}
			if obj.LastModified != nil {
				info.ModTime = *obj.LastModified
			}
			infos = append(infos, info)
		}
	}
	// S3 lists in UTF-8 byte order, which is Go's string order, but not
	// every S3-compatible server is careful about it.
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	return infos, nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := precheck(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(s.prefix + key)})
	if err != nil {
		if err = mapS3Error(err); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	return nil
}

func (s *s3Store) Put(ctx context.Context, key string, data []byte) (string, error) {
	return s.put(ctx, putCond{op: "put"}, key, data)
}

func (s *s3Store) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	return s.put(ctx, putCond{op: "put-if-absent", ifNoneMatch: true}, key, data)
}

func (s *s3Store) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (string, error) {
	if etag == "" {
		// No object has an empty ETag; answer as the server would, without
		// sending an If-Match that some servers reject as malformed.
		if _, err := s.Head(ctx, key); err != nil {
			return "", fmt.Errorf("put-if-match %s: %w", key, errors.Unwrap(err))
		}
		return "", fmt.Errorf("put-if-match %s: %w: empty etag", key, ErrPrecondition)
	}
	return s.put(ctx, putCond{op: "put-if-match", ifMatch: etag}, key, data)
}

// putCond is the condition of a write: none, If-None-Match: * or If-Match.
type putCond struct {
	op          string
	ifNoneMatch bool
	ifMatch     string
}

func (c putCond) apply(ifNoneMatch, ifMatch **string) {
	if c.ifNoneMatch {
		*ifNoneMatch = aws.String("*")
	}
	if c.ifMatch != "" {
		*ifMatch = aws.String(`"` + c.ifMatch + `"`)
	}
}

// put uploads data in one request or in parts, under the condition c.
//
// A retried write may find its own earlier attempt: the first attempt is
// applied but its answer lost (connection reset, a 500 after the commit), and
// the retry fails If-None-Match or If-Match, or, for a multipart upload,
// finds the upload already completed. When that can have happened and the
// object now carries exactly the ETag our bytes produce, the write is
// reported as done. A different writer storing the very same bytes in that
// window is indistinguishable, and harmless for create-if-absent; for
// compare-and-swap, callers that need to tell the two apart must make their
// payloads unique (a writer ID, a sequence number).
func (s *s3Store) put(ctx context.Context, c putCond, key string, data []byte) (string, error) {
	if err := precheck(ctx, key); err != nil {
		return "", fmt.Errorf("%s %s: %w", c.op, key, err)
	}
	var (
		etag, want string
		log        *attemptLog
		err        error
	)
	if int64(len(data)) > s.threshold {
		if err := s.checkFirst(ctx, c, key); err != nil {
			return "", fmt.Errorf("%s %s: %w", c.op, key, err)
		}
		etag, want, log, err = s.putMultipart(ctx, c, key, data)
	} else {
		etag, log, err = s.putObject(ctx, c, key, data)
		if err != nil && log != nil && log.uncertain.Load() {
			sum := md5.Sum(data)
			want = hex.EncodeToString(sum[:])
		}
	}
	if err == nil {
		return etag, nil
	}
	raw := err
	err = mapS3Error(err)
	if want != "" && log != nil && log.uncertain.Load() && ctx.Err() == nil &&
		(errors.Is(err, ErrPrecondition) || apiErrorCode(err) == "NoSuchUpload") {
		if info, herr := s.Head(ctx, key); herr == nil && info.ETag == want {
			return info.ETag, nil
		}
	}
	if c.ifNoneMatch && errors.Is(err, ErrPrecondition) {
		// ErrExists alone: a failed create is not a failed compare.
		err = fmt.Errorf("%w (%v)", ErrExists, raw)
	}
	return "", fmt.Errorf("%s %s: %w", c.op, key, err)
}

// checkFirst fails a conditional multipart write early if its condition is
// already false, rather than after uploading every part. Only advisory: the
// condition that counts is the one on CompleteMultipartUpload.
func (s *s3Store) checkFirst(ctx context.Context, c putCond, key string) error {
	if !c.ifNoneMatch && c.ifMatch == "" {
		return nil
	}
	info, err := s.Head(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound) && c.ifNoneMatch:
		return nil
	case err != nil:
		return errors.Unwrap(err)
	case c.ifNoneMatch:
		return ErrExists
	case info.ETag != c.ifMatch:
		return ErrPrecondition
	}
	return nil
}

func (s *s3Store) putObject(ctx context.Context, c putCond, key string, data []byte) (string, *attemptLog, error) {
	ctx, log := withAttemptLog(ctx)
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.prefix + key),
		Body:          bytes.NewReader(data), // seekable: the SDK rewinds it to retry
		ContentLength: aws.Int64(int64(len(data))),
	}
	c.apply(&in.IfNoneMatch, &in.IfMatch)
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		return "", log, err
	}
	if out.ETag == nil {
		return "", nil, fmt.Errorf("server returned no ETag")
	}
	return trimETag(out.ETag), nil, nil
}

// mapS3Error wraps err with the sentinel it amounts to, if any, keeping the
// original (request ID, message) in the chain.
func mapS3Error(err error) error {
	var sentinel error
	switch apiErrorCode(err) {
	case "NoSuchKey", "NotFound":
		sentinel = ErrNotFound
	case "PreconditionFailed", "ConditionalRequestConflict":
		sentinel = ErrPrecondition
	case "InvalidRange":
		sentinel = ErrInvalidRange
	case "NoSuchBucket", "NoSuchUpload", "AccessDenied":
		// 404s and 403s that are not about the object: never ErrNotFound,
		// or a misconfigured bucket would look like an empty one.
		return err
	default:
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			switch re.HTTPStatusCode() {
			case http.StatusNotFound:
				sentinel = ErrNotFound
			case http.StatusPreconditionFailed:
				sentinel = ErrPrecondition
			case http.StatusRequestedRangeNotSatisfiable:
				sentinel = ErrInvalidRange
			}
		}
	}
	if sentinel == nil || errors.Is(err, sentinel) {
		return err
	}
	return fmt.Errorf("%w (%w)", sentinel, err)
}

func trimETag(etag *string) string {
	return strings.Trim(aws.ToString(etag), `"`)
}
