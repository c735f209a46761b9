// Command s3proxy sits in front of an S3 server and makes it behave like a
// remote object store: it adds a time to first byte to every request, caps
// the rate at which each request's body streams, injects failures at random,
// and counts requests by operation. It is internal/s3proxy as a process, for
// benchmarks and experiments with the zerofs binary against a local S3
// server (versitygw on loopback answers in 1.5 ms; users' stores take
// 20–100 ms and stream at 50–100 MB/s).
//
// Usage:
//
//	s3proxy -target URL [-listen ADDR] [flags]
//
// For example, to make versitygw on port 7070 look like a store 30 ms away
// that streams each request at 80 MiB/s and turns one request in a hundred
// away with 503:
//
//	s3proxy -target http://127.0.0.1:7070 -listen 127.0.0.1:7071 -latency 30ms -jitter 10ms -rate 80M -error-rate 0.01
//
// and give clients http://127.0.0.1:7071 as the S3 endpoint, path-style, with
// the target's credentials: requests go on as the client signed them.
//
// While it runs, GET /_proxy/counts answers the counts as JSON and POST
// /_proxy/reset sets them to zero:
//
//	curl -s http://127.0.0.1:7071/_proxy/counts
//	curl -s -X POST http://127.0.0.1:7071/_proxy/reset
//
// On SIGINT or SIGTERM it prints the counts as JSON on stdout and exits.
//
// Flags:
//
//	-listen ADDR          address to listen on (default 127.0.0.1:9100)
//	-target URL           the S3 endpoint to forward to (required)
//	-latency D            time to first byte added to every request, e.g. 30ms
//	-jitter D             random extra latency, uniform in [0, D)
//	-rate R               cap on each request's body, per second, e.g. 80M (binary units: 80 MiB/s)
//	-total-rate R         cap on all bodies together, per second
//	-error-rate P         probability of answering 503 ServiceUnavailable
//	-slowdown-rate P      probability of answering 503 SlowDown
//	-reset-rate P         probability of resetting the connection (TCP RST)
//	-fault KIND=P         probability of any fault kind; repeatable (kinds: 503, slowdown, 500,
//	                      reset, drop, apply-then-drop, truncate-body, hang)
//	-fault-ops OPS        inject faults only into these operations, e.g. PUT,POST
//	                      (GET, PUT, HEAD, DELETE, LIST, POST, OTHER; default all)
//	-seed N               seed of the fault and jitter draws (default 1)
//	-v                    log forwarding errors to stderr
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"zerofs/internal/s3proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "s3proxy: %v\n", err)
		os.Exit(1)
	}
}

// errUsage marks errors the flag package has already reported with the usage.
var errUsage = errors.New("usage")

// run serves until ctx ends, then writes the counts to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("s3proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: s3proxy -target URL [-listen ADDR] [flags]\n\n"+
			"Forwards S3 requests to the target with added latency, a bandwidth cap and injected faults,\n"+
			"and counts them by operation: GET /_proxy/counts (JSON), POST /_proxy/reset.\n"+
			"Prints the counts on stdout at SIGINT or SIGTERM.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:9100", "`address` to listen on")
	target := fs.String("target", "", "the S3 endpoint `URL` to forward to (required)")
	latency := fs.Duration("latency", 0, "time to first byte added to every request, e.g. 30ms")
	jitter := fs.Duration("jitter", 0, "random extra latency, uniform in [0, jitter)")
	var rate, totalRate rateFlag
	fs.Var(&rate, "rate", "cap of `bytes/s` on each request's body, e.g. 80M (binary units: 80 MiB/s; 0: none)")
	fs.Var(&totalRate, "total-rate", "cap of `bytes/s` on all bodies together (0: none)")
	errorRate := fs.Float64("error-rate", 0, "`probability` of answering 503 ServiceUnavailable")
	slowdownRate := fs.Float64("slowdown-rate", 0, "`probability` of answering 503 SlowDown")
	resetRate := fs.Float64("reset-rate", 0, "`probability` of resetting the connection (TCP RST)")
	var faults faultFlags
	fs.Var(&faults, "fault", "inject a fault with a probability, as `KIND=P`, e.g. hang=0.001; repeatable (kinds: 503, slowdown, 500, reset, drop, apply-then-drop, truncate-body, hang)")
	var ops opsFlag
	fs.Var(&ops, "fault-ops", "inject faults only into these `operations`, e.g. PUT,POST (GET, PUT, HEAD, DELETE, LIST, POST, OTHER; default all)")
	seed := fs.Uint64("seed", 1, "seed of the fault and jitter draws")
	verbose := fs.Bool("v", false, "log forwarding errors to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "s3proxy: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	if *target == "" {
		fmt.Fprintln(stderr, "s3proxy: -target is required")
		fs.Usage()
		return errUsage
	}
	// In a fixed order, each with its own seed, so that the same flags
	// draw the same faults.
	var all faultFlags
	for _, f := range []faultRate{
		{"-error-rate", s3proxy.Unavailable, *errorRate},
		{"-slowdown-rate", s3proxy.SlowDown, *slowdownRate},
		{"-reset-rate", s3proxy.Reset, *resetRate},
	} {
		if f.p != 0 {
			all = append(all, f)
		}
	}
	faults = append(all, faults...)
	var rules []s3proxy.Rule
	for i, f := range faults {
		if f.p < 0 || f.p > 1 {
			return fmt.Errorf("%s: probability %v: want 0 to 1", f.name, f.p)
		}
		rules = append(rules, s3proxy.Chance(f.p, f.fault, *seed+uint64(i)))
	}

	o := s3proxy.Options{
		Addr:      *listen,
		Latency:   *latency,
		Jitter:    *jitter,
		Rate:      int64(rate),
		TotalRate: int64(totalRate),
		Seed:      *seed,
	}
	if len(rules) > 0 {
		o.Rule = s3proxy.Chain(rules...)
		if len(ops) > 0 {
			o.Rule = s3proxy.When(s3proxy.Ops(ops...), o.Rule)
		}
	}
	if *verbose {
		o.ErrorLog = log.New(stderr, "", log.LstdFlags)
	}
	p, err := s3proxy.Start(*target, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "s3proxy: listening on %s, forwarding to %s%s\n", p.URL(), *target, describe(o, faults, ops))

	<-ctx.Done()
	counts := p.Counts() // before Close ends the requests in flight, which then count nothing new anyway
	if err := p.Close(); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(counts); err != nil {
		return fmt.Errorf("write counts: %w", err)
	}
	return nil
}

