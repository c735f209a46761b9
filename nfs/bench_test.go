package nfs

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks through the wire, for bench/nfs.sh (make bench). By default
// they run against an in-process server on an in-memory store; with
// ZEROFS_NFS_BENCH_NFS=host:port they run against any NFSv3 server (zerofs
// in another process, or nfs-ganesha as the baseline):
//
//	ZEROFS_NFS_BENCH_NFS     NFS address
//	ZEROFS_NFS_BENCH_MOUNT   MOUNT address (default: the NFS address)
//	ZEROFS_NFS_BENCH_EXPORT  export path (default "/")
//
// Files go in "zerofs-bench" under the export. Sequential I/O uses 1 MiB
// requests with 8 in flight (what a kernel client's readahead and write-back
// keep going), random I/O 4 KiB requests with 32 in flight; metadata runs one
// operation at a time (latency-bound, as tar or cp -r are). Writes are
// UNSTABLE followed by one COMMIT, as a client writes a file and closes it.

const (
	benchSeqFile  = 1 << 30
	benchSeqQD    = 8
	benchRandQD   = 32
	benchBlockSeq = 1 << 20
	benchBlockRnd = 4096
)

// benchConn connects to the target and returns a client and the benchmark
// directory's handle.
func benchConn(b *testing.B) (*nfsClient, []byte) {
	b.Helper()
	addr := os.Getenv("ZEROFS_NFS_BENCH_NFS")
	if addr == "" {
		f := newFixture(b, Options{})
		c := f.client(0, 0)
		return c, c.mustMkdir(c.root, "zerofs-bench")
	}
	mountAddr := os.Getenv("ZEROFS_NFS_BENCH_MOUNT")
	if mountAddr == "" {
		mountAddr = addr
	}
	export := os.Getenv("ZEROFS_NFS_BENCH_EXPORT")
	if export == "" {
		export = "/"
	}
	mc, err := dialRPC(mountAddr)
	if err != nil {
		b.Fatal(err)
	}
	st, root, _, err := mc.mount(export)
	mc.Close()
	if err != nil || st != mnt3OK {
		b.Fatalf("MNT %s at %s: %v %v", export, mountAddr, st, err)
	}
	rc, err := dialRPC(addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rc.Close() })
	c := &nfsClient{t: b, rpcClient: rc, root: root}
	st2, dir, _ := c.lookup(root, "zerofs-bench")
	if st2 == StatusNoEnt {
		dir = c.mustMkdir(root, "zerofs-bench")
	} else if st2 != StatusOK {
		b.Fatalf("LOOKUP zerofs-bench: %v", st2)
	}
	return c, dir
}

