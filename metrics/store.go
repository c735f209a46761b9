package metrics

import (
	"context"
	"errors"
	"time"

	"zerofs/store"
)

// Store wraps st so that every request is counted and timed under the label
// name ("main" or "wal").
func (m *Metrics) Store(st store.Store, name string) store.Store {
	return &instrumented{Store: st, m: m, name: name}
}

type instrumented struct {
	store.Store
	m    *Metrics
	name string
}

func storeResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, store.ErrExists):
		return "exists"
	case errors.Is(err, store.ErrPrecondition):
		return "precondition"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

func (s *instrumented) observe(op string, start time.Time, err error, bytes int, dir string) {
	s.m.storeRequests.WithLabelValues(s.name, op, storeResult(err)).Inc()
	s.m.storeSeconds.WithLabelValues(s.name, op).Observe(time.Since(start).Seconds())
	if bytes > 0 && err == nil {
		s.m.storeBytes.WithLabelValues(s.name, dir).Add(float64(bytes))
	}
}

func (s *instrumented) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	t := time.Now()
	b, err := s.Store.Get(ctx, key, off, length)
	s.observe("get", t, err, len(b), "get")
	return b, err
}

func (s *instrumented) Put(ctx context.Context, key string, data []byte) (string, error) {
	t := time.Now()
	etag, err := s.Store.Put(ctx, key, data)
	s.observe("put", t, err, len(data), "put")
	return etag, err
}

func (s *instrumented) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	t := time.Now()
	etag, err := s.Store.PutIfAbsent(ctx, key, data)
	s.observe("put_if_absent", t, err, len(data), "put")
	return etag, err
}

func (s *instrumented) PutIfMatch(ctx context.Context, key string, data []byte, etag string) (string, error) {
	t := time.Now()
	out, err := s.Store.PutIfMatch(ctx, key, data, etag)
	s.observe("put_if_match", t, err, len(data), "put")
	return out, err
}

func (s *instrumented) Head(ctx context.Context, key string) (store.Info, error) {
	t := time.Now()
	info, err := s.Store.Head(ctx, key)
	s.observe("head", t, err, 0, "")
	return info, err
}

func (s *instrumented) List(ctx context.Context, prefix string) ([]store.Info, error) {
	t := time.Now()
	out, err := s.Store.List(ctx, prefix)
	s.observe("list", t, err, 0, "")
	return out, err
}

func (s *instrumented) Delete(ctx context.Context, key string) error {
	t := time.Now()
	err := s.Store.Delete(ctx, key)
	s.observe("delete", t, err, 0, "")
	return err
}
