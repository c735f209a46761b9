package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/internal/budget"
	"zerofs/internal/netserve"
)

// A connection after negotiation is served by one reader (this package's
// only consumer of the socket), a bounded pool of workers that execute
// requests, and one writer that serializes replies. Replies go out in
// completion order, which may differ from request order: the spec allows it,
// and it keeps a slow request (a FLUSH waiting for the WAL) from holding back
// fast ones. There is no per-export lock: the filesystem orders concurrent
// writes itself.
//
// The reader consumes each request's payload before the next header, even
// for requests it rejects, so a refused request never desynchronizes the
// stream. Only a broken stream (bad magic, a read error mid-payload) closes
// the connection.
//
// Requests belong to their connection (docs/durability.md, "Requests of a
// connection that dies"). c.ctx is canceled the moment the connection is
// known to be gone: the reader sees EOF or an error, a reply cannot be
// written, or the kernel reports the peer closed or reset the socket while
// the reader is not reading (netserve.WatchPeer: the reader stops reading
// when the workers or the memory budgets are full). Every wait of a
// request — for the connection's buffer budget, the server's request
// budget, a worker, the filesystem's dirty-memory admission, the store —
// takes c.ctx, so no request of a dead connection begins after that: it
// could otherwise land after newer writes other connections made and
// flushed to the same blocks.

const (
	readBufferSize     = 256 << 10
	writeBufferSize    = 16 << 10
	tlsWriteBufferSize = 16 << 10 // one full TLS record: small replies share records; large ones pass through
)

// conn is one client connection.
type conn struct {
	s   *Server
	nc  net.Conn // the socket: deadlines, closing, watching the peer
	log *slog.Logger
	br  *bufio.Reader
	bw  *bufio.Writer // negotiation only; transmission writes with writev

	// tls is the TLS session once STARTTLS succeeded: requests are read
	// and replies written through it, and tw gathers a batch of replies
	// into full TLS records (a record per small write would cost a system
	// call and 22 bytes each).
	tls     *tls.Conn
	records *recordBatcher
	tw      *bufio.Writer

	mu           sync.Mutex  // guards interrupted, transmitting, drainEnd and deadline changes
	interrupted  bool        // Shutdown asked the reader to stop
	draining     atomic.Bool // interrupted, read without the lock on the read path
	transmitting bool        // negotiation is over
	drainEnd     time.Time   // Shutdown: the reader reads no new request after this time
	readingBody  atomic.Bool // the reader is inside a WRITE's payload (see StopReading)

	dead atomic.Bool // the socket was closed on us or by us: drop replies

	// ctx is the context of the connection's requests; cancel ends it with
	// the reason (netserve.ErrPeerGone when the client went away).
	ctx    context.Context
	cancel context.CancelCauseFunc

	// Transmission phase.
	exp        export
	sess       session
	jobs       chan *job
	replies    chan *reply
	budget     *budget.Budget
	workers    sync.WaitGroup
	writerDone chan struct{}
}

// job is a request handed from the reader to a worker.
type job struct {
	req     request
	payload []byte // WRITE data, from c.allocPayload
	start   time.Time
}

// reply is a reply handed to the writer: wire bytes in parts (headers and
// data slices), and what to release once they are written or dropped.
type reply struct {
	parts [][]byte
	free  func()
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancelCause(s.ctx)
	return &conn{
		s:      s,
		nc:     nc,
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		br:     bufio.NewReaderSize(nc, readBufferSize),
		bw:     bufio.NewWriterSize(nc, writeBufferSize),
		ctx:    ctx,
		cancel: cancel,
	}
}

// gone records that the client is gone: requests of this connection that
// have not begun never will.
func (c *conn) gone() { c.cancel(netserve.ErrPeerGone) }

// aLongTimeAgo is a deadline in the past: it makes blocked reads return.
var aLongTimeAgo = time.Unix(1, 0)

// setDeadline sets the socket deadline unless Shutdown interrupted us, in
// which case reads must keep failing at once (it is used in negotiation,
// which a shutdown ends at once).
func (c *conn) setDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.interrupted {
		c.nc.SetReadDeadline(aLongTimeAgo)
		return
	}
	c.nc.SetDeadline(t)
}

