package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"zerofs/fs"
)

func cmdSnapshot(args []string) error {
	fl := newFlags("snapshot", "snapshot create NAME [--hold] | list | delete NAME | hold NAME | release NAME  [-c FILE | --admin ADDR]")
	cfgPath := fl.String("c", "", "configuration file (for the admin address)")
	addr := fl.String("admin", "127.0.0.1:7311", "admin endpoint address, if no -c")
	hold := fl.Bool("hold", false, "create: mark the snapshot held, so scheduled pruning keeps it")
	pos, err := parseFlags(fl, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fl.Usage()
		return errors.New("missing subcommand: create, list, delete, hold or release")
	}
	needName := func() (string, error) {
		if len(pos) != 2 {
			return "", fmt.Errorf("snapshot %s needs exactly one snapshot NAME", pos[0])
		}
		// Checked here too, to answer without a round trip.
		if err := fs.ValidateSnapshotName(pos[1]); err != nil {
			return "", err
		}
		return pos[1], nil
	}
	cl, err := adminClient(*cfgPath, *addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch pos[0] {
	case "create":
		name, err := needName()
		if err != nil {
			return err
		}
		started := time.Now()
		s, err := cl.CreateSnapshot(ctx, name, *hold)
		if err != nil {
			return err
		}
		fmt.Printf("created snapshot %s in %s: its devices are NBD exports DEVICE@%s (read-only), its files are under /%s/%s over NFS\n",
			s.Name, time.Since(started).Round(time.Millisecond), s.Name, fs.SnapshotDirName, s.Name)
		return nil
	case "list", "ls":
		list, err := cl.Snapshots(ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tCREATED\tHELD ALONE\tFLAGS")
		for _, s := range list {
			flags := "-"
			switch {
			case s.Held && s.Schedule != "":
				flags = "held, " + s.Schedule
			case s.Held:
				flags = "held"
			case s.Schedule != "":
				flags = s.Schedule
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Created.UTC().Format(time.RFC3339), humanSize(uint64(s.ExclusiveBytes)), flags)
		}
		return w.Flush()
	case "delete", "rm":
		name, err := needName()
		if err != nil {
			return err
		}
		freed, err := cl.DeleteSnapshot(ctx, name)
		if err != nil {
			return err
		}
		fmt.Printf("deleted snapshot %s; the next garbage collection pass frees %s it alone held\n", name, humanSize(uint64(freed)))
		return nil
	case "hold", "release":
		name, err := needName()
		if err != nil {
			return err
		}
		if err := cl.HoldSnapshot(ctx, name, pos[0] == "hold"); err != nil {
			return err
		}
		if pos[0] == "hold" {
			fmt.Printf("snapshot %s is held: scheduled pruning keeps it\n", name)
		} else {
			fmt.Printf("snapshot %s is released: a schedule that took it may prune it\n", name)
		}
		return nil
	}
	return fmt.Errorf("unknown snapshot subcommand %q: use create, list, delete, hold or release", pos[0])
}
