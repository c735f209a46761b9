package store_test

import (
	"context"
	"errors"
	"testing"

	"zerofs/store"
)

// careless is a store that ignores the conditions of conditional writes,
// as some S3-compatible servers do.
type careless struct{ store.Store }

func (c careless) PutIfAbsent(ctx context.Context, key string, data []byte) (string, error) {
	return c.Put(ctx, key, data)
}

func (c careless) PutIfMatch(ctx context.Context, key string, data []byte, _ string) (string, error) {
	return c.Put(ctx, key, data)
}

// ifMatchOnly honours If-None-Match but not If-Match.
type ifMatchOnly struct{ store.Store }

func (c ifMatchOnly) PutIfMatch(ctx context.Context, key string, data []byte, _ string) (string, error) {
	return c.Put(ctx, key, data)
}

func TestCheckConditionalWrites(t *testing.T) {
	cases := []struct {
		name string
		st   store.Store
		want error
	}{
		{"honours both", store.NewMem(), nil},
		{"ignores both", careless{store.NewMem()}, store.ErrNoConditionalWrites},
		{"ignores If-Match", ifMatchOnly{store.NewMem()}, store.ErrNoConditionalWrites},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := store.CheckConditionalWrites(context.Background(), tc.st)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
