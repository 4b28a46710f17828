package storage

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Segment is a named group of clients with the rules that apply to them.
// Clients name their segment in Client.Segment.
type Segment struct {
	ID   string
	Name string
	// Restricted: only AllowedManagers may be primary or partner for the
	// segment's clients.
	Restricted      bool
	AllowedManagers []string
	// SupervisorID is the segment's supervisor ("" for none).
	SupervisorID string
	// OverflowToSupervisor: an unanswered call ends at the supervisor's
	// phone instead of the team.
	OverflowToSupervisor bool
	// AlertMissed: a missed call alerts the supervisor at once.
	AlertMissed bool
	// Hours are the working hours managers may start calls to the
	// segment's clients in.
	Hours     WorkingHours
	CreatedAt time.Time
	UpdatedAt time.Time
}

// WorkingHours are the days of the week (0 = Sunday) and the time of day
// [From, To) in the company's time zone. No days means no limit.
type WorkingHours struct {
	Days     []int
	From, To time.Duration // since midnight
}

// Open reports whether t, seen in loc, falls inside the working hours.
func (h WorkingHours) Open(t time.Time, loc *time.Location) bool {
	if len(h.Days) == 0 {
		return true
	}
	t = t.In(loc)
	if !slices.Contains(h.Days, int(t.Weekday())) {
		return false
	}
	sinceMidnight := time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second
	return sinceMidnight >= h.From && sinceMidnight < h.To
}

// Allows reports whether managerID may be primary or partner for the
// segment's clients.
func (s Segment) Allows(managerID string) bool {
	return !s.Restricted || slices.Contains(s.AllowedManagers, managerID)
}

const segmentSelect = `SELECT s.id, s.name, s.restricted,
	coalesce((SELECT array_agg(m.manager_id::text ORDER BY m.manager_id) FROM segment_managers m WHERE m.segment_id = s.id), '{}'),
	coalesce(s.supervisor_id::text, ''), s.overflow_to_supervisor, s.alert_missed,
	s.hours_days, extract(epoch FROM s.hours_from)::bigint, extract(epoch FROM s.hours_to)::bigint,
	s.created_at, s.updated_at
	FROM segments s `

func scanSegment(r pgx.Row) (Segment, error) {
	var sg Segment
	var days []int16
	var from, to int64
	err := r.Scan(&sg.ID, &sg.Name, &sg.Restricted, &sg.AllowedManagers, &sg.SupervisorID,
		&sg.OverflowToSupervisor, &sg.AlertMissed, &days, &from, &to, &sg.CreatedAt, &sg.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return sg, ErrNotFound
	}
	for _, d := range days {
		sg.Hours.Days = append(sg.Hours.Days, int(d))
	}
	sg.Hours.From, sg.Hours.To = time.Duration(from)*time.Second, time.Duration(to)*time.Second
	return sg, err
}

// Segments lists every segment by name.
func (s *Store) Segments(ctx context.Context) ([]Segment, error) {
	rows, err := s.pool.Query(ctx, segmentSelect+`ORDER BY s.name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Segment, error) { return scanSegment(r) })
}

// SegmentByName returns the segment called name, or ErrNotFound.
func (s *Store) SegmentByName(ctx context.Context, name string) (Segment, error) {
	return scanSegment(s.pool.QueryRow(ctx, segmentSelect+`WHERE s.name = $1`, name))
}

// SegmentOfClient returns the segment of client clientID, or ErrNotFound
// when he has none (or no such client).
func (s *Store) SegmentOfClient(ctx context.Context, clientID string) (Segment, error) {
	if !validUUID(clientID) {
		return Segment{}, ErrNotFound
	}
	return scanSegment(s.pool.QueryRow(ctx, segmentSelect+`JOIN clients c ON c.segment = s.name WHERE c.id = $1`, clientID))
}
