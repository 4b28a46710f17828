package storage

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ApplyCallEvent records e in its call's CDR, creating the row on the first
// event. It is idempotent: an event id seen before changes nothing and
// returns applied == false. The event and the row change commit together, so
// after an error nothing was written and the event may simply be retried.
func (s *Store) ApplyCallEvent(ctx context.Context, e CallEvent) (applied bool, err error) {
	done, err := s.ApplyCallEvents(ctx, []CallEvent{e})
	if err != nil {
		return false, err
	}
	return done[0], nil
}

// ApplyCallEvents records a batch of events in one transaction, with the
// same outcome as applying them one by one in slice order through
// ApplyCallEvent: applied[i] is false for an event seen before (in the
// ledger, or earlier in evs). Either every event of the batch is recorded
// or, after an error, none is. One invalid event refuses the whole batch
// (ErrInvalidCallEvent); check each with Validate first. A batch whose data
// the database refuses fails with ErrCallEventsRefused: apply its parts
// apart to find the event at fault.
//
// The merge rules commute (see foldCallEvents), so the row converges
// whatever order the events come in, within a batch and across batches.
func (s *Store) ApplyCallEvents(ctx context.Context, evs []CallEvent) (applied []bool, err error) {
	for i, e := range evs {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("event %d of %d: %w", i+1, len(evs), err)
		}
	}
	// The first copy of each event id is the one that counts, as it would be
	// applied one by one.
	first := make(map[string]int, len(evs))
	var ledger callEventColumns
	for i, e := range evs {
		if _, dup := first[e.EventID]; dup {
			continue
		}
		first[e.EventID] = i
		ledger.add(e)
	}

	applied = make([]bool, len(evs))
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		known := map[int]knownPeople{}
		rows, err := tx.Query(ctx, recordCallEvents, ledger.eventIDs, ledger.callIDs, ledger.kinds, ledger.ats,
			ledger.clientIDs, ledger.managerIDs)
		if err != nil {
			return fmt.Errorf("storage: record call events: %w", err)
		}
		for rows.Next() {
			var id string
			var k knownPeople
			if err := rows.Scan(&id, &k.client, &k.manager); err != nil {
				rows.Close()
				return fmt.Errorf("storage: record call events: %w", err)
			}
			known[first[id]] = k
			applied[first[id]] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storage: record call events: %w", err)
		}
		if len(known) == 0 {
			return nil // every event seen before
		}

		deltas := foldCallEvents(evs, known)
		var up cdrUpsertColumns
		var over cdrOverrideColumns
		for _, d := range deltas {
			up.add(d)
			over.add(d)
		}
		b := &pgx.Batch{}
		b.Queue(upsertCDRs, up.callIDs, up.directions, up.clientIDs, up.managerIDs, up.offered, up.ringing,
			up.answered, up.ended, up.dispositions, up.hangupSides, up.recordings, up.nodes, up.vias, up.mobiles)
		if len(over.callIDs) > 0 {
			b.Queue(overrideCDRs, over.callIDs, over.managerIDs, over.recordings)
		}
		queueTaskUpdates(b, up.callIDs) // tasks.go
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("storage: apply call events: %w", err)
		}
		return nil
	})
	if err != nil {
		if code, _ := pgCode(err); strings.HasPrefix(code, "22") || strings.HasPrefix(code, "23") {
			err = fmt.Errorf("%w: %w", ErrCallEventsRefused, err)
		}
		return nil, err
	}
	return applied, nil
}

// recordCallEvents adds a batch's events to the ledger, in event id order so
// that two writers' batches wait for each other instead of deadlocking, and
// returns the new ones with whether the database knows their client and
// manager (an id it does not know becomes NULL in the CDR instead of failing
// the row).
const recordCallEvents = `
WITH ev AS (
    SELECT event_id, call_id, kind, at, nullif(client_id, '')::uuid AS client_id,
           nullif(manager_id, '')::uuid AS manager_id
    FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
         AS e(event_id, call_id, kind, at, client_id, manager_id)
), fresh AS (
    INSERT INTO cdr_events (event_id, call_id, kind, at)
    SELECT event_id, call_id, kind, at FROM ev ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
SELECT ev.event_id,
       EXISTS (SELECT 1 FROM clients WHERE id = ev.client_id),
       EXISTS (SELECT 1 FROM managers WHERE id = ev.manager_id)
FROM fresh JOIN ev USING (event_id)`

