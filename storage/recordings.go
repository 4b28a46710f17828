package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// Recording statuses.
const (
	RecordingActive   = "recording" // the session is being written
	RecordingComplete = "complete"  // ended in order (BYE)
	RecordingPartial  = "partial"   // repaired after a crash or a lost session; audio up to then
	RecordingMissing  = "missing"   // no audio survived
)

// Recording sources: who sent the SIPREC session.
const (
	SourceMaskPBX = "maskpbx" // our PBX; the metadata named the call, client and manager
	SourceSIPREC  = "siprec"  // any other session recording client
)

// ErrInvalidRecording means a recording row misses a field or has a value
// outside the schema.
var ErrInvalidRecording = errors.New("storage: invalid recording")

// ErrAudioDeleted means retention deleted the recording's audio; the row
// stays as the record that it existed.
var ErrAudioDeleted = errors.New("storage: recording audio deleted by retention")

// ErrRecordingInProgress means the audio is still being written.
var ErrRecordingInProgress = errors.New("storage: recording in progress")

// DTMFEvent is one RFC 4733 digit seen in a recorded stream.
type DTMFEvent struct {
	Digit      string `json:"digit"`       // 0-9, *, #, A-D
	Side       string `json:"side"`        // "client" or "manager" (left or right channel)
	AtMS       int64  `json:"at_ms"`       // from the start of the recording
	DurationMS int64  `json:"duration_ms"` // 0 if the end packet never came
}

// Recording is the metadata of one recording session.
type Recording struct {
	ID             string
	CallID         string
	ClientID       string // empty if unknown (another SRC)
	ManagerID      string
	Direction      string // "inbound" | "outbound" | ""
	Source         string
	Node           string // recorder node holding the audio
	BlobKey        string // key of the WAV in that node's blob store
	Codec          string // "PCMU", "PCMA" or both as "PCMU/PCMA" (client/manager)
	Status         string
	StartedAt      time.Time
	Duration       time.Duration
	SizeBytes      int64
	SHA256         string // hex of the whole WAV file
	DTMF           []DTMFEvent
	AudioDeletedAt *time.Time
	UpdatedAt      time.Time
}

// RecordingFilter narrows a recording list; empty fields match everything.
type RecordingFilter struct {
	ClientID  string
	ManagerID string
	CallID    string
	Limit     int // default 100, at most 1000
}

var (
	recordingStatuses = map[string]bool{RecordingActive: true, RecordingComplete: true, RecordingPartial: true,
		RecordingMissing: true}
	recordingSources = map[string]bool{SourceMaskPBX: true, SourceSIPREC: true}
	dtmfDigitRE      = regexp.MustCompile(`^[0-9*#A-D]$`)
)

func (r Recording) validate() error {
	switch {
	case !validUUID(r.ID):
		return fmt.Errorf("%w: id is not a uuid", ErrInvalidRecording)
	case !validUUID(r.CallID):
		return fmt.Errorf("%w: call id is not a uuid", ErrInvalidRecording)
	case r.ClientID != "" && !validUUID(r.ClientID), r.ManagerID != "" && !validUUID(r.ManagerID):
		return fmt.Errorf("%w: client or manager id is not a uuid", ErrInvalidRecording)
	case !callDirections[r.Direction]:
		return fmt.Errorf("%w: direction %q", ErrInvalidRecording, r.Direction)
	case !recordingSources[r.Source]:
		return fmt.Errorf("%w: source %q", ErrInvalidRecording, r.Source)
	case !recordingStatuses[r.Status]:
		return fmt.Errorf("%w: status %q", ErrInvalidRecording, r.Status)
	case r.Node == "" || r.BlobKey == "":
		return fmt.Errorf("%w: no node or blob key", ErrInvalidRecording)
	case r.StartedAt.IsZero():
		return fmt.Errorf("%w: no start time", ErrInvalidRecording)
	case r.Duration < 0 || r.SizeBytes < 0:
		return fmt.Errorf("%w: negative duration or size", ErrInvalidRecording)
	}
	for _, d := range r.DTMF {
		if !dtmfDigitRE.MatchString(d.Digit) || (d.Side != "client" && d.Side != "manager") {
			return fmt.Errorf("%w: DTMF event %q on %q", ErrInvalidRecording, d.Digit, d.Side)
		}
	}
	return nil
}

