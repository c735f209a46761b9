package s3proxy_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"zerofs/internal/s3proxy"
)

func TestOpOf(t *testing.T) {
	cases := []struct {
		method, target string
		want           s3proxy.Op
	}{
		{"GET", "/bucket/key", s3proxy.OpGet},
		{"GET", "/bucket/a/b/c?x-id=GetObject", s3proxy.OpGet},
		{"GET", "/bucket?list-type=2&prefix=a%2F", s3proxy.OpList},
		{"GET", "/bucket/?prefix=a", s3proxy.OpList},
		{"GET", "/bucket", s3proxy.OpList},
		{"GET", "/bucket?uploads", s3proxy.OpList},
		{"GET", "/bucket/key?uploadId=u", s3proxy.OpList},
		{"GET", "/", s3proxy.OpList},
		{"PUT", "/bucket/key", s3proxy.OpPut},
		{"PUT", "/bucket/key?partNumber=2&uploadId=u", s3proxy.OpPut},
		{"PUT", "/bucket", s3proxy.OpPut},
		{"HEAD", "/bucket/key", s3proxy.OpHead},
		{"DELETE", "/bucket/key", s3proxy.OpDelete},
		{"DELETE", "/bucket/key?uploadId=u", s3proxy.OpDelete},
		{"POST", "/bucket/key?uploads", s3proxy.OpPost},
		{"POST", "/bucket/key?uploadId=u", s3proxy.OpPost},
		{"OPTIONS", "/bucket/key", s3proxy.OpOther},
	}
	for _, c := range cases {
		if got := s3proxy.OpOf(httptest.NewRequest(c.method, c.target, nil)); got != c.want {
			t.Errorf("OpOf(%s %s) = %v, want %v", c.method, c.target, got, c.want)
		}
	}
}

func req(method, target string) *http.Request { return httptest.NewRequest(method, target, nil) }

func TestRules(t *testing.T) {
	t.Run("FirstAttempt", func(t *testing.T) {
		rule := s3proxy.FirstAttempt(s3proxy.Reset)
		seq := []struct {
			r    *http.Request
			want s3proxy.Fault
		}{
			{req("GET", "/b/k"), s3proxy.Reset},
			{req("GET", "/b/k"), s3proxy.Pass},
			{req("HEAD", "/b/k"), s3proxy.Reset}, // another method
			{req("GET", "/b/k?partNumber=1"), s3proxy.Reset},
			{req("GET", "/b/k?partNumber=1"), s3proxy.Pass},
			{req("GET", "/b/k"), s3proxy.Pass},
		}
		for i, s := range seq {
			if got := rule(s.r); got != s.want {
				t.Errorf("request %d (%s %s) = %v, want %v", i, s.r.Method, s.r.URL, got, s.want)
			}
		}
	})
	t.Run("Next", func(t *testing.T) {
		rule := s3proxy.Next(2, s3proxy.Hang)
		var got []s3proxy.Fault
		for range 4 {
			got = append(got, rule(req("GET", "/b/k")))
		}
		if want := []s3proxy.Fault{s3proxy.Hang, s3proxy.Hang, s3proxy.Pass, s3proxy.Pass}; !slices.Equal(got, want) {
			t.Errorf("Next(2) gave %v, want %v", got, want)
		}
	})
	t.Run("Chance", func(t *testing.T) {
		draw := func(seed uint64) []s3proxy.Fault {
			rule := s3proxy.Chance(0.1, s3proxy.Drop, seed)
			var out []s3proxy.Fault
			for range 2000 {
				out = append(out, rule(req("GET", "/b/k")))
			}
			return out
		}
		a, b := draw(7), draw(7)
		if !slices.Equal(a, b) {
			t.Fatal("the same seed gave different faults")
		}
		if slices.Equal(a, draw(8)) {
			t.Fatal("different seeds gave the same faults")
		}
		n := 0
		for _, f := range a {
			if f == s3proxy.Drop {
				n++
			}
		}
		// Deterministic for the seed: not a statistical test that may flake.
		if n < 100 || n > 300 {
			t.Fatalf("Chance(0.1) faulted %d of 2000 requests", n)
		}
		if f := s3proxy.Chance(0, s3proxy.Drop, 1)(req("GET", "/b/k")); f != s3proxy.Pass {
			t.Fatalf("Chance(0) = %v", f)
		}
		if f := s3proxy.Chance(1, s3proxy.Drop, 1)(req("GET", "/b/k")); f != s3proxy.Drop {
			t.Fatalf("Chance(1) = %v", f)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		rules := []s3proxy.Rule{s3proxy.FirstAttempt(s3proxy.Drop), s3proxy.Next(50, s3proxy.Drop), s3proxy.Chance(0.5, s3proxy.Drop, 1)}
		counts := make([]int, len(rules))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 100 {
					for j, rule := range rules {
						if rule(req("GET", "/b/"+string(rune('a'+g))+"/"+string(rune('a'+i%26)))) == s3proxy.Drop {
							mu.Lock()
							counts[j]++
							mu.Unlock()
						}
					}
				}
			})
		}
		wg.Wait()
		if counts[0] != 4*26 || counts[1] != 50 {
			t.Fatalf("FirstAttempt faulted %d requests (want %d distinct), Next(50) %d", counts[0], 4*26, counts[1])
		}
	})
	t.Run("WhenAndChain", func(t *testing.T) {
		rule := s3proxy.Chain(
			s3proxy.When(s3proxy.Ops(s3proxy.OpHead), s3proxy.Next(1, s3proxy.Unavailable)),
			s3proxy.When(s3proxy.Methods("PUT", "POST"), s3proxy.Always(s3proxy.Reset)),
		)
		seq := []struct {
			r    *http.Request
			want s3proxy.Fault
		}{
			{req("GET", "/b/k"), s3proxy.Pass},
			{req("PUT", "/b/k"), s3proxy.Reset},
			{req("HEAD", "/b/k"), s3proxy.Unavailable},
			{req("HEAD", "/b/k"), s3proxy.Pass}, // Next(1) counted only the HEAD
			{req("POST", "/b/k?uploads"), s3proxy.Reset},
		}
		for i, s := range seq {
			if got := rule(s.r); got != s.want {
				t.Errorf("request %d (%s %s) = %v, want %v", i, s.r.Method, s.r.URL, got, s.want)
			}
		}
	})
}

func TestNames(t *testing.T) {
	for f := s3proxy.Pass; f <= s3proxy.Hang; f++ {
		g, err := s3proxy.ParseFault(f.String())
		if err != nil || g != f {
			t.Errorf("ParseFault(%q) = %v, %v", f.String(), g, err)
		}
	}
	if _, err := s3proxy.ParseFault("boom"); err == nil {
		t.Error("ParseFault(boom) succeeded")
	}
	c := s3proxy.Counts{
		Requests: map[s3proxy.Op]int64{s3proxy.OpList: 3, s3proxy.OpGet: 1},
		Faults:   map[s3proxy.Fault]int64{s3proxy.ApplyThenDrop: 2},
		BytesIn:  5,
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"requests":{"GET":1,"LIST":3},"bytes_in":5,"bytes_out":0,"faults":{"apply-then-drop":2}}`
	if string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
	var back s3proxy.Counts
	if err := json.Unmarshal(b, &back); err != nil || back.Requests[s3proxy.OpList] != 3 || back.Faults[s3proxy.ApplyThenDrop] != 2 {
		t.Fatalf("JSON round trip: %+v, %v", back, err)
	}
}
