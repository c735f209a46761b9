package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"zerofs/admin"
	"zerofs/config"
	"zerofs/frame"
	"zerofs/fs"
	"zerofs/internal/budget"
	"zerofs/metrics"
	"zerofs/nbd"
	"zerofs/nfs"
	"zerofs/snapsched"
	"zerofs/store"
	"zerofs/store/sched"
)

// memoryOverhead is what the process holds beyond its budgets and memory
// cache: pebble's block cache (128 MiB), the runtime, connection buffers.
const memoryOverhead = 384 << 20

func cmdRun(args []string) error {
	fl := newFlags("run", "run -c FILE")
	cfgPath := fl.String("c", "", "configuration file (zerofs init writes a template)")
	if _, err := parseFlags(fl, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("-c FILE is required (zerofs init zerofs.toml writes a template)")
	}
	// SIGHUP reloads the TLS certificates. It is caught before anything
	// else `zerofs run` does: its default action would end the process
	// without a clean stop (an operator's `systemctl reload` on a server
	// without TLS). Only the Go runtime's start comes before this.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log, hup)
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// processStart is when this process started, near enough: the start-up
// time `zerofs run` reports is measured from it.
var processStart = time.Now()

// serve opens the filesystem, serves it until ctx ends, then stops the
// servers (letting requests in flight finish) and closes the filesystem,
// which flushes everything and writes a checkpoint.
//
// hup delivers SIGHUP: it reloads the NBD certificates.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, hup <-chan os.Signal) error {
	inherited, err := inheritedListeners() // socket activation (activation.go)
	if err != nil {
		return err
	}
	sec, err := loadNBDSecurity(cfg, log)
	if err != nil {
		return err
	}
	warnExposure(cfg, log)
	if strings.Contains(cfg.Storage.EncryptionPassword, "example-insecure") {
		log.Warn("using the example encryption password: set ZEROFS_PASSWORD for anything but a trial")
	}
	m := metrics.New()
	// Every request to a store goes through its scheduler (store/sched): a
	// limit with priority classes, hedged GETs. Below it, the metrics
	// wrapper sees what actually reaches the store, hedges included, and
	// times it without the queueing. A separate WAL store gets a scheduler
	// of its own rather than a share of the main store's limit: it is
	// usually a local directory, whose appends (an fsync each, a client's
	// FLUSH waiting) must not queue behind the bucket's GETs, and its
	// latencies would skew the main store's hedging thresholds.
	schedOpts := sched.Options{MaxRequests: cfg.Storage.MaxRequests, NoHedge: !cfg.Storage.Hedge}
	openStore := func(url, name string) (store.Store, error) {
		st, err := store.Open(ctx, url, storeOptions(cfg))
		if err != nil {
			return nil, err
		}
		s := sched.New(m.Store(st, name), schedOpts)
		m.WatchSched(name, s)
		return s, nil
	}
	main, err := openStore(cfg.Storage.URL, "main")
	if err != nil {
		return err
	}
	if err := store.CheckConditionalWrites(ctx, main); err != nil {
		return fmt.Errorf("[storage] url: %w (see docs/stores.md)", err)
	}
	var walStore store.Store
	if cfg.WAL.URL != "" {
		if walStore, err = openStore(cfg.WAL.URL, "wal"); err != nil {
			return err
		}
		if err := store.CheckConditionalWrites(ctx, walStore); err != nil {
			return fmt.Errorf("[wal] url: %w (see docs/stores.md)", err)
		}
	}
	codec, err := frame.ParseCodec(cfg.Storage.Compression)
	if err != nil {
		return err
	}
	log.Info("opening filesystem", "store", main.String(), "cache_dir", cfg.Cache.Dir)
	f, err := fs.Open(ctx, fs.Options{
		Main: main, WAL: walStore, Password: cfg.Storage.EncryptionPassword,
		Dir: cfg.Cache.Dir, ChunkSize: cfg.Storage.ChunkSizeKB << 10, Compression: codec,
		CacheBytes:         int64(cfg.Cache.MemorySizeGB * (1 << 30)),
		DiskCacheBytes:     int64(cfg.Cache.DiskSizeGB * (1 << 30)),
		ReadAheadBytes:     readAheadBytes(cfg.Cache.ReadAheadMB),
		BatchBytes:         int64(cfg.WAL.BatchSizeMB) << 20,
		BatchAge:           cfg.WAL.FlushInterval.Duration,
		MaxDirtyBytes:      int64(cfg.WAL.MaxDirtyMB) << 20,
		WALInFlight:        cfg.WAL.InFlight,
		CheckpointInterval: cfg.GC.CheckpointInterval.Duration,
		GCInterval:         cfg.GC.Interval.Duration,
		SegmentBytes:       int64(cfg.GC.SegmentSizeMB) << 20,
		Logger:             log,
	})
	if err != nil {
		return err
	}
	m.Watch(f)
	logInterrupted(ctx, f, log)

	// One request budget for both servers: it bounds what all their
	// connections hold between reading a request and applying it.
	requests := budget.New(int64(cfg.WAL.MaxRequestMB) << 20)
	// A soft memory limit from the budgets: without one the Go collector
	// lets the heap grow to twice what is live, and freed request buffers
	// linger as garbage (docs/operations.md, "Memory"). GOMEMLIMIT, if
	// set, wins.
	if os.Getenv("GOMEMLIMIT") == "" {
		memBytes := int64(cfg.Cache.MemorySizeGB * (1 << 30))
		limit := int64(cfg.WAL.MaxDirtyMB)<<20 + int64(cfg.WAL.MaxRequestMB)<<20 +
			memBytes + fs.ReadAheadCap(memBytes, readAheadBytes(cfg.Cache.ReadAheadMB)) + memoryOverhead
		debug.SetMemoryLimit(limit)
		log.Info("memory limit set from the budgets", "bytes", limit)
	}
	m.WatchRequests(requests)
	if st := sec.status(); st != nil {
		m.WatchCertificate(st)
	}
	var (
		wg       sync.WaitGroup
		stoppers []func(context.Context) error
		failed   = make(chan error, 8)
	)
	listen := func(what, addr string) (net.Listener, error) {
		if ln := takeListener(&inherited, addr); ln != nil {
			log.Info("using the listening socket the service manager passed", "server", what, "address", ln.Addr().String())
			return ln, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s: listen on %s: %w (is another zerofs running? change the address in the config)", what, addr, err)
		}
		return ln, nil
	}
	cleanup := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, s := range stoppers {
			s(sctx)
		}
		wg.Wait()
		if err := f.Close(); err != nil {
			log.Error("closing the filesystem", "err", err)
		}
	}

	var nbdServers []*nbd.Server
	for _, addr := range cfg.Servers.NBD.Addresses {
		ln, err := listen("NBD", addr)
		if err != nil {
			cleanup()
			return err
		}
		srv := nbd.NewServer(f, nbd.Options{Logger: log, Observe: m.ObserveNBD, Requests: requests,
			MaxReadWait: cfg.WAL.MaxReadWait.Duration, MaxPayload: int64(cfg.Servers.NBD.MaxPayloadMB) << 20,
			AllowedNetworks: sec.networks, TLSMode: sec.mode, TLS: sec.tlsConfig(), Access: sec.access})
		stoppers = append(stoppers, srv.Shutdown)
		nbdServers = append(nbdServers, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil {
				failed <- fmt.Errorf("NBD server on %s: %w", addr, err)
			}
		}()
		log.Info("serving NBD", "address", ln.Addr().String(), "tls", sec.mode.String(), "allowed_networks", cfg.Servers.NBD.AllowedNetworks)
	}
	attachments := func(match func(string) bool) []nbd.Attachment {
		var out []nbd.Attachment
		for _, s := range nbdServers {
			out = append(out, s.Attachments(match)...)
		}
		return out
	}
	allowed := parseNets(cfg.Servers.NFS.AllowedNetworks)
	for _, addr := range cfg.Servers.NFS.Addresses {
		ln, err := listen("NFS", addr)
		if err != nil {
			cleanup()
			return err
		}
		srv := nfs.NewServer(f, nfs.Options{Logger: log, AllowedNetworks: allowed,
			RootSquash: cfg.Servers.NFS.RootSquash, Observe: m.ObserveNFS, Requests: requests,
			MaxReadWait: cfg.WAL.MaxReadWait.Duration})
		stoppers = append(stoppers, srv.Shutdown)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil {
				failed <- fmt.Errorf("NFS server on %s: %w", addr, err)
			}
		}()
		log.Info("serving NFSv3", "address", ln.Addr().String(), "allowed_networks", cfg.Servers.NFS.AllowedNetworks)
	}
	if a := cfg.Servers.Admin.Address; a != "" {
		ln, err := listen("admin", a)
		if err != nil {
			cleanup()
			return err
		}
		hs := &http.Server{Handler: admin.Handler(f, admin.Config{Metrics: m.Handler(), Log: log, TLSStatus: sec.status(), Attachments: attachments}),
			ReadHeaderTimeout: 10 * time.Second}
		stoppers = append(stoppers, hs.Shutdown)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("admin endpoint on %s: %w", a, err)
			}
		}()
		log.Info("serving admin API", "address", ln.Addr().String())
	}
	if len(inherited) > 0 {
		log.Warn("sockets passed by the service manager match no configured address; closing them", "addresses", listenerAddrs(inherited))
		for _, ln := range inherited {
			ln.Close()
		}
	}
	// From exec to serving: what a planned restart costs clients.
	index := "none"
	if st := f.Status().DiskCache; st != nil && st.SlotsTotal > 0 {
		index = st.IndexState()
		if index == "rebuilding" {
			index = "rebuilding in the background"
		}
	}
	sec.watch(ctx, log, hup)
	stoppers = append(stoppers, runSnapshotSchedules(cfg, f, log, attachments))
	log.Info("serving", "start_to_serving", time.Since(processStart).Round(time.Millisecond), "disk_cache_index", index)
	printHowTo(cfg, sec.serverName())

	select {
	case <-ctx.Done():
		log.Info("stopping: flushing and writing a checkpoint")
	case err = <-failed:
		log.Error("a server failed; stopping", "err", err)
	}
	cleanup()
	log.Info("stopped")
	return err
}

