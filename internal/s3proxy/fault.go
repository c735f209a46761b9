package s3proxy

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Fault is what the proxy does to one request instead of (or on top of)
// forwarding it. The kinds differ in what the client can conclude: an error
// status is a definite "not applied"; a connection that ends without an
// answer leaves the client unsure whether the request took effect, which is
// the case idempotency and conditional-write handling must get right.
type Fault uint8

// The faults. Every kind but Hang waits the proxy's latency before it acts,
// as a remote server's answer would.
const (
	// Pass forwards the request and streams the answer back.
	Pass Fault = iota
	// Unavailable answers 503 ServiceUnavailable without forwarding.
	Unavailable
	// SlowDown answers 503 SlowDown (S3's throttling answer) without
	// forwarding; SDKs back off longer on it than on other errors.
	SlowDown
	// InternalError answers 500 InternalError without forwarding.
	InternalError
	// Reset closes the connection with a TCP RST (SO_LINGER 0), without
	// forwarding or answering: "connection reset by peer".
	Reset
	// Drop reads the request to its end, then closes the connection without
	// forwarding or answering: the client sees EOF. (Reading first is what
	// makes it a plain close: closing a socket with unread data makes the
	// kernel send RST, which would be Reset.)
	Drop
	// ApplyThenDrop forwards the request, throws the answer away and closes
	// the connection: the request took effect but the client cannot know.
	ApplyThenDrop
	// TruncateBody forwards the request and streams the headers and the
	// first half of the response body, then cuts the connection. A response
	// with an empty body (a PUT's, a HEAD's) arrives whole: there is nothing
	// to cut.
	TruncateBody
	// Hang never answers: the request waits until the client gives up or the
	// proxy is closed.
	Hang
	numFaults
)

var faultNames = [numFaults]string{"pass", "503", "slowdown", "500", "reset", "drop", "apply-then-drop", "truncate-body", "hang"}

func (f Fault) String() string {
	if f < numFaults {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", uint8(f))
}

// MarshalText makes a Fault a readable JSON map key.
func (f Fault) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (f *Fault) UnmarshalText(b []byte) error {
	g, err := ParseFault(string(b))
	if err == nil {
		*f = g
	}
	return err
}

// ParseFault reads a fault's name, as String writes it.
func ParseFault(s string) (Fault, error) {
	for i, n := range faultNames {
		if strings.EqualFold(n, s) {
			return Fault(i), nil
		}
	}
	return 0, fmt.Errorf("unknown fault %q: want one of %s", s, strings.Join(faultNames[:], ", "))
}

// A Rule picks the fault for a request as it arrives. It is called from
// many goroutines at once, must not read the request's body, and may block
// (to stage a race, say: the request waits meanwhile). Returning Pass lets
// the request through.
type Rule func(r *http.Request) Fault

// A Match selects requests for When. It is called from many goroutines at
// once.
type Match func(r *http.Request) bool

// Always gives every request f: an outage.
func Always(f Fault) Rule {
	return func(*http.Request) Fault { return f }
}

// FirstAttempt gives f to the first attempt of each distinct request (same
// method and URL, as a client's retries are) and lets its retries through:
// every operation fails once and must succeed by retrying. It remembers
// every request it has seen, so it is for tests, not for long runs.
func FirstAttempt(f Fault) Rule {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(r *http.Request) Fault {
		id := r.Method + " " + r.URL.String()
		mu.Lock()
		defer mu.Unlock()
		if seen[id] {
			return Pass
		}
		seen[id] = true
		return f
	}
}

// Next gives f to the next n requests it is asked about, then lets every
// request through.
func Next(n int, f Fault) Rule {
	var left atomic.Int64
	left.Store(int64(n))
	return func(*http.Request) Fault {
		if left.Add(-1) >= 0 {
			return f
		}
		return Pass
	}
}

// Chance gives f to each request with probability p, drawn from a random
// source seeded with seed: the same seed gives the same sequence of draws,
// so a failing run can be repeated (as far as the requests arrive in the
// same order).
func Chance(p float64, f Fault, seed uint64) Rule {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	return func(*http.Request) Fault {
		mu.Lock()
		x := rng.Float64()
		mu.Unlock()
		if x < p {
			return f
		}
		return Pass
	}
}

// When applies rule only to the requests m selects; rule is not even asked
// about the others, so FirstAttempt, Next and Chance count only those.
func When(m Match, rule Rule) Rule {
	return func(r *http.Request) Fault {
		if m(r) {
			return rule(r)
		}
		return Pass
	}
}

// Chain asks rules in order and returns the first fault other than Pass;
// the rules after it are not asked.
func Chain(rules ...Rule) Rule {
	return func(r *http.Request) Fault {
		for _, rule := range rules {
			if f := rule(r); f != Pass {
				return f
			}
		}
		return Pass
	}
}

// Ops selects requests of the given operations (as OpOf classifies them).
func Ops(ops ...Op) Match {
	return func(r *http.Request) bool { return slices.Contains(ops, OpOf(r)) }
}

// Methods selects requests with one of the given HTTP methods.
func Methods(methods ...string) Match {
	return func(r *http.Request) bool { return slices.Contains(methods, r.Method) }
}
