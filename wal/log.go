// Package wal is zerofs's durable ordered log: sealed batches of filesystem
// changes are appended to it as records, one object each, and a flush is
// acknowledged once its record and every record before it are in the store.
// After a crash the log is replayed from the last checkpoint; records the
// checkpoint covers are removed by the caller.
//
// The log has one writer at a time. A writer claims the filesystem by bumping
// the epoch in the head object with a conditional write, replays, and then
// appends a fence record at the next free sequence number with
// create-if-absent. From then on an older writer still running fails at its
// next append (the sequence number it wants is taken) or its next head update
// (the ETag changed): it is fenced and stops, and the two never interleave.
//
// Records are written with create-if-absent at contiguous sequence numbers,
// several at a time (pipelined), and acknowledged strictly in order: a record
// counts as durable only when every record before it is. Replay therefore
// stops at the first missing sequence number, and skips any record whose epoch
// is older than one already replayed: such a record is the leftover of a
// writer that crashed with pipelined appends in flight, written after a gap,
// never acknowledged, and later superseded.
package wal

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"zerofs/store"
	"zerofs/store/sched"
)

var (
	// ErrFenced: a newer writer has claimed the filesystem. Nothing more can
	// be appended; the process must stop serving writes.
	ErrFenced = errors.New("fenced: another zerofs writer has claimed this filesystem")
	// ErrClosed: the log was closed while the operation waited.
	ErrClosed = errors.New("WAL closed")
	// ErrDiverged: a local state's position is not part of the log's history
	// (another machine wrote since, or the records were removed); the caller
	// must restore from the checkpoint instead.
	ErrDiverged = errors.New("local state is not a prefix of the WAL")
)

// Options configures Open.
type Options struct {
	// Main is the store holding the head object (the filesystem's main store).
	Main store.Store
	// Records is the store holding the records; nil means Main.
	Records store.Store
	// Init is stored in the head when Open creates a new filesystem and
	// returned by Head afterwards; it is ignored for an existing one.
	Init []byte
	// MaxInFlight bounds the records being written at once. Default 4.
	MaxInFlight int
	// RetryMin and RetryMax bound the backoff between attempts of an append
	// the store keeps failing. An append is retried until it succeeds, the
	// log is fenced or closed: a store outage makes flushes wait, not fail.
	RetryMin, RetryMax time.Duration
	// HeadCheckInterval is how often a writer reads the head object to learn
	// that a newer writer has claimed the filesystem. The fence record stops
	// an old writer at its next append anyway; this bounds how long an old
	// writer can go on appending while the new one is still replaying.
	// Default 1s; negative disables.
	HeadCheckInterval time.Duration
	// HeadCheckIdleMax: while nothing is appended, the interval between
	// checks doubles up to this (default 1 min), so an idle filesystem costs
	// a request a minute, not one a second. An append brings the interval
	// back to HeadCheckInterval at once.
	HeadCheckIdleMax time.Duration
	Logger           *slog.Logger
}

// Log is an open, claimed log. Replay must be called once before Append.
type Log struct {
	main, records store.Store
	log           *slog.Logger
	retryMin      time.Duration
	retryMax      time.Duration
	headCheck     time.Duration
	headCheckIdle time.Duration
	active        chan struct{} // an append happened: the head watch speeds up

	ctx    context.Context // canceled by Close: aborts writes and retries
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}

	// fsid and epoch never change after Open; the rest of the head does.
	fsid  [16]byte
	epoch uint64

	headMu   sync.Mutex // never held while taking mu
	head     Head
	headETag string

	mu       sync.Mutex
	replayed bool
	next     uint64    // sequence number of the next Append
	pending  []*Commit // appended, not yet completed in order; pending[0] is the oldest
	last     Position  // last record known durable, in order
	failed   error     // sticky: ErrFenced or ErrClosed
	closing  bool      // Close has begun: no new writer goroutines

	retries atomic.Int64 // failed append attempts that were retried
}

// Retries counts append attempts that failed with a store error and were
// retried (a slow or failing store shows here before anything else).
func (l *Log) Retries() int64 { return l.retries.Load() }

