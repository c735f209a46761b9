// Package s3proxy is an HTTP proxy to put in front of an S3 server (in tests,
// versitygw on loopback) to make it behave like a remote object store: slow
// to answer, slow to stream, and now and then failing.
//
// Tests and benchmarks against a local server see 1.5 ms round trips and
// bodies at memory speed, where users' object stores answer in 20–100 ms
// and stream each request at 50–100 MB/s. Code that is fast on loopback can
// be slow there (one request too many per operation, requests in series
// that could overlap), and only real failures exercise retries and the
// handling of writes whose answer was lost. The proxy adds the latency and
// the per-request bandwidth, injects failures chosen per request by a Rule,
// and counts requests per operation, so that a test can also assert how
// many round trips something costs.
//
// # Use
//
//	p, err := s3proxy.Start(endpoint, s3proxy.Options{Latency: 20 * time.Millisecond, Rate: 100 << 20})
//	if err != nil { ... }
//	defer p.Close()
//	opts.Endpoint = p.URL() // the client talks to the proxy
//	...
//	p.SetRule(s3proxy.FirstAttempt(s3proxy.Unavailable)) // every request fails once
//	...
//	c := p.Counts() // c.Requests[s3proxy.OpGet], c.BytesOut, c.Faults[s3proxy.Unavailable]
//
// Rules compose from builders (Always, FirstAttempt, Next, Chance, narrowed
// by When and combined by Chain) or are any func on the request. Latency,
// rates and the rule can be changed at any time, from any goroutine; a
// change applies to requests that arrive afterwards (rates: to the next
// chunk of bodies already streaming).
//
// The same proxy runs as a command, cmd/s3proxy, for benchmarks of the
// server binary. Either way it answers GET /_proxy/counts with the counts as
// JSON and POST /_proxy/reset by resetting them: "_proxy" is not a valid
// bucket name, so no S3 request collides.
//
// # Forwarding
//
// The client signs its requests (SigV4) for the proxy's host, so requests
// go on with the Host header they came with; the target must accept that,
// which S3-compatible servers addressed path-style do (AWS itself routes by
// Host and does not). Bodies stream through; only TruncateBody of a response
// of unknown length holds the whole body.
package s3proxy

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Proxy. The zero value forwards every request
// untouched.
type Options struct {
	// Addr to listen on. Empty: a free port on 127.0.0.1.
	Addr string
	// Latency is added to every request before the proxy acts on it: the
	// time to first byte a remote store adds on top of the target's own.
	Latency time.Duration
	// Jitter adds a uniformly random extra in [0, Jitter) to each request's
	// latency.
	Jitter time.Duration
	// Rate caps each request body and each response body at this many
	// bytes/s, separately for every request (a store's per-connection
	// throughput): a body of n bytes takes at least n/Rate. 0: no cap.
	Rate int64
	// TotalRate caps all bodies together, both directions, at this many
	// bytes/s (the client's link). 0: no cap.
	TotalRate int64
	// Rule picks each request's fault. Nil passes every request.
	Rule Rule
	// Seed seeds the jitter's random source.
	Seed uint64
	// ErrorLog receives the proxy's errors (an unreachable target, say).
	// Nil discards them: in tests, the faults the proxy injects produce
	// errors by the hundred.
	ErrorLog *log.Logger
}

// Proxy is a running proxy. Its methods are safe to call concurrently.
type Proxy struct {
	target    *url.URL
	url       string
	srv       *http.Server
	transport *http.Transport
	rp        *httputil.ReverseProxy
	errorLog  *log.Logger
	served    chan struct{} // closed when srv.Serve has returned

	latency, jitter atomic.Int64 // time.Duration
	rate, totalRate atomic.Int64
	rule            atomic.Pointer[Rule]

	rngMu sync.Mutex
	rng   *rand.Rand

	totalMu sync.Mutex
	total   schedule

	counts counters

	// ctx ends when the proxy closes: it wakes requests that sleep or hang
	// and cancels the ones being forwarded.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	requests sync.WaitGroup // requests being handled; Close waits for them
}