// upsertCDRs merges each call's folded delta into its row, in call id order
// (the lock order of every writer). Every rule commutes with the fold:
//   - each timestamp column keeps the earliest value (LEAST ignores NULL);
//   - the first ended keeps its disposition, hang-up side, via and mobile
//     outcome with its ended_at;
//   - direction, client and manager only fill a gap here; the manager who
//     answered and the recording state of recording.ready replace what the
//     row holds in overrideCDRs, after this statement.
const upsertCDRs = `
INSERT INTO cdrs AS c (call_id, direction, client_id, manager_id, offered_at, ringing_at, answered_at,
                       ended_at, disposition, hangup_side, recording, node, via, mobile, updated_at)
SELECT call_id, nullif(direction, ''), nullif(client_id, '')::uuid, nullif(manager_id, '')::uuid,
       offered_at, ringing_at, answered_at, ended_at, nullif(disposition, ''), nullif(hangup_side, ''),
       nullif(recording, ''), nullif(node, ''), nullif(via, ''), nullif(mobile, ''), now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
     AS d(call_id, direction, client_id, manager_id, offered_at, ringing_at, answered_at, ended_at,
          disposition, hangup_side, recording, node, via, mobile)
ORDER BY call_id
ON CONFLICT (call_id) DO UPDATE SET
    direction   = coalesce(c.direction, EXCLUDED.direction),
    client_id   = coalesce(c.client_id, EXCLUDED.client_id),
    manager_id  = coalesce(c.manager_id, EXCLUDED.manager_id),
    offered_at  = least(c.offered_at, EXCLUDED.offered_at),
    ringing_at  = least(c.ringing_at, EXCLUDED.ringing_at),
    answered_at = least(c.answered_at, EXCLUDED.answered_at),
    ended_at    = coalesce(c.ended_at, EXCLUDED.ended_at),
    disposition = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.disposition ELSE c.disposition END,
    hangup_side = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.hangup_side ELSE c.hangup_side END,
    via         = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.via ELSE c.via END,
    mobile      = CASE WHEN c.ended_at IS NULL THEN EXCLUDED.mobile ELSE c.mobile END,
    recording   = coalesce(c.recording, EXCLUDED.recording),
    node        = coalesce(c.node, EXCLUDED.node),
    updated_at  = now()`

// overrideCDRs sets what replaces rather than fills: the manager who
// answered and recording.ready's recording state. The rows are locked by
// upsertCDRs already; a row that holds these values already (the usual case:
// the manager who answered is the one offered) is left alone rather than
// written twice.
const overrideCDRs = `
UPDATE cdrs AS c SET
    manager_id = coalesce(o.manager_id, c.manager_id),
    recording  = coalesce(o.recording, c.recording)
FROM (SELECT call_id, nullif(manager_id, '')::uuid AS manager_id, nullif(recording, '') AS recording
      FROM unnest($1::uuid[], $2::text[], $3::text[]) AS o(call_id, manager_id, recording)) AS o
WHERE c.call_id = o.call_id
  AND (c.manager_id IS DISTINCT FROM coalesce(o.manager_id, c.manager_id)
       OR c.recording IS DISTINCT FROM coalesce(o.recording, c.recording))`

// knownPeople says whether the database knows an event's client and manager.
type knownPeople struct{ client, manager bool }

// cdrDelta is what one batch's new events change in one call's row: each
// field folded over the events in batch order by the rule that applying
// them one by one would follow.
type cdrDelta struct {
	callID     string
	direction  string // the first one given
	clientID   string // the first known client
	managerGap string // the first known manager of an event other than answered: fills a gap
	managerSet string // the known manager of the last answered event naming one: replaces
	offered    *time.Time
	ringing    *time.Time // each time: the earliest
	answered   *time.Time
	ended      *time.Time // the first ended event's, with its disposition and hang-up side
	disposition,
	hangupSide,
	via,
	mobile string
	recordingGap string // the first recording state of an ended event: fills a gap
	recordingSet string // the last recording state of a recording.ready event: replaces
	node         string // the first node named: the one that handles the call
}