// setReadDeadline is setDeadline for reads only (the writer goroutine's
// writes keep no deadline). While Shutdown drains the connection, a payload
// being read gets until drainMax past the drain's end: cutting a WRITE
// whose header was read would leave it unanswered for the client's timeout.
func (c *conn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.interrupted {
		t = c.drainEnd.Add(drainMax)
	}
	c.nc.SetReadDeadline(t)
}

// A shutdown drains a connection in transmission before it closes it: the
// reader goes on reading requests until none has come for drainIdle (or for
// at most drainMax), and every request read is answered.
//
// Why: the kernel's nbd driver does not re-send a request that was in
// flight on a connection that died until its request timeout fires
// (`zerofs nbd attach --timeout`, 30 s), even when it has reconnected at
// once. A server that simply stopped reading would leave the requests
// already on the wire unanswered, and a planned restart would stall the
// device for that timeout. Closing during a quiet moment leaves only the
// requests sent in the last network round trip before the close to wait.
//
// Variables, not constants, only so that a test can widen them.
var (
	drainIdle = 100 * time.Millisecond
	drainMax  = 2 * time.Second
)

// StopReading makes the connection read no new request (Shutdown): at once
// during negotiation, after the drain in transmission; the requests read
// are answered.
func (c *conn) StopReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	c.draining.Store(true)
	if !c.transmitting {
		c.nc.SetReadDeadline(aLongTimeAgo)
		return
	}
	now := time.Now()
	c.drainEnd = now.Add(drainMax)
	// A payload being read keeps setReadDeadline's longer deadline. The
	// reader sets readingBody before it sets that deadline, so either
	// order of the two goroutines ends with it.
	if c.readingBody.Load() {
		c.nc.SetReadDeadline(c.drainEnd.Add(drainMax))
		return
	}
	c.nc.SetReadDeadline(now.Add(drainIdle))
}

// beginTransmission marks the end of negotiation. A shutdown that began
// while the handshake's last reply was on its way drains this connection
// too: its client may already be sending requests.
func (c *conn) beginTransmission() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.transmitting = true
	if c.interrupted && c.drainEnd.IsZero() {
		c.drainEnd = time.Now().Add(drainMax)
	}
}

// armRequestRead sets the deadline for reading the next request header:
// none normally (no lock taken: this is on every request's path); while
// draining, drainIdle from now (never past drainEnd).
func (c *conn) armRequestRead() {
	if !c.draining.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now().Add(drainIdle)
	if t.After(c.drainEnd) {
		t = c.drainEnd
	}
	c.nc.SetReadDeadline(t)
}

func (c *conn) wasInterrupted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.interrupted
}

// abort closes the connection at once (hard disconnect). Replies still
// queued are dropped; the reader and writer see errors and wind down.
func (c *conn) abort() {
	c.dead.Store(true)
	c.gone()
	c.nc.Close()
}

// recoverBug turns a panic in one of the connection's goroutines into a
// logged bug and a closed connection; the server goes on.
func (c *conn) recoverBug(where string) {
	if p := recover(); p != nil {
		c.log.Error("nbd: BUG: panic serving connection; closing it", "where", where, "panic", p, "stack", string(debug.Stack()))
		c.abort()
	}
}

// serve runs the connection to its end.
// Close closes the connection at once (Shutdown gave up waiting).
func (c *conn) Close() { c.nc.Close() }

