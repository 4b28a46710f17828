package storage

import (
	"context"
	"errors"
	"fmt"
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

// Errors of writing segments and of assigning their clients.
var (
	// ErrSegmentNotPermitted means a manager is not permitted to hold the
	// clients of a restricted segment.
	ErrSegmentNotPermitted = errors.New("storage: manager not permitted for the client's segment")
	// ErrSegmentInUse means a segment still has clients, so it can't be
	// deleted.
	ErrSegmentInUse = errors.New("storage: segment still has clients")
	// ErrDuplicateSegment means another segment has the name.
	ErrDuplicateSegment = errors.New("storage: segment name already exists")
	// ErrSegmentHolders means the rules would restrict a segment whose
	// clients are now held (as primary or partner) by a manager the rules
	// do not permit: reassign them first.
	ErrSegmentHolders = errors.New("storage: segment's clients are held by managers the rules do not permit")
	// ErrNotSupervisor means the person named as a segment's supervisor is
	// not an active supervisor or admin.
	ErrNotSupervisor = errors.New("storage: not an active supervisor or admin")
)

// Valid reports whether the hours can be stored: days 0-6, 0 <= From < To <=
// 24h, whole seconds.
func (h WorkingHours) Valid() bool {
	for _, d := range h.Days {
		if d < 0 || d > 6 {
			return false
		}
	}
	return h.From >= 0 && h.From < h.To && h.To <= 24*time.Hour &&
		h.From%time.Second == 0 && h.To%time.Second == 0
}

// clockText is a time of day as Postgres reads a time ("24:00:00" too).
func clockText(d time.Duration) string {
	s := int(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

// Segment returns one segment by id.
func (s *Store) Segment(ctx context.Context, id string) (Segment, error) {
	if !validUUID(id) {
		return Segment{}, ErrNotFound
	}
	return scanSegment(s.pool.QueryRow(ctx, segmentSelect+`WHERE s.id = $1`, id))
}

// SegmentClientCounts returns how many live (not erased) clients each
// segment has, by name.
func (s *Store) SegmentClientCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT segment, count(*) FROM clients WHERE erased_at IS NULL AND segment <> '' GROUP BY segment`)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	var name string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error { out[name] = n; return nil })
	return out, err
}

// CreateSegment stores a segment with its name and rules (r's ID and times
// are ignored) and audits it (segment.create).
func (s *Store) CreateSegment(ctx context.Context, r Segment, actor string) (Segment, error) {
	var id string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := checkRuleManagers(ctx, tx, r); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `INSERT INTO segments (name) VALUES ($1) RETURNING id`, r.Name).Scan(&id)
		if code, _ := pgCode(err); code == pgUniqueViolation {
			return ErrDuplicateSegment
		} else if err != nil {
			return fmt.Errorf("storage: insert segment: %w", err)
		}
		if err := writeRules(ctx, tx, id, r); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "segment.create", Object: "segment:" + id})
	})
	if err != nil {
		return Segment{}, err
	}
	return s.Segment(ctx, id)
}

// UpdateSegment replaces a segment's name and rules (r's ID and times are
// ignored) and audits it
// (segment.update). A new name is the new name of every client of the
// segment, in the same transaction. Restricting it to managers who do not
// hold all its clients is ErrSegmentHolders.
func (s *Store) UpdateSegment(ctx context.Context, id string, r Segment, actor string) (Segment, error) {
	if !validUUID(id) {
		return Segment{}, ErrNotFound
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var old string
		err := tx.QueryRow(ctx, `SELECT name FROM segments WHERE id = $1 FOR UPDATE`, id).Scan(&old)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if err := checkRuleManagers(ctx, tx, r); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE segments SET name = $2, updated_at = now() WHERE id = $1`, id, r.Name)
		if code, _ := pgCode(err); code == pgUniqueViolation {
			return ErrDuplicateSegment
		} else if err != nil {
			return err
		}
		if old != r.Name {
			if _, err := tx.Exec(ctx, `UPDATE clients SET segment = $2 WHERE segment = $1`, old, r.Name); err != nil {
				return err
			}
		}
		if r.Restricted {
			var stray bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM assignments a JOIN clients c ON c.id = a.client_id
				WHERE c.segment = $1 AND c.erased_at IS NULL AND a.valid_until IS NULL AND NOT (a.manager_id = ANY($2::uuid[])))`,
				r.Name, uniq(r.AllowedManagers)).Scan(&stray); err != nil {
				return err
			}
			if stray {
				return ErrSegmentHolders
			}
		}
		if err := writeRules(ctx, tx, id, r); err != nil {
			return err
		}
		reason := ""
		if old != r.Name {
			reason = "renamed"
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "segment.update", Object: "segment:" + id, Reason: reason})
	})
	if err != nil {
		return Segment{}, err
	}
	return s.Segment(ctx, id)
}

// DeleteSegment deletes a segment that has no live clients (else
// ErrSegmentInUse) and audits it (segment.delete); erased clients lose the
// label.
func (s *Store) DeleteSegment(ctx context.Context, id, actor string) error {
	if !validUUID(id) {
		return ErrNotFound
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var name string
		err := tx.QueryRow(ctx, `SELECT name FROM segments WHERE id = $1 FOR UPDATE`, id).Scan(&name)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		var inUse bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM clients WHERE segment = $1 AND erased_at IS NULL)`, name).Scan(&inUse); err != nil {
			return err
		}
		if inUse {
			return ErrSegmentInUse
		}
		if _, err := tx.Exec(ctx, `UPDATE clients SET segment = '' WHERE segment = $1`, name); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM segments WHERE id = $1`, id); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "segment.delete", Object: "segment:" + id})
	})
}

// checkRuleManagers checks that the permitted managers are active and the
// supervisor an active supervisor or admin, and locks them.
func checkRuleManagers(ctx context.Context, tx pgx.Tx, r Segment) error {
	if err := lockActiveManagers(ctx, tx, uniq(r.AllowedManagers)); err != nil {
		return err
	}
	if r.SupervisorID == "" {
		return nil
	}
	if !validUUID(r.SupervisorID) {
		return ErrNotSupervisor
	}
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM managers WHERE id = $1 AND status = 'active'
		AND role IN ('supervisor', 'admin') FOR SHARE)`, r.SupervisorID).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return ErrNotSupervisor
	}
	return nil
}

