// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/internal/netserve"
)

// One TCP connection: a reader, a bounded set of workers, one writer.
//
// The reader reassembles RPC records (RFC 5531 section 11: each fragment is
// prefixed by a word whose top bit marks the last fragment and whose other
// 31 bits are its length) and hands each record to one of Options.Workers
// worker goroutines; when all are busy it stops reading, which pushes back
// on the client through TCP. Workers run the procedure and write the reply
// themselves, in the order they finish (clients match replies by xid),
// under a mutex around a buffered writer; a worker flushes only when no
// other is waiting to write, so the replies of a busy connection share TCP
// segments and an idle one's go out at once, without a hand-off to a writer
// goroutine. The workers live as long as the connection: a goroutine per
// request would grow a fresh stack to pebble's depth on every call, which
// cost more than a GETATTR itself.
//
// Requests belong to their connection (docs/durability.md, "Requests of a
// connection that dies"): c.ctx is canceled as soon as the connection is
// known to be gone — EOF or an error on read, a failed reply write, or the
// kernel reporting the peer closed while the reader is held back
// (netserve.WatchPeer). Each record's bytes come from the request budget
// shared with NBD (Options.Requests) before they are read: when it is full
// the reader stops reading (TCP back-pressure) instead of buffering.

type conn struct {
	s      *Server
	nc     net.Conn
	remote netip.AddrPort

	ctx    context.Context // the requests' context; see above
	cancel context.CancelCauseFunc

	jobs    chan []byte    // records, to the workers
	workers sync.WaitGroup // running workers
	closing atomic.Bool    // Shutdown: read no new requests
	dmu     sync.Mutex     // orders read-deadline changes with StopReading

	waiting atomic.Int32 // workers waiting for wmu: the last one flushes
	wmu     sync.Mutex
	bw      *bufio.Writer
	werr    error // the first write error; later replies are dropped
}

func newConn(s *Server, nc net.Conn, remote netip.AddrPort) *conn {
	ctx, cancel := context.WithCancelCause(s.ctx)
	return &conn{
		s: s, nc: nc, remote: remote, ctx: ctx, cancel: cancel,
		jobs: make(chan []byte),
		bw:   bufio.NewWriterSize(nc, 64<<10),
	}
}

// StopReading makes the reader stop at the next record boundary (or now,
// if it is waiting for one); requests already read are still answered.
func (c *conn) StopReading() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.closing.Store(true)
	c.nc.SetReadDeadline(time.Now())
}

// setReadDeadline sets the read deadline unless StopReading ran, whose
// deadline stays.
func (c *conn) setReadDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.closing.Load() {
		c.nc.SetReadDeadline(t)
	}
}

var errRecordTooLarge = errors.New("RPC record exceeds the size limit")

// Close closes the connection at once (Shutdown gave up waiting).
func (c *conn) Close() { c.nc.Close() }

// Serve reads the connection's requests and serves them until it ends.
func (c *conn) Serve() {
	log := c.s.log.With("remote", c.remote.String())
	for i := 0; i < c.s.opts.Workers; i++ {
		c.workers.Add(1)
		go c.work()
	}
	defer func() {
		if v := recover(); v != nil {
			// A bug: nothing a client sends may panic the reader. Drop
			// this connection; the server and its other clients go on.
			log.Error("nfs: BUG: panic in connection reader; closing the connection",
				"panic", v, "stack", string(debug.Stack()))
		}
		close(c.jobs)
		c.workers.Wait()
		c.nc.Close()
		c.cancel(nil)
	}()
	netserve.WatchPeer(c.ctx, c.nc, c.gone)

	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		rec, err := c.readRecord(br)
		if err != nil {
			switch {
			case c.closing.Load() && errors.Is(err, os.ErrDeadlineExceeded):
				return // Shutdown: requests already read are answered
			case errors.Is(err, os.ErrDeadlineExceeded):
				log.Warn("nfs: resetting a connection that stopped in the middle of a request", "waited", c.s.opts.MaxReadWait)
				c.cancel(netserve.ErrStalled)
				netserve.Reset(c.nc)
				return
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.ctx.Err() != nil:
			case errors.Is(err, errRecordTooLarge):
				log.Warn("nfs: closing connection", "err", err)
			default:
				log.Debug("nfs: connection ended", "err", err)
			}
			c.gone()
			return
		}
		if !c.dispatch(rec) {
			return
		}
	}
}

// readRecord reads the next record, taking its bytes from the request
// budget; a wait for them longer than Options.MaxReadWait resets the
// connection (see netserve.ReadWait for why).
func (c *conn) readRecord(br *bufio.Reader) ([]byte, error) {
	rec, err := readRecord(br, c)
	c.setReadDeadline(time.Time{}) // the next record may be long in coming
	return rec, err
}

