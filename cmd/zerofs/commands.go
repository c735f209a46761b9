package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"zerofs/admin"
	"zerofs/config"
	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/nbd"
	"zerofs/store"
)

func cmdInit(args []string) error {
	fl := newFlags("init", "init [FILE|-]")
	pos, err := parseFlags(fl, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return errors.New("give at most one FILE (or - for stdout)")
	}
	if len(pos) == 0 || pos[0] == "-" {
		_, err := os.Stdout.Write(config.Template)
		return err
	}
	f, err := os.OpenFile(pos[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; not overwriting it", pos[0])
		}
		return err
	}
	if _, err := f.Write(config.Template); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s: set [storage] url and ZEROFS_PASSWORD, then: zerofs run -c %s\n", pos[0], pos[0])
	return nil
}

// adminClient finds the admin endpoint from -c FILE or --admin ADDR.
func adminClient(cfgPath, addr string) (*admin.Client, error) {
	if cfgPath != "" {
		c, err := config.Load(cfgPath)
		if err != nil {
			return nil, err
		}
		if c.Servers.Admin.Address == "" {
			return nil, fmt.Errorf("%s: servers.admin.address is empty: the admin endpoint is disabled", cfgPath)
		}
		addr = c.Servers.Admin.Address
	}
	return &admin.Client{Base: "http://" + addr}, nil
}

// nbdPort is the port the configuration in cfgPath serves NBD on, for
// messages: NBD's registered port 10809 without one.
func nbdPort(cfgPath string) string {
	if cfgPath == "" {
		return "10809"
	}
	c, err := config.Load(cfgPath)
	if err != nil || len(c.Servers.NBD.Addresses) == 0 {
		return "10809"
	}
	if _, port, err := net.SplitHostPort(c.Servers.NBD.Addresses[0]); err == nil {
		return port
	}
	return "10809"
}

