package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Alias numbers: a pool of the company's DIDs on the trunk, one sticky alias
// per (manager, client) pair (see the alias_numbers table).

// ErrNoAlias means no alias of the pool is free for a new pair.
var ErrNoAlias = errors.New("storage: no free alias number")

// Alias is an alias number and the pair it serves or served last.
type Alias struct {
	Number          string
	ManagerID       string // "" if never assigned
	ClientID        string
	ReleasedAt      *time.Time // nil while the pair is current
	QuarantineUntil *time.Time
}

// AddAliasNumbers puts numbers (E.164) into the pool; numbers already there
// keep their pair.
func (s *Store) AddAliasNumbers(ctx context.Context, numbers []string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO alias_numbers (number) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, numbers)
	return err
}

// PairAlias returns the pair's alias, giving it one from pool (the
// numbers configured now) if it has none: a number never used, or one whose
// quarantine is over, the longest free first. Released it stays unused for
// quarantine. ErrNoAlias if none is free.
func (s *Store) PairAlias(ctx context.Context, managerID, clientID string, pool []string, quarantine time.Duration) (string, error) {
	if !validUUID(managerID) || !validUUID(clientID) {
		return "", ErrNotFound
	}
	var number string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT number FROM alias_numbers WHERE manager_id = $1 AND client_id = $2 AND released_at IS NULL`,
			managerID, clientID).Scan(&number)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `SELECT number FROM alias_numbers
			WHERE number = ANY($1::text[]) AND (manager_id IS NULL OR (released_at IS NOT NULL AND quarantine_until <= now()))
			ORDER BY quarantine_until NULLS FIRST, number LIMIT 1 FOR UPDATE SKIP LOCKED`, pool).Scan(&number)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoAlias
		} else if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE alias_numbers SET manager_id = $2, client_id = $3, assigned_at = now(),
			released_at = NULL, quarantine = $4, quarantine_until = NULL WHERE number = $1`, number, managerID, clientID, quarantine)
		return err
	})
	if code, _ := pgCode(err); code == pgUniqueViolation {
		// A concurrent call gave the pair its alias first: use that one.
		return s.PairAlias(ctx, managerID, clientID, pool, quarantine)
	}
	if err != nil && !errors.Is(err, ErrNoAlias) {
		return "", fmt.Errorf("storage: pair alias: %w", err)
	}
	return number, err
}

// AliasByNumber returns an alias and its (last) pair.
func (s *Store) AliasByNumber(ctx context.Context, number string) (Alias, error) {
	var a Alias
	var managerID, clientID *string
	err := s.pool.QueryRow(ctx, `SELECT number, manager_id::text, client_id::text, released_at, quarantine_until
		FROM alias_numbers WHERE number = $1`, number).Scan(&a.Number, &managerID, &clientID, &a.ReleasedAt, &a.QuarantineUntil)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	if managerID != nil {
		a.ManagerID = *managerID
	}
	if clientID != nil {
		a.ClientID = *clientID
	}
	return a, err
}

// releaseAliases ends, at once, every current pair whose manager may no
// longer reach the client (reassigned, dismissed): its alias stops
// connecting and is quarantined. It runs in the transaction that changed
// the assignments.
func releaseAliases(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `UPDATE alias_numbers a SET released_at = now(), quarantine_until = now() + a.quarantine
		WHERE a.released_at IS NULL AND a.manager_id IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM assignments s JOIN managers m ON m.id = s.manager_id
			WHERE s.client_id = a.client_id AND s.manager_id = a.manager_id AND s.valid_until IS NULL AND m.status = 'active')`)
	return err
}
