package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/frame"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// The real-process crash test. A child process (this test binary, re-executed
// with -test.run=^TestCrashChildProcess$) opens the filesystem on a file://
// store, writes, punches and truncates three files at random, and flushes
// every few operations. The parent kills it with SIGKILL at a random moment,
// opens the filesystem itself and checks what survived, then starts the next
// child on the same store and state directory.
//
// The protocol between them, so that the parent knows exactly what the child
// did and what it was promised:
//
//   - Before issuing an operation the child appends one line describing it to
//     a journal file and fsyncs it. Write contents are a pure function of the
//     line (a seed in it), so the parent can recompute them.
//   - After each successful Flush it prints "flushed <n>" on stdout: journal
//     entries 0..n-1 are durable.
//
// After the kill the parent computes the expected contents from the journal.
// Everything up to the last "flushed" line must be there. Entries after it
// may or may not have survived, but the recovered state must be an atomic
// prefix: the state after some entry k >= the acknowledged count. This is
// stronger than "every later write is either fully present or fully absent"
// (never torn) and implies it; when no prefix matches, the failure report
// classifies each unacknowledged entry as present, absent or torn, and lists
// flushed bytes that were lost. The parent then cuts the journal at the
// recovered k, so the next child continues from the recovered history.
//
// TestCrashCodecFlush, at the end, runs a flush with each compression codec
// in a child process: a panic in the commit pipeline (as LZ4's encoder had)
// kills the whole process, so it must not happen in the binary running the
// other tests.
//
// Replay with ZEROFS_CRASH_SEED=<seed> (the kill moments are timing
// dependent, so a replay repeats the operations, not necessarily the crash
// points); ZEROFS_CRASH_ROUNDS=<n> runs more or fewer rounds.

// Environment of the child process.
const (
	crashChildEnv     = "ZEROFS_CRASH_CHILD"   // "1": this process is the child
	crashStoreEnv     = "ZEROFS_CRASH_STORE"   // the file:// URL of the store
	crashDirEnv       = "ZEROFS_CRASH_DIR"     // the local state directory
	crashJournalEnv   = "ZEROFS_CRASH_JOURNAL" // the journal file
	crashChildSeedEnv = "ZEROFS_CRASH_CHILD_SEED"
	crashCodecsEnv    = "ZEROFS_CRASH_CODECS" // codecs the child may compress with, e.g. "none,zstd"
)

// crashFiles are the files the child works on, with the bound on their size.
var crashFiles = []struct {
	name string
	max  uint64
}{
	{"big", 8 << 20},
	{"mid", 1 << 20},
	{"small", 64 << 10}, // small: most writes overlap earlier ones
}

const crashDirName = "crash"

// crashOp is one journal entry.
type crashOp struct {
	idx  int
	kind byte // 'w' random bytes, 'r' repetitive bytes, 'z' zeros, 'p' punch, 't' truncate
	file int
	off  uint64 // 't': the new size
	n    uint64
	seed uint64 // write contents
}

func (o crashOp) line() string {
	return fmt.Sprintf("%d %c %d %d %d %d\n", o.idx, o.kind, o.file, o.off, o.n, o.seed)
}

func (o crashOp) String() string {
	name := crashFiles[o.file].name
	switch o.kind {
	case 'p':
		return fmt.Sprintf("#%d punch %s [%d,+%d)", o.idx, name, o.off, o.n)
	case 't':
		return fmt.Sprintf("#%d truncate %s to %d", o.idx, name, o.off)
	}
	return fmt.Sprintf("#%d write(%c) %s [%d,+%d) seed %d", o.idx, o.kind, name, o.off, o.n, o.seed)
}

func parseCrashOp(s string) (crashOp, error) {
	var o crashOp
	var kind string
	if _, err := fmt.Sscanf(s, "%d %s %d %d %d %d", &o.idx, &kind, &o.file, &o.off, &o.n, &o.seed); err != nil {
		return o, fmt.Errorf("journal line %q: %w", s, err)
	}
	if len(kind) != 1 || !strings.Contains("wrzpt", kind) || o.file < 0 || o.file >= len(crashFiles) {
		return o, fmt.Errorf("journal line %q: bad entry", s)
	}
	o.kind = kind[0]
	return o, nil
}