func cmdStatus(args []string) error {
	fl := newFlags("status", "status [-c FILE | --admin ADDR] [--json]")
	cfgPath := fl.String("c", "", "configuration file (for the admin address)")
	addr := fl.String("admin", "127.0.0.1:7311", "admin endpoint address, if no -c")
	asJSON := fl.Bool("json", false, "print JSON")
	if _, err := parseFlags(fl, args); err != nil {
		return err
	}
	cl, err := adminClient(*cfgPath, *addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := cl.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(s)
	}
	role := "writer"
	if !s.Writable {
		role = "stopped (" + s.Error + ")"
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "role\t%s\n", role)
	fmt.Fprintf(w, "filesystem\t%s\n", s.FSID)
	fmt.Fprintf(w, "epoch\t%d\n", s.Epoch)
	fmt.Fprintf(w, "bytes dirty\t%d (open batch %d)\n", s.DirtyBytes, s.OpenBatchBytes)
	fmt.Fprintf(w, "writes waiting for memory\t%d now, %d since start\n", s.MemoryWaiters, s.MemoryWaits)
	fmt.Fprintf(w, "batches in flight\t%d\n", s.SealedBatches)
	fmt.Fprintf(w, "WAL\tlast record %d, checkpoint at %d, depth %d\n", s.WALLastSeq, s.CheckpointSeq, s.WALDepth)
	if s.Cache != nil {
		fmt.Fprintf(w, "memory cache\t%d of %d bytes, %d hits, %d misses\n", s.Cache.Bytes, s.Cache.Capacity, s.Cache.Hits, s.Cache.Misses)
	}
	if d := s.DiskCache; d != nil && d.SlotsTotal > 0 {
		index := map[string]string{
			"rebuilding": "being rebuilt (the last run did not stop cleanly): misses go to the store meanwhile",
			"loaded":     fmt.Sprintf("loaded at start in %s", d.ScanTime.Round(time.Millisecond)),
			"rebuilt":    fmt.Sprintf("rebuilt after an unclean stop in %s", d.ScanTime.Round(time.Millisecond)),
			"new":        "new",
		}[d.IndexState()]
		fmt.Fprintf(w, "disk cache\t%d of %d slots, %d hits, %d misses; index %s\n", d.SlotsUsed, d.SlotsTotal, d.Hits, d.Misses, index)
	}
	fmt.Fprintf(w, "store reads\t%d requests, %d bytes\n", s.StoreGets, s.StoreGetBytes)
	fmt.Fprintf(w, "store errors\t%d (failed reads and retried WAL appends)\n", s.StoreErrors)
	fmt.Fprintf(w, "corrupt frames\t%d\n", s.CorruptFrames)
	if len(s.Interrupted) > 0 {
		var names []string
		if list, err := cl.Exports(ctx); err == nil {
			for _, e := range list {
				if e.Interrupted {
					names = append(names, e.Name)
				}
			}
		}
		fmt.Fprintf(w, "interrupted\t%d (%s): may have lost acknowledged writes when the last run ended; I/O fails until zerofs nbd clear NAME\n",
			len(s.Interrupted), strings.Join(names, ", "))
	}
	if t := s.NBDTLS; t != nil {
		left := time.Until(t.NotAfter)
		line := fmt.Sprintf("%s, expires %s (in %d days)", t.Subject, t.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
		switch {
		case left <= 0:
			line = fmt.Sprintf("%s, EXPIRED on %s: every new TLS connection fails; renew it", t.Subject, t.NotAfter.UTC().Format(time.RFC3339))
		case left < 30*24*time.Hour:
			line += ": renew it soon"
		}
		if t.ReloadError != "" {
			line += "; last reload failed: " + t.ReloadError
		}
		fmt.Fprintf(w, "NBD TLS certificate\t%s\n", line)
	}
	fmt.Fprintf(w, "gc\t%d objects deleted, %d packed\n", s.GCDeleted, s.GCPacked)
	fmt.Fprintf(w, "snapshots\t%d, holding %s the current state does not use (zerofs snapshot list)\n", s.Snapshots, humanSize(uint64(s.SnapshotBytes)))
	up := time.Duration(s.UptimeSeconds * float64(time.Second)).Round(time.Second)
	fmt.Fprintf(w, "client data\t%s read, %s written, %s read ahead (ranges issued), in %s\n",
		humanSize(uint64(s.ReadBytes)), humanSize(uint64(s.WrittenBytes)), humanSize(uint64(s.ReadAhead)), up)
	for _, name := range []string{"main", "wal"} {
		if ops, ok := s.Requests[name]; ok {
			fmt.Fprintf(w, "requests (%s store)\t%s\n", name, requestCost(ops, s.Status))
		}
	}
	return w.Flush()
}

// requestCost says what a store's requests came to: each operation's count,
// per GiB of what drives it (PUTs per GiB written, GETs per GiB read) and
// per hour up.
func requestCost(ops map[string]int64, s fs.Status) string {
	per := func(n, bytes int64) string {
		if bytes < 1<<20 {
			return ""
		}
		return fmt.Sprintf(" (%.0f per GiB)", float64(n)/(float64(bytes)/(1<<30)))
	}
	// Per hour only once there is an hour to go by: before that the
	// start-up's requests (recovery, the first checkpoint) would read as
	// an hourly rate.
	hours := s.UptimeSeconds / 3600
	var parts []string
	for _, op := range []string{"put", "get", "head", "list", "delete"} {
		n := ops[op]
		p := fmt.Sprintf("%s %d", strings.ToUpper(op), n)
		switch op {
		case "put":
			p += per(n, s.WrittenBytes)
		case "get":
			p += per(n, s.ReadBytes)
		}
		if hours >= 1 {
			p += fmt.Sprintf(", %.0f/h", float64(n)/hours)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func cmdNBD(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "attach":
			return cmdNBDAttach(args[1:])
		case "detach":
			return cmdNBDDetach(args[1:])
		}
	}
	fl := newFlags("nbd", "nbd create NAME --size SIZE | list | resize NAME --size SIZE | delete NAME | clear NAME\n           | clone SOURCE[@SNAPSHOT] NEW | restore DEVICE@SNAPSHOT  [-c FILE | --admin ADDR]\n       zerofs nbd attach NAME [--device /dev/nbdN] ... | detach /dev/nbdN   (zerofs nbd attach -h)")
	cfgPath := fl.String("c", "", "configuration file (for the admin address)")
	addr := fl.String("admin", "127.0.0.1:7311", "admin endpoint address, if no -c")
	sizeArg := fl.String("size", "", "device size, e.g. 100G (binary units)")
	pos, err := parseFlags(fl, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fl.Usage()
		return errors.New("missing subcommand: create, list, resize, delete, clear, clone, restore, attach or detach")
	}
	cl, err := adminClient(*cfgPath, *addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	needName := func() (string, error) {
		if len(pos) != 2 || pos[1] == "" {
			return "", fmt.Errorf("nbd %s needs exactly one device NAME", pos[0])
		}
		return pos[1], nil
	}
	needSize := func() (uint64, error) {
		if *sizeArg == "" {
			return 0, fmt.Errorf("nbd %s needs --size, e.g. --size 100G", pos[0])
		}
		size, err := parseSize(*sizeArg)
		if err != nil {
			return 0, err
		}
		// The server enforces this too (nbd.CreateExport and ResizeExport);
		// checking here as well answers without a round trip, or a server.
		if err := nbd.ValidateExportSize(size); err != nil {
			return 0, fmt.Errorf("--size %s: %w", *sizeArg, err)
		}
		return size, nil
	}
	switch pos[0] {
	case "list", "ls":
		list, err := cl.Exports(ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSIZE\tBYTES\tSTATE")
		for _, e := range list {
			state := "ok"
			if e.Interrupted {
				state = "interrupted (zerofs nbd clear " + e.Name + ")"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", e.Name, humanSize(e.Size), e.Size, state)
		}
		return w.Flush()
	case "create":
		name, err := needName()
		if err != nil {
			return err
		}
		size, err := needSize()
		if err != nil {
			return err
		}
		if err := cl.CreateExport(ctx, name, size); err != nil {
			return err
		}
		fmt.Printf("created %s (%s); attach it (as root; it stays running) with: zerofs nbd attach %s --server HOST:%s --device /dev/nbd0\n", name, humanSize(size), name, nbdPort(*cfgPath))
		return nil
	case "resize":
		name, err := needName()
		if err != nil {
			return err
		}
		size, err := needSize()
		if err != nil {
			return err
		}
		if err := cl.ResizeExport(ctx, name, size); err != nil {
			return err
		}
		fmt.Printf("resized %s to %s; clients see the new size when they reconnect\n", name, humanSize(size))
		return nil
	case "delete", "rm":
		name, err := needName()
		if err != nil {
			return err
		}
		if err := cl.DeleteExport(ctx, name); err != nil {
			return err
		}
		fmt.Printf("deleted %s\n", name)
		return nil
	case "clone":
		if len(pos) != 3 || pos[1] == "" || pos[2] == "" {
			return errors.New("nbd clone needs SOURCE (a device, or DEVICE@SNAPSHOT) and NEW")
		}
		started := time.Now()
		if err := cl.CloneExport(ctx, pos[1], pos[2]); err != nil {
			return err
		}
		fmt.Printf("cloned %s as %s in %s: it shares every block with its source until either is written\n", pos[1], pos[2], time.Since(started).Round(time.Millisecond))
		return nil
	case "restore":
		name, err := needName()
		if err != nil {
			return err
		}
		dev, snap, ok := nbd.SplitSnapshotExport(name)
		if !ok {
			return fmt.Errorf("nbd restore needs DEVICE@SNAPSHOT, not %q", name)
		}
		if err := cl.RestoreExport(ctx, name); err != nil {
			return err
		}
		fmt.Printf("restored %s to its content in snapshot %s\n", dev, snap)
		return nil
	case "clear":
		name, err := needName()
		if err != nil {
			return err
		}
		cleared, err := cl.ClearExport(ctx, name)
		if err != nil {
			return err
		}
		if !cleared {
			fmt.Printf("%s was not interrupted: nothing to clear\n", name)
			return nil
		}
		fmt.Printf("cleared %s: its I/O works again; it holds what was durable when the last run ended (docs/durability.md)\n", name)
		return nil
	}
	if pos[0] == "attach" || pos[0] == "detach" {
		return fmt.Errorf("nbd %s takes its flags after the word %s: zerofs nbd %s ...", pos[0], pos[0], pos[0])
	}
	return fmt.Errorf("unknown nbd subcommand %q: use create, list, resize, delete, clear, clone, restore, attach or detach", pos[0])
}

func humanSize(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == float64(uint64(v)) {
		return fmt.Sprintf("%d %s", uint64(v), units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func cmdChangePassword(args []string) error {
	fl := newFlags("change-password", "change-password -c FILE   (new password on stdin)")
	cfgPath := fl.String("c", "", "configuration file (its encryption_password is the current password)")
	if _, err := parseFlags(fl, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("-c FILE is required")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "new password (one line on stdin):")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("read new password: %w", err)
	}
	newPw := strings.TrimRight(line, "\r\n")
	if newPw == "" {
		return errors.New("the new password is empty")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, cfg.Storage.URL, storeOptions(cfg))
	if err != nil {
		return err
	}
	if err := fs.ChangePassword(ctx, st, cfg.Storage.EncryptionPassword, newPw, crypt.DefaultParams); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "password changed: the data key is now wrapped with the new password; set it as [storage] encryption_password (or ZEROFS_PASSWORD) before the next start")
	return nil
}

func storeOptions(c *config.Config) store.Options {
	return store.Options{
		Region: c.AWS.Region, Endpoint: c.AWS.Endpoint,
		AccessKeyID: c.AWS.AccessKeyID, SecretAccessKey: c.AWS.SecretAccessKey,
		AllowHTTP: c.AWS.AllowHTTP, UsePathStyle: c.AWS.PathStyle,
	}
}
