package sched

import (
	"errors"
	"testing"

	"zerofs/store"
	"zerofs/store/faultstore"
)

// Every request is counted once, under its operation, with its bytes and
// whether it failed; sentinel answers are not failures.
func TestStatsExact(t *testing.T) {
	ctx := testCtx(t)
	h := newHarness(t, Options{NoHedge: true})
	h.fs.Fail(faultstore.On().Key("fail"), nil)
	h.fs.Fail(faultstore.On(faultstore.OpList).Key("x/"), nil)
	check := func(what string, err, want error) {
		t.Helper()
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	}
	etag := func(e string, err error) string { check("put", err, nil); return e }

	etagA := etag(h.Put(ctx, "a", make([]byte, 10)))
	etag(h.Put(ctx, "b", make([]byte, 20)))
	etag(h.PutIfAbsent(ctx, "c", make([]byte, 5)))
	_, err := h.PutIfAbsent(ctx, "a", make([]byte, 3))
	check("PutIfAbsent a", err, store.ErrExists)
	etag(h.PutIfMatch(ctx, "a", make([]byte, 7), etagA))
	_, err = h.PutIfMatch(ctx, "b", make([]byte, 4), etagA)
	check("PutIfMatch b", err, store.ErrPrecondition)
	_, err = h.PutIfMatch(ctx, "zz", make([]byte, 4), etagA)
	check("PutIfMatch zz", err, store.ErrNotFound)
	_, err = h.Put(ctx, "fail", make([]byte, 9))
	check("Put fail", err, faultstore.ErrInjected)

	b, err := h.Get(ctx, "a", 0, -1)
	check("Get a", err, nil)
	if len(b) != 7 {
		t.Fatalf("Get a: %d bytes", len(b))
	}
	_, err = h.Get(ctx, "b", 5, 10)
	check("Get b", err, nil)
	_, err = h.Get(ctx, "missing", 0, -1)
	check("Get missing", err, store.ErrNotFound)
	_, err = h.Get(ctx, "a", 100, 1)
	check("Get a past the end", err, store.ErrInvalidRange)
	_, err = h.Get(ctx, "fail", 0, -1)
	check("Get fail", err, faultstore.ErrInjected)

	_, err = h.Head(ctx, "a")
	check("Head a", err, nil)
	_, err = h.Head(ctx, "missing")
	check("Head missing", err, store.ErrNotFound)
	_, err = h.List(ctx, "")
	check("List", err, nil)
	_, err = h.List(ctx, "x/")
	check("List x/", err, faultstore.ErrInjected)
	check("Delete c", h.Delete(ctx, "c"), nil)
	check("Delete missing", h.Delete(ctx, "missing"), nil)
	check("Delete fail", h.Delete(ctx, "fail"), faultstore.ErrInjected)

	st := h.Stats()
	want := [NumOps]OpStats{
		OpGet:    {Requests: 5, Errors: 1, BytesIn: 7 + 10},
		OpPut:    {Requests: 8, Errors: 1, BytesOut: 10 + 20 + 5 + 7},
		OpHead:   {Requests: 2},
		OpList:   {Requests: 2, Errors: 1},
		OpDelete: {Requests: 3, Errors: 1},
	}
	for op := range Op(NumOps) {
		if st.Ops[op] != want[op] {
			t.Errorf("%v: %+v, want %+v", op, st.Ops[op], want[op])
		}
	}
	if st.Hedges != 0 || st.HedgesWon != 0 || st.HedgesSkipped != 0 || st.Limit != DefaultMaxRequests || st.HedgeLimit != DefaultMaxRequests/8 {
		t.Errorf("stats %+v", st)
	}
	for c, cs := range st.Classes {
		if cs != (ClassStats{}) {
			t.Errorf("%v: %+v, want nothing (no request waited)", Class(c), cs)
		}
	}
}
