package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrInvalidCallEvent means a call event can never be applied (no event id,
// a call id that is not a uuid, an unknown kind or value); retrying it is
// pointless.
var ErrInvalidCallEvent = errors.New("storage: invalid call event")

// Call event kinds that ApplyCallEvent understands.
const (
	CallOffered        = "offered"
	CallRinging        = "ringing"
	CallAnswered       = "answered"
	CallEnded          = "ended"
	CallRecordingReady = "recording.ready"
)

// CallEvent is one event of a call as the CDR sees it. Storage keeps its own
// copy of the shape so it needs no event package; the recorder converts.
type CallEvent struct {
	EventID     string
	Kind        string
	At          time.Time
	CallID      string
	Direction   string // "inbound" | "outbound"; may be empty
	ClientID    string
	ManagerID   string
	Disposition string // on ended
	HangupSide  string // on ended
	Recording   string // on ended and recording.ready
}

// CDR is the record of one call. Times are nil until the event that sets
// them has been applied; ids are empty when unknown.
type CDR struct {
	CallID      string
	Direction   string
	ClientID    string
	ManagerID   string
	OfferedAt   *time.Time
	RingingAt   *time.Time
	AnsweredAt  *time.Time
	EndedAt     *time.Time
	Duration    time.Duration // answered to ended; zero if the call was not answered
	Disposition string
	HangupSide  string
	Recording   string
	UpdatedAt   time.Time
}

// CDRFilter narrows CDRs; empty fields match everything.
type CDRFilter struct {
	ClientID  string
	ManagerID string
	Limit     int // default 100, at most 1000
}

var (
	callDirections   = map[string]bool{"": true, "inbound": true, "outbound": true}
	callDispositions = map[string]bool{"": true, "answered": true, "missed": true, "busy": true,
		"rejected": true, "failed": true, "cancelled": true, "no_answer": true}
	callHangupSides = map[string]bool{"": true, "client": true, "manager": true, "system": true}
	callKinds       = map[string]bool{CallOffered: true, CallRinging: true, CallAnswered: true,
		CallEnded: true, CallRecordingReady: true}
)

func (e CallEvent) validate() error {
	switch {
	case e.EventID == "":
		return fmt.Errorf("%w: no event id", ErrInvalidCallEvent)
	case !validUUID(e.CallID):
		return fmt.Errorf("%w: call id is not a uuid", ErrInvalidCallEvent)
	case !callKinds[e.Kind]:
		return fmt.Errorf("%w: kind %q", ErrInvalidCallEvent, e.Kind)
	case e.At.IsZero():
		return fmt.Errorf("%w: no time", ErrInvalidCallEvent)
	case !callDirections[e.Direction]:
		return fmt.Errorf("%w: direction %q", ErrInvalidCallEvent, e.Direction)
	case e.Kind == CallEnded && e.Disposition == "":
		return fmt.Errorf("%w: ended without disposition", ErrInvalidCallEvent)
	case !callDispositions[e.Disposition]:
		return fmt.Errorf("%w: disposition %q", ErrInvalidCallEvent, e.Disposition)
	case !callHangupSides[e.HangupSide]:
		return fmt.Errorf("%w: hang-up side %q", ErrInvalidCallEvent, e.HangupSide)
	}
	return nil
}

// applyCDR merges one event into its call's row. Every rule commutes, so the
// row converges whatever order the events come in:
//   - each timestamp column is set only by its own kind; LEAST keeps the
//     earliest (ringing_at is when ringing began, even over several steps);
//   - ended is the authority for disposition and hang-up side, and the first
//     ended applied keeps them together with its ended_at;
//   - the answering manager replaces whoever an earlier event named (a
//     ringing step, the assigned manager); other events only fill a gap;
//   - recording.ready's recording state replaces the one ended reported.
//
// Ids the database does not know become NULL instead of failing the row.
const applyCDR = `
INSERT INTO cdrs AS c (call_id, direction, client_id, manager_id, offered_at, ringing_at, answered_at,
                       ended_at, disposition, hangup_side, recording, updated_at)
VALUES ($1, $2, (SELECT id FROM clients WHERE id = $3::uuid), (SELECT id FROM managers WHERE id = $4::uuid),
        $5, $6, $7, $8, $9, $10, $11, now())
ON CONFLICT (call_id) DO UPDATE SET
    direction   = coalesce(c.direction, EXCLUDED.direction),
    client_id   = coalesce(c.client_id, EXCLUDED.client_id),
    manager_id  = CASE WHEN $12 THEN coalesce(EXCLUDED.manager_id, c.manager_id)
                       ELSE coalesce(c.manager_id, EXCLUDED.manager_id) END,
    offered_at  = least(c.offered_at, EXCLUDED.offered_at),
    ringing_at  = least(c.ringing_at, EXCLUDED.ringing_at),
    answered_at = least(c.answered_at, EXCLUDED.answered_at),
    ended_at    = coalesce(c.ended_at, EXCLUDED.ended_at),
    disposition = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.disposition ELSE c.disposition END,
    hangup_side = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.hangup_side ELSE c.hangup_side END,
    recording   = CASE WHEN $13 THEN coalesce(EXCLUDED.recording, c.recording)
                       ELSE coalesce(c.recording, EXCLUDED.recording) END,
    updated_at  = now()`

// ApplyCallEvent records e in its call's CDR, creating the row on the first
// event. It is idempotent: an event id seen before changes nothing and
// returns applied == false. The event and the row change commit together, so
// after an error nothing was written and the event may simply be retried.
func (s *Store) ApplyCallEvent(ctx context.Context, e CallEvent) (applied bool, err error) {
	if err := e.validate(); err != nil {
		return false, err
	}
	var offered, ringing, answered, ended *time.Time
	var disposition, hangupSide, recording any
	switch e.Kind {
	case CallOffered:
		offered = &e.At
	case CallRinging:
		ringing = &e.At
	case CallAnswered:
		answered = &e.At
	case CallEnded:
		ended = &e.At
		disposition, hangupSide = nullText(e.Disposition), nullText(e.HangupSide)
		recording = nullText(e.Recording)
	case CallRecordingReady:
		recording = nullText(e.Recording)
	}

	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO cdr_events (event_id, call_id, kind, at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (event_id) DO NOTHING`, e.EventID, e.CallID, e.Kind, e.At)
		if err != nil {
			return fmt.Errorf("storage: record call event: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil // seen before
		}
		if _, err := tx.Exec(ctx, applyCDR, e.CallID, nullText(e.Direction), nullUUID(e.ClientID), nullUUID(e.ManagerID),
			offered, ringing, answered, ended, disposition, hangupSide, recording,
			e.Kind == CallAnswered, e.Kind == CallRecordingReady); err != nil {
			return fmt.Errorf("storage: apply call event: %w", err)
		}
		applied = true
		return nil
	})
	if err != nil {
		return false, err
	}
	return applied, nil
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullUUID(s string) any {
	if !validUUID(s) {
		return nil
	}
	return s
}

const cdrColumns = `call_id, coalesce(direction, ''), coalesce(client_id::text, ''), coalesce(manager_id::text, ''),
	offered_at, ringing_at, answered_at, ended_at, coalesce(duration_ms, 0),
	coalesce(disposition, ''), coalesce(hangup_side, ''), coalesce(recording, ''), updated_at`

func scanCDR(r pgx.Row) (CDR, error) {
	var c CDR
	var ms int64
	err := r.Scan(&c.CallID, &c.Direction, &c.ClientID, &c.ManagerID, &c.OfferedAt, &c.RingingAt, &c.AnsweredAt,
		&c.EndedAt, &ms, &c.Disposition, &c.HangupSide, &c.Recording, &c.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	c.Duration = time.Duration(ms) * time.Millisecond
	return c, err
}

// CDR returns the record of one call.
func (s *Store) CDR(ctx context.Context, callID string) (CDR, error) {
	if !validUUID(callID) {
		return CDR{}, ErrNotFound
	}
	return scanCDR(s.pool.QueryRow(ctx, `SELECT `+cdrColumns+` FROM cdrs WHERE call_id = $1`, callID))
}

// CDRs lists call records, newest offer first; calls whose offered event
// has not arrived yet are the newest of all and come first.
func (s *Store) CDRs(ctx context.Context, f CDRFilter) ([]CDR, error) {
	if (f.ClientID != "" && !validUUID(f.ClientID)) || (f.ManagerID != "" && !validUUID(f.ManagerID)) {
		return []CDR{}, nil // no row can match an id that is not a uuid
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	rows, err := s.pool.Query(ctx, `SELECT `+cdrColumns+` FROM cdrs
		WHERE ($1::uuid IS NULL OR client_id = $1::uuid) AND ($2::uuid IS NULL OR manager_id = $2::uuid)
		ORDER BY offered_at DESC, call_id LIMIT $3`, nullUUID(f.ClientID), nullUUID(f.ManagerID), limit)
	if err != nil {
		return nil, fmt.Errorf("storage: list cdrs: %w", err)
	}
	defer rows.Close()
	out := []CDR{}
	for rows.Next() {
		c, err := scanCDR(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: scan cdr: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