// Commit is one appended record on its way to the store.
type Commit struct {
	Pos      Position
	done     chan struct{}
	finished bool  // the write itself is over (guarded by Log.mu)
	err      error // outcome; valid once done is closed
}

// Done is closed when the record and all records before it are durable, or
// when the append failed.
func (c *Commit) Done() <-chan struct{} { return c.done }

// Err is the append's outcome, valid once Done is closed: nil when durable.
func (c *Commit) Err() error { return c.err }

// Wait blocks until Done and returns Err, or returns ctx's error.
func (c *Commit) Wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Open claims the filesystem in opts.Main for a new writer: it creates the
// head if there is none (a new filesystem), else bumps its epoch with a
// compare-and-swap. Concurrent claims resolve to one winner per epoch; the
// writer that claimed last holds the newest epoch and fences the others.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Main == nil {
		return nil, errors.New("wal: no main store")
	}
	if opts.Records == nil {
		opts.Records = opts.Main
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 4
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 50 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HeadCheckInterval == 0 {
		opts.HeadCheckInterval = time.Second
	}
	if opts.HeadCheckIdleMax < opts.HeadCheckInterval {
		opts.HeadCheckIdleMax = max(time.Minute, opts.HeadCheckInterval)
	}
	l := &Log{
		headCheck: opts.HeadCheckInterval, headCheckIdle: opts.HeadCheckIdleMax,
		active: make(chan struct{}, 1),
		main:   opts.Main, records: opts.Records, log: opts.Logger,
		retryMin: opts.RetryMin, retryMax: opts.RetryMax,
		sem: make(chan struct{}, opts.MaxInFlight),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// The ETag is read before the content. Read the other way round, a
		// claim landing between the two reads pairs the new ETag with the old
		// content: the CAS below would then succeed and hand out the epoch the
		// other writer already holds. In this order a change between the reads
		// makes the ETag stale, the CAS fails and we go round again.
		info, err := l.main.Head(ctx, HeadKey)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("read head from %s: %w", l.main, err)
		}
		var data []byte
		if err == nil {
			data, err = l.main.Get(ctx, HeadKey, 0, -1)
		}
		switch {
		case errors.Is(err, store.ErrNotFound) && info.ETag != "":
			continue // deleted between the reads: look again
		case errors.Is(err, store.ErrNotFound):
			h := Head{Epoch: 1, Init: opts.Init}
			if _, err := rand.Read(h.FSID[:]); err != nil {
				return nil, err
			}
			etag, err := l.main.PutIfAbsent(ctx, HeadKey, h.encode())
			if errors.Is(err, store.ErrExists) {
				continue // another writer created it first: claim after it
			}
			if err != nil {
				return nil, fmt.Errorf("create head in %s: %w", l.main, err)
			}
			l.head, l.headETag, l.fsid, l.epoch = h, etag, h.FSID, h.Epoch
			l.log.Info("created new filesystem", "store", l.main.String(), "fsid", fmt.Sprintf("%x", h.FSID), "epoch", h.Epoch)
			return l, nil
		case err != nil:
			return nil, fmt.Errorf("read head from %s: %w", l.main, err)
		}
		h, err := decodeHead(data)
		if err != nil {
			return nil, fmt.Errorf("head in %s: %w", l.main, err)
		}
		prev := h.Epoch
		h.Epoch++
		etag, err := l.main.PutIfMatch(ctx, HeadKey, h.encode(), info.ETag)
		if errors.Is(err, store.ErrPrecondition) || errors.Is(err, store.ErrNotFound) {
			if attempt > 100 {
				return nil, fmt.Errorf("claim %s: head keeps changing under us: %w", l.main, err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("claim epoch %d in %s: %w", h.Epoch, l.main, err)
		}
		l.head, l.headETag, l.fsid, l.epoch = h, etag, h.FSID, h.Epoch
		l.log.Info("claimed filesystem", "store", l.main.String(), "epoch", h.Epoch, "previous_epoch", prev,
			"checkpoint_seq", h.Base.Seq)
		return l, nil
	}
}

// Head returns the head as this writer claimed or last updated it.
func (l *Log) Head() Head {
	l.headMu.Lock()
	defer l.headMu.Unlock()
	return l.head
}

// Epoch is this writer's epoch.
func (l *Log) Epoch() uint64 { return l.epoch }

// FSID is the filesystem's id, fixed at creation.
func (l *Log) FSID() [16]byte { return l.fsid }

// Records is the store holding the records, for reading record data.
func (l *Log) Records() store.Store { return l.records }

// Replay hands every record after position after to fn, in order, then
// appends the fence record that makes this writer the only one. after is
// either the head's Base (recovering from the checkpoint) or the last record
// a local copy of the state already holds; in the latter case it must be part
// of the log's history, else ErrDiverged.
//
// It returns the position of the fence record: the last durable record.
func (l *Log) Replay(ctx context.Context, after Position, fn func(Record) error) (Position, error) {
	l.mu.Lock()
	if l.replayed {
		l.mu.Unlock()
		return Position{}, errors.New("wal: Replay called twice")
	}
	l.mu.Unlock()

	head := l.Head()
	if err := l.Check(ctx, after); err != nil {
		return Position{}, err
	}
	rs := &replayState{l: l, fn: fn, last: after, maxEpoch: after.Epoch, seq: after.Seq + 1, epoch: head.Epoch, started: time.Now()}
	if err := rs.catchUp(ctx); err != nil {
		return Position{}, err
	}

	// Fence: take sequence number rs.seq. A record appearing there since the
	// listing was written by a still-running older writer after its
	// predecessor, which we replayed; it may have been acknowledged, so it is
	// history: replay it, catch up with whatever else that writer added, and
	// try again. The old writer stops soon on its own (watchHead), so this
	// converges even against a writer appending as fast as it can.
	var last Position
	for {
		id := randomID()
		h := header{fsid: head.FSID, seq: rs.seq, epoch: head.Epoch, id: id, flags: FlagFence}
		err := l.writeRecord(ctx, h, encodeRecord(h, nil, nil), rs.maxEpoch, rs.apply)
		if errors.Is(err, errContinuation) {
			rs.seq++
			if err := rs.catchUp(ctx); err != nil {
				return Position{}, err
			}
			continue
		}
		if err != nil {
			return Position{}, fmt.Errorf("fence WAL at record %d: %w", rs.seq, err)
		}
		last = Position{Seq: rs.seq, Epoch: head.Epoch, ID: id}
		break
	}
	replayed, skipped, started := rs.replayed, rs.skipped, rs.started
	if replayed > 0 || skipped > 0 {
		l.log.Info("replayed WAL", "records", replayed, "stale_skipped", skipped, "fence_seq", last.Seq,
			"elapsed", time.Since(started).Round(time.Millisecond))
	}
	l.mu.Lock()
	l.replayed = true
	l.next = last.Seq + 1
	l.last = last
	if l.headCheck > 0 && !l.closing {
		l.wg.Add(1)
		go l.watchHead()
	}
	l.mu.Unlock()
	return last, nil
}

// watchHead polls the head object and fences this writer as soon as a newer
// one has claimed the filesystem. Fencing itself does not depend on it: a
// newer writer's fence record and the conditional head writes stop an old
// writer at its next append. The watch only shortens how long an old writer
// goes on serving reads and buffering writes, so while it is idle the watch
// backs off (HeadCheckIdleMax) and an append speeds it up again.
func (l *Log) watchHead() {
	defer l.wg.Done()
	// Nobody waits on the watch: it queues behind reads and appends.
	watchCtx := sched.WithClass(l.ctx, sched.Background)
	interval := l.headCheck
	t := time.NewTimer(interval)
	defer t.Stop()
	appended := false
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.active:
			appended = true
			if interval == l.headCheck {
				continue // already checking at full rate
			}
			// Back from idle: check now.
		case <-t.C:
		}
		interval = nextHeadCheck(interval, appended, l.headCheck, l.headCheckIdle)
		appended = false
		t.Reset(interval)
		info, err := l.main.Head(watchCtx, HeadKey)
		if err != nil {
			continue // the store is unreachable: appends will tell
		}
		l.headMu.Lock()
		ours := l.headETag
		l.headMu.Unlock()
		if info.ETag == ours {
			continue
		}
		data, err := l.main.Get(watchCtx, HeadKey, 0, -1)
		if err != nil {
			continue
		}
		h, err := decodeHead(data)
		if err != nil {
			continue
		}
		if h.Epoch > l.epoch {
			l.fail(fmt.Errorf("the head in %s was claimed by epoch %d (ours is %d): %w", l.main, h.Epoch, l.epoch, ErrFenced))
			return
		}
	}
}