// printHowTo tells the user exactly how to attach and mount. tlsName, if
// set, is the name clients must reach NBD by: its certificate's.
func printHowTo(cfg *config.Config, tlsName string) {
	self := os.Args[0] // bin/zerofs under make run, zerofs when installed
	var b strings.Builder
	b.WriteString("zerofs is ready.\n")
	if len(cfg.Servers.NBD.Addresses) > 0 {
		host, port, _ := net.SplitHostPort(cfg.Servers.NBD.Addresses[0])
		admin := ""
		if cfg.Servers.Admin.Address != "" {
			admin = " --admin " + cfg.Servers.Admin.Address
		}
		fmt.Fprintf(&b, "  create a device:  %s nbd create disk0 --size 10G%s\n", self, admin)
		tlsFlag, uri := "", fmt.Sprintf("nbd://%s/disk0", net.JoinHostPort(host, port))
		if tlsName != "" {
			host = tlsName
		}
		if cfg.Servers.NBD.TLS != "off" {
			// DIR: the client's certificates (docs/security.md).
			tlsFlag = " --tls DIR"
			uri = fmt.Sprintf("'nbds://%s/disk0?tls-certificates=DIR'", net.JoinHostPort(host, port))
		}
		fmt.Fprintf(&b, "  attach it:        sudo modprobe nbd && sudo %s nbd attach disk0 --server %s --device /dev/nbd0%s   (stays running)\n", self, net.JoinHostPort(host, port), tlsFlag)
		fmt.Fprintf(&b, "  or inspect it:    nbdinfo %s\n", uri)
		if tlsFlag != "" {
			b.WriteString("                    (DIR: the client's ca-cert.pem, client-cert.pem, client-key.pem; docs/security.md)\n")
		}
	}
	if len(cfg.Servers.NFS.Addresses) > 0 {
		host, port, _ := net.SplitHostPort(cfg.Servers.NFS.Addresses[0])
		fmt.Fprintf(&b, "  mount over NFS:   mount -t nfs -o vers=3,tcp,port=%s,mountport=%s,nolock %s:/ /mnt/zerofs\n", port, port, host)
		fmt.Fprintf(&b, "  or list it:       nfs-ls 'nfs://%s/?nfsport=%s&mountport=%s&auto-traverse-mounts=0'\n", host, port, port)
	}
	fmt.Fprint(os.Stderr, b.String())
}

