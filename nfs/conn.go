// Derived from github.com/willscott/go-nfs v0.0.4 (Apache-2.0); modified for zerofs.

package nfs

import (
	"bufio"
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

type conn struct {
	s      *Server
	nc     net.Conn
	remote netip.AddrPort

	jobs    chan []byte    // records, to the workers
	workers sync.WaitGroup // running workers
	closing atomic.Bool    // Shutdown: read no new requests

	waiting atomic.Int32 // workers waiting for wmu: the last one flushes
	wmu     sync.Mutex
	bw      *bufio.Writer
	werr    error // the first write error; later replies are dropped
}

func newConn(s *Server, nc net.Conn, remote netip.AddrPort) *conn {
	return &conn{
		s: s, nc: nc, remote: remote,
		jobs: make(chan []byte),
		bw:   bufio.NewWriterSize(nc, 64<<10),
	}
}

// StopReading makes the reader stop at the next record boundary (or now,
// if it is waiting for one); requests already read are still answered.
func (c *conn) StopReading() {
	c.closing.Store(true)
	c.nc.SetReadDeadline(time.Now())
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
	}()

	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		rec, err := readRecord(br)
		if err != nil {
			switch {
			case c.closing.Load() && errors.Is(err, os.ErrDeadlineExceeded):
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			case errors.Is(err, errRecordTooLarge):
				log.Warn("nfs: closing connection", "err", err)
			default:
				log.Debug("nfs: connection ended", "err", err)
			}
			return
		}
		c.jobs <- rec
	}
}

// readRecord reads one RPC record, reassembling fragments, at most
// maxRecord bytes in all. The buffer comes from the pool (putBuf it).
func readRecord(br *bufio.Reader) ([]byte, error) {
	var rec []byte
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
	defer putBuf(rec)
	start := time.Now()
	reply, name, err := c.s.dispatch(c.s.ctx, c.remote.Addr(), rec)
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
		c.nc.Close()
		c.s.log.Debug("nfs: writing reply failed; closing the connection", "remote", c.remote.String(), "err", err)
	}
}