// data returns a write's contents: a function of the entry alone.
func (o crashOp) data() []byte {
	p := make([]byte, o.n)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], o.seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(o.idx))
	binary.LittleEndian.PutUint64(key[16:], o.off)
	key[24] = byte(o.file)
	c := rand.NewChaCha8(key)
	switch o.kind {
	case 'w':
		c.Read(p)
	case 'r': // compressible: a short pattern repeated
		pat := make([]byte, 1+o.seed%61)
		c.Read(pat)
		for i := range p {
			p[i] = pat[i%len(pat)]
		}
	}
	return p
}

// apply applies o to the model: files[i] is file i's contents (its length is
// the file size).
func (o crashOp) apply(files [][]byte) {
	b := files[o.file]
	switch o.kind {
	case 'w', 'r', 'z':
		if end := int(o.off + o.n); end > len(b) {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[o.off:], o.data())
	case 'p':
		if end := min(uint64(len(b)), o.off+o.n); o.off < end {
			clear(b[o.off:end])
		}
	case 't':
		if int(o.off) <= len(b) {
			b = b[:o.off]
		} else {
			b = append(b, make([]byte, int(o.off)-len(b))...)
		}
	}
	files[o.file] = b
}

// touched returns the byte range of its file o may change, given the file's
// size before it.
func (o crashOp) touched(size uint64) (lo, hi uint64) {
	switch o.kind {
	case 'p':
		return o.off, max(o.off, min(size, o.off+o.n))
	case 't':
		return min(size, o.off), max(size, o.off)
	}
	return o.off, o.off + o.n
}

// genCrashOp picks the next operation.
func genCrashOp(r *rand.Rand, idx int) crashOp {
	o := crashOp{idx: idx, file: r.IntN(len(crashFiles)), seed: r.Uint64()}
	limit := crashFiles[o.file].max
	const cs = 4096
	switch x := r.IntN(100); {
	case x < 75:
		o.kind = 'w'
		if x >= 60 {
			o.kind = 'r'
		}
		if x >= 70 {
			o.kind = 'z'
		}
		switch r.IntN(4) {
		case 0:
			o.n = 1 + r.Uint64N(64)
		case 1:
			o.n = 1 + r.Uint64N(cs)
		case 2: // chunk aligned
			o.n = cs * (1 + r.Uint64N(64))
		default:
			o.n = 1 + r.Uint64N(256<<10)
		}
		o.n = min(o.n, limit)
		o.off = r.Uint64N(limit - o.n + 1)
		if r.IntN(3) == 0 {
			o.off &^= cs - 1
		}
	case x < 90:
		o.kind = 'p'
		switch r.IntN(3) {
		case 0:
			o.n = 1 + r.Uint64N(cs)
		case 1:
			o.n = 1 + r.Uint64N(512<<10)
		default: // whole chunks, possibly to the end
			o.n = cs * (1 + r.Uint64N(limit/cs))
		}
		o.off = r.Uint64N(limit)
		if r.IntN(2) == 0 {
			o.off &^= cs - 1
		}
	default:
		o.kind = 't'
		switch r.IntN(3) {
		case 0:
			o.off = r.Uint64N(limit/8 + 1) // shrink a lot
		case 1:
			o.off = r.Uint64N(limit + 1)
		default:
			o.off = limit - r.Uint64N(limit/8+1) // grow: a hole at the end
		}
	}
	return o
}

// readCrashJournal reads the journal's complete entries. A last line without
// its newline is a write the kill interrupted: its operation was never issued.
func readCrashJournal(path string) ([]crashOp, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 != len(data) {
		data = data[:i+1]
	}
	var ops []crashOp
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if l == "" {
			continue
		}
		o, err := parseCrashOp(l)
		if err != nil {
			return nil, err
		}
		if o.idx != len(ops) {
			return nil, fmt.Errorf("journal entry %d has index %d", len(ops), o.idx)
		}
		ops = append(ops, o)
	}
	return ops, nil
}

