package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
