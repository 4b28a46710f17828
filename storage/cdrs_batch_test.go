package storage_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/storage"
)

// oneByOne is how call events were applied before batching: one
// transaction per event, ledger first, then this upsert. It is the reference
// the batched path must match.
const oneByOne = `
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

func applyOneByOne(t *testing.T, conn *pgx.Conn, e storage.CallEvent) (applied bool) {
	t.Helper()
	ctx := context.Background()
	null := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	uuid := func(s string) any {
		if len(s) != 36 {
			return nil
		}
		return s
	}
	var offered, ringing, answered, ended *time.Time
	var disposition, hangupSide, recording any
	switch e.Kind {
	case storage.CallOffered:
		offered = &e.At
	case storage.CallRinging:
		ringing = &e.At
	case storage.CallAnswered:
		answered = &e.At
	case storage.CallEnded:
		ended = &e.At
		disposition, hangupSide, recording = null(e.Disposition), null(e.HangupSide), null(e.Recording)
	case storage.CallRecordingReady:
		recording = null(e.Recording)
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO cdr_events (event_id, call_id, kind, at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (event_id) DO NOTHING`, e.EventID, e.CallID, e.Kind, e.At)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		applied = true
		_, err = tx.Exec(ctx, oneByOne, e.CallID, null(e.Direction), uuid(e.ClientID), uuid(e.ManagerID),
			offered, ringing, answered, ended, disposition, hangupSide, recording,
			e.Kind == storage.CallAnswered, e.Kind == storage.CallRecordingReady)
		return err
	})
	if err != nil {
		t.Fatalf("one by one %s: %v", e.Kind, err)
	}
	return applied
}

// randomCallEvents makes a stream of valid events for n calls, interleaved,
// with every field varied where the merge rules differ: several ringing,
// answered and ended events per call, unknown and malformed people ids,
// recording states from ended and recording.ready, and copies of events
// already in the stream (redeliveries).
func randomCallEvents(rng *rand.Rand, n int, clients, managers []string, t0 time.Time) []storage.CallEvent {
	pick := func(from ...string) string { return from[rng.IntN(len(from))] }
	var out []storage.CallEvent
	calls := make([]string, n)
	for i := range calls {
		calls[i] = cdrUUID()
	}
	kinds := []string{storage.CallOffered, storage.CallRinging, storage.CallRinging, storage.CallAnswered,
		storage.CallEnded, storage.CallEnded, storage.CallRecordingReady}
	for range n * 8 {
		if len(out) > 0 && rng.IntN(8) == 0 {
			out = append(out, out[rng.IntN(len(out))]) // the same event again
			continue
		}
		e := storage.CallEvent{EventID: cdrUUID(), Kind: kinds[rng.IntN(len(kinds))], CallID: calls[rng.IntN(n)],
			At:        t0.Add(time.Duration(rng.IntN(60_000_000)) * time.Microsecond),
			Direction: pick("", "inbound", "outbound", "inbound"),
			ClientID:  pick(append([]string{"", "not-a-uuid", cdrUUID()}, clients...)...),
			ManagerID: pick(append([]string{"", cdrUUID()}, managers...)...)}
		switch e.Kind {
		case storage.CallEnded:
			e.Disposition = pick("answered", "missed", "busy", "no_answer")
			e.HangupSide = pick("", "client", "manager", "system")
			e.Recording = pick("", "ok", "missing")
		case storage.CallRecordingReady:
			e.Recording = pick("", "ok", "partial")
		}
		out = append(out, e)
	}
	return out
}

