// Package snapsched takes scheduled snapshots and prunes them
// ([snapshots] in the configuration; docs/snapshots.md).
//
// A schedule named NAME takes snapshots named NAME-YYYYMMDDTHHMMZ (UTC) on
// multiples of its interval since the Unix epoch — "1h" on the hour, "24h"
// at midnight UTC — so the names say when, and a restart neither doubles nor
// skips one: a slot is taken if its name does not exist yet.
// Pruning keeps each schedule's newest Keep snapshots and deletes older ones
// of that schedule only, never a held one, and never one a client has
// attached (it is retried at the next pass). Snapshots taken by hand are
// never pruned.
package snapsched

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"zerofs/fs"
)

// Schedule is one [[snapshots.schedule]].
type Schedule struct {
	Name  string
	Every time.Duration
	Keep  int
}

// Target is what the scheduler changes: an *fs.FS.
type Target interface {
	Snapshots(ctx context.Context) ([]fs.Snapshot, error)
	CreateSnapshot(ctx context.Context, name string, o fs.SnapshotOptions) (fs.Snapshot, error)
	DeleteSnapshot(ctx context.Context, name string) (int64, error)
}

// nameFormat is the time part of a scheduled snapshot's name.
const nameFormat = "20060102T1504Z"

// SlotName is the name of schedule s's snapshot for the slot holding t:
// slots start at multiples of s.Every since the Unix epoch (time.Truncate
// would count from year 1: "168h" would not start on a Thursday, "7m" not
// on the minutes a user computes).
func SlotName(s Schedule, t time.Time) string {
	every := s.Every.Nanoseconds()
	start := time.Unix(0, t.UnixNano()-((t.UnixNano()%every)+every)%every).UTC()
	return s.Name + "-" + start.Format(nameFormat)
}

// Plan says what to do at now given the snapshots there are: the names to
// create (at most one per schedule, its current slot) and to delete. The
// deletions count the creations as done: the caller must not prune a
// schedule whose creation failed (a failing store must not make it delete
// its last good snapshot).
func Plan(scheds []Schedule, snaps []fs.Snapshot, now time.Time) (create []Create, prune []Create) {
	for _, s := range scheds {
		var own []fs.Snapshot
		for _, sn := range snaps {
			if sn.Schedule == s.Name {
				own = append(own, sn)
			}
		}
		// The slot's name says whether it is taken, and the names of one
		// schedule sort by time: neither depends on the clock having
		// been right when the others were taken.
		name := SlotName(s, now)
		if !slices.ContainsFunc(snaps, func(sn fs.Snapshot) bool { return sn.Name == name }) {
			create = append(create, Create{Name: name, Schedule: s.Name})
			own = append(own, fs.Snapshot{Name: name, Created: now, Schedule: s.Name})
		}
		slices.SortFunc(own, func(a, b fs.Snapshot) int { return strings.Compare(b.Name, a.Name) }) // newest first
		kept := 0
		for _, sn := range own {
			if kept < s.Keep {
				kept++
				continue
			}
			if !sn.Held {
				prune = append(prune, Create{Name: sn.Name, Schedule: s.Name})
			}
		}
	}
	return create, prune
}

// Create is a snapshot Plan wants taken (or deleted).
type Create struct{ Name, Schedule string }

// Scheduler runs schedules against a target.
type Scheduler struct {
	Target    Target
	Schedules []Schedule
	Log       *slog.Logger
	// InUse, if set, says who has snapshot name attached (empty: nobody);
	// such a snapshot is pruned later.
	InUse func(snapshot string) string
	// Now is time.Now, replaceable in tests.
	Now func() time.Time
}

// Pass takes due snapshots and prunes, once.
func (s *Scheduler) Pass(ctx context.Context) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	snaps, err := s.Target.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("scheduled snapshots: %w", err)
	}
	create, prune := Plan(s.Schedules, snaps, now())
	var errs []error
	failed := make(map[string]bool) // schedules whose snapshot was not taken
	for _, c := range create {
		if _, err := s.Target.CreateSnapshot(ctx, c.Name, fs.SnapshotOptions{Schedule: c.Schedule}); err != nil && !errors.Is(err, fs.ErrExist) {
			errs = append(errs, fmt.Errorf("scheduled snapshot %s: %w", c.Name, err))
			failed[c.Schedule] = true
			continue
		}
		s.Log.Info("scheduled snapshot taken", "snapshot", c.Name, "schedule", c.Schedule)
	}
	for _, p := range prune {
		if failed[p.Schedule] {
			continue
		}
		name := p.Name
		if s.InUse != nil {
			if who := s.InUse(name); who != "" {
				s.Log.Warn("not pruning a snapshot in use; retrying later", "snapshot", name, "in_use", who)
				continue
			}
		}
		freed, err := s.Target.DeleteSnapshot(ctx, name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("prune snapshot %s: %w", name, err))
			continue
		}
		s.Log.Info("scheduled snapshot pruned", "snapshot", name, "frees_bytes", freed)
	}
	return errors.Join(errs...)
}

// Run makes a pass every minute until ctx ends, logging failures (a fenced
// or failing store makes passes fail until it recovers).
func (s *Scheduler) Run(ctx context.Context) {
	if len(s.Schedules) == 0 {
		return
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("scheduled snapshots", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