// nextHeadCheck is the head watch's next interval after one of cur: back to
// base if something was appended since the last check, else twice as long,
// up to idleMax.
func nextHeadCheck(cur time.Duration, appended bool, base, idleMax time.Duration) time.Duration {
	if appended {
		return base
	}
	return min(2*cur, idleMax)
}

// Check verifies that after, a position a local copy of the state says it
// has applied, is part of the log's history: ErrDiverged if not.
func (l *Log) Check(ctx context.Context, after Position) error {
	head := l.Head()
	switch {
	case after == head.Base:
		return nil
	case after.Seq < head.Base.Seq:
		return fmt.Errorf("local state ends at record %d, before the checkpoint at %d: %w", after.Seq, head.Base.Seq, ErrDiverged)
	case after.Seq == head.Base.Seq:
		return fmt.Errorf("local state's record %d is not the checkpoint's: %w", after.Seq, ErrDiverged)
	}
	data, err := l.records.Get(ctx, Key(after.Seq), 0, HeaderSize)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("local state's last record %d is not in the WAL: %w", after.Seq, ErrDiverged)
	}
	if err != nil {
		return fmt.Errorf("read WAL record %d: %w", after.Seq, err)
	}
	h, err := decodeHeader(data)
	if err != nil {
		return fmt.Errorf("WAL record %d: %w", after.Seq, err)
	}
	if h.fsid != head.FSID || h.epoch != after.Epoch || h.id != after.ID {
		return fmt.Errorf("WAL record %d is not the one local state applied: %w", after.Seq, ErrDiverged)
	}
	return nil
}

