package store_test

import (
	"context"
	"testing"

	"zerofs/store"
	"zerofs/store/storetest"
)

func TestMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewMem() })
}

func TestMemOpenIndependent(t *testing.T) {
	ctx := context.Background()
	a, err := store.Open(ctx, "mem://x", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.Open(ctx, "mem://x", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Head(ctx, "k"); err == nil {
		t.Fatal("two Opens of mem://x share objects; want independent stores")
	}
}