// TestCDRBatchesMatchOneByOne applies the same random streams of call events
// through ApplyCallEvents in batches of random sizes and one by one through
// the pre-batching SQL: every CDR, and whether each event counted as new,
// must come out the same.
func TestCDRBatchesMatchOneByOne(t *testing.T) {
	ctx := context.Background()
	s, url := newStore(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	var clients []string
	for range 3 {
		c, err := s.CreateClient(ctx, storage.NewClient{Name: "Client", ManagerID: anna.ID, NewCode: nextCode}, "test")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c.ID)
	}
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 9))
		stream := randomCallEvents(rng, 60, clients, []string{anna.ID, bob.ID}, t0)

		// The batched copy: other event and call ids, same content.
		batchCall := map[string]string{}
		batched := make([]storage.CallEvent, len(stream))
		for i, e := range stream {
			if batchCall[e.CallID] == "" {
				batchCall[e.CallID] = cdrUUID()
			}
			e.EventID = "b-" + e.EventID
			e.CallID = batchCall[e.CallID]
			batched[i] = e
		}
		want := make([]bool, len(stream))
		for i, e := range stream {
			want[i] = applyOneByOne(t, conn, e)
		}
		for lo := 0; lo < len(batched); {
			hi := min(len(batched), lo+1+rng.IntN(120))
			applied, err := s.ApplyCallEvents(ctx, batched[lo:hi])
			if err != nil {
				t.Fatalf("seed %d: batch %d-%d: %v", seed, lo, hi, err)
			}
			for i, a := range applied {
				if a != want[lo+i] {
					t.Fatalf("seed %d: event %d (%s) applied = %v, one by one %v", seed, lo+i, stream[lo+i].Kind, a, want[lo+i])
				}
			}
			lo = hi
		}
		for ref, b := range batchCall {
			r, err := s.CDR(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			c, err := s.CDR(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if cdrCore(c) != cdrCore(r) {
				t.Fatalf("seed %d: call %s:\n batched    %s\n one by one %s", seed, ref, cdrCore(c), cdrCore(r))
			}
		}

		// The whole stream again, as one batch: nothing is new, no row changes.
		before, err := s.CDRs(ctx, storage.CDRFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		applied, err := s.ApplyCallEvents(ctx, batched)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range applied {
			if a {
				t.Fatalf("seed %d: redelivered event %d applied again", seed, i)
			}
		}
		after, err := s.CDRs(ctx, storage.CDRFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for i := range after {
			if cdrCore(after[i]) != cdrCore(before[i]) || !after[i].UpdatedAt.Equal(before[i].UpdatedAt) {
				t.Fatalf("seed %d: redelivery changed %s", seed, after[i].CallID)
			}
		}
	}
}

// TestCDRBatchRefusesInvalid: one invalid or unstorable event refuses its
// batch and writes nothing, so the caller can set that one apart and retry
// the rest.
func TestCDRBatchRefusesInvalid(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	id := cdrUUID()
	evs := cdrCall(id, "", "", "", time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	evs[2].Kind = "exploded"
	if _, err := s.ApplyCallEvents(ctx, evs); err == nil {
		t.Fatal("batch with an invalid event applied")
	}
	if _, err := s.CDR(ctx, id); err == nil {
		t.Fatal("a refused batch made a row")
	}
	applied, err := s.ApplyCallEvents(ctx, nil)
	if err != nil || len(applied) != 0 {
		t.Fatalf("empty batch: %v %v", applied, err)
	}

	// Valid, but nothing Postgres can store: the batch is refused as a whole,
	// so the caller can look for the event at fault.
	evs = cdrCall(id, "", "", "", time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	evs[3].Recording = "ok\x00"
	if _, err := s.ApplyCallEvents(ctx, evs); !errors.Is(err, storage.ErrCallEventsRefused) {
		t.Fatalf("unstorable event: %v", err)
	}
	if _, err := s.CDR(ctx, id); err == nil {
		t.Fatal("a refused batch made a row")
	}
}

// TestCDRWriterConnection: the CDR writer's store of its own, one
// connection whatever the URL asks for, applies batches like any other.
func TestCDRWriterConnection(t *testing.T) {
	ctx := context.Background()
	_, url := newStore(t)
	s, err := storage.OpenConns(ctx, url+"&pool_max_conns=8", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := cdrUUID()
	if _, err := s.ApplyCallEvents(ctx, cdrCall(id, "", "", "", time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))); err != nil {
		t.Fatal(err)
	}
	if c, err := s.CDR(ctx, id); err != nil || c.EndedAt == nil {
		t.Fatalf("cdr %+v %v", c, err)
	}
	if _, err := storage.OpenConns(ctx, "::not a url", 1); err == nil {
		t.Fatal("a bad URL opened")
	}
}

// TestCDRBatchOneRowPerCall: a call id spelled in capitals by one of its
// events is the same call, in the same batch too (an upsert may touch a row
// only once per statement).
func TestCDRBatchOneRowPerCall(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	id := cdrUUID()
	evs := cdrCall(id, "", "", "", time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	evs[3].CallID = strings.ToUpper(id)
	if _, err := s.ApplyCallEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if c, err := s.CDR(ctx, id); err != nil || c.EndedAt == nil || c.OfferedAt == nil {
		t.Fatalf("cdr %+v %v", c, err)
	}
}
