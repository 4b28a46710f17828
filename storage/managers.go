package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Roles of the people who use maskpbx.
const (
	RoleManager    = "manager"
	RoleSupervisor = "supervisor"
	RoleAdmin      = "admin"
)

// Manager statuses.
const (
	StatusActive    = "active"
	StatusDismissed = "dismissed"
)

// Manager is a person with a SIP account (managers, supervisors, admins).
type Manager struct {
	ID          string
	Name        string
	SIPUsername string
	HA1MD5      string
	HA1SHA256   string
	Team        string
	Role        string
	Status      string
	CreatedAt   time.Time
	DismissedAt *time.Time
}

// NewManager is what it takes to create a manager. TokenHash is the SHA-256
// of his first API token; the token itself is never stored.
type NewManager struct {
	Name, SIPUsername, HA1MD5, HA1SHA256, Team, Role string
	TokenHash                                        []byte
}

const managerColumns = `id, name, sip_username, ha1_md5, ha1_sha256, team, role, status, created_at, dismissed_at`

func scanManager(r pgx.Row) (Manager, error) {
	var m Manager
	err := r.Scan(&m.ID, &m.Name, &m.SIPUsername, &m.HA1MD5, &m.HA1SHA256, &m.Team, &m.Role, &m.Status, &m.CreatedAt, &m.DismissedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNotFound
	}
	return m, err
}

// CreateManager stores a manager and his first API token, and audits it.
func (s *Store) CreateManager(ctx context.Context, nm NewManager, actor string) (Manager, error) {
	var m Manager
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		m, err = scanManager(tx.QueryRow(ctx, `INSERT INTO managers (name, sip_username, ha1_md5, ha1_sha256, team, role)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+managerColumns,
			nm.Name, nm.SIPUsername, nm.HA1MD5, nm.HA1SHA256, nm.Team, nm.Role))
		if code, _ := pgCode(err); code == pgUniqueViolation {
			return ErrDuplicateUsername
		} else if err != nil {
			return fmt.Errorf("storage: insert manager: %w", err)
		}
		if nm.TokenHash != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO api_tokens (token_hash, manager_id) VALUES ($1, $2)`, nm.TokenHash, m.ID); err != nil {
				return fmt.Errorf("storage: insert token: %w", err)
			}
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.create", Object: "manager:" + m.ID})
	})
	return m, err
}

// Manager returns one manager by id.
func (s *Store) Manager(ctx context.Context, id string) (Manager, error) {
	if !validUUID(id) {
		return Manager{}, ErrNotFound
	}
	return scanManager(s.pool.QueryRow(ctx, `SELECT `+managerColumns+` FROM managers WHERE id = $1`, id))
}

// ManagerBySIPUsername returns the manager who owns a SIP username.
func (s *Store) ManagerBySIPUsername(ctx context.Context, username string) (Manager, error) {
	return scanManager(s.pool.QueryRow(ctx, `SELECT `+managerColumns+` FROM managers WHERE sip_username = $1`, username))
}

// Managers lists every manager, oldest first.
func (s *Store) Managers(ctx context.Context) ([]Manager, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+managerColumns+` FROM managers ORDER BY created_at, sip_username`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Manager, error) { return scanManager(r) })
}

// AddToken stores the hash of another API token for a manager.
func (s *Store) AddToken(ctx context.Context, managerID string, tokenHash []byte) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_tokens (token_hash, manager_id) VALUES ($1, $2)`, tokenHash, managerID)
	return err
}

// ManagerByToken returns the active manager who owns an unrevoked token.
// A dismissed manager's tokens are revoked, so they find nothing.
func (s *Store) ManagerByToken(ctx context.Context, tokenHash []byte) (Manager, error) {
	return scanManager(s.pool.QueryRow(ctx, `SELECT `+prefixed("m.", managerColumns)+`
		FROM api_tokens t JOIN managers m ON m.id = t.manager_id
		WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND m.status = 'active'`, tokenHash))
}

// Dismissal is what DismissManager did.
type Dismissal struct {
	Manager      Manager
	MovedClients int
}

// DismissManager cuts a manager off and hands his clients over, in one
// transaction: status dismissed, tokens revoked, current assignments closed
// (history keeps them), his primary clients moved to successorID, audited.
func (s *Store) DismissManager(ctx context.Context, id, successorID, actor string) (Dismissal, error) {
	var d Dismissal
	if !validUUID(id) {
		return d, ErrNotFound
	}
	if !validUUID(successorID) || successorID == id {
		return d, ErrUnknownManager
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		m, err := scanManager(tx.QueryRow(ctx, `SELECT `+managerColumns+` FROM managers WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if m.Status != StatusActive {
			return ErrManagerDismissed
		}
		if err := lockActiveManagers(ctx, tx, []string{successorID}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE managers SET status = 'dismissed', dismissed_at = now() WHERE id = $1`, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE api_tokens SET revoked_at = now() WHERE manager_id = $1 AND revoked_at IS NULL`, id); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE assignments SET valid_until = now(), changed_by = $2
			WHERE manager_id = $1 AND valid_until IS NULL AND kind = 'primary' RETURNING client_id`, id, actor)
		if err != nil {
			return err
		}
		clients, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE assignments SET valid_until = now(), changed_by = $2
			WHERE manager_id = $1 AND valid_until IS NULL`, id, actor); err != nil {
			return err
		}
		for _, c := range clients {
			// A restricted segment's client goes only to a permitted successor.
			if err := checkClientSegmentPermits(ctx, tx, c, []string{successorID}); err != nil {
				return err
			}
			// A successor who was the client's partner becomes his primary.
			if _, err := tx.Exec(ctx, `UPDATE assignments SET valid_until = now(), changed_by = $3
				WHERE client_id = $1 AND manager_id = $2 AND valid_until IS NULL`, c, successorID, actor); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO assignments (client_id, manager_id, kind, changed_by)
				VALUES ($1, $2, 'primary', $3)`, c, successorID, actor); err != nil {
				return err
			}
		}
		m.Status = StatusDismissed
		d = Dismissal{Manager: m, MovedClients: len(clients)}
		if err := releaseAliases(ctx, tx); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.dismiss", Object: "manager:" + id,
			Reason: fmt.Sprintf("successor manager:%s, %d clients moved", successorID, len(clients))})
	})
	return d, err
}

// lockActiveManagers checks that every id is an active manager and locks the
// rows so a concurrent dismissal can't slip in before the commit.
func lockActiveManagers(ctx context.Context, tx pgx.Tx, ids []string) error {
	for _, id := range ids {
		if !validUUID(id) {
			return ErrUnknownManager
		}
	}
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT id FROM managers
		WHERE id = ANY($1::uuid[]) AND status = 'active' FOR SHARE) m`, ids).Scan(&n)
	if err != nil {
		return err
	}
	if n != len(uniq(ids)) {
		return ErrUnknownManager
	}
	return nil
}