// writeRules writes a segment's rules and permitted managers.
func writeRules(ctx context.Context, tx pgx.Tx, id string, r Segment) error {
	days := make([]int16, 0, len(r.Hours.Days))
	for _, d := range r.Hours.Days {
		if !slices.Contains(days, int16(d)) {
			days = append(days, int16(d))
		}
	}
	slices.Sort(days)
	hours := r.Hours
	if len(days) == 0 { // no limit: the hours mean nothing
		hours.From, hours.To = 0, 24*time.Hour
	}
	if _, err := tx.Exec(ctx, `UPDATE segments SET restricted = $2, supervisor_id = nullif($3, '')::uuid,
		overflow_to_supervisor = $4, alert_missed = $5, hours_days = $6, hours_from = $7::time, hours_to = $8::time
		WHERE id = $1`, id, r.Restricted, r.SupervisorID, r.OverflowToSupervisor, r.AlertMissed, days,
		clockText(hours.From), clockText(hours.To)); err != nil {
		return fmt.Errorf("storage: segment rules: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM segment_managers WHERE segment_id = $1`, id); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO segment_managers (segment_id, manager_id) SELECT $1, unnest($2::uuid[])`,
		id, uniq(r.AllowedManagers))
	return err
}

// ensureSegment makes a segment with no rules of a name a client is given
// that no segment has yet (old scripts and imports name segments freely).
func ensureSegment(ctx context.Context, tx pgx.Tx, name, actor string) error {
	if name == "" {
		return nil
	}
	var id string
	err := tx.QueryRow(ctx, `INSERT INTO segments (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: segment: %w", err)
	}
	return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "segment.create", Object: "segment:" + id, Reason: "named by a client"})
}

// checkSegmentPermits checks that every manager may hold the clients of
// the segment called name (only a restricted segment limits it), holding
// the segment's row against a change of its rules until the transaction
// ends.
func checkSegmentPermits(ctx context.Context, tx pgx.Tx, name string, managerIDs []string) error {
	if name == "" {
		return nil
	}
	var id string
	var restricted bool
	err := tx.QueryRow(ctx, `SELECT id, restricted FROM segments WHERE name = $1 FOR SHARE`, name).Scan(&id, &restricted)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !restricted) {
		return nil
	}
	if err != nil {
		return err
	}
	ids := uniq(managerIDs)
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM segment_managers WHERE segment_id = $1 AND manager_id = ANY($2::uuid[])`,
		id, ids).Scan(&n); err != nil {
		return err
	}
	if n != len(ids) {
		return ErrSegmentNotPermitted
	}
	return nil
}

// checkClientSegmentPermits is checkSegmentPermits for a client's segment.
func checkClientSegmentPermits(ctx context.Context, tx pgx.Tx, clientID string, managerIDs []string) error {
	var name string
	if err := tx.QueryRow(ctx, `SELECT segment FROM clients WHERE id = $1`, clientID).Scan(&name); err != nil {
		return err
	}
	return checkSegmentPermits(ctx, tx, name, managerIDs)
}