// Serve runs the connection: negotiation, then transmission.
func (c *conn) Serve() {
	defer c.cancel(nil)
	defer c.nc.Close()
	defer c.recoverBug("negotiation")
	c.setDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	h := &handshake{br: c.br, bw: c.bw, src: c.s.exports, shuttingDown: c.s.group.Closing, log: c.log,
		tlsMode: c.s.opts.TLSMode, tlsConf: c.s.opts.TLS, raw: c.nc, access: c.s.opts.Access}
	n, err := h.negotiate(c.s.ctx)
	if err != nil {
		switch {
		case errors.Is(err, errAbort), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.wasInterrupted():
			c.log.Debug("nbd: connection ended during negotiation", "err", err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.log.Info("nbd: negotiation timed out; closing", "timeout", c.s.opts.HandshakeTimeout)
		default:
			c.log.Warn("nbd: negotiation failed; closing", "err", err)
		}
		return
	}
	c.setDeadline(time.Time{})
	// The negotiation may have buffered the first requests, and after
	// STARTTLS it reads through TLS: transmission goes on from its reader.
	c.br = h.br
	if n.tls.conn != nil {
		c.tls, c.records = n.tls.conn, n.tls.batcher
		c.tw = bufio.NewWriterSize(c.tls, tlsWriteBufferSize)
		c.log = c.log.With("client", peerName(n.tls.names))
	}
	c.beginTransmission()
	c.s.attach(c, Attachment{Export: n.exp.name, Remote: netserve.RemoteAddr(c.nc).String(), Client: strings.Join(n.tls.names, ", "), Since: time.Now()})
	defer c.s.detach(c)
	c.transmit(n)
}

// transmit serves the transmission phase.
func (c *conn) transmit(n *negotiated) {
	c.exp = n.exp
	c.sess = session{size: n.exp.size, readOnly: n.exp.readOnly, structured: n.structured, meta: n.meta,
		maxPayload: uint32(c.s.opts.MaxPayload)}
	c.log = c.log.With("export", n.exp.name)
	c.log.Debug("nbd: transmission begins", "size", n.exp.size, "read_only", n.exp.readOnly, "structured", n.structured)
	workers := c.s.opts.Workers
	c.jobs = make(chan *job)
	c.replies = make(chan *reply, 2*workers)
	c.budget = budget.New(c.s.opts.ConnBufferBytes)
	c.writerDone = make(chan struct{})
	go c.writeLoop()
	c.workers.Add(workers)
	for range workers {
		go c.workLoop()
	}
	// The watch ends at a soft disconnect: a client that sent NBD_CMD_DISC
	// may close its side at once, and the requests it sent before are
	// still to be done.
	watch, unwatch := context.WithCancel(c.ctx)
	netserve.WatchPeer(watch, c.nc, c.gone)

	disc := c.readLoop()
	unwatch()

	close(c.jobs)
	c.workers.Wait()
	if disc && !c.dead.Load() {
		// The spec does not ask for it, but a client disconnecting cleanly
		// deserves its completed writes made durable.
		if err := c.s.f.Flush(c.s.ctx); err != nil {
			c.log.Warn("nbd: flush at disconnect failed", "err", err)
		}
	}
	close(c.replies)
	<-c.writerDone
	c.lingeringClose()
	c.log.Debug("nbd: connection closed", "soft_disconnect", disc)
}

// Lingering close: closing a TCP socket with unread input sends a reset,
// and a reset can destroy replies the client has not read yet (it discards
// the peer's receive queue). So once every reply is written, half-close, and
// read and discard what the client still sends, for a bounded time and
// amount, until it closes its side.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 64 << 20
)

func (c *conn) lingeringClose() {
	defer c.nc.Close()
	tc, ok := c.nc.(*net.TCPConn)
	if !ok || c.dead.Load() {
		return
	}
	if c.tls != nil {
		// close_notify: the client can tell this end from a truncation.
		c.tls.SetWriteDeadline(time.Now().Add(lingerTime))
		if err := c.tls.CloseWrite(); err != nil {
			return
		}
	}
	if err := tc.CloseWrite(); err != nil {
		return
	}
	tc.SetReadDeadline(time.Now().Add(lingerTime))
	io.CopyN(io.Discard, tc, lingerBytes)
}