// Start starts a proxy to target, an S3 endpoint URL such as
// http://127.0.0.1:7070.
func Start(target string, o Options) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("s3proxy: target %q: %w", target, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("s3proxy: target %q: want an http:// or https:// URL", target)
	case u.Host == "":
		return nil, fmt.Errorf("s3proxy: target %q: no host", target)
	case o.Latency < 0 || o.Jitter < 0:
		return nil, fmt.Errorf("s3proxy: latency %v and jitter %v: must not be negative", o.Latency, o.Jitter)
	case o.Rate < 0 || o.TotalRate < 0:
		return nil, fmt.Errorf("s3proxy: rate %d and total rate %d: must not be negative", o.Rate, o.TotalRate)
	}
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("s3proxy: listen: %w", err)
	}

	errorLog := o.ErrorLog
	if errorLog == nil {
		errorLog = log.New(io.Discard, "", 0)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Benchmarks run many requests at once against the one target; the
	// default of 2 idle connections per host would reconnect for most.
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 256
	// Otherwise the transport asks for gzip and unzips the answer itself,
	// and the client would not get the target's bytes and headers.
	tr.DisableCompression = true

	p := &Proxy{
		target:    u,
		url:       "http://" + ln.Addr().String(),
		transport: tr,
		errorLog:  errorLog,
		served:    make(chan struct{}),
		rng:       rand.New(rand.NewPCG(o.Seed, 0x1a7e)),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.latency.Store(int64(o.Latency))
	p.jitter.Store(int64(o.Jitter))
	p.rate.Store(o.Rate)
	p.totalRate.Store(o.TotalRate)
	if o.Rule != nil {
		p.rule.Store(&o.Rule)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // the request is signed for the proxy's host
		},
		Transport:  tr,
		ErrorLog:   errorLog,
		BufferPool: copyBuffers{}, // ReverseProxy's own are 32 KiB: a chunk could be no larger
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ErrorLog: errorLog}
	go func() {
		defer close(p.served)
		p.srv.Serve(ln)
	}()
	return p, nil
}

// URL is the proxy's base URL, http://host:port: the S3 endpoint to give
// clients.
func (p *Proxy) URL() string { return p.url }

// SetLatency sets the latency and jitter of requests that arrive from now
// on. Negative values count as 0.
func (p *Proxy) SetLatency(latency, jitter time.Duration) {
	p.latency.Store(max(int64(latency), 0))
	p.jitter.Store(max(int64(jitter), 0))
}

// SetRate sets the per-request body rate in bytes/s; 0 removes the cap.
func (p *Proxy) SetRate(bytesPerSecond int64) { p.rate.Store(max(bytesPerSecond, 0)) }

// SetTotalRate sets the rate of all bodies together in bytes/s; 0 removes
// the cap.
func (p *Proxy) SetTotalRate(bytesPerSecond int64) { p.totalRate.Store(max(bytesPerSecond, 0)) }

// SetRule replaces the rule for requests that arrive from now on; nil
// passes every request.
func (p *Proxy) SetRule(rule Rule) {
	if rule == nil {
		p.rule.Store(nil)
		return
	}
	p.rule.Store(&rule)
}

// Counts returns what the proxy has counted since it started or was last
// Reset.
func (p *Proxy) Counts() Counts { return p.counts.snapshot() }

// Reset sets the counts to zero.
func (p *Proxy) Reset() { p.counts.reset() }

// Close stops the proxy: it closes the listener and every connection, ends
// hanging and sleeping requests, and returns once every request handler has
// returned. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	err := p.srv.Close()
	p.requests.Wait()
	<-p.served
	p.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("s3proxy: close: %w", err)
	}
	return nil
}

// enter registers a request, unless the proxy is closing.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.requests.Add(1)
	return true
}

const controlPrefix = "/_proxy/"

// serve handles one request: the proxy's own, or one to forward.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path+"/" == controlPrefix || strings.HasPrefix(r.URL.Path, controlPrefix) {
		p.serveControl(w, r)
		return
	}
	if !p.enter() {
		panic(http.ErrAbortHandler)
	}
	defer p.requests.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()
	r = r.WithContext(ctx)

	p.counts.requests[OpOf(r)].Add(1)
	f := Pass
	if rule := p.rule.Load(); rule != nil {
		f = (*rule)(r)
	}
	if f >= numFaults {
		p.errorLog.Printf("s3proxy: %s %s: the rule returned %v; answering 500", r.Method, r.URL, f)
		p.answerError(w, r, http.StatusInternalServerError, "InternalError", fmt.Sprintf("s3proxy: the rule returned %v", f))
		return
	}
	p.counts.faults[f].Add(1)

	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &body{ReadCloser: r.Body, pacer: pacer{p: p, ctx: ctx}}
	}
	rw := &responseWriter{ResponseWriter: w, pacer: pacer{p: p, ctx: ctx}}
	if f != Hang {
		if err := sleepUntil(ctx, time.Now().Add(p.nextLatency())); err != nil {
			panic(http.ErrAbortHandler) // the client gave up, or the proxy is closing
		}
	}

	switch f {
	case Pass:
		p.rp.ServeHTTP(rw, r)
	case Unavailable:
		p.answerError(rw, r, http.StatusServiceUnavailable, "ServiceUnavailable", "Service is unable to handle request (injected by s3proxy).")
	case SlowDown:
		p.answerError(rw, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate (injected by s3proxy).")
	case InternalError:
		p.answerError(rw, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again (injected by s3proxy).")
	case Reset:
		closeConn(w, true)
	case Drop:
		io.Copy(io.Discard, r.Body)
		closeConn(w, false)
	case ApplyThenDrop:
		p.rp.ServeHTTP(discard{header: http.Header{}}, r)
		io.Copy(io.Discard, r.Body) // in case the target answered before reading it all
		closeConn(w, false)
	case TruncateBody:
		tw := &truncatingWriter{w: rw, limit: -1}
		p.rp.ServeHTTP(tw, r)
		tw.cut()
	case Hang:
		<-ctx.Done()
		panic(http.ErrAbortHandler)
	}
}

// nextLatency draws a request's latency.
func (p *Proxy) nextLatency() time.Duration {
	d := time.Duration(p.latency.Load())
	if j := p.jitter.Load(); j > 0 {
		p.rngMu.Lock()
		d += time.Duration(p.rng.Int64N(j))
		p.rngMu.Unlock()
	}
	return d
}

var requestIDs atomic.Uint64

// answerError answers as S3 does, so that clients parse the code (and, for
// SlowDown, back off as from throttling).
func (p *Proxy) answerError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	id := "s3proxy-" + strconv.FormatUint(requestIDs.Add(1), 10)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", id)
	if r.Method == http.MethodHead { // no body: the client reads the status alone
		w.WriteHeader(status)
		return
	}
	type s3Error struct {
		XMLName   struct{} `xml:"Error"`
		Code      string
		Message   string
		Resource  string
		RequestID string `xml:"RequestId"`
	}
	doc, err := xml.Marshal(s3Error{Code: code, Message: message, Resource: r.URL.Path, RequestID: id})
	if err != nil {
		p.errorLog.Printf("s3proxy: %s %s: encode the error answer: %v", r.Method, r.URL, err)
	}
	body := append([]byte(xml.Header), doc...)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// closeConn closes the client's connection without answering; with reset,
// with a TCP RST instead of a FIN.
func closeConn(w http.ResponseWriter, reset bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // closes the connection all the same
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	conn.Close()
}

// discard is the client side of ApplyThenDrop: the answer goes nowhere.
type discard struct{ header http.Header }

func (d discard) Header() http.Header         { return d.header }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}

