package storage_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func TestWorkingHoursOpen(t *testing.T) {
	moscow, err := time.LoadLocation("Europe/Moscow")
	if err != nil {
		t.Fatal(err)
	}
	weekdays := storage.WorkingHours{Days: []int{1, 2, 3, 4, 5}, From: 9 * time.Hour, To: 18 * time.Hour}
	// 2026-11-30 is a Monday.
	for _, tc := range []struct {
		name  string
		hours storage.WorkingHours
		at    time.Time
		want  bool
	}{
		{"no limit", storage.WorkingHours{}, time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC), true},
		{"monday 09:00 Moscow", weekdays, time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC), true},
		{"monday 08:59 Moscow", weekdays, time.Date(2026, 11, 30, 5, 59, 0, 0, time.UTC), false},
		{"monday 17:59 Moscow", weekdays, time.Date(2026, 11, 30, 14, 59, 59, 0, time.UTC), true},
		{"monday 18:00 Moscow", weekdays, time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC), false},
		{"sunday noon Moscow", weekdays, time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.hours.Open(tc.at, moscow); got != tc.want {
				t.Errorf("Open(%v) = %v, want %v", tc.at, got, tc.want)
			}
		})
	}
}

func TestSegmentOfClientWithoutSegment(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.SegmentOfClient(ctx, "not-a-uuid"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("bad id: %v, want ErrNotFound", err)
	}
	segs, err := s.Segments(ctx)
	if err != nil || len(segs) != 0 {
		t.Fatalf("segments of an empty base: %v %v", segs, err)
	}
}