// saveRecording inserts or updates a recording by id. A final status is
// never taken back to 'recording' (a late retry of the start must not undo
// the end); a new final status replaces an older one, so a recovery that
// repaired the file can still correct a row.
const saveRecording = `
INSERT INTO recordings AS r (id, call_id, client_id, manager_id, direction, source, node, blob_key, codec, status,
                             started_at, duration_ms, size_bytes, sha256, dtmf, updated_at)
VALUES ($1, $2, (SELECT id FROM clients WHERE id = $3::uuid), (SELECT id FROM managers WHERE id = $4::uuid),
        $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
ON CONFLICT (id) DO UPDATE SET
    codec       = EXCLUDED.codec,
    status      = EXCLUDED.status,
    duration_ms = EXCLUDED.duration_ms,
    size_bytes  = EXCLUDED.size_bytes,
    sha256      = EXCLUDED.sha256,
    dtmf        = EXCLUDED.dtmf,
    updated_at  = now()
WHERE r.status = 'recording' OR EXCLUDED.status <> 'recording'`

// recordingArgs checks a row and gives the arguments of saveRecording.
func recordingArgs(r Recording) ([]any, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	dtmf := r.DTMF
	if dtmf == nil {
		dtmf = []DTMFEvent{}
	}
	raw, err := json.Marshal(dtmf)
	if err != nil {
		return nil, err
	}
	return []any{r.ID, r.CallID, nullUUID(r.ClientID), nullUUID(r.ManagerID), nullText(r.Direction), r.Source, r.Node,
		r.BlobKey, r.Codec, r.Status, r.StartedAt, r.Duration.Milliseconds(), r.SizeBytes, r.SHA256, raw}, nil
}

// SaveRecording stores a recording's row, creating it on first use. It is
// idempotent: the recorder calls it when a session starts, when it ends and
// again after a crash, in any of which the database may have been away.
func (s *Store) SaveRecording(ctx context.Context, r Recording) error {
	args, err := recordingArgs(r)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, saveRecording, args...)
	if code, _ := pgCode(err); code == pgUniqueViolation {
		return fmt.Errorf("%w: blob key already used by another recording", ErrInvalidRecording)
	} else if err != nil {
		return fmt.Errorf("storage: save recording: %w", err)
	}
	return nil
}

