package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrInvalidCallEvent means a call event can never be applied (no event id,
// a call id that is not a uuid, an unknown kind or value); retrying it is
// pointless.
var ErrInvalidCallEvent = errors.New("storage: invalid call event")

// ErrCallEventsRefused means the database refused the data of a batch of call
// events (a value it cannot store, a constraint): the same batch fails again,
// but a smaller part of it may pass.
var ErrCallEventsRefused = errors.New("storage: call events refused by the database")

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
	Via         string // on ended: "mobile" when the manager's side was his mobile
	Mobile      string // on ended: accepted, declined or timed_out (the mobile's whisper)
	Node        string // the pbx node that handles the call; may be empty
	// TransferredFrom is the call id of the part a transfer continues, on
	// every event of the colleague's part; empty otherwise.
	TransferredFrom string
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
	Via         string // "mobile": the manager took the call on his corporate mobile
	Mobile      string // how the mobile that answered ended the whisper
	// TransferredFrom is the call id of the part before this one when a
	// transfer to a colleague began this part.
	TransferredFrom string
	UpdatedAt       time.Time
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
		"rejected": true, "failed": true, "cancelled": true, "no_answer": true, "overload": true}
	callHangupSides = map[string]bool{"": true, "client": true, "manager": true, "system": true, "node_lost": true}
	callVias        = map[string]bool{"": true, "mobile": true}
	callMobileEnds  = map[string]bool{"": true, "accepted": true, "declined": true, "timed_out": true}
	callKinds       = map[string]bool{CallOffered: true, CallRinging: true, CallAnswered: true,
		CallEnded: true, CallRecordingReady: true}
)

// Validate reports whether e can ever be applied; an error wraps
// ErrInvalidCallEvent.
func (e CallEvent) Validate() error {
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
	case !callVias[e.Via]:
		return fmt.Errorf("%w: via %q", ErrInvalidCallEvent, e.Via)
	case !callMobileEnds[e.Mobile]:
		return fmt.Errorf("%w: mobile %q", ErrInvalidCallEvent, e.Mobile)
	case e.TransferredFrom != "" && (!validUUID(e.TransferredFrom) || strings.EqualFold(e.TransferredFrom, e.CallID)):
		return fmt.Errorf("%w: transferred_from is not another call's uuid", ErrInvalidCallEvent)
	}
	return nil
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
	coalesce(disposition, ''), coalesce(hangup_side, ''), coalesce(recording, ''),
	coalesce(via, ''), coalesce(mobile, ''), coalesce(transferred_from::text, ''), updated_at`

func scanCDR(r pgx.Row) (CDR, error) {
	var c CDR
	var ms int64
	err := r.Scan(&c.CallID, &c.Direction, &c.ClientID, &c.ManagerID, &c.OfferedAt, &c.RingingAt, &c.AnsweredAt,
		&c.EndedAt, &ms, &c.Disposition, &c.HangupSide, &c.Recording, &c.Via, &c.Mobile, &c.TransferredFrom, &c.UpdatedAt)
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

// OpenCDRs returns the CDRs of calls that node left without an end: at a
// node's start, or when another node finds it dead, the calls it was
// handling when it died. With unnamed, also the rows that name no node
// (written before nodes were recorded): only the node restarting may claim
// those.
func (s *Store) OpenCDRs(ctx context.Context, node string, unnamed bool) ([]CDR, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+cdrColumns+` FROM cdrs
		WHERE ended_at IS NULL AND (node = $1 OR ($2 AND node IS NULL)) ORDER BY offered_at LIMIT 10000`, node, unnamed)
	if err != nil {
		return nil, fmt.Errorf("storage: open cdrs: %w", err)
	}
	return collectCDRs(rows)
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
	return collectCDRs(rows)
}

func collectCDRs(rows pgx.Rows) ([]CDR, error) {
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