// describe says what the proxy does to requests, for its start-up line.
func describe(o s3proxy.Options, faults faultFlags, ops opsFlag) string {
	var parts []string
	if o.Latency > 0 || o.Jitter > 0 {
		parts = append(parts, fmt.Sprintf("latency %v + [0, %v)", o.Latency, o.Jitter))
	}
	if o.Rate > 0 {
		parts = append(parts, "each body at "+perSecond(o.Rate))
	}
	if o.TotalRate > 0 {
		parts = append(parts, "all bodies at "+perSecond(o.TotalRate))
	}
	for _, f := range faults {
		parts = append(parts, fmt.Sprintf("%v %g%%", f.fault, 100*f.p))
	}
	if len(faults) > 0 && len(ops) > 0 {
		parts = append(parts, "faults only on "+ops.String())
	}
	if len(parts) == 0 {
		return " unchanged"
	}
	return ": " + strings.Join(parts, ", ")
}

func perSecond(rate int64) string {
	s := rateFlag(rate).String()
	if strings.ContainsAny(s, "KMG") {
		return s + "iB/s"
	}
	return s + " B/s"
}

// rateFlag is bytes per second, written as a size with binary units (as
// zerofs's own sizes are): 80M is 80 MiB/s.
type rateFlag int64

func (r rateFlag) String() string {
	v := int64(r)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if v >= u.n && v%u.n == 0 {
			return strconv.FormatInt(v/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10)
}

func (r *rateFlag) Set(s string) error {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "/S")
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMG", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return fmt.Errorf("rate %q: want bytes per second with an optional unit K, M, G (binary), e.g. 80M", s)
	}
	*r = rateFlag(v * mult)
	return nil
}

// faultRate is one fault kind's probability, and the flag that set it.
type faultRate struct {
	name  string
	fault s3proxy.Fault
	p     float64
}

type faultFlags []faultRate

func (f *faultFlags) String() string { return "" }

func (f *faultFlags) Set(s string) error {
	kind, p, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q: want KIND=PROBABILITY, e.g. reset=0.01", s)
	}
	fault, err := s3proxy.ParseFault(kind)
	if err != nil {
		return err
	}
	prob, err := strconv.ParseFloat(p, 64)
	if err != nil {
		return fmt.Errorf("%q: probability: %w", s, err)
	}
	*f = append(*f, faultRate{name: "-fault " + s, fault: fault, p: prob})
	return nil
}

type opsFlag []s3proxy.Op

func (o *opsFlag) String() string {
	var names []string
	for _, op := range *o {
		names = append(names, op.String())
	}
	return strings.Join(names, ",")
}

func (o *opsFlag) Set(s string) error {
	for _, name := range strings.Split(s, ",") {
		var op s3proxy.Op
		if err := op.UnmarshalText([]byte(strings.ToUpper(strings.TrimSpace(name)))); err != nil {
			return fmt.Errorf("%q: want operations among GET, PUT, HEAD, DELETE, LIST, POST, OTHER", name)
		}
		*o = append(*o, op)
	}
	return nil
}