// Acquire takes n bytes of the request budget for a record being read (the
// clock of the wait starts here, not while the client is idle).
func (c *conn) Acquire(n int64) error {
	wctx, cancel := netserve.ReadWait(c.ctx, c.s.opts.MaxReadWait)
	defer cancel()
	err := c.s.requests.Acquire(wctx, n)
	if err != nil {
		c.stalled(wctx)
		return err
	}
	// A client that stops half-way through a record holds shared memory:
	// it gets MaxReadWait to send the rest.
	c.setReadDeadline(time.Now().Add(c.s.opts.MaxReadWait))
	return nil
}

// Release returns n bytes taken by Acquire.
func (c *conn) Release(n int64) { c.s.requests.Release(n) }

// dispatch hands rec to a worker, waiting while all are busy. It returns
// false, with rec freed, if the connection is gone or stalled meanwhile.
func (c *conn) dispatch(rec []byte) bool {
	select {
	case c.jobs <- rec:
		return true
	default:
	}
	wctx, cancel := netserve.ReadWait(c.ctx, c.s.opts.MaxReadWait)
	defer cancel()
	select {
	case c.jobs <- rec:
		return true
	case <-wctx.Done():
		// Gone, or stalled, while every worker was busy: this request
		// never began.
		c.freeRecord(rec)
		c.stalled(wctx)
		return false
	}
}

// stalled resets the connection if wctx, a reader's wait, ended because it
// took too long.
func (c *conn) stalled(wctx context.Context) {
	if !errors.Is(context.Cause(wctx), netserve.ErrStalled) || c.ctx.Err() != nil {
		return
	}
	c.s.log.Warn("nfs: resetting a connection stalled waiting for memory (the store is slow or down); its unread requests are dropped, never applied late",
		"remote", c.remote.String(), "waited", c.s.opts.MaxReadWait)
	c.cancel(netserve.ErrStalled)
	netserve.Reset(c.nc)
}

// gone records that the client is gone: requests of this connection that
// have not begun never will.
func (c *conn) gone() { c.cancel(netserve.ErrPeerGone) }

// freeRecord returns a record's buffer and its bytes of the request budget.
func (c *conn) freeRecord(rec []byte) {
	if c.s.requests != nil {
		c.s.requests.Release(int64(len(rec)))
	}
	putBuf(rec)
}

// recordBudget is where readRecord takes the bytes of a record before it
// reads them.
type recordBudget interface {
	Acquire(n int64) error
	Release(n int64)
}

// readRecord reads one RPC record, reassembling fragments, at most
// maxRecord bytes in all. The buffer comes from the pool; each fragment's
// bytes are taken from b (if not nil) before they are read. Release
// len(rec) to b and putBuf the record when done; on error readRecord has
// returned everything itself.
func readRecord(br *bufio.Reader, b recordBudget) (rec []byte, err error) {
	taken := int64(0)
	defer func() {
		if err != nil && b != nil {
			b.Release(taken)
		}
	}()
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if rec != nil {
				putBuf(rec)
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
			}
			return nil, err
		}
		mark := binary.BigEndian.Uint32(hdr[:])
		last := mark&(1<<31) != 0
		n := int(mark &^ (1 << 31))
		if len(rec)+n > maxRecord {
			putBuf(rec)
			return nil, fmt.Errorf("%w: %d bytes (at most %d)", errRecordTooLarge, len(rec)+n, maxRecord)
		}
		if b != nil {
			if err := b.Acquire(int64(n)); err != nil {
				putBuf(rec)
				return nil, err
			}
			taken += int64(n)
		}
		if rec == nil {
			rec = getBuf(n)
		} else {
			// A later fragment: grow (rare; clients send one fragment).
			grown := getBuf(len(rec) + n)
			copy(grown, rec)
			putBuf(rec)
			rec = grown
		}
		if _, err := io.ReadFull(br, rec[len(rec)-n:]); err != nil {
			putBuf(rec)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if last {
			return rec, nil
		}
	}
}

// work serves requests until the reader stops.
func (c *conn) work() {
	defer c.workers.Done()
	for rec := range c.jobs {
		c.handle(rec)
	}
}

// handle serves one request.
func (c *conn) handle(rec []byte) {
	defer c.freeRecord(rec)
	start := time.Now()
	reply, name, err := c.s.dispatch(c.ctx, c.remote.Addr(), rec)
	c.s.observe(name, start, err)
	if reply != nil {
		c.send(reply)
	}
}

// send writes one reply (its first four bytes are the record mark's place).
// After a write error the connection is closed, which stops the reader, and
// later replies are dropped.
func (c *conn) send(reply []byte) {
	defer putBuf(reply)
	binary.BigEndian.PutUint32(reply, 1<<31|uint32(len(reply)-4)) // one, last, fragment
	c.waiting.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	others := c.waiting.Add(-1)
	if c.werr != nil {
		return
	}
	_, err := c.bw.Write(reply)
	if err == nil && others == 0 {
		err = c.bw.Flush()
	}
	if err != nil {
		c.werr = err
		c.gone()
		c.nc.Close()
		c.s.log.Debug("nfs: writing reply failed; closing the connection", "remote", c.remote.String(), "err", err)
	}
}
