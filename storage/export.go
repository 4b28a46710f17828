package storage

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/masking"
)

// ClientExport is everything held about one client, for a data-subject
// request: his sealed numbers (the caller opens them), assignment history,
// calls, recordings' metadata and the audit rows about him or his
// recordings.
type ClientExport struct {
	Client      Client
	Phones      []masking.SealedPhone
	Assignments []AssignmentRow
	Calls       []CDR
	Recordings  []Recording
	Audit       []AuditEntry
}

// ExportClient gathers a client's data in one transaction and audits the
// export (client.data_export, or client.data_export_audio when his
// recordings' audio goes with it) in it, before the audit rows are read, so
// the export lists its own row: no audit row, no data.
func (s *Store) ExportClient(ctx context.Context, clientID, actor, reason string, withAudio bool) (ClientExport, error) {
	action := "client.data_export"
	if withAudio {
		action = "client.data_export_audio"
	}
	var out ClientExport
	if !validUUID(clientID) {
		return out, ErrNotFound
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if out.Client, err = scanClient(tx.QueryRow(ctx, clientSelect+`WHERE c.id = $1 FOR SHARE OF c`, clientID)); err != nil {
			return err
		}
		if err := appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: action, Object: "client:" + clientID,
			Reason: reason}); err != nil {
			return err
		}
		if out.Phones, err = sealedPhones(ctx, tx, clientID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT manager_id::text, kind, valid_from, valid_until FROM assignments
			WHERE client_id = $1 ORDER BY id`, clientID)
		if err != nil {
			return err
		}
		if out.Assignments, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (AssignmentRow, error) {
			var a AssignmentRow
			return a, r.Scan(&a.ManagerID, &a.Kind, &a.ValidFrom, &a.ValidUntil)
		}); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT `+cdrColumns+` FROM cdrs WHERE client_id = $1 ORDER BY offered_at, call_id`, clientID)
		if err != nil {
			return err
		}
		if out.Calls, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (CDR, error) { return scanCDR(r) }); err != nil {
			return fmt.Errorf("storage: export calls: %w", err)
		}
		rows, err = tx.Query(ctx, `SELECT `+recordingColumns+` FROM recordings WHERE client_id = $1 ORDER BY started_at, id`, clientID)
		if err != nil {
			return err
		}
		if out.Recordings, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Recording, error) { return scanRecording(r) }); err != nil {
			return fmt.Errorf("storage: export recordings: %w", err)
		}
		rows, err = tx.Query(ctx, `SELECT seq, at, actor, action, object, reason FROM audit_log
			WHERE object = 'client:' || $1 OR object IN (SELECT 'recording:' || id FROM recordings WHERE client_id = $1::uuid)
			ORDER BY seq`, clientID)
		if err != nil {
			return err
		}
		out.Audit, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
			var e AuditEntry
			return e, r.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Object, &e.Reason)
		})
		return err
	})
	return out, err
}