func TestSegmentRulesAndPermits(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob, carl := mkManager(t, s, "anna"), mkManager(t, s, "bob"), mkManager(t, s, "carl")

	// A client naming a segment nobody made makes it, with no rules.
	c1, err := s.CreateClient(ctx, storage.NewClient{Name: "Acme", Segment: "vip", Phones: []masking.SealedPhone{phone("s1")},
		ManagerID: anna.ID, PartnerIDs: []string{bob.ID}, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	vip, err := s.SegmentByName(ctx, "vip")
	if err != nil || vip.Restricted {
		t.Fatalf("segment made for the client: %+v %v", vip, err)
	}

	rules := storage.Segment{Name: "vip", Restricted: true, AllowedManagers: []string{anna.ID}}
	t.Run("restricting it to managers who don't hold its clients is refused", func(t *testing.T) {
		if _, err := s.UpdateSegment(ctx, vip.ID, rules, "test"); !errors.Is(err, storage.ErrSegmentHolders) {
			t.Fatalf("err = %v, want ErrSegmentHolders", err)
		}
	})
	rules.AllowedManagers = []string{anna.ID, bob.ID}
	if vip, err = s.UpdateSegment(ctx, vip.ID, rules, "test"); err != nil || !vip.Restricted || len(vip.AllowedManagers) != 2 {
		t.Fatalf("update: %+v %v", vip, err)
	}
	t.Run("a manager not permitted can't hold its clients", func(t *testing.T) {
		if _, err := s.Reassign(ctx, c1.ID, carl.ID, nil, "test"); !errors.Is(err, storage.ErrSegmentNotPermitted) {
			t.Fatalf("reassign to carl: %v", err)
		}
		if _, err := s.Reassign(ctx, c1.ID, anna.ID, []string{carl.ID}, "test"); !errors.Is(err, storage.ErrSegmentNotPermitted) {
			t.Fatalf("carl as partner: %v", err)
		}
		_, err := s.CreateClient(ctx, storage.NewClient{Name: "Bolt", Segment: "vip", Phones: []masking.SealedPhone{phone("s2")},
			ManagerID: carl.ID, NewCode: nextCode}, "test")
		if !errors.Is(err, storage.ErrSegmentNotPermitted) {
			t.Fatalf("create for carl: %v", err)
		}
		if _, err := s.DismissManager(ctx, anna.ID, carl.ID, "test"); !errors.Is(err, storage.ErrSegmentNotPermitted) {
			t.Fatalf("dismiss anna to carl: %v", err)
		}
		if m, _ := s.Manager(ctx, anna.ID); m.Status != storage.StatusActive {
			t.Fatalf("a refused dismissal dismissed: %+v", m)
		}
		if c, err := s.Reassign(ctx, c1.ID, bob.ID, []string{anna.ID}, "test"); err != nil || c.ManagerID != bob.ID {
			t.Fatalf("reassign to bob: %+v %v", c, err)
		}
	})
	t.Run("a rename renames it on its clients", func(t *testing.T) {
		rules.Name = "gold"
		if _, err := s.UpdateSegment(ctx, vip.ID, rules, "test"); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Client(ctx, c1.ID); c.Segment != "gold" {
			t.Fatalf("client's segment %q after the rename", c.Segment)
		}
		if _, err := s.CreateSegment(ctx, storage.Segment{Name: "gold"}, "test"); !errors.Is(err, storage.ErrDuplicateSegment) {
			t.Fatalf("duplicate name: %v", err)
		}
	})
	t.Run("a segment with clients is not deleted", func(t *testing.T) {
		if err := s.DeleteSegment(ctx, vip.ID, "test"); !errors.Is(err, storage.ErrSegmentInUse) {
			t.Fatalf("delete: %v", err)
		}
		empty, err := s.CreateSegment(ctx, storage.Segment{Name: "empty", Hours: storage.WorkingHours{Days: []int{1, 5, 1}, From: 9 * time.Hour, To: 24 * time.Hour}}, "test")
		if err != nil || len(empty.Hours.Days) != 2 || empty.Hours.To != 24*time.Hour {
			t.Fatalf("create: %+v %v", empty, err)
		}
		if err := s.DeleteSegment(ctx, empty.ID, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Segment(ctx, empty.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted segment still there: %v", err)
		}
	})
	t.Run("the supervisor must be one", func(t *testing.T) {
		_, err := s.CreateSegment(ctx, storage.Segment{Name: "x", SupervisorID: carl.ID}, "test")
		if !errors.Is(err, storage.ErrNotSupervisor) {
			t.Fatalf("a manager as supervisor: %v", err)
		}
	})
	log, _ := s.AuditLog(ctx, 100)
	actions := map[string]int{}
	for _, e := range log {
		actions[e.Action]++
	}
	if actions["segment.create"] != 2 || actions["segment.update"] != 2 || actions["segment.delete"] != 1 {
		t.Fatalf("audit rows: %v", actions)
	}
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob, carl, dan := mkManager(t, s, "anna"), mkManager(t, s, "bob"), mkManager(t, s, "carl"), mkManager(t, s, "dan")
	var clients []storage.Client
	for i, m := range []storage.Manager{anna, anna, anna, bob} {
		c, err := s.CreateClient(ctx, storage.NewClient{Name: fmt.Sprint("C", i), Segment: "retail",
			Phones: []masking.SealedPhone{phone(fmt.Sprint("r", i))}, ManagerID: m.ID, NewCode: nextCode}, "test")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	// C0 was carl's before anna's: he is a recent holder.
	if _, err := s.Reassign(ctx, clients[0].ID, carl.ID, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reassign(ctx, clients[0].ID, anna.ID, []string{bob.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	plan := storage.RotationPlan{ManagerIDs: []string{anna.ID, bob.ID, carl.ID}, Segment: "retail", DryRun: true}
	dry, err := s.Rotate(ctx, plan, "supervisor:test")
	if err != nil {
		t.Fatal(err)
	}
	if dry.ID != "" || len(dry.Moves) != 4 {
		t.Fatalf("dry run: %+v", dry)
	}
	to := map[string]string{}
	for _, m := range dry.Moves {
		to[m.ClientID] = m.To
		if m.To == m.From {
			t.Fatalf("a move to the same manager: %+v", m)
		}
	}
	if to[clients[0].ID] != bob.ID {
		t.Fatalf("C0 (recently carl's) goes to %s, want bob", to[clients[0].ID])
	}
	for _, c := range clients {
		if now, _ := s.Client(ctx, c.ID); now.ManagerID != c.ManagerID && c.ID != clients[0].ID {
			t.Fatalf("a dry run moved %s", c.Name)
		}
	}
	if hist, _ := s.Rotations(ctx, 10); len(hist) != 0 {
		t.Fatalf("a dry run was kept: %+v", hist)
	}

	plan.DryRun = false
	rot, err := s.Rotate(ctx, plan, "supervisor:test")
	if err != nil {
		t.Fatal(err)
	}
	if rot.ID == "" || !reflect.DeepEqual(rot.Moves, dry.Moves) {
		t.Fatalf("carried out %+v, previewed %+v", rot.Moves, dry.Moves)
	}
	for _, m := range rot.Moves {
		c, _ := s.Client(ctx, m.ClientID)
		if c.ManagerID != m.To || slices.Contains(c.PartnerIDs, m.To) {
			t.Fatalf("client %s: %+v after the move %+v", c.Name, c, m)
		}
	}
	if c, _ := s.Client(ctx, clients[0].ID); c.ManagerID != bob.ID || len(c.PartnerIDs) != 0 {
		t.Fatalf("C0's partner bob became his primary: %+v", c)
	}
	hist, err := s.Rotations(ctx, 10)
	if err != nil || len(hist) != 1 || hist[0].ID != rot.ID || len(hist[0].Moves) != 4 {
		t.Fatalf("history: %+v %v", hist, err)
	}
	log, _ := s.AuditLog(ctx, 100)
	reassigned := 0
	for _, e := range log {
		if e.Action == "client.reassign" && strings.HasPrefix(e.Reason, "rotation:"+rot.ID) {
			reassigned++
		}
	}
	if reassigned != 4 {
		t.Fatalf("%d audit rows of the rotation's moves, want 4", reassigned)
	}

	t.Run("dan, not in the set, gets nobody; an unknown segment or manager is refused", func(t *testing.T) {
		for _, m := range rot.Moves {
			if m.To == dan.ID {
				t.Fatalf("dan got %s", m.ClientID)
			}
		}
		if _, err := s.Rotate(ctx, storage.RotationPlan{Segment: "nope", DryRun: true}, "x"); !errors.Is(err, storage.ErrUnknownSegment) {
			t.Fatalf("unknown segment: %v", err)
		}
		if _, err := s.Rotate(ctx, storage.RotationPlan{ManagerIDs: []string{"00000000-0000-0000-0000-000000000000"}}, "x"); !errors.Is(err, storage.ErrUnknownManager) {
			t.Fatalf("unknown manager: %v", err)
		}
	})
}

func TestRotationSchedule(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	for i := range 2 {
		if _, err := s.CreateClient(ctx, storage.NewClient{Name: fmt.Sprint("C", i), Segment: "retail",
			Phones: []masking.SealedPhone{phone(fmt.Sprint("q", i))}, ManagerID: anna.ID, NewCode: nextCode}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateRotationSchedule(ctx, storage.RotationSchedule{Plan: storage.RotationPlan{Segment: "nope"}, EveryDays: 7,
		NextRunAt: time.Now()}, "test"); !errors.Is(err, storage.ErrUnknownSegment) {
		t.Fatalf("unknown segment: %v", err)
	}
	due := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	sch, err := s.CreateRotationSchedule(ctx, storage.RotationSchedule{Plan: storage.RotationPlan{Segment: "retail",
		ManagerIDs: []string{anna.ID, bob.ID}}, EveryDays: 7, NextRunAt: due}, "supervisor:test")
	if err != nil || sch.ID == "" || sch.EveryDays != 7 {
		t.Fatalf("create: %+v %v", sch, err)
	}
	if soon, err := s.RunDueRotations(ctx, due.Add(-time.Minute)); err != nil || len(soon) != 0 {
		t.Fatalf("a run before its time: %+v %v", soon, err)
	}

	// Two nodes at once: exactly one carries the run out.
	results := make(chan []storage.Rotation, 2)
	for range 2 {
		go func() {
			done, err := s.RunDueRotations(ctx, time.Now())
			if err != nil {
				t.Error(err)
			}
			results <- done
		}()
	}
	runs := len(<-results) + len(<-results)
	if runs != 1 {
		t.Fatalf("%d runs of one due rotation, want 1", runs)
	}
	hist, _ := s.Rotations(ctx, 10)
	if len(hist) != 1 || len(hist[0].Moves) != 2 || hist[0].Actor != "system:rotation_schedule:"+sch.ID {
		t.Fatalf("history: %+v", hist)
	}
	all, _ := s.RotationSchedules(ctx)
	if len(all) != 1 || !all[0].NextRunAt.Equal(due.AddDate(0, 0, 7)) || all[0].LastRotationID != hist[0].ID {
		t.Fatalf("schedule after its run: %+v (due %v)", all, due)
	}
	if again, _ := s.RunDueRotations(ctx, time.Now()); len(again) != 0 {
		t.Fatalf("ran again in the same period: %+v", again)
	}
	if err := s.DeleteRotationSchedule(ctx, sch.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRotationSchedule(ctx, sch.ID, "test"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