// replayState carries replay across the initial pass and the catch-up
// rounds of fencing.
type replayState struct {
	l        *Log
	fn       func(Record) error
	last     Position
	maxEpoch uint64
	seq      uint64 // next sequence number to replay
	epoch    uint64 // the replaying writer's epoch
	replayed int
	skipped  int
	started  time.Time
}

func (rs *replayState) apply(r Record) error {
	if err := rs.fn(r); err != nil {
		return fmt.Errorf("replay record %d: %w", r.Seq, err)
	}
	rs.last = Position{Seq: r.Seq, Epoch: r.Epoch, ID: r.ID}
	rs.maxEpoch = r.Epoch
	rs.replayed++
	if rs.replayed%1000 == 0 {
		rs.l.log.Info("replaying WAL", "seq", r.Seq, "records", rs.replayed, "elapsed", time.Since(rs.started).Round(time.Millisecond))
	}
	return nil
}

// replayWindow is how many records replay reads ahead in parallel.
const replayWindow = 16

// catchUp lists the records and replays those present from rs.seq on, in
// order, reading up to replayWindow of them at once.
func (rs *replayState) catchUp(ctx context.Context) error {
	l := rs.l
	infos, err := l.records.List(ctx, "wal/")
	if err != nil {
		return fmt.Errorf("list WAL records in %s: %w", l.records, err)
	}
	present := make(map[uint64]bool, len(infos))
	for _, in := range infos {
		if seq, ok := parseKey(in.Key); ok {
			present[seq] = true
		}
	}
	type result struct {
		r   Record
		err error
	}
	var window []chan result
	next := rs.seq
	fill := func() {
		for len(window) < replayWindow && present[next] {
			ch := make(chan result, 1)
			go func(seq uint64) {
				r, err := l.readRecord(ctx, seq)
				ch <- result{r, err}
			}(next)
			window = append(window, ch)
			next++
		}
	}
	for fill(); len(window) > 0; fill() {
		res := <-window[0]
		window = window[1:]
		if res.err != nil {
			for _, ch := range window {
				<-ch
			}
			return res.err
		}
		r := res.r
		rs.seq = r.Seq + 1
		if r.Epoch > rs.epoch {
			for _, ch := range window {
				<-ch
			}
			return fmt.Errorf("record %d has epoch %d, newer than ours (%d): %w", r.Seq, r.Epoch, rs.epoch, ErrFenced)
		}
		if r.Epoch < rs.maxEpoch {
			rs.skipped++ // an older writer's unacknowledged leftover: not history
			continue
		}
		if err := rs.apply(r); err != nil {
			for _, ch := range window {
				<-ch
			}
			return err
		}
	}
	return nil
}