// readAheadBytes maps read_ahead_mb to fs.Options.ReadAheadBytes, where 0
// means the default and a negative value turns read-ahead off.
func readAheadBytes(mb int) int64 {
	if mb == 0 {
		return -1
	}
	return int64(mb) << 20
}

// logInterrupted names the NBD devices the last run left interrupted
// (fs/marks.go) and says what to do.
func logInterrupted(ctx context.Context, f *fs.FS, log *slog.Logger) {
	if len(f.InterruptedFiles()) == 0 {
		return
	}
	list, err := nbd.ListExports(ctx, f)
	if err != nil {
		log.Warn("listing NBD devices", "err", err)
		return
	}
	for _, e := range list {
		if e.Interrupted {
			log.Error("NBD device interrupted: the last run ended without flushing writes it had acknowledged, which may be lost; "+
				"every request on it fails with EIO until `zerofs nbd clear "+e.Name+"` (docs/operations.md, \"An interrupted device\")", "device", e.Name)
		}
	}
}

// runSnapshotSchedules starts [snapshots] schedules and returns what stops
// them.
func runSnapshotSchedules(cfg *config.Config, f *fs.FS, log *slog.Logger, attachments func(func(string) bool) []nbd.Attachment) func(context.Context) error {
	var scheds []snapsched.Schedule
	for _, s := range cfg.Snapshots.Schedule {
		scheds = append(scheds, snapsched.Schedule{Name: s.Name, Every: s.Every.Duration, Keep: s.Keep})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&snapsched.Scheduler{Target: f, Schedules: scheds, Log: log, InUse: func(name string) string {
			users := attachments(func(export string) bool {
				_, snap, ok := nbd.SplitSnapshotExport(export)
				return ok && snap == name
			})
			if len(users) == 0 {
				return ""
			}
			return users[0].String()
		}}).Run(ctx)
	}()
	if len(scheds) > 0 {
		log.Info("snapshot schedules", "count", len(scheds))
	}
	return func(context.Context) error {
		cancel()
		<-done
		return nil
	}
}