// foldCallEvents folds the new events (those in known, by index into evs)
// into one delta per call, in the order of the calls' first new events.
func foldCallEvents(evs []CallEvent, known map[int]knownPeople) []*cdrDelta {
	var out []*cdrDelta
	byCall := map[string]*cdrDelta{}
	earliest := func(cur **time.Time, at time.Time) {
		if *cur == nil || at.Before(**cur) {
			*cur = &at
		}
	}
	fill := func(cur *string, v string) {
		if *cur == "" {
			*cur = v
		}
	}
	for i, e := range evs {
		k, fresh := known[i]
		if !fresh {
			continue
		}
		// One row per call however its id is spelled: an upsert may touch a
		// row only once.
		callID := strings.ToLower(e.CallID)
		d := byCall[callID]
		if d == nil {
			d = &cdrDelta{callID: callID}
			byCall[callID] = d
			out = append(out, d)
		}
		fill(&d.direction, e.Direction)
		fill(&d.node, e.Node)
		if k.client {
			fill(&d.clientID, e.ClientID)
		}
		if k.manager {
			if e.Kind == CallAnswered {
				d.managerSet = e.ManagerID
			} else {
				fill(&d.managerGap, e.ManagerID)
			}
		}
		switch e.Kind {
		case CallOffered:
			earliest(&d.offered, e.At)
		case CallRinging:
			earliest(&d.ringing, e.At)
		case CallAnswered:
			earliest(&d.answered, e.At)
		case CallEnded:
			if d.ended == nil {
				at := e.At
				d.ended, d.disposition, d.hangupSide, d.via, d.mobile = &at, e.Disposition, e.HangupSide, e.Via, e.Mobile
			}
			fill(&d.recordingGap, e.Recording)
		case CallRecordingReady:
			if e.Recording != "" {
				d.recordingSet = e.Recording
			}
		}
	}
	return out
}

// callEventColumns is a batch of events as the columns of recordCallEvents.
type callEventColumns struct {
	eventIDs, callIDs, kinds, clientIDs, managerIDs []string
	ats                                             []time.Time
}

func (c *callEventColumns) add(e CallEvent) {
	c.eventIDs = append(c.eventIDs, e.EventID)
	c.callIDs = append(c.callIDs, e.CallID)
	c.kinds = append(c.kinds, e.Kind)
	c.ats = append(c.ats, e.At)
	c.clientIDs = append(c.clientIDs, uuidOrEmpty(e.ClientID))
	c.managerIDs = append(c.managerIDs, uuidOrEmpty(e.ManagerID))
}

// cdrUpsertColumns is a batch of deltas as the columns of upsertCDRs; an
// empty string is NULL.
type cdrUpsertColumns struct {
	callIDs, directions, clientIDs, managerIDs, dispositions, hangupSides, recordings, nodes, vias, mobiles []string
	offered, ringing, answered, ended                                                                       []*time.Time
}

func (c *cdrUpsertColumns) add(d *cdrDelta) {
	c.callIDs = append(c.callIDs, d.callID)
	c.directions = append(c.directions, d.direction)
	c.clientIDs = append(c.clientIDs, d.clientID)
	c.managerIDs = append(c.managerIDs, cmp.Or(d.managerSet, d.managerGap))
	c.offered = append(c.offered, d.offered)
	c.ringing = append(c.ringing, d.ringing)
	c.answered = append(c.answered, d.answered)
	c.ended = append(c.ended, d.ended)
	c.dispositions = append(c.dispositions, d.disposition)
	c.hangupSides = append(c.hangupSides, d.hangupSide)
	c.recordings = append(c.recordings, cmp.Or(d.recordingSet, d.recordingGap))
	c.nodes = append(c.nodes, d.node)
	c.vias = append(c.vias, d.via)
	c.mobiles = append(c.mobiles, d.mobile)
}

// cdrOverrideColumns holds the deltas that replace a manager or a recording
// state, as the columns of overrideCDRs.
type cdrOverrideColumns struct {
	callIDs, managerIDs, recordings []string
}

func (c *cdrOverrideColumns) add(d *cdrDelta) {
	if d.managerSet == "" && d.recordingSet == "" {
		return
	}
	c.callIDs = append(c.callIDs, d.callID)
	c.managerIDs = append(c.managerIDs, d.managerSet)
	c.recordings = append(c.recordings, d.recordingSet)
}

func uuidOrEmpty(s string) string {
	if !validUUID(s) {
		return ""
	}
	return s
}
