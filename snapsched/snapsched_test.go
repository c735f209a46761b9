package snapsched

import (
	"context"
	"slices"
	"testing"
	"time"

	"zerofs/crypt"
	"zerofs/fs"
	"zerofs/internal/testutil"
	"zerofs/store"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func snap(name, sched, created string, held bool) fs.Snapshot {
	return fs.Snapshot{Name: name, Schedule: sched, Created: at(created), Held: held}
}

func TestPlan(t *testing.T) {
	hourly := Schedule{Name: "hourly", Every: time.Hour, Keep: 2}
	daily := Schedule{Name: "daily", Every: 24 * time.Hour, Keep: 1}
	cases := []struct {
		name       string
		scheds     []Schedule
		snaps      []fs.Snapshot
		now        string
		wantCreate []string
		wantPrune  []string
	}{
		{"first run takes the current slot", []Schedule{hourly}, nil, "2026-11-29T23:17:00Z",
			[]string{"hourly-20261129T2300Z"}, nil},
		{"slot already taken", []Schedule{hourly}, []fs.Snapshot{snap("hourly-20261129T2300Z", "hourly", "2026-11-29T23:00:05Z", false)},
			"2026-11-29T23:59:00Z", nil, nil},
		{"next slot prunes the oldest beyond keep", []Schedule{hourly}, []fs.Snapshot{
			snap("hourly-20261129T2100Z", "hourly", "2026-11-29T21:00:03Z", false),
			snap("hourly-20261129T2200Z", "hourly", "2026-11-29T22:00:03Z", false),
		}, "2026-11-29T23:00:01Z", []string{"hourly-20261129T2300Z"}, []string{"hourly-20261129T2100Z"}},
		{"held ones are kept, and still count", []Schedule{hourly}, []fs.Snapshot{
			snap("hourly-20261129T2000Z", "hourly", "2026-11-29T20:00:03Z", true),
			snap("hourly-20261129T2100Z", "hourly", "2026-11-29T21:00:03Z", false),
			snap("hourly-20261129T2200Z", "hourly", "2026-11-29T22:00:03Z", false),
		}, "2026-11-29T23:00:01Z", []string{"hourly-20261129T2300Z"}, []string{"hourly-20261129T2100Z"}},
		{"manual snapshots and other schedules are not pruned", []Schedule{daily}, []fs.Snapshot{
			snap("before-upgrade", "", "2026-01-01T00:00:00Z", false),
			snap("hourly-20261129T2100Z", "hourly", "2026-11-29T21:00:03Z", false),
			snap("daily-20261128T0000Z", "daily", "2026-11-28T00:00:03Z", false),
		}, "2026-11-29T00:10:00Z", []string{"daily-20261129T0000Z"}, []string{"daily-20261128T0000Z"}},
		{"two schedules", []Schedule{hourly, daily}, nil, "2026-11-29T00:10:00Z",
			[]string{"hourly-20261129T0000Z", "daily-20261129T0000Z"}, nil},
		{"weeks start on the epoch's weekday (Thursday)", []Schedule{{Name: "weekly", Every: 7 * 24 * time.Hour, Keep: 4}}, nil,
			"2026-11-29T12:00:00Z", []string{"weekly-20261126T0000Z"}, nil},
		{"odd minutes count from the epoch", []Schedule{{Name: "m7", Every: 7 * time.Minute, Keep: 4}}, nil,
			"2026-11-29T12:03:00Z", []string{"m7-20261129T1200Z"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			create, prune := Plan(tc.scheds, tc.snaps, at(tc.now))
			var names []string
			for _, c := range create {
				names = append(names, c.Name)
				if err := fs.ValidateSnapshotName(c.Name); err != nil {
					t.Errorf("planned name %q is not valid: %v", c.Name, err)
				}
			}
			if !slices.Equal(names, tc.wantCreate) {
				t.Errorf("create %v, want %v", names, tc.wantCreate)
			}
			var pruned []string
			for _, p := range prune {
				pruned = append(pruned, p.Name)
			}
			if !slices.Equal(pruned, tc.wantPrune) {
				t.Errorf("prune %v, want %v", pruned, tc.wantPrune)
			}
		})
	}
}

// TestPassAgainstFS runs the scheduler over simulated hours against a real
// filesystem: it keeps Keep snapshots, spares a held one and one in use.
func TestPassAgainstFS(t *testing.T) {
	ctx := context.Background()
	f, err := fs.Open(ctx, fs.Options{Main: store.NewMem(), Dir: t.TempDir(), Password: "p", KeyParams: crypt.TestParams,
		CheckpointInterval: -1, GCInterval: -1, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now := at("2026-11-29T10:30:00Z")
	busy := ""
	s := &Scheduler{
		Target: f, Schedules: []Schedule{{Name: "hourly", Every: time.Hour, Keep: 3}},
		Log: testutil.Logger(t), Now: func() time.Time { return now },
		InUse: func(name string) string {
			if name == busy {
				return "d@" + name + " attached by test"
			}
			return ""
		},
	}
	names := func() []string {
		list, err := f.Snapshots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, sn := range list {
			out = append(out, sn.Name)
		}
		slices.Sort(out)
		return out
	}
	for range 5 {
		if err := s.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Pass(ctx); err != nil { // a second pass in the same slot does nothing
			t.Fatal(err)
		}
		now = now.Add(time.Hour)
	}
	want := []string{"hourly-20261129T1200Z", "hourly-20261129T1300Z", "hourly-20261129T1400Z"}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after 5 hours: %v, want %v", got, want)
	}
	busy = "hourly-20261129T1200Z"
	if err := s.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	want = []string{"hourly-20261129T1200Z", "hourly-20261129T1300Z", "hourly-20261129T1400Z", "hourly-20261129T1500Z"}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("with the oldest in use: %v, want %v", got, want)
	}
	busy = ""
	if err := s.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("once no longer in use: %v, want %v", got, want)
	}
	if err := f.HoldSnapshot(ctx, "hourly-20261129T1300Z", true); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if err := s.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	want = append(want, "hourly-20261129T1600Z")
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("with the oldest held: %v, want %v", got, want)
	}
}

type failingTarget struct {
	Target
	deleted []string
}

func (f *failingTarget) CreateSnapshot(context.Context, string, fs.SnapshotOptions) (fs.Snapshot, error) {
	return fs.Snapshot{}, fs.ErrReadOnly
}

func (f *failingTarget) DeleteSnapshot(_ context.Context, name string) (int64, error) {
	f.deleted = append(f.deleted, name)
	return 0, nil
}

func (f *failingTarget) Snapshots(context.Context) ([]fs.Snapshot, error) {
	return []fs.Snapshot{snap("hourly-20261129T2200Z", "hourly", "2026-11-29T22:00:03Z", false)}, nil
}

// TestFailedCreationPrunesNothing: when the store fails, a schedule with
// keep = 1 must not delete its last good snapshot for the one it could not
// take.
func TestFailedCreationPrunesNothing(t *testing.T) {
	tg := &failingTarget{}
	s := &Scheduler{Target: tg, Schedules: []Schedule{{Name: "hourly", Every: time.Hour, Keep: 1}},
		Log: testutil.Logger(t), Now: func() time.Time { return at("2026-11-29T23:00:05Z") }}
	if err := s.Pass(context.Background()); err == nil {
		t.Fatal("a failed creation was not reported")
	}
	if len(tg.deleted) != 0 {
		t.Fatalf("deleted %v after a failed creation", tg.deleted)
	}
}
