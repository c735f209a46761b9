package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"zerofs/internal/s3proxy"
	"zerofs/internal/testutil"
)

// The proxy itself is tested in internal/s3proxy; here, that the flags make
// it and that the counts come out.
func TestRun(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "from the target")
	}))
	defer target.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout bytes.Buffer
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-target", target.URL, "-latency", "1ms", "-rate", "1M",
			"-fault", "503=1", "-fault-ops", "put"}, &stdout, stderr)
	}()
	listening := regexp.MustCompile(`listening on (http://\S+),`)
	var url string
	testutil.Eventually(t, func() bool {
		if m := listening.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
			return true
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v; output: %s", err, stderr.String())
		default:
		}
		return false
	}, func() string { return "no listening line in: " + stderr.String() })

	resp, err := http.Get(url + "/bucket/key")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "from the target" {
		t.Fatalf("GET through the proxy: %s %q", resp.Status, body)
	}
	req, _ := http.NewRequest(http.MethodPut, url+"/bucket/key", strings.NewReader("data"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("PUT with -fault 503=1 -fault-ops put: %s", resp.Status)
	}

	resp, err = http.Get(url + "/_proxy/counts")
	if err != nil {
		t.Fatal(err)
	}
	var live s3proxy.Counts
	err = json.NewDecoder(resp.Body).Decode(&live)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if live.Requests[s3proxy.OpGet] != 1 || live.Requests[s3proxy.OpPut] != 1 || live.Faults[s3proxy.Unavailable] != 1 {
		t.Fatalf("GET /_proxy/counts: %+v", live)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	var final s3proxy.Counts
	if err := json.Unmarshal(stdout.Bytes(), &final); err != nil {
		t.Fatalf("counts on exit: %v: %q", err, stdout.String())
	}
	// Out: the GET's body and the 503's error document.
	if final.Total() != 2 || final.BytesOut <= int64(len("from the target")) || final.Faults[s3proxy.Unavailable] != 1 {
		t.Fatalf("counts on exit: %+v", final)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-target", "http://127.0.0.1:1", "extra"},
		{"-target", "http://127.0.0.1:1", "-rate", "fast"},
		{"-target", "http://127.0.0.1:1", "-fault", "boom=0.1"},
		{"-target", "http://127.0.0.1:1", "-fault", "reset"},
		{"-target", "http://127.0.0.1:1", "-fault-ops", "GET,FETCH"},
		{"-target", "http://127.0.0.1:1", "-error-rate", "2"},
		{"-target", "ftp://127.0.0.1:1"},
	} {
		var stderr bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // were it to start, it stops at once
		if err := run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), io.Discard, &stderr); err == nil {
			t.Errorf("s3proxy %q succeeded", args)
		}
	}
	if err := run(context.Background(), []string{"-h"}, io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestRateFlag(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "100": 100, "4K": 4 << 10, "4KiB": 4 << 10, "80M": 80 << 20, "80MB/s": 80 << 20, "1g": 1 << 30} {
		var r rateFlag
		if err := r.Set(in); err != nil || int64(r) != want {
			t.Errorf("-rate %s = %d, %v; want %d", in, r, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5M", "M", "1T", "99999999999G"} {
		var r rateFlag
		if err := r.Set(in); err == nil {
			t.Errorf("-rate %q accepted as %d", in, r)
		}
	}
	if s := rateFlag(80 << 20).String(); s != "80M" {
		t.Errorf("80 MiB/s prints as %s", s)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
