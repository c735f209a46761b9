//go:build linux

package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/internal/testutil"
	"zerofs/store"
)

// The crash test runs the server in a separate process (this test binary,
// re-executed with crashServerEnv set), writes through NBD, SIGKILLs the
// server at a random moment, restarts it, and checks what survived:
//
//   - everything acknowledged by a FLUSH or a FUA write is there;
//   - the export holds exactly the effect of a prefix of the writes, in
//     order (DESIGN.md rule 2): never a torn request, never garbage.
//
// Writes go one at a time, so request order is commit order and the prefix
// is well defined. Each 4 KiB block written carries the id of the write and
// its block number, so the surviving prefix can be read off the image.

const (
	crashServerEnv = "ZEROFS_NBD_CRASH_SERVER" // data dir of the child server
	crashSeedEnv   = "ZEROFS_NBD_CRASH_SEED"   // reproduce a failing run
	crashExport    = "disk"
	crashBlock     = 4096
	crashBlocks    = 4096 // a 16 MiB export
	crashSize      = crashBlock * crashBlocks
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashServerEnv); dir != "" {
		os.Exit(runCrashServer(dir))
	}
	os.Exit(m.Run())
}

// runCrashServer is the child: it opens the filesystem on a file:// store
// with local state under dir, serves NBD on a free port, prints
// "LISTENING addr" and serves until killed.
func runCrashServer(dir string) int {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := store.Open(ctx, "file://"+filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open store:", err)
		return 1
	}
	f, err := fs.Open(ctx, fs.Options{
		Main: st, Dir: filepath.Join(dir, "state"), Password: "crash test", KeyParams: crypt.TestParams,
		ChunkSize: 64 << 10, BatchAge: 50 * time.Millisecond, CheckpointInterval: -1, GCInterval: -1,
		Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open fs:", err)
		return 1
	}
	if err := CreateExport(ctx, f, crashExport, crashSize); err != nil && !errors.Is(err, fs.ErrExist) {
		fmt.Fprintln(os.Stderr, "create export:", err)
		return 1
	}
	// The kill left the export interrupted (fs/marks.go) if it had
	// unflushed writes; the test reads what survived, so it is cleared,
	// and the parent told.
	interrupted := false
	list, err := ListExports(ctx, f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "list exports:", err)
		return 1
	}
	for _, e := range list {
		if e.Interrupted {
			interrupted = true
			if err := ClearExport(ctx, f, e.Name); err != nil {
				fmt.Fprintln(os.Stderr, "clear export:", err)
				return 1
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	fmt.Printf("LISTENING %s %v\n", ln.Addr(), interrupted)
	if err := NewServer(f, Options{Logger: log}).Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

// crashChild is a running server process.
type crashChild struct {
	*testutil.Proc
	addr        string
	interrupted bool // the export was interrupted at start (and cleared)
}

// startCrashChild starts a server process on dir and waits until it listens.
func startCrashChild(t *testing.T, dir string) *crashChild {
	t.Helper()
	p := testutil.Child{Env: []string{crashServerEnv + "=" + dir}}.Start(t) // TestMain serves
	line, err := p.WaitLine(2*time.Minute, func(l string) bool { return strings.HasPrefix(l, "LISTENING ") })
	if err != nil {
		t.Fatalf("server process did not start: %v\n%s", err, p.Output())
	}
	addr, interrupted, _ := strings.Cut(strings.TrimPrefix(line, "LISTENING "), " ")
	return &crashChild{Proc: p, addr: addr, interrupted: interrupted == "true"}
}

// kill SIGKILLs the server and reaps it; safe to call from several
// goroutines (the kill timer and the test) and more than once.
func (c *crashChild) kill() { c.Kill() }

// crashBlockData is block b's content as written by write id.
func crashBlockData(id uint64, b int) []byte {
	p := make([]byte, crashBlock)
	binary.BigEndian.PutUint64(p, id)
	binary.BigEndian.PutUint64(p[8:], uint64(b))
	r := rand.New(rand.NewPCG(id, uint64(b)))
	for i := 16; i < len(p); i += 8 {
		binary.BigEndian.PutUint64(p[i:], r.Uint64())
	}
	return p
}

type crashWrite struct {
	id            uint64
	first, blocks int
}

func TestCrashDurability(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()

	owner := make([]uint64, crashBlocks) // the model: which write each block shows
	nextID := uint64(1)
	const rounds = 5
	for round := range rounds {
		child := startCrashChild(t, dir)
		// What survived the previous crash must be exactly the model.
		verifyCrashImage(t, child.addr, owner, round)

		c, err := dialClient(child.addr, crashExport, clientOptions{})
		if err != nil {
			t.Fatalf("round %d: connect: %v\n%s", round, err, child.Output())
		}
		killAfter := time.Duration(100+rng.IntN(500)) * time.Millisecond
		timer := time.AfterFunc(killAfter, child.kill)

		var sent []crashWrite // writes sent this round, in order
		durable := 0          // sent[:durable] are known durable
		plain := false        // a write without FUA was acknowledged
		for i := 0; ; i++ {
			w := crashWrite{id: nextID, blocks: 1 + rng.IntN(40)}
			w.first = rng.IntN(crashBlocks - w.blocks + 1)
			nextID++
			payload := make([]byte, 0, w.blocks*crashBlock)
			for b := w.first; b < w.first+w.blocks; b++ {
				payload = append(payload, crashBlockData(w.id, b)...)
			}
			var flags uint16
			fua := rng.IntN(20) == 0
			if fua {
				flags = cmdFlagFUA
			}
			sent = append(sent, w)
			if err := c.Write(uint64(w.first)*crashBlock, payload, flags); err != nil {
				break // killed
			}
			if fua {
				durable = len(sent)
			} else {
				plain = true
			}
			if i%16 == 15 {
				n := len(sent)
				if err := c.Flush(); err != nil {
					break
				}
				durable = n
			}
		}
		timer.Stop()
		child.kill()
		c.Close()

		// The image after restart must be the model plus a prefix of sent
		// at least durable long.
		child = startCrashChild(t, dir)
		// A kill within a second of acknowledged plain writes leaves the
		// export interrupted (fs/marks.go): its mark goes only after 10
		// quiet seconds.
		if plain && !child.interrupted {
			t.Fatalf("round %d: killed with plain writes acknowledged, but the export was not interrupted", round)
		}
		img := readCrashImage(t, child.addr)
		k, err := matchPrefix(img, owner, sent)
		if err != nil {
			t.Fatalf("round %d: after the crash: %v", round, err)
		}
		if k < durable {
			t.Fatalf("round %d: only %d of %d writes survived, but %d were acknowledged durable (FLUSH/FUA)", round, k, len(sent), durable)
		}
		t.Logf("round %d: killed after %v: %d writes sent, %d acknowledged durable, %d survived", round, killAfter, len(sent), durable, k)
		for _, w := range sent[:k] {
			for b := w.first; b < w.first+w.blocks; b++ {
				owner[b] = w.id
			}
		}
		child.kill()
	}
}

// readCrashImage reads the whole export.
func readCrashImage(t *testing.T, addr string) []byte {
	t.Helper()
	c, err := dialClient(addr, crashExport, clientOptions{structured: true})
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer c.Close()
	img := make([]byte, 0, crashSize)
	for off := uint64(0); off < crashSize; off += 1 << 20 {
		p, err := c.Read(off, 1<<20)
		if err != nil {
			t.Fatalf("read after restart at %d: %v", off, err)
		}
		img = append(img, p...)
	}
	return img
}

func verifyCrashImage(t *testing.T, addr string, owner []uint64, round int) {
	t.Helper()
	img := readCrashImage(t, addr)
	if _, err := matchPrefix(img, owner, nil); err != nil {
		t.Fatalf("round %d: at restart: %v", round, err)
	}
}

// matchPrefix finds k such that img is owner with sent[:k] applied, or
// explains why no k fits. Each block must be intact (exactly some write's
// content for it); the newest write seen anywhere fixes k, and then every
// block must show what the prefix implies.
func matchPrefix(img []byte, owner []uint64, sent []crashWrite) (int, error) {
	seen := make([]uint64, crashBlocks)
	for b := range crashBlocks {
		p := img[b*crashBlock : (b+1)*crashBlock]
		if isZero(p) {
			continue
		}
		id := binary.BigEndian.Uint64(p)
		if !bytes.Equal(p, crashBlockData(id, b)) {
			return 0, fmt.Errorf("block %d is garbage or torn (claims write %d)", b, id)
		}
		seen[b] = id
	}
	k := 0
	for i, w := range sent {
		for b := w.first; b < w.first+w.blocks; b++ {
			if seen[b] == w.id {
				k = i + 1
			}
		}
	}
	want := append([]uint64(nil), owner...)
	for _, w := range sent[:k] {
		for b := w.first; b < w.first+w.blocks; b++ {
			want[b] = w.id
		}
	}
	for b := range crashBlocks {
		if seen[b] != want[b] {
			return k, fmt.Errorf("not a prefix of the writes: the newest surviving write is #%d of this round, but block %d shows write %d instead of %d (a torn or reordered request)", k, b, seen[b], want[b])
		}
	}
	return k, nil
}