func writeCrashJournal(path string, ops []crashOp) error {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString(o.line())
	}
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, []byte(b.String())); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// TestCrashChildProcess is the child of TestCrashProcessKill; on its own it
// does nothing.
func TestCrashChildProcess(t *testing.T) {
	switch os.Getenv(crashChildEnv) {
	case "1":
		crashChild(t)
	case "codec":
		crashCodecChild(t)
	default:
		t.Skip("helper process of TestCrashProcessKill and TestCrashCodecFlush")
	}
}

// crashCodecs returns the codecs whose encoder works. A codec whose Encode
// panics would kill the child in the sealer, long before any crash point of
// interest, so the crash rounds leave it out; TestCrashCodecFlush fails for
// it instead.
func crashCodecs(t *testing.T) []frame.Codec {
	k, err := crypt.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var ok []frame.Codec
	for _, c := range []frame.Codec{frame.None, frame.Zstd, frame.LZ4} {
		coder, err := frame.NewCoder(k, c)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Logf("codec %v: Encode panics (%v): not used in the crash rounds; see TestCrashCodecFlush", c, p)
				}
			}()
			coder.Encode(nil, bytes.Repeat([]byte("probe"), 100), frame.ID{Frame: 1})
			ok = append(ok, c)
		}()
	}
	return ok
}