// SaveRecordings stores several recording rows (as SaveRecording, each
// idempotent) in one transaction: one commit, one WAL flush, one pooled
// connection for the lot, which is how the recorder keeps up with hundreds
// of calls a second without crowding call routing out of the pool. An
// invalid row fails the whole batch with ErrInvalidRecording before
// anything is sent; the caller may then save the rows one by one.
func (s *Store) SaveRecordings(ctx context.Context, rs []Recording) error {
	if len(rs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, r := range rs {
		args, err := recordingArgs(r)
		if err != nil {
			return err
		}
		b.Queue(saveRecording, args...)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	if code, _ := pgCode(err); code == pgUniqueViolation {
		return fmt.Errorf("%w: blob key already used by another recording", ErrInvalidRecording)
	} else if err != nil {
		return fmt.Errorf("storage: save recordings: %w", err)
	}
	return nil
}

const recordingColumns = `id, call_id, coalesce(client_id::text, ''), coalesce(manager_id::text, ''),
	coalesce(direction, ''), source, node, blob_key, codec, status, started_at, duration_ms, size_bytes, sha256,
	dtmf, audio_deleted_at, updated_at`

func scanRecording(row pgx.Row) (Recording, error) {
	var r Recording
	var ms int64
	var dtmf []byte
	err := row.Scan(&r.ID, &r.CallID, &r.ClientID, &r.ManagerID, &r.Direction, &r.Source, &r.Node, &r.BlobKey,
		&r.Codec, &r.Status, &r.StartedAt, &ms, &r.SizeBytes, &r.SHA256, &dtmf, &r.AudioDeletedAt, &r.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, err
	}
	r.Duration = time.Duration(ms) * time.Millisecond
	if err := json.Unmarshal(dtmf, &r.DTMF); err != nil {
		return r, fmt.Errorf("storage: recording dtmf: %w", err)
	}
	if r.DTMF == nil {
		r.DTMF = []DTMFEvent{}
	}
	return r, nil
}

// Recording returns one recording by id.
func (s *Store) Recording(ctx context.Context, id string) (Recording, error) {
	if !validUUID(id) {
		return Recording{}, ErrNotFound
	}
	return scanRecording(s.pool.QueryRow(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE id = $1`, id))
}

// listedRecording is the condition a recordings row r meets to be listed:
// a recording of our PBX only once the call it names is known from the
// PBX's own events (a CDR with the offered time that only the PBX's
// offered event sets), for the client the CDR names; a recording of
// another SRC belongs to nobody. A session that made a call up (issue 11,
// finding 2) is stored but never listed.
const listedRecording = `(
	(r.source = 'siprec' AND r.client_id IS NULL AND r.manager_id IS NULL)
	OR EXISTS (SELECT 1 FROM cdrs c WHERE c.call_id = r.call_id AND c.offered_at IS NOT NULL
	           AND c.client_id IS NOT DISTINCT FROM r.client_id))`

// Recordings lists recordings, newest first: those listedRecording lets
// through.
func (s *Store) Recordings(ctx context.Context, f RecordingFilter) ([]Recording, error) {
	for _, id := range []string{f.ClientID, f.ManagerID, f.CallID} {
		if id != "" && !validUUID(id) {
			return []Recording{}, nil // nothing can match an id that is not a uuid
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	rows, err := s.pool.Query(ctx, `SELECT `+recordingColumns+` FROM recordings r
		WHERE ($1::uuid IS NULL OR client_id = $1::uuid) AND ($2::uuid IS NULL OR manager_id = $2::uuid)
		  AND ($3::uuid IS NULL OR call_id = $3::uuid) AND `+listedRecording+`
		ORDER BY started_at DESC, id LIMIT $4`, nullUUID(f.ClientID), nullUUID(f.ManagerID), nullUUID(f.CallID), limit)
	if err != nil {
		return nil, fmt.Errorf("storage: list recordings: %w", err)
	}
	defer rows.Close()
	out := []Recording{}
	for rows.Next() {
		r, err := scanRecording(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: scan recording: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// OpenRecordingAudio returns a recording whose audio someone is about to
// listen to or download, and writes the audit row for that access in the
// same transaction: no audit row, no audio. A recording still being
// written, or whose audio retention deleted, is refused (and not audited).
func (s *Store) OpenRecordingAudio(ctx context.Context, id, actor, reason string) (Recording, error) {
	if !validUUID(id) {
		return Recording{}, ErrNotFound
	}
	var r Recording
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		r, err = scanRecording(tx.QueryRow(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE id = $1 FOR SHARE`, id))
		if err != nil {
			return err
		}
		switch {
		case r.AudioDeletedAt != nil || r.Status == RecordingMissing:
			return ErrAudioDeleted
		case r.Status == RecordingActive:
			return ErrRecordingInProgress
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "recording.audio", Object: "recording:" + id,
			Reason: reason})
	})
	return r, err
}

// ExpiredRecordings lists finished recordings on node that started before
// before and still have their audio, oldest first, at most limit; a client's
// legal hold keeps his.
func (s *Store) ExpiredRecordings(ctx context.Context, node string, before time.Time, limit int) ([]Recording, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+recordingColumns+` FROM recordings r
		WHERE node = $1 AND started_at < $2 AND audio_deleted_at IS NULL AND status <> 'recording'
		  AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = r.client_id AND c.legal_hold)
		ORDER BY started_at LIMIT $3`, node, before, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: expired recordings: %w", err)
	}
	defer rows.Close()
	out := []Recording{}
	for rows.Next() {
		r, err := scanRecording(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkAudioDeleted records that a recording's audio is gone (retention), and
// audits it. Marking twice changes nothing.
func (s *Store) MarkAudioDeleted(ctx context.Context, id, actor, reason string) error {
	if !validUUID(id) {
		return ErrNotFound
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE recordings SET audio_deleted_at = now(), updated_at = now()
			WHERE id = $1 AND audio_deleted_at IS NULL`, id)
		if err != nil {
			return fmt.Errorf("storage: mark audio deleted: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "recording.delete_audio", Object: "recording:" + id,
			Reason: reason})
	})
}