// runQD runs op(i) for i in [0, n) on qd goroutines sharing the
// connection (requests pipelined, replies matched by xid).
func runQD(b *testing.B, n, qd int, op func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < qd; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := op(int(i)); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// Non-fatal procedure calls for benchmark goroutines.

func (c *nfsClient) benchWrite(fh []byte, off uint64, data []byte, stable uint32) error {
	r, err := c.call(progNFS, 7, encodeWrite(fh, off, data, stable).b)
	if err != nil {
		return err
	}
	if st := status(r); st != StatusOK {
		return fmt.Errorf("WRITE at %d: %v", off, st)
	}
	return nil
}

func (c *nfsClient) benchRead(fh []byte, off uint64, count uint32) error {
	var w xdrWriter
	w.opaque(fh)
	w.uint64(off)
	w.uint32(count)
	r, err := c.call(progNFS, 6, w.b)
	if err != nil {
		return err
	}
	if st := status(r); st != StatusOK {
		return fmt.Errorf("READ at %d: %v", off, st)
	}
	readPostOp(r)
	if n := r.uint32(); n != count || r.err != nil {
		return fmt.Errorf("READ at %d: %d bytes, want %d", off, n, count)
	}
	return nil
}

func (c *nfsClient) benchCommit(fh []byte) error {
	var w xdrWriter
	w.opaque(fh)
	w.uint64(0)
	w.uint32(0)
	r, err := c.call(progNFS, 21, w.b)
	if err != nil {
		return err
	}
	if st := status(r); st != StatusOK {
		return fmt.Errorf("COMMIT: %v", st)
	}
	return nil
}

// seqFile returns the handle of the benchmark's 1 GiB file, writing it
// first (outside the timing) if it is missing or short. In-process, the file
// is as large as the benchmark needs, up to 1 GiB.
func seqFile(b *testing.B, c *nfsClient, dir []byte, need int) []byte {
	b.Helper()
	size := uint64(benchSeqFile)
	if os.Getenv("ZEROFS_NFS_BENCH_NFS") == "" {
		size = uint64(min(max(need, 64<<20), benchSeqFile))
	}
	st, fh, a := c.lookup(dir, "seq.bin")
	if st == StatusOK && a.size >= size {
		return fh
	}
	if st != StatusOK {
		fh = c.mustCreate(dir, "seq.bin")
	}
	data := benchData(benchBlockSeq)
	blocks := int(size / benchBlockSeq)
	runQD(b, blocks, benchSeqQD, func(i int) error {
		return c.benchWrite(fh, uint64(i)*benchBlockSeq, data, unstable)
	})
	if err := c.benchCommit(fh); err != nil {
		b.Fatal(err)
	}
	return fh
}

func benchData(n int) []byte {
	p := make([]byte, n)
	mrand.NewChaCha8([32]byte{7}).Read(p) // incompressible, like most stored data
	return p
}

func BenchmarkNFSSeqWrite1M(b *testing.B) {
	c, dir := benchConn(b)
	// The file the read benchmarks then use, if this wrote all of it.
	st, res := c.create(dir, "seq.bin", createUnchecked, sattrIn{mode: u32(0o644)}, 0)
	if st != StatusOK {
		b.Fatal(st)
	}
	fh := res.fh
	data := benchData(benchBlockSeq)
	b.SetBytes(benchBlockSeq)
	b.ResetTimer()
	runQD(b, b.N, benchSeqQD, func(i int) error {
		return c.benchWrite(fh, uint64(i%(benchSeqFile/benchBlockSeq))*benchBlockSeq, data, unstable)
	})
	if err := c.benchCommit(fh); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkNFSSeqRead1M(b *testing.B) {
	c, dir := benchConn(b)
	fh := seqFile(b, c, dir, b.N*benchBlockSeq)
	_, a := c.getattr(fh)
	blocks := int(a.size / benchBlockSeq)
	b.SetBytes(benchBlockSeq)
	b.ResetTimer()
	runQD(b, b.N, benchSeqQD, func(i int) error {
		return c.benchRead(fh, uint64(i%blocks)*benchBlockSeq, benchBlockSeq)
	})
}

func BenchmarkNFSRandRead4K(b *testing.B) {
	c, dir := benchConn(b)
	fh := seqFile(b, c, dir, 0)
	_, a := c.getattr(fh)
	blocks := a.size / benchBlockRnd
	b.SetBytes(benchBlockRnd)
	start := time.Now()
	b.ResetTimer()
	runQD(b, b.N, benchRandQD, func(i int) error {
		return c.benchRead(fh, mrand.Uint64N(blocks)*benchBlockRnd, benchBlockRnd)
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
}

func BenchmarkNFSRandWrite4K(b *testing.B) {
	c, dir := benchConn(b)
	fh := seqFile(b, c, dir, 0)
	_, a := c.getattr(fh)
	blocks := a.size / benchBlockRnd
	data := benchData(benchBlockRnd)
	b.SetBytes(benchBlockRnd)
	start := time.Now()
	b.ResetTimer()
	runQD(b, b.N, benchRandQD, func(i int) error {
		return c.benchWrite(fh, mrand.Uint64N(blocks)*benchBlockRnd, data, unstable)
	})
	if err := c.benchCommit(fh); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
}

// BenchmarkNFSSmallFiles creates, stats (LOOKUP then GETATTR, as stat(2)
// on a cold client) and removes small files, one operation at a time.
func BenchmarkNFSSmallFiles(b *testing.B) {
	c, parent := benchConn(b)
	name := fmt.Sprintf("small-%d", time.Now().UnixNano())
	dir := c.mustMkdir(parent, name)
	created := 0
	create := func(i int) error {
		var w xdrWriter
		w.opaque(dir)
		w.string(fmt.Sprintf("f%06d", i))
		w.uint32(createGuarded)
		sattrIn{mode: u32(0o644)}.encode(&w)
		r, err := c.call(progNFS, 8, w.b)
		if err != nil {
			return err
		}
		if st := status(r); st != StatusOK {
			return fmt.Errorf("CREATE: %v", st)
		}
		return nil
	}
	b.Run("create", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := create(created + i); err != nil {
				b.Fatal(err)
			}
		}
		created += b.N
	})
	b.Run("stat", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			st, fh, _ := c.lookup(dir, fmt.Sprintf("f%06d", i%created))
			if st != StatusOK {
				b.Fatalf("LOOKUP: %v", st)
			}
			if st, _ := c.getattr(fh); st != StatusOK {
				b.Fatalf("GETATTR: %v", st)
			}
		}
	})
	b.Run("remove", func(b *testing.B) {
		for created < b.N {
			if err := create(created); err != nil {
				b.Fatal(err)
			}
			created++
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if st := c.remove(dir, fmt.Sprintf("f%06d", i)); st != StatusOK {
				b.Fatalf("REMOVE: %v", st)
			}
		}
		b.StopTimer()
		// Whatever a ramp-up left behind.
		for i := b.N; i < created; i++ {
			c.remove(dir, fmt.Sprintf("f%06d", i))
		}
		created = 0
	})
	c.rmdir(parent, name)
}
