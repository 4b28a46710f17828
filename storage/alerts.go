package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrAlreadyAcked means the alert was acknowledged before.
var ErrAlreadyAcked = errors.New("storage: alert already acknowledged")

// AlertEvidence is what an alert rests on: the calls or audit rows, and the
// figures the rule compared. Ids and counts only, never a number or a name.
type AlertEvidence struct {
	CallIDs   []string         `json:"call_ids,omitempty"`
	AuditSeqs []int64          `json:"audit_seqs,omitempty"`
	Figures   map[string]int64 `json:"figures,omitempty"`
}

// NewAlert is an alert a rule raises. DedupKey names the rule, the subject
// and the window: raising the same key twice raises one alert.
type NewAlert struct {
	Rule         string
	DedupKey     string
	ClientID     string
	ManagerID    string
	SupervisorID string
	Actor        string
	Evidence     AlertEvidence
	// At is when the rule fired (the evaluator's clock); zero: now.
	At time.Time
}

// Alert is one raised alert.
type Alert struct {
	ID           string
	Rule         string
	ClientID     string
	ManagerID    string
	SupervisorID string
	Actor        string
	Evidence     AlertEvidence
	CreatedAt    time.Time
	AckedBy      string
	AckedAt      *time.Time
}

const alertColumns = `id, rule, coalesce(client_id::text, ''), coalesce(manager_id::text, ''),
	coalesce(supervisor_id::text, ''), actor, evidence, created_at, coalesce(acked_by, ''), acked_at`

func scanAlert(r pgx.Row) (Alert, error) {
	var a Alert
	var ev []byte
	err := r.Scan(&a.ID, &a.Rule, &a.ClientID, &a.ManagerID, &a.SupervisorID, &a.Actor, &ev, &a.CreatedAt,
		&a.AckedBy, &a.AckedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	if err != nil {
		return a, err
	}
	return a, json.Unmarshal(ev, &a.Evidence)
}

// RaiseAlert stores an alert unless its DedupKey was raised before, and
// queues its delivery to every webhook in the same transaction. raised is
// false (and the Alert empty) when the key existed.
func (s *Store) RaiseAlert(ctx context.Context, na NewAlert) (a Alert, raised bool, err error) {
	ev, err := json.Marshal(na.Evidence)
	if err != nil {
		return a, false, err
	}
	at := na.At
	if at.IsZero() {
		at = time.Now()
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		a, err = scanAlert(tx.QueryRow(ctx, `INSERT INTO alerts (rule, dedup_key, client_id, manager_id, supervisor_id, actor, evidence, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (dedup_key) DO NOTHING RETURNING `+alertColumns,
			na.Rule, na.DedupKey, nullUUID(na.ClientID), nullUUID(na.ManagerID), nullUUID(na.SupervisorID), na.Actor, ev, at))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: raise alert: %w", err)
		}
		raised = true
		_, err = tx.Exec(ctx, `INSERT INTO webhook_deliveries (webhook_id, alert_id) SELECT id, $1 FROM webhooks`, a.ID)
		return err
	})
	return a, raised, err
}

// AlertFilter narrows Alerts; empty fields match everything.
type AlertFilter struct {
	Rule      string
	ClientID  string
	ManagerID string
	// Open: only alerts nobody acknowledged.
	Open  bool
	Limit int // default 100, at most 1000
}

// Alerts lists alerts, newest first.
func (s *Store) Alerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	if (f.ClientID != "" && !validUUID(f.ClientID)) || (f.ManagerID != "" && !validUUID(f.ManagerID)) {
		return []Alert{}, nil
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT `+alertColumns+` FROM alerts
		WHERE ($1 = '' OR rule = $1) AND ($2::uuid IS NULL OR client_id = $2::uuid)
		AND ($3::uuid IS NULL OR manager_id = $3::uuid) AND (NOT $4 OR acked_at IS NULL)
		ORDER BY created_at DESC, id LIMIT $5`, f.Rule, nullUUID(f.ClientID), nullUUID(f.ManagerID), f.Open, min(limit, 1000))
	if err != nil {
		return nil, fmt.Errorf("storage: list alerts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Alert, error) { return scanAlert(r) })
}

// AckAlert acknowledges an alert, audited as alert.ack. It returns
// ErrNotFound for an unknown id and ErrAlreadyAcked if it was acknowledged.
func (s *Store) AckAlert(ctx context.Context, id, actor string) (Alert, error) {
	var a Alert
	if !validUUID(id) {
		return a, ErrNotFound
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		a, err = scanAlert(tx.QueryRow(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if a.AckedAt != nil {
			return ErrAlreadyAcked
		}
		if a, err = scanAlert(tx.QueryRow(ctx, `UPDATE alerts SET acked_by = $2, acked_at = now() WHERE id = $1
			RETURNING `+alertColumns, id, actor)); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "alert.ack", Object: "alert:" + id, Reason: a.Rule})
	})
	return a, err
}

// LastAlertAt returns when the newest alert of rule about actor was raised
// (zero if none).
func (s *Store) LastAlertAt(ctx context.Context, rule, actor string) (time.Time, error) {
	var at *time.Time
	err := s.pool.QueryRow(ctx, `SELECT max(created_at) FROM alerts WHERE rule = $1 AND actor = $2`, rule, actor).Scan(&at)
	if err != nil || at == nil {
		return time.Time{}, err
	}
	return *at, nil
}

// AlertCursor is where an evaluator has read up to.
type AlertCursor struct {
	AuditSeq int64
	CDRAt    time.Time
}

// AlertCursor returns the cursor called name (zero when new).
func (s *Store) AlertCursor(ctx context.Context, name string) (AlertCursor, error) {
	var c AlertCursor
	err := s.pool.QueryRow(ctx, `SELECT audit_seq, cdr_at FROM alert_cursors WHERE name = $1`, name).Scan(&c.AuditSeq, &c.CDRAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return AlertCursor{}, nil
	}
	if c.CDRAt.Year() < 2 {
		c.CDRAt = time.Time{} // -infinity
	}
	return c, err
}

// SetAlertCursor stores the cursor called name.
func (s *Store) SetAlertCursor(ctx context.Context, name string, c AlertCursor) error {
	at := any(c.CDRAt)
	if c.CDRAt.IsZero() {
		at = "-infinity"
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO alert_cursors (name, audit_seq, cdr_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET audit_seq = excluded.audit_seq, cdr_at = excluded.cdr_at`, name, c.AuditSeq, at)
	return err
}