// ReadMeta reads record seq's header and meta (not its data), verified.
func (l *Log) ReadMeta(ctx context.Context, seq uint64) (Record, error) {
	return l.readRecord(ctx, seq)
}

// readRecord reads the header and meta of record seq, not its data.
func (l *Log) readRecord(ctx context.Context, seq uint64) (Record, error) {
	const probe = 64 << 10
	data, err := l.records.Get(ctx, Key(seq), 0, probe)
	if err != nil {
		return Record{}, fmt.Errorf("read WAL record %d from %s: %w", seq, l.records, err)
	}
	h, err := decodeHeader(data)
	if err != nil {
		return Record{}, fmt.Errorf("WAL record %d in %s: %w", seq, l.records, err)
	}
	if h.fsid != l.fsid {
		return Record{}, fmt.Errorf("WAL record %d in %s belongs to another filesystem (%x): %w", seq, l.records, h.fsid, ErrCorrupt)
	}
	if h.seq != seq {
		return Record{}, fmt.Errorf("WAL record at %s says it is record %d: %w", Key(seq), h.seq, ErrCorrupt)
	}
	end := HeaderSize + int(h.metaLen)
	if len(data) < end {
		more, err := l.records.Get(ctx, Key(seq), int64(len(data)), int64(end-len(data)))
		if err != nil {
			return Record{}, fmt.Errorf("read WAL record %d from %s: %w", seq, l.records, err)
		}
		data = append(data, more...)
	}
	if len(data) < end {
		return Record{}, fmt.Errorf("WAL record %d truncated: %d of %d header+meta bytes: %w", seq, len(data), end, ErrCorrupt)
	}
	meta := data[HeaderSize:end]
	if crc := crc32.Checksum(meta, castagnoli); crc != h.metaCRC {
		return Record{}, fmt.Errorf("WAL record %d meta checksum %08x, want %08x: %w", seq, crc, h.metaCRC, ErrCorrupt)
	}
	return Record{Seq: seq, Epoch: h.epoch, ID: h.id, Flags: h.flags, Meta: meta,
		DataOffset: int64(end), DataLen: int64(h.dataLen)}, nil
}

// errContinuation: the sequence number is taken by a legitimate record,
// which writeRecord handed to onContinuation.
var errContinuation = errors.New("sequence number taken by a continuation record")