// readLoop reads requests until the client disconnects (disc true for
// NBD_CMD_DISC), the stream breaks, or Shutdown interrupts it.
func (c *conn) readLoop() (disc bool) {
	defer c.recoverBug("reader")
	hdr := make([]byte, requestHeaderLen)
	for {
		c.armRequestRead()
		if _, err := io.ReadFull(c.br, hdr); err != nil {
			switch {
			case c.wasInterrupted():
				c.log.Debug("nbd: server shutting down: connection drained; no more requests read")
			case errors.Is(err, io.EOF), c.dead.Load(), errors.Is(err, net.ErrClosed):
				c.log.Debug("nbd: client hung up without NBD_CMD_DISC", "err", err)
				c.gone()
			default:
				c.log.Info("nbd: reading request failed; closing", "err", err)
				c.gone()
			}
			return false
		}
		start := time.Now()
		r, err := decodeRequest(hdr)
		if err != nil {
			// Nothing more can be parsed. Requests already read still get
			// their replies (helpful to whoever debugs the client), then
			// the connection closes.
			c.log.Warn("nbd: malformed request; closing the connection", "err", err)
			return false
		}
		v := checkRequest(r, c.sess)
		if v.disc {
			c.s.observe(cmdName(r.typ), 0, time.Since(start), nil)
			return true
		}
		var payload []byte
		if v.payload > 0 {
			if v.err != nil {
				_, err = io.CopyN(io.Discard, c.br, int64(v.payload))
			} else if payload, err = c.allocPayload(int(v.payload)); err == nil {
				// Waiting for memory above left the payload in the
				// socket: TCP back-pressure, not buffering. A client
				// that stops half-way through a payload holds shared
				// memory: it gets MaxReadWait to send the rest.
				c.readingBody.Store(true)
				c.setReadDeadline(time.Now().Add(c.s.opts.MaxReadWait))
				_, err = io.ReadFull(c.br, payload)
				c.readingBody.Store(false)
				c.setReadDeadline(time.Time{})
				if errors.Is(err, os.ErrDeadlineExceeded) && !c.wasInterrupted() {
					c.freePayload(payload)
					c.log.Warn("nbd: resetting a connection that stopped in the middle of a write's payload", "waited", c.s.opts.MaxReadWait)
					c.dead.Store(true)
					c.cancel(netserve.ErrStalled)
					netserve.Reset(c.nc)
					return false
				}
			}
			if err != nil {
				if payload != nil {
					c.freePayload(payload)
				}
				if c.ctx.Err() == nil && !c.wasInterrupted() {
					c.gone()
				}
				// Replies to requests already read still go out (if
				// the client is still there) before the close.
				if c.wasInterrupted() {
					c.log.Debug("nbd: server shutting down in the middle of a write's payload", "err", err)
				} else {
					c.log.Info("nbd: connection lost in the middle of a write's payload; closing", "err", err)
				}
				return false
			}
		}
		if v.err != nil {
			c.log.Debug("nbd: request refused", "cmd", cmdName(r.typ), "err", v.err)
			c.sendError(r, v.err)
			c.s.observe(cmdName(r.typ), int(r.length), time.Since(start), v.err)
			continue
		}
		if !c.dispatch(&job{req: r, payload: payload, start: start}) {
			return false
		}
	}
}

// dispatch hands j to a worker, waiting while all are busy. It returns
// false, with j undone, if the connection is gone or stalled meanwhile.
func (c *conn) dispatch(j *job) bool {
	select {
	case c.jobs <- j:
		return true
	default:
	}
	wctx, cancel := netserve.ReadWait(c.ctx, c.s.opts.MaxReadWait)
	defer cancel()
	select {
	case c.jobs <- j:
		return true
	case <-wctx.Done():
		// Gone, or stalled, while every worker was busy: this request
		// never began.
		if j.payload != nil {
			c.freePayload(j.payload)
		}
		c.stalled(wctx)
		return false
	}
}

// stalled resets the connection if wctx, a reader's wait, ended because it
// took too long (netserve.ReadWait says why).
func (c *conn) stalled(wctx context.Context) {
	if !errors.Is(context.Cause(wctx), netserve.ErrStalled) || c.ctx.Err() != nil {
		return
	}
	c.log.Warn("nbd: resetting a connection stalled waiting for memory (the store is slow or down); its unread requests are dropped, never applied late",
		"waited", c.s.opts.MaxReadWait)
	c.dead.Store(true)
	c.cancel(netserve.ErrStalled)
	netserve.Reset(c.nc)
}

func (c *conn) workLoop() {
	defer c.workers.Done()
	for j := range c.jobs {
		c.run(j)
	}
}

// run executes one job; a panic closes the connection but not the worker.
func (c *conn) run(j *job) {
	defer c.recoverBug(cmdName(j.req.typ))
	if time.Since(j.start) > waitedLong && netserve.PeerGone(c.nc) {
		// The request queued behind others: before it begins, ask the
		// kernel once more whether the client is still there, rather
		// than rely on the periodic watch.
		c.gone()
	}
	err := c.exec(j)
	c.s.observe(cmdName(j.req.typ), int(j.req.length), time.Since(j.start), err)
}

// Reply batching: the writer gathers the replies already queued, up to
// these bounds, and sends them with one writev. Data slices go to the kernel
// as they are, without a copy through a user-space buffer.
const (
	maxBatchParts = 1024 // IOV_MAX
	maxBatchBytes = 8 << 20
)

