package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PersonSettings are a person's own choices for the console and his phone:
// his language (a code such as "ru") and time zone (an IANA name). Empty
// means the company default. The store keeps them as given: the caller
// checks them.
type PersonSettings struct {
	Language string
	TimeZone string
}

// Settings returns a person's settings (ErrNotFound for no such person).
func (s *Store) Settings(ctx context.Context, managerID string) (PersonSettings, error) {
	var ps PersonSettings
	if !validUUID(managerID) {
		return ps, ErrNotFound
	}
	err := s.pool.QueryRow(ctx, `SELECT language, time_zone FROM managers WHERE id = $1`, managerID).
		Scan(&ps.Language, &ps.TimeZone)
	if errors.Is(err, pgx.ErrNoRows) {
		return ps, ErrNotFound
	}
	return ps, err
}

// SetSettings changes an active person's settings and audits it.
func (s *Store) SetSettings(ctx context.Context, managerID string, ps PersonSettings, actor string) error {
	if !validUUID(managerID) {
		return ErrUnknownManager
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockActiveManagers(ctx, tx, []string{managerID}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE managers SET language = $2, time_zone = $3 WHERE id = $1`,
			managerID, ps.Language, ps.TimeZone); err != nil {
			return fmt.Errorf("storage: set settings: %w", err)
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.settings", Object: "manager:" + managerID})
	})
}

// AllSettings returns everyone's settings by manager id.
func (s *Store) AllSettings(ctx context.Context) (map[string]PersonSettings, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text, language, time_zone FROM managers`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]PersonSettings{}
	for rows.Next() {
		var id string
		var ps PersonSettings
		if err := rows.Scan(&id, &ps.Language, &ps.TimeZone); err != nil {
			return nil, err
		}
		out[id] = ps
	}
	return out, rows.Err()
}