// writeRecord puts record h at its sequence number with create-if-absent,
// retrying transient errors until it succeeds or the log is closed. When the
// number is taken it decides by the occupant's header:
//   - our own record id: an earlier attempt whose reply was lost succeeded;
//   - a newer epoch than ours: we are fenced;
//   - an epoch at least minEpoch (only while fencing, onContinuation != nil):
//     a legitimate record of the writer before us; errContinuation;
//   - an older epoch: a stale leftover after a crash; replace it, but only
//     with If-Match on the ETag we inspected, so a newer writer's record
//     racing in is never overwritten.
func (l *Log) writeRecord(ctx context.Context, h header, rec []byte, minEpoch uint64, onContinuation func(Record) error) error {
	key := Key(h.seq)
	backoff := l.retryMin
	var firstFailure time.Time
	for {
		if err := l.ctx.Err(); err != nil {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := l.records.PutIfAbsent(ctx, key, rec)
		if err == nil {
			return nil
		}
		if errors.Is(err, store.ErrExists) {
			err = l.resolveTaken(ctx, h, rec, minEpoch, onContinuation)
			if err == nil || errors.Is(err, ErrFenced) || errors.Is(err, errContinuation) || errors.Is(err, ErrCorrupt) {
				return err
			}
			if errors.Is(err, errRetryNow) {
				continue
			}
		}
		if l.ctx.Err() != nil {
			return ErrClosed
		}
		l.retries.Add(1)
		if firstFailure.IsZero() {
			firstFailure = time.Now()
		}
		l.log.Warn("WAL append failing, retrying", "seq", h.seq, "store", l.records.String(), "err", err,
			"failing_for", time.Since(firstFailure).Round(time.Millisecond), "next_attempt_in", backoff)
		if !sleep(l.ctx, ctx, jitter(backoff)) {
			if l.ctx.Err() != nil {
				return ErrClosed
			}
			return ctx.Err()
		}
		backoff = min(backoff*2, l.retryMax)
	}
}

var errRetryNow = errors.New("retry now")

func (l *Log) resolveTaken(ctx context.Context, h header, rec []byte, minEpoch uint64, onContinuation func(Record) error) error {
	key := Key(h.seq)
	info, err := l.records.Head(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return errRetryNow
	}
	if err != nil {
		return err
	}
	data, err := l.records.Get(ctx, key, 0, HeaderSize)
	if errors.Is(err, store.ErrNotFound) {
		return errRetryNow
	}
	if err != nil {
		return err
	}
	other, err := decodeHeader(data)
	if err != nil {
		return fmt.Errorf("record %d occupying our slot: %w", h.seq, err)
	}
	switch {
	case other.fsid != h.fsid:
		return fmt.Errorf("record %d belongs to another filesystem: %w", h.seq, ErrCorrupt)
	case other.epoch == h.epoch && other.id == h.id:
		return nil // our own earlier attempt landed
	case other.epoch >= h.epoch:
		l.fail(ErrFenced)
		return fmt.Errorf("record %d written by epoch %d, ours is %d: %w", h.seq, other.epoch, h.epoch, ErrFenced)
	case onContinuation != nil && other.epoch >= minEpoch:
		r, err := l.readRecord(ctx, h.seq)
		if err != nil {
			return err
		}
		if err := onContinuation(r); err != nil {
			return err
		}
		return errContinuation
	}
	if _, err := l.records.PutIfMatch(ctx, key, rec, info.ETag); err != nil {
		if errors.Is(err, store.ErrPrecondition) || errors.Is(err, store.ErrNotFound) {
			return errRetryNow // changed under us: look again
		}
		return err
	}
	l.log.Info("replaced a stale WAL record of an older writer", "seq", h.seq, "stale_epoch", other.epoch, "epoch", h.epoch)
	return nil
}

// Append starts writing a record and returns at once, unless MaxInFlight
// records are already being written; then it waits for one to finish. build
// receives the record's sequence number and returns the whole record object:
// rec[:HeaderSize] is left for the WAL to fill in, rec[HeaderSize:][:metaLen]
// is the caller's meta and the rest its data. (The caller lays out the record
// itself so that its data is written once, straight into place.) build runs
// before Append returns, so the caller can seal seq into the meta. Append
// calls must not race each other: records take sequence numbers in call
// order.
func (l *Log) Append(build func(seq uint64) (rec []byte, metaLen int)) (*Commit, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.ctx.Done():
		return nil, ErrClosed
	}
	l.mu.Lock()
	if !l.replayed {
		l.mu.Unlock()
		<-l.sem
		return nil, errors.New("wal: Append before Replay")
	}
	if l.failed != nil {
		err := l.failed
		l.mu.Unlock()
		<-l.sem
		return nil, err
	}
	if l.closing {
		l.mu.Unlock()
		<-l.sem
		return nil, ErrClosed
	}
	seq := l.next
	l.next++
	select {
	case l.active <- struct{}{}:
	default:
	}
	c := &Commit{Pos: Position{Seq: seq, Epoch: l.epoch, ID: randomID()}, done: make(chan struct{})}
	l.pending = append(l.pending, c)
	l.wg.Add(1) // under mu, so it never races Close's Wait
	l.mu.Unlock()

	rec, metaLen := build(seq)
	if metaLen < 0 || HeaderSize+metaLen > len(rec) {
		panic(fmt.Sprintf("wal: Append: record of %d bytes with %d bytes of meta", len(rec), metaLen))
	}
	h := header{fsid: l.fsid, seq: seq, epoch: l.epoch, id: c.Pos.ID}
	h.fill(rec, metaLen)
	go func() {
		defer l.wg.Done()
		defer func() { <-l.sem }()
		err := l.writeRecord(l.ctx, h, rec, 0, nil)
		l.complete(c, err)
	}()
	return c, nil
}