func crashChild(t *testing.T) {
	ctx := context.Background()
	testutil.ExitWithParent()
	seed, err := strconv.ParseUint(os.Getenv(crashChildSeedEnv), 10, 64)
	if err != nil {
		t.Fatalf("child seed: %v", err)
	}
	r := rand.New(rand.NewPCG(seed, 0xc0ffee))
	st, err := store.Open(ctx, os.Getenv(crashStoreEnv), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t, st, os.Getenv(crashDirEnv))
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var codecs []frame.Codec
	for _, name := range strings.Split(os.Getenv(crashCodecsEnv), ",") {
		c, err := frame.ParseCodec(name)
		if err != nil {
			t.Fatalf("child: %s: %v", crashCodecsEnv, err)
		}
		codecs = append(codecs, c)
	}
	opts.Compression = codecs[r.IntN(len(codecs))]
	opts.BatchAge = time.Duration(5+r.IntN(60)) * time.Millisecond // background seals between flushes
	opts.BatchBytes = int64(64<<10) << r.IntN(4)
	if r.IntN(2) == 0 {
		// Checkpoints and GC passes in the background, so kills land in
		// them too.
		opts.CheckpointInterval = time.Duration(30+r.IntN(200)) * time.Millisecond
		opts.GCInterval = time.Duration(30+r.IntN(200)) * time.Millisecond
	}
	f, err := Open(ctx, opts)
	if err != nil {
		t.Fatalf("child: open: %v", err)
	}
	defer f.Close()

	dir, err := f.Lookup(ctx, Root, RootIno, crashDirName)
	if errors.Is(err, ErrNotExist) {
		dir, _, err = f.Create(ctx, Root, RootIno, crashDirName, NewNode{Mode: TypeDir | 0o755})
	}
	if err != nil {
		t.Fatalf("child: directory: %v", err)
	}
	inos := make([]uint64, len(crashFiles))
	for i, cf := range crashFiles {
		n, _, err := f.Create(ctx, Root, dir.Ino, cf.name, NewNode{Mode: TypeRegular | 0o644})
		if err != nil {
			t.Fatalf("child: create %s: %v", cf.name, err)
		}
		inos[i] = n.Ino
	}
	// The files exist durably before any journal entry names them.
	if err := f.Flush(ctx); err != nil {
		t.Fatalf("child: flush: %v", err)
	}

	jpath := os.Getenv(crashJournalEnv)
	ops, err := readCrashJournal(jpath)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	jf, err := os.OpenFile(jpath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer jf.Close()
	next := len(ops)
	fmt.Printf("ready %d\n", next)

	deadline := time.Now().Add(60 * time.Second) // the parent kills us long before
	for time.Now().Before(deadline) {
		for range 1 + r.IntN(8) {
			o := genCrashOp(r, next)
			if _, err := jf.WriteString(o.line()); err != nil {
				t.Fatalf("child: journal: %v", err)
			}
			if err := jf.Sync(); err != nil {
				t.Fatalf("child: journal: %v", err)
			}
			next++
			ino := inos[o.file]
			switch o.kind {
			case 'w', 'r', 'z':
				_, err = f.Write(ctx, Root, ino, o.off, o.data())
			case 'p':
				err = f.Punch(ctx, Root, ino, o.off, o.n)
			case 't':
				size := o.off
				_, _, err = f.SetAttr(ctx, Root, ino, SetAttrs{Size: &size})
			}
			if err != nil {
				t.Fatalf("child: %v: %v", o, err)
			}
		}
		if err := f.Flush(ctx); err != nil {
			t.Fatalf("child: flush: %v", err)
		}
		fmt.Printf("flushed %d\n", next)
	}
}

// crashAcked returns the count of journal entries the child has
// acknowledged durable (its last "flushed" line), -1 before the first.
func crashAcked(c *testutil.Proc) int {
	l, ok := c.LastLine(crashFlushedLine)
	if !ok {
		return -1
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(l, "flushed "))
	return n
}

func crashFlushedLine(l string) bool {
	s, ok := strings.CutPrefix(l, "flushed ")
	_, err := strconv.Atoi(s)
	return ok && err == nil
}

func crashReadyLine(l string) bool { return strings.HasPrefix(l, "ready ") }

func TestCrashProcessKill(t *testing.T) {
	if os.Getenv(crashChildEnv) == "1" {
		t.Skip("in the child")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ZEROFS_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("ZEROFS_CRASH_SEED: %v", err)
		}
	}
	rounds := 8
	if testing.Short() {
		rounds = 4
	}
	if s := os.Getenv("ZEROFS_CRASH_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil {
			t.Fatalf("ZEROFS_CRASH_ROUNDS: %v", err)
		}
	}
	t.Logf("seed %d (replay with ZEROFS_CRASH_SEED=%d)", seed, seed)
	defer func() {
		if t.Failed() {
			t.Logf("failed with seed %d (replay with ZEROFS_CRASH_SEED=%d)", seed, seed)
		}
	}()
	r := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	ctx := context.Background()

	tmp := t.TempDir()
	storeDir := filepath.Join(tmp, "bucket")
	stateDir := filepath.Join(tmp, "state")
	journal := filepath.Join(tmp, "journal")
	storeURL := "file://" + storeDir
	st, err := store.Open(ctx, storeURL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}

	var codecNames []string
	for _, c := range crashCodecs(t) {
		codecNames = append(codecNames, c.String())
	}
	var f *FS // the parent's own instance while it checks
	defer func() {
		if f != nil {
			f.crash() // a no-op after Close
		}
	}()

	// The model: the files' contents after the journal's entries, which
	// after each round's check are exactly the recovered history.
	model := make([][]byte, len(crashFiles))
	var ops []crashOp
	freshRound := rounds / 2
	var totalAcked, totalRecovered, totalLost, freshRounds int
	started := time.Now()

	for round := range rounds {
		childSeed := r.Uint64()
		c := testutil.Child{
			Run:  "^TestCrashChildProcess$",
			Args: []string{"-test.timeout=5m"},
			Env: []string{
				crashChildEnv + "=1",
				crashStoreEnv + "=" + storeURL,
				crashDirEnv + "=" + stateDir,
				crashJournalEnv + "=" + journal,
				crashChildSeedEnv + "=" + strconv.FormatUint(childSeed, 10),
				crashCodecsEnv + "=" + strings.Join(codecNames, ","),
			},
		}.Start(t)
		// Kill it at a random moment: counted from its start (it may be
		// still recovering), from when it is ready, or from its first flush.
		mode := r.IntN(3)
		if round == 0 {
			mode = 2
		}
		var wait func(string) bool
		switch mode {
		case 1:
			wait = crashReadyLine
		case 2:
			wait = crashFlushedLine
		}
		if wait != nil {
			// Generous: a loaded machine may take long to start and
			// recover; the kill moment counts from this point.
			if _, err := c.WaitLine(2*time.Minute, wait); err != nil {
				c.Kill()
				t.Fatalf("round %d: %v\n%s", round, err, c.Output())
			}
		}
		delay := time.Duration(50+r.IntN(351)) * time.Millisecond
		select {
		case <-time.After(delay):
		case <-c.Exited():
			t.Fatalf("round %d: child exited (%v)\n%s", round, c.Err(), c.Output())
		}
		if err := c.Kill(); err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, c.Output())
		}

		fresh := round == freshRound || r.IntN(6) == 0
		if fresh {
			// A fresh machine: recover from the bucket alone.
			if err := os.RemoveAll(stateDir); err != nil {
				t.Fatal(err)
			}
			freshRounds++
		}
		journalOps, err := readCrashJournal(journal)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(journalOps) < len(ops) {
			t.Fatalf("round %d: journal shrank from %d to %d entries", round, len(ops), len(journalOps))
		}
		acked := max(crashAcked(c), len(ops)) // what earlier rounds verified is durable too
		if acked > len(journalOps) {
			t.Fatalf("round %d: child acknowledged %d entries, journal has %d", round, acked, len(journalOps))
		}

		f = mustOpen(t, testOptions(t, st, stateDir))
		got := readCrashFiles(t, f, len(journalOps) > 0)
		k, state := matchCrashPrefix(model, journalOps, len(ops), acked, got)
		if k < 0 {
			f.crash()
			t.Fatalf("round %d (fresh machine %v, child seed %d, mode %d, killed %v after): recovered state is not the state after any journal entry from the last acknowledged flush (%d) to the last entry issued (%d)\n%s\nchild output:\n%s",
				round, fresh, childSeed, mode, delay, acked, len(journalOps),
				diagnoseCrash(model, journalOps, len(ops), acked, got), c.Output())
		}
		t.Logf("round %d: mode %d, killed %v after; fresh machine %v; journal %d entries, %d acknowledged, recovered %d",
			round, mode, delay, fresh, len(journalOps), acked, k)
		totalAcked += acked - len(ops)
		totalRecovered += k - len(ops)
		totalLost += len(journalOps) - k

		ops, model = journalOps[:k], state
		if err := writeCrashJournal(journal, ops); err != nil {
			t.Fatal(err)
		}
		if r.IntN(3) == 0 {
			// Pack and checkpoint, so later children overwrite and punch
			// data in segments too.
			if err := f.Compact(ctx); err != nil {
				t.Fatalf("round %d: compact: %v", round, err)
			}
		}
		if r.IntN(2) == 0 {
			if err := f.Close(); err != nil {
				t.Fatalf("round %d: close: %v", round, err)
			}
		} else {
			f.crash()
		}
	}
	if totalAcked == 0 {
		t.Fatalf("no child ever acknowledged a flush: the test checked nothing")
	}
	objects := map[string]int{}
	if infos, err := st.List(ctx, ""); err == nil {
		for _, in := range infos {
			kind, _, _ := strings.Cut(in.Key, "/")
			objects[kind]++
		}
	}
	t.Logf("%d rounds in %v (%d fresh machines): %d entries acknowledged, %d recovered, %d unflushed lost; files now %d, %d, %d bytes; store objects %v",
		rounds, time.Since(started).Round(time.Millisecond), freshRounds, totalAcked, totalRecovered, totalLost,
		len(model[0]), len(model[1]), len(model[2]), objects)
}