// writeLoop sends replies until the channel closes.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var (
		bufs  net.Buffers
		frees []func()
	)
	for r := range c.replies {
		size := 0
		for {
			for _, p := range r.parts {
				bufs = append(bufs, p)
				size += len(p)
			}
			if r.free != nil {
				frees = append(frees, r.free)
			}
			if len(bufs) >= maxBatchParts || size >= maxBatchBytes {
				break
			}
			var ok bool
			select {
			case r, ok = <-c.replies:
			default:
			}
			if !ok || r == nil {
				break
			}
		}
		c.writeBatch(&bufs)
		for i, f := range frees {
			f()
			frees[i] = nil
		}
		frees = frees[:0]
		clear(bufs[:cap(bufs)])
		bufs = bufs[:0]
	}
}

// writeBatch writes the gathered replies; a failure closes the connection
// and later replies are dropped.
func (c *conn) writeBatch(bufs *net.Buffers) {
	defer c.recoverBug("writer")
	if c.dead.Load() {
		return
	}
	if c.tls != nil {
		c.records.hold()
		err := func() error {
			for _, p := range *bufs {
				if _, err := c.tw.Write(p); err != nil {
					return err
				}
			}
			return c.tw.Flush()
		}()
		if rerr := c.records.release(); err == nil {
			err = rerr
		}
		if err != nil {
			c.log.Debug("nbd: sending replies failed; closing", "err", err)
			c.abort()
		}
		return
	}
	// WriteTo consumes its receiver; keep ours for reuse.
	b := *bufs
	if _, err := b.WriteTo(c.nc); err != nil {
		c.log.Debug("nbd: sending replies failed; closing", "err", err)
		c.abort()
	}
}

// send queues a reply.
func (c *conn) send(r *reply) { c.replies <- r }

// sendOK queues a successful reply without payload.
func (c *conn) sendOK(r request) {
	c.send(&reply{parts: [][]byte{appendSimpleReply(make([]byte, 0, simpleReplyLen), 0, r.cookie)}})
}

// sendError queues an error reply: a structured error chunk when structured
// replies were negotiated (required for READ, preferred for the others since
// it carries a message), else a simple reply.
func (c *conn) sendError(r request, e *reqError) {
	var b []byte
	if c.sess.structured {
		b = appendErrorChunk(nil, r.cookie, e.code, e.msg)
	} else {
		b = appendSimpleReply(nil, e.code, r.cookie)
	}
	c.send(&reply{parts: [][]byte{b}})
}

// waitedLong: a request older than this when a worker takes it was held
// back, and its connection is checked before it begins.
const waitedLong = time.Millisecond

// alloc takes an n-byte buffer within the connection's budget, waiting if
// the budget is exhausted (an error only if the connection is gone).
func (c *conn) alloc(n int) ([]byte, error) {
	if err := c.budget.Acquire(c.ctx, int64(n)); err != nil {
		return nil, err
	}
	return getBuf(n), nil
}

// free returns a buffer from alloc (with its original length).
func (c *conn) free(b []byte) {
	n := len(b)
	putBuf(b)
	c.budget.Release(int64(n))
}

// allocPayload takes a WRITE payload buffer: from the connection's budget,
// and from the server's request budget that every connection of NBD and
// NFS shares, which bounds the payloads read but not yet applied however
// many clients connect (Options.Requests).
//
// Waiting here leaves the payload in the socket (TCP back-pressure); a wait
// longer than Options.MaxReadWait resets the connection (see
// netserve.ReadWait for why).
func (c *conn) allocPayload(n int) ([]byte, error) {
	wctx, cancel := netserve.ReadWait(c.ctx, c.s.opts.MaxReadWait)
	defer cancel()
	if err := c.budget.Acquire(wctx, int64(n)); err != nil {
		c.stalled(wctx)
		return nil, err
	}
	if err := c.s.requests.Acquire(wctx, int64(n)); err != nil {
		c.budget.Release(int64(n))
		c.stalled(wctx)
		return nil, err
	}
	return getBuf(n), nil
}

// freePayload returns a buffer from allocPayload.
func (c *conn) freePayload(b []byte) {
	c.s.requests.Release(int64(len(b)))
	c.free(b)
}
