package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErasurePseudonym is the name an erased client is left with: "erased-"
// and the start of his id, which says nothing about him.
func ErasurePseudonym(clientID string) string { return "erased-" + clientID[:8] }

// Erasure is what erasing a client did to the rows; his recordings' audio
// files are deleted after the commit (ErasableRecordings).
type Erasure struct {
	Client        Client
	PhonesDeleted int
}

// lockLiveClient locks a client's row for the rest of tx; an erased client
// is ErrClientErased.
func lockLiveClient(ctx context.Context, tx pgx.Tx, clientID string) error {
	var erasedAt *time.Time
	err := tx.QueryRow(ctx, `SELECT erased_at FROM clients WHERE id = $1 FOR UPDATE`, clientID).Scan(&erasedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ErrNotFound
	case err != nil:
		return err
	case erasedAt != nil:
		return ErrClientErased
	}
	return nil
}

// EraseClient erases a client in one transaction: his numbers (ciphertext
// and blind index rows) are deleted, so his next call is an unknown caller's;
// his name becomes ErasurePseudonym; his current assignments end; unless he
// is under legal hold, the DTMF digits of his recordings are dropped; and the
// erasure is audited with reason. CDRs and recording rows keep pointing at
// the pseudonymised client. Either all of it commits or nothing does.
func (s *Store) EraseClient(ctx context.Context, clientID, actor, reason string) (Erasure, error) {
	if !validUUID(clientID) {
		return Erasure{}, ErrNotFound
	}
	var out Erasure
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockLiveClient(ctx, tx, clientID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM client_phones WHERE client_id = $1`, clientID)
		if err != nil {
			return fmt.Errorf("storage: erase phones: %w", err)
		}
		out.PhonesDeleted = int(tag.RowsAffected())
		if _, err := tx.Exec(ctx, `UPDATE clients SET name = $2, erased_at = now() WHERE id = $1`,
			clientID, ErasurePseudonym(clientID)); err != nil {
			return fmt.Errorf("storage: pseudonymise client: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE assignments SET valid_until = now(), changed_by = $2
			WHERE client_id = $1 AND valid_until IS NULL`, clientID, actor); err != nil {
			return fmt.Errorf("storage: end assignments: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE recordings SET dtmf = '[]', updated_at = now()
			WHERE client_id = $1 AND NOT (SELECT legal_hold FROM clients WHERE id = $1)`, clientID); err != nil {
			return fmt.Errorf("storage: erase recordings' digits: %w", err)
		}
		if err := cancelClientTasks(ctx, tx, clientID); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "client.erase", Object: "client:" + clientID,
			Reason: reason})
	})
	if err != nil {
		return Erasure{}, err
	}
	out.Client, err = s.Client(ctx, clientID)
	return out, err
}

// SetLegalHold sets or releases a client's legal hold and audits it
// (client.legal_hold, client.legal_hold_release) with reason. Releasing the
// hold of an erased client lets his recordings' audio be deleted.
func (s *Store) SetLegalHold(ctx context.Context, clientID string, hold bool, actor, reason string) (Client, error) {
	if !validUUID(clientID) {
		return Client{}, ErrNotFound
	}
	action := "client.legal_hold"
	if !hold {
		action = "client.legal_hold_release"
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE clients SET legal_hold = $2 WHERE id = $1`, clientID, hold)
		if err != nil {
			return fmt.Errorf("storage: legal hold: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: action, Object: "client:" + clientID, Reason: reason})
	})
	if err != nil {
		return Client{}, err
	}
	return s.Client(ctx, clientID)
}

// erasableAudio is the condition a recordings row r meets when an erasure
// still has to delete its audio: its client is erased and not under legal
// hold, and the audio is there.
const erasableAudio = `r.audio_deleted_at IS NULL AND r.status <> 'missing'
	AND EXISTS (SELECT 1 FROM clients c WHERE c.id = r.client_id AND c.erased_at IS NOT NULL AND NOT c.legal_hold)`

// ErasableRecordings lists, oldest first and at most limit, the finished
// recordings on node (every node if node is empty) whose audio an erasure
// has to delete. A recording still being written is left until it ends.
func (s *Store) ErasableRecordings(ctx context.Context, node string, limit int) ([]Recording, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+recordingColumns+` FROM recordings r
		WHERE ($1 = '' OR r.node = $1) AND r.status <> 'recording' AND `+erasableAudio+`
		ORDER BY r.started_at LIMIT $2`, node, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: erasable recordings: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Recording, error) { return scanRecording(r) })
}

// ClientAudio counts a client's recordings by what became of their audio.
type ClientAudio struct {
	Deleted int // gone (erasure or retention)
	Pending int // to be deleted by the erasure, not yet
	Held    int // kept under legal hold
}

// ClientAudioState counts what became of a client's recordings' audio.
func (s *Store) ClientAudioState(ctx context.Context, clientID string) (ClientAudio, error) {
	var a ClientAudio
	if !validUUID(clientID) {
		return a, ErrNotFound
	}
	err := s.pool.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE r.audio_deleted_at IS NOT NULL),
		count(*) FILTER (WHERE `+erasableAudio+`),
		count(*) FILTER (WHERE r.audio_deleted_at IS NULL AND r.status <> 'missing'
			AND (SELECT legal_hold FROM clients c WHERE c.id = r.client_id))
		FROM recordings r WHERE r.client_id = $1`, clientID).Scan(&a.Deleted, &a.Pending, &a.Held)
	return a, err
}