var errTruncated = errors.New("s3proxy: response body truncated (injected fault)")

// truncatingWriter passes the first half of a response body and then cuts
// the connection. With the body's length known (Content-Length, as S3 sends
// for objects) it streams; otherwise it has to hold the whole body to know
// where half is.
type truncatingWriter struct {
	w       *responseWriter
	status  int   // 0 until the final header is written
	limit   int64 // bytes to pass when the length is known, else -1
	written int64
	held    []byte // the body, when its length is unknown
}

func (t *truncatingWriter) Header() http.Header { return t.w.Header() }

func (t *truncatingWriter) WriteHeader(code int) {
	if code < 200 { // 1xx: informational, pass on
		t.w.WriteHeader(code)
		return
	}
	if t.status != 0 {
		return
	}
	t.status = code
	if n, err := strconv.ParseInt(t.w.Header().Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		t.limit = n / 2
		t.w.WriteHeader(code)
	}
}

func (t *truncatingWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	if t.limit < 0 {
		t.held = append(t.held, b...)
		return len(b), nil
	}
	if n := t.limit - t.written; int64(len(b)) > n {
		m, _ := t.w.Write(b[:n])
		t.written += int64(m)
		http.NewResponseController(t.w).Flush()
		return m, errTruncated // ReverseProxy aborts the connection on a write error
	}
	m, err := t.w.Write(b)
	t.written += int64(m)
	return m, err
}

// FlushError keeps ReverseProxy (which flushes bodies of unknown length as
// they come) from sending the header early while the body is held.
func (t *truncatingWriter) FlushError() error {
	if t.limit < 0 {
		return nil
	}
	return http.NewResponseController(t.w).Flush()
}

func (t *truncatingWriter) Unwrap() http.ResponseWriter { return t.w }

// cut sends what is left of the first half and aborts the connection.
func (t *truncatingWriter) cut() {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	if t.limit < 0 {
		t.w.WriteHeader(t.status)
		t.w.Write(t.held[:len(t.held)/2])
	}
	http.NewResponseController(t.w).Flush()
	panic(http.ErrAbortHandler)
}

// serveControl answers the proxy's own requests.
func (p *Proxy) serveControl(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == controlPrefix+"counts" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p.Counts()); err != nil {
			p.errorLog.Printf("s3proxy: write counts: %v", err)
		}
	case r.URL.Path == controlPrefix+"reset" && r.Method == http.MethodPost:
		p.Reset()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "s3proxy: GET "+controlPrefix+"counts or POST "+controlPrefix+"reset", http.StatusNotFound)
	}
}

// copyBuffers are the buffers ReverseProxy copies bodies through, a
// largest chunk each (see pace.go).
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { return make([]byte, maxChunk) }}

func (copyBuffers) Get() []byte  { return copyBufferPool.Get().([]byte) }
func (copyBuffers) Put(b []byte) { copyBufferPool.Put(b) } //nolint:staticcheck // a slice header per Put is fine here
