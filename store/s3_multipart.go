package store

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// partConcurrency bounds the parts of one object in flight at once.
const partConcurrency = 4

// abortTimeout bounds the clean-up of a failed upload.
const abortTimeout = 30 * time.Second

// putMultipart uploads data in parts and completes the upload under c: S3
// evaluates If-None-Match / If-Match at CompleteMultipartUpload, where the
// object becomes visible, whole. On failure the upload is aborted so that no
// parts are left billed and invisible. It returns the ETag, and want, the
// ETag the object has if this upload completed (for put's check of an
// uncertain outcome).
func (s *s3Store) putMultipart(ctx context.Context, c putCond, key string, data []byte) (etag, want string, log *attemptLog, err error) {
	objKey := s.prefix + key
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &objKey})
	if err != nil {
		return "", "", nil, fmt.Errorf("create multipart upload: %w", err)
	}
	uploadID := created.UploadId
	defer func() {
		if err != nil {
			s.abort(ctx, objKey, uploadID)
		}
	}()

	parts, err := s.uploadParts(ctx, objKey, uploadID, data)
	if err != nil {
		return "", "", nil, err
	}
	want = multipartETag(parts)

	cctx, log := withAttemptLog(ctx)
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             &objKey,
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	c.apply(&in.IfNoneMatch, &in.IfMatch)
	out, err := s.client.CompleteMultipartUpload(cctx, in)
	if err != nil {
		return "", want, log, fmt.Errorf("complete multipart upload: %w", err)
	}
	if out.ETag == nil {
		err = fmt.Errorf("complete multipart upload: server returned no ETag")
		return "", "", nil, err
	}
	return trimETag(out.ETag), want, log, nil
}

func (s *s3Store) uploadParts(ctx context.Context, objKey string, uploadID *string, data []byte) ([]types.CompletedPart, error) {
	size := int64(len(data))
	partSize := s.partSize
	if size > partSize*maxParts {
		partSize = (size + maxParts - 1) / maxParts
	}
	n := int((size + partSize - 1) / partSize)
	parts := make([]types.CompletedPart, n)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, partConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			lo := int64(i) * partSize
			hi := min(lo+partSize, size)
			num := aws.Int32(int32(i + 1))
			out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
				Bucket:        &s.bucket,
				Key:           &objKey,
				UploadId:      uploadID,
				PartNumber:    num,
				Body:          bytes.NewReader(data[lo:hi]),
				ContentLength: aws.Int64(hi - lo),
			})
			if err != nil {
				cancel(fmt.Errorf("upload part %d of %d: %w", i+1, n, err))
				return
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: num}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return parts, nil
}

// abort discards a failed upload's parts. If the caller's context is done,
// that is not waited for: the abort runs in the background, bounded by
// abortTimeout, and the caller gets its error at once.
func (s *s3Store) abort(ctx context.Context, objKey string, uploadID *string) {
	run := func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		// Best effort: an upload that cannot be aborted now is left to the
		// bucket's AbortIncompleteMultipartUpload lifecycle rule.
		s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &objKey, UploadId: uploadID})
	}
	if ctx.Err() != nil {
		go run()
		return
	}
	run()
}

// multipartETag is the ETag S3 gives a completed upload: the MD5 of the
// parts' binary MD5s, then "-" and the part count. "" if a part's ETag is not
// an MD5 (some servers, encrypted buckets), in which case put cannot confirm
// an uncertain completion and reports the error it got.
func multipartETag(parts []types.CompletedPart) string {
	h := md5.New()
	for _, p := range parts {
		b, err := hex.DecodeString(trimETag(p.ETag))
		if err != nil || len(b) != md5.Size {
			return ""
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}