// complete records the outcome of c's write and acknowledges, in sequence
// order, every record whose predecessors are all done. A failure is sticky:
// every later record fails too, because with a hole before it, it is not
// history even if its PUT landed.
func (l *Log) complete(c *Commit, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c.finished, c.err = true, err
	for len(l.pending) > 0 && l.pending[0].finished {
		p := l.pending[0]
		l.pending = l.pending[1:]
		if l.failed != nil {
			p.err = l.failed
		} else if p.err != nil {
			if !errors.Is(p.err, ErrFenced) && !errors.Is(p.err, ErrClosed) {
				p.err = fmt.Errorf("append WAL record %d: %w", p.Pos.Seq, p.err)
			}
			l.failed = p.err
		} else {
			l.last = p.Pos
		}
		close(p.done)
	}
}

// fail makes err sticky: every later Append and unfinished Commit fails with it.
func (l *Log) fail(err error) {
	l.mu.Lock()
	if l.failed == nil {
		l.failed = err
		if !errors.Is(err, ErrClosed) {
			l.log.Error("WAL stopped: this writer can no longer append", "err", err, "epoch", l.epoch)
		}
	}
	l.mu.Unlock()
}

// Failed returns the sticky error that stopped the log, or nil.
func (l *Log) Failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// Last is the newest record known durable with all its predecessors.
func (l *Log) Last() Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// SetBase records in the head that the checkpoint named checkpoint covers
// every record up to base. After it succeeds the caller may remove those
// records. It fails with ErrFenced if a newer writer has claimed the head.
func (l *Log) SetBase(ctx context.Context, base Position, checkpoint string) error {
	l.headMu.Lock()
	h := l.head
	h.Base, h.Checkpoint = base, checkpoint
	etag, err := l.main.PutIfMatch(ctx, HeadKey, h.encode(), l.headETag)
	if err == nil {
		l.head, l.headETag = h, etag
	}
	l.headMu.Unlock()
	if errors.Is(err, store.ErrPrecondition) || errors.Is(err, store.ErrNotFound) {
		// Only a claim rewrites the head besides us.
		l.fail(ErrFenced)
		return fmt.Errorf("update head in %s: %w", l.main, ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("update head in %s: %w", l.main, err)
	}
	return nil
}

// Seqs lists the sequence numbers of the records in the store.
func (l *Log) Seqs(ctx context.Context) ([]uint64, error) {
	infos, err := l.records.List(ctx, "wal/")
	if err != nil {
		return nil, fmt.Errorf("list WAL records in %s: %w", l.records, err)
	}
	seqs := make([]uint64, 0, len(infos))
	for _, in := range infos {
		if seq, ok := parseKey(in.Key); ok {
			seqs = append(seqs, seq)
		}
	}
	return seqs, nil
}

// Delete removes record seq, which the checkpoint in the head must cover.
func (l *Log) Delete(ctx context.Context, seq uint64) error {
	if base := l.Head().Base.Seq; seq > base {
		return fmt.Errorf("wal: refusing to delete record %d beyond the checkpoint at %d", seq, base)
	}
	if err := l.records.Delete(ctx, Key(seq)); err != nil {
		return fmt.Errorf("delete WAL record %d: %w", seq, err)
	}
	return nil
}

// Close stops the log: writes in flight are abandoned (their Commits fail with
// ErrClosed unless they already landed) and Close waits for their goroutines.
// It does not wait for anything to become durable; callers flush first.
func (l *Log) Close() error {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	l.fail(ErrClosed)
	return nil
}

func randomID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("wal: random id: %v", err))
	}
	return binary.LittleEndian.Uint64(b[:])
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(mrand.Int64N(int64(d)/2+1))
}

// sleep waits d unless one of the contexts ends first; it reports whether it slept the whole time.
func sleep(a, b context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.Done():
		return false
	case <-b.Done():
		return false
	}
}
