package s3proxy

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Pacing holds each body's bytes back to a schedule: chunk by chunk, a chunk
// goes on only once the schedule says the bytes before it and the chunk
// itself have had their time at the rate, so a body of n bytes takes at
// least n/rate. A chunk is about 10 ms of data, within 4–256 KiB: small
// enough that a body trickles as on a slow link rather than arriving in
// bursts, large enough that timer granularity (which makes every sleep a
// little late) costs little, and that the proxy's own writes, flushes and
// timers do not take the CPU the client under test needs: at 64 KiB a
// GiB of downloads cost 16,000 of each, which on a 2-core machine shared
// with the S3 server and the client was a fifth of a core at 250 MB/s.
//
// A stream that falls behind its schedule may catch up by at most catchUp
// of lost time. On a loaded machine a sleep wakes a millisecond or more late
// and a runnable goroutine may wait several more: without catching up, every
// such delay would lower the average below the rate. Catching up without a
// bound would let a stream whose other side stalled (a slow target, a client
// not reading) burst far above the rate afterwards.
const (
	minChunk = 4 << 10
	maxChunk = 256 << 10
	catchUp  = 20 * time.Millisecond
)

// schedule is when the next chunk of a stream may go. Its zero value starts
// the schedule at the first reservation.
type schedule struct {
	next time.Time
}

// reserve books n bytes at rate bytes/s and returns when they may go on.
func (s *schedule) reserve(n int, rate int64, now time.Time) time.Time {
	if floor := now.Add(-catchUp); s.next.IsZero() {
		s.next = now
	} else if s.next.Before(floor) {
		s.next = floor
	}
	s.next = s.next.Add(time.Duration(float64(n) * float64(time.Second) / float64(rate)))
	return s.next
}

// chunkSize is how many bytes a stream sends at a time at rate bytes/s.
func chunkSize(rate int64) int {
	return int(min(max(rate/100, minChunk), maxChunk))
}

// pacer paces one body (one direction of one request) against the proxy's
// per-request rate and its total rate, both read afresh for every chunk so
// that setting them takes effect on requests already streaming.
type pacer struct {
	p     *Proxy
	ctx   context.Context
	own   schedule
	paced bool // the last chunk was paced: flush it
}

// chunk returns how many of n bytes may be sent next: all of them when no
// rate is set.
func (pc *pacer) chunk(n int) int {
	rate, total := pc.p.rate.Load(), pc.p.totalRate.Load()
	if total > 0 && (rate == 0 || total < rate) {
		rate = total
	}
	if rate == 0 {
		return n
	}
	return min(n, chunkSize(rate))
}

// wait blocks until n bytes may go on, or the request's context ends.
func (pc *pacer) wait(n int) error {
	rate, total := pc.p.rate.Load(), pc.p.totalRate.Load()
	pc.paced = rate > 0 || total > 0
	if !pc.paced {
		return nil
	}
	now := time.Now()
	var due time.Time
	if rate > 0 {
		due = pc.own.reserve(n, rate, now)
	}
	if total > 0 {
		pc.p.totalMu.Lock()
		t := pc.p.total.reserve(n, total, now)
		pc.p.totalMu.Unlock()
		if t.After(due) {
			due = t
		}
	}
	return sleepUntil(pc.ctx, due)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// body paces and counts a request body (an upload) as it is read.
type body struct {
	io.ReadCloser
	pacer
}

func (b *body) Read(buf []byte) (int, error) {
	buf = buf[:b.chunk(len(buf))]
	n, err := b.ReadCloser.Read(buf)
	b.p.counts.bytesIn.Add(int64(n))
	if n > 0 {
		if werr := b.wait(n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// responseWriter paces and counts a response body (a download) as it is
// written.
type responseWriter struct {
	http.ResponseWriter
	pacer
}

func (w *responseWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		c := w.chunk(len(b))
		if err := w.wait(c); err != nil {
			return written, err
		}
		n, err := w.ResponseWriter.Write(b[:c])
		written += n
		w.p.counts.bytesOut.Add(int64(n))
		if err != nil {
			return written, err
		}
		if w.paced {
			// Otherwise the server's buffer would hold the chunk back and
			// send it in a burst with the next ones.
			if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
				return written, err
			}
		}
		b = b[c:]
	}
	return written, nil
}

// Unwrap lets http.ResponseController (which ReverseProxy flushes with)
// reach the server's writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