// readCrashFiles reads the crash files' contents; missing files (the first
// child died before its creates were flushed) are empty unless must.
func readCrashFiles(t *testing.T, f *FS, must bool) [][]byte {
	t.Helper()
	ctx := context.Background()
	out := make([][]byte, len(crashFiles))
	dir, err := f.Lookup(ctx, Root, RootIno, crashDirName)
	if errors.Is(err, ErrNotExist) && !must {
		return out
	}
	if err != nil {
		t.Fatalf("lookup %s: %v", crashDirName, err)
	}
	ents, _, err := f.ReadDir(ctx, Root, dir.Ino, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > len(crashFiles) {
		t.Fatalf("directory has %d entries: %v", len(ents), ents)
	}
	for i, cf := range crashFiles {
		n, err := f.Lookup(ctx, Root, dir.Ino, cf.name)
		if errors.Is(err, ErrNotExist) && !must {
			continue
		}
		if err != nil {
			t.Fatalf("lookup %s: %v", cf.name, err)
		}
		if !n.IsReg() || n.Nlink != 1 || n.Perm() != 0o644 {
			t.Fatalf("%s: mode %o nlink %d", cf.name, n.Mode, n.Nlink)
		}
		if n.Size > cf.max {
			t.Fatalf("%s: size %d beyond the %d any operation makes", cf.name, n.Size, cf.max)
		}
		buf := make([]byte, n.Size)
		for off := 0; off < len(buf); {
			m, eof, err := f.Read(ctx, Root, n.Ino, uint64(off), buf[off:min(len(buf), off+1<<20)])
			if err != nil {
				t.Fatalf("read %s at %d: %v", cf.name, off, err)
			}
			off += m
			if eof && off < len(buf) {
				t.Fatalf("read %s: end of file at %d, size %d", cf.name, off, n.Size)
			}
		}
		out[i] = buf
	}
	return out
}

func crashCloneFiles(files [][]byte) [][]byte {
	out := make([][]byte, len(files))
	for i, b := range files {
		out[i] = bytes.Clone(b)
		if out[i] == nil {
			out[i] = []byte{}
		}
	}
	return out
}

func crashEqualFiles(a, b [][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// matchCrashPrefix finds the largest k in [acked, len(ops)] such that the
// files after ops[:k] equal got; base is the state after ops[:from]. It
// returns -1 if there is none.
func matchCrashPrefix(base [][]byte, ops []crashOp, from, acked int, got [][]byte) (int, [][]byte) {
	m := crashCloneFiles(base)
	for _, o := range ops[from:acked] {
		o.apply(m)
	}
	k, state := -1, [][]byte(nil)
	for i := acked; ; i++ {
		if crashEqualFiles(m, got) {
			k, state = i, crashCloneFiles(m)
		}
		if i == len(ops) {
			break
		}
		ops[i].apply(m)
	}
	return k, state
}

// diagnoseCrash explains a recovered state that is no prefix: flushed bytes
// lost (bytes no unacknowledged entry touches that differ from the flushed
// state), and for each unacknowledged entry whether its bytes are present,
// absent or torn.
func diagnoseCrash(base [][]byte, ops []crashOp, from, acked int, got [][]byte) string {
	var b strings.Builder
	m := crashCloneFiles(base)
	for _, o := range ops[from:acked] {
		o.apply(m)
	}
	type span struct{ lo, hi uint64 }
	touched := make([][]span, len(m))
	sizes := make([]uint64, len(m))
	for i := range m {
		sizes[i] = uint64(len(m[i]))
	}
	for _, o := range ops[acked:] {
		lo, hi := o.touched(sizes[o.file])
		touched[o.file] = append(touched[o.file], span{lo, hi})
		switch o.kind {
		case 't':
			sizes[o.file] = o.off
		case 'w', 'r', 'z':
			sizes[o.file] = max(sizes[o.file], o.off+o.n)
		}
	}
	fmt.Fprintf(&b, "flushed state vs recovered:\n")
	for i := range m {
		fmt.Fprintf(&b, "  %s: flushed size %d, recovered size %d\n", crashFiles[i].name, len(m[i]), len(got[i]))
		shown := 0
		for p := 0; p < len(m[i]) && p < len(got[i]) && shown < 5; p++ {
			if m[i][p] == got[i][p] {
				continue
			}
			in := false
			for _, s := range touched[i] {
				if uint64(p) >= s.lo && uint64(p) < s.hi {
					in = true
					break
				}
			}
			if !in {
				// Show the whole run of lost bytes (bytes that happen to
				// agree inside it do not end it).
				q, last := p, p
				for q < len(m[i]) && q < len(got[i]) && q-last < 64 {
					if m[i][q] != got[i][q] {
						last = q
					}
					q++
				}
				q = last + 1
				fmt.Fprintf(&b, "    FLUSHED BYTES LOST: [%d, %d) (chunks %d..%d) read %x..., flushed %x...\n",
					p, q, p/4096, (q-1)/4096, got[i][p:min(q, p+8)], m[i][p:min(q, p+8)])
				shown++
				p = q
			}
		}
	}
	fmt.Fprintf(&b, "unacknowledged entries (each judged against the state just before it):\n")
	for _, o := range ops[acked:] {
		before := crashCloneFiles(m)
		o.apply(m)
		lo, hi := o.touched(uint64(len(before[o.file])))
		g, bf, af := got[o.file], before[o.file], m[o.file]
		verdict := "no-op"
		if hi > lo {
			present, absent := true, true
			for p := lo; p < hi; p++ {
				var gv, bv, av int = -1, -1, -1 // -1: beyond the end
				if p < uint64(len(g)) {
					gv = int(g[p])
				}
				if p < uint64(len(bf)) {
					bv = int(bf[p])
				}
				if p < uint64(len(af)) {
					av = int(af[p])
				}
				present = present && gv == av
				absent = absent && gv == bv
			}
			switch {
			case present && absent:
				verdict = "indistinguishable"
			case present:
				verdict = "present"
			case absent:
				verdict = "absent"
			default:
				verdict = "TORN or overwritten by a later entry"
			}
		}
		fmt.Fprintf(&b, "  %v: %s\n", o, verdict)
	}
	return b.String()
}

// TestCrashCodecFlush writes and flushes with each compression codec in a
// child process (a panic in the commit pipeline kills the whole process, so
// it must not happen in the test binary running everything else) and reads
// the data back after a restart.
func TestCrashCodecFlush(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	for _, c := range []frame.Codec{frame.None, frame.Zstd, frame.LZ4} {
		t.Run(c.String(), func(t *testing.T) {
			p := testutil.Child{
				Run:  "^TestCrashChildProcess$",
				Args: []string{"-test.v", "-test.timeout=2m"},
				Env:  []string{crashChildEnv + "=codec", crashCodecsEnv + "=" + c.String(), crashDirEnv + "=" + t.TempDir()},
			}.Start(t)
			<-p.Exited()
			if err, out := p.Err(), p.Output(); err != nil || !strings.Contains(out, "codec round trip ok") {
				t.Fatalf("write + flush + reopen with compression %v: child failed (%v):\n%s", c, err, out)
			}
		})
	}
}

func crashCodecChild(t *testing.T) {
	ctx := context.Background()
	c, err := frame.ParseCodec(os.Getenv(crashCodecsEnv))
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewMem()
	opts := testOptions(t, st, os.Getenv(crashDirEnv))
	opts.Compression = c
	f := mustOpen(t, opts)
	n := mustCreate(t, f, RootIno, "file", TypeRegular|0o644)
	text := bytes.Repeat([]byte("zerofs compresses this "), 400) // 9200 bytes: two chunks and a bit
	random := make([]byte, 5000)
	rand.NewChaCha8([32]byte{1}).Read(random)
	mustWrite(t, f, n.Ino, 0, text)
	mustWrite(t, f, n.Ino, 20000, random)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.crash()
	f = mustOpen(t, opts)
	defer f.Close()
	want := append(append(bytes.Clone(text), make([]byte, 20000-len(text))...), random...)
	if got := mustRead(t, f, n.Ino, 0, 30000); !bytes.Equal(got, want) {
		t.Fatalf("compression %v: data differs after reopen", c)
	}
	t.Log("codec round trip ok")
}