// AuditSince returns at most limit audit rows after seq, oldest first.
func (s *Store) AuditSince(ctx context.Context, seq int64, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, at, actor, action, object, reason
		FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, seq, limit)
	if err != nil {
		return nil, err
	}
	return collectAudit(rows)
}

// AuditSeqsOf returns the seqs of actor's rows with one of actions in
// [from, to], oldest first, at most 1000.
func (s *Store) AuditSeqsOf(ctx context.Context, actor string, actions []string, from, to time.Time) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq FROM audit_log
		WHERE actor = $1 AND at >= $2 AND at <= $3 AND action = ANY($4) ORDER BY seq LIMIT 1000`, actor, from, to, actions)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// CDRsUpdatedSince returns at most limit ended CDRs last updated after at
// (or at at, with a call id after afterCallID: a page ends anywhere in a
// batch written in one transaction), oldest update first.
func (s *Store) CDRsUpdatedSince(ctx context.Context, at time.Time, afterCallID string, limit int) ([]CDR, error) {
	if !validUUID(afterCallID) {
		afterCallID = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cdrColumns+` FROM cdrs
		WHERE ended_at IS NOT NULL AND (updated_at > $1 OR (updated_at = $1 AND call_id > $2::uuid))
		ORDER BY updated_at, call_id LIMIT $3`, at, afterCallID, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: cdrs since: %w", err)
	}
	return collectCDRs(rows)
}

// ClientCall is one call of an assigned client, as the quiet-client rule
// reads it.
type ClientCall struct {
	ClientID  string
	ManagerID string // his primary manager now
	CallID    string
	At        time.Time
}

// AssignedClientCalls returns the calls offered since since of every client
// who has a primary manager who is active, by client and then time.
func (s *Store) AssignedClientCalls(ctx context.Context, since time.Time) ([]ClientCall, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.client_id::text, a.manager_id::text, c.call_id::text, c.offered_at
		FROM cdrs c
		JOIN assignments a ON a.client_id = c.client_id AND a.kind = 'primary' AND a.valid_until IS NULL
		JOIN managers m ON m.id = a.manager_id AND m.status = 'active'
		WHERE c.offered_at >= $1 ORDER BY c.client_id, c.offered_at, c.call_id`, since)
	if err != nil {
		return nil, fmt.Errorf("storage: assigned client calls: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[ClientCall])
}

// ManagerWeeks is how many calls with his clients a manager had in the week
// before and in the week before that.
type ManagerWeeks struct {
	ManagerID string
	Previous  int64
	Current   int64
}

// ManagerCallWeeks counts, for every active manager, the calls with a
// client in [to-14d, to-7d) and [to-7d, to).
func (s *Store) ManagerCallWeeks(ctx context.Context, to time.Time) ([]ManagerWeeks, error) {
	week := 7 * 24 * time.Hour
	rows, err := s.pool.Query(ctx, `SELECT m.id::text,
		count(*) FILTER (WHERE c.offered_at >= $1 AND c.offered_at < $2),
		count(*) FILTER (WHERE c.offered_at >= $2 AND c.offered_at < $3)
		FROM managers m JOIN cdrs c ON c.manager_id = m.id AND c.client_id IS NOT NULL AND c.offered_at >= $1 AND c.offered_at < $3
		WHERE m.status = 'active' GROUP BY m.id ORDER BY m.id`, to.Add(-2*week), to.Add(-week), to)
	if err != nil {
		return nil, fmt.Errorf("storage: manager call weeks: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[ManagerWeeks])
}

// ManagerCallIDs returns at most limit ids of a manager's calls with
// clients in [from, to), newest first.
func (s *Store) ManagerCallIDs(ctx context.Context, managerID string, from, to time.Time, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT call_id::text FROM cdrs WHERE manager_id = $1 AND client_id IS NOT NULL
		AND offered_at >= $2 AND offered_at < $3 ORDER BY offered_at DESC LIMIT $4`, managerID, from, to, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// AuditRows returns the audit rows with the given seqs, oldest first.
func (s *Store) AuditRows(ctx context.Context, seqs []int64) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, at, actor, action, object, reason
		FROM audit_log WHERE seq = ANY($1) ORDER BY seq`, seqs)
	if err != nil {
		return nil, err
	}
	return collectAudit(rows)
}

// CDRsByID returns the CDRs of the given calls, newest offer first.
func (s *Store) CDRsByID(ctx context.Context, ids []string) ([]CDR, error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if validUUID(id) {
			valid = append(valid, id)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cdrColumns+` FROM cdrs WHERE call_id = ANY($1::uuid[])
		ORDER BY offered_at DESC, call_id`, valid)
	if err != nil {
		return nil, fmt.Errorf("storage: cdrs by id: %w", err)
	}
	return collectCDRs(rows)
}
