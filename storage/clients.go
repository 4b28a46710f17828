package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/masking"
)

// Client is a client as everyone but a revealing admin sees him: no phones.
type Client struct {
	ID         string
	Code       string
	Name       string
	Segment    string
	ManagerID  string
	PartnerIDs []string
	CreatedAt  time.Time
	// ErasedAt is when the client was erased (his name is then a pseudonym
	// and his numbers are gone); nil for a client who was not.
	ErasedAt *time.Time
	// LegalHold keeps his recordings' audio through erasure and retention.
	LegalHold bool
}

// NewClient is what it takes to create a client. NewCode makes a fresh
// random client code; it is called again if a code is already taken. ID, if
// set, is the new client's id (a caller the PBX routed while Postgres was
// down already has one in his call's events); empty makes one.
type NewClient struct {
	ID            string
	Name, Segment string
	Phones        []masking.SealedPhone
	ManagerID     string
	PartnerIDs    []string
	NewCode       func() (string, error)
}

const clientSelect = `SELECT c.id, c.code, c.name, c.segment, c.created_at, c.erased_at, c.legal_hold,
	coalesce((SELECT a.manager_id::text FROM assignments a
		WHERE a.client_id = c.id AND a.valid_until IS NULL AND a.kind = 'primary'), ''),
	coalesce((SELECT array_agg(a.manager_id::text ORDER BY a.valid_from, a.id) FROM assignments a
		WHERE a.client_id = c.id AND a.valid_until IS NULL AND a.kind = 'partner'), '{}')
	FROM clients c `

func scanClient(r pgx.Row) (Client, error) {
	var c Client
	err := r.Scan(&c.ID, &c.Code, &c.Name, &c.Segment, &c.CreatedAt, &c.ErasedAt, &c.LegalHold, &c.ManagerID, &c.PartnerIDs)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, err
}

// CreateClient stores a client with his sealed phones and assignment, and
// audits it; either all of it is written or none.
func (s *Store) CreateClient(ctx context.Context, nc NewClient, actor string) (Client, error) {
	partners := withoutID(uniq(nc.PartnerIDs), nc.ManagerID)
	if nc.ID != "" && !validUUID(nc.ID) {
		return Client{}, fmt.Errorf("storage: client id %q is not a UUID", nc.ID)
	}
	var id string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockActiveManagers(ctx, tx, append([]string{nc.ManagerID}, partners...)); err != nil {
			return err
		}
		if err := ensureSegment(ctx, tx, nc.Segment, actor); err != nil {
			return err
		}
		if err := checkSegmentPermits(ctx, tx, nc.Segment, append([]string{nc.ManagerID}, partners...)); err != nil {
			return err
		}
		for attempt := 0; id == ""; attempt++ {
			if attempt == 10 {
				return errors.New("storage: no free client code")
			}
			code, err := nc.NewCode()
			if err != nil {
				return err
			}
			err = tx.QueryRow(ctx, `INSERT INTO clients (id, code, name, segment)
				VALUES (coalesce(nullif($4, '')::uuid, gen_random_uuid()), $1, $2, $3)
				ON CONFLICT (code) DO NOTHING RETURNING id`, code, nc.Name, nc.Segment, nc.ID).Scan(&id)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("storage: insert client: %w", err)
			}
		}
		for _, p := range nc.Phones {
			_, err := tx.Exec(ctx, `INSERT INTO client_phones (client_id, ciphertext, enc_key_id, blind_index, index_key_id)
				VALUES ($1, $2, $3, $4, $5)`, id, p.Ciphertext, p.EncKeyID, p.BlindIndex, p.IndexKeyID)
			if code, _ := pgCode(err); code == pgUniqueViolation {
				return ErrDuplicatePhone
			} else if err != nil {
				return fmt.Errorf("storage: insert phone: %w", err)
			}
		}
		if err := insertAssignments(ctx, tx, id, nc.ManagerID, partners, actor); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "client.create", Object: "client:" + id})
	})
	if err != nil {
		return Client{}, err
	}
	return s.Client(ctx, id)
}

func insertAssignments(ctx context.Context, tx pgx.Tx, clientID, primary string, partners []string, actor string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO assignments (client_id, manager_id, kind, changed_by) VALUES ($1, $2, 'primary', $3)`,
		clientID, primary, actor); err != nil {
		return fmt.Errorf("storage: assign: %w", err)
	}
	for _, p := range partners {
		if _, err := tx.Exec(ctx, `INSERT INTO assignments (client_id, manager_id, kind, changed_by) VALUES ($1, $2, 'partner', $3)`,
			clientID, p, actor); err != nil {
			return fmt.Errorf("storage: assign partner: %w", err)
		}
	}
	return nil
}

// Client returns one client by id.
func (s *Store) Client(ctx context.Context, id string) (Client, error) {
	if !validUUID(id) {
		return Client{}, ErrNotFound
	}
	return scanClient(s.pool.QueryRow(ctx, clientSelect+`WHERE c.id = $1`, id))
}

// Clients lists clients by name. With managerID set, only the clients that
// are currently assigned to him (as primary or partner).
func (s *Store) Clients(ctx context.Context, managerID string) ([]Client, error) {
	if managerID != "" && !validUUID(managerID) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, clientSelect+`WHERE $1::text = '' OR EXISTS (SELECT 1 FROM assignments a
		WHERE a.client_id = c.id AND a.valid_until IS NULL AND a.manager_id = nullif($1::text, '')::uuid)
		ORDER BY c.name, c.code`, managerID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Client, error) { return scanClient(r) })
}

// ClientByBlindIndex finds the client who owns a number, by its blind index.
func (s *Store) ClientByBlindIndex(ctx context.Context, indexKeyID string, index []byte) (Client, error) {
	return scanClient(s.pool.QueryRow(ctx, clientSelect+`WHERE c.id = (SELECT client_id FROM client_phones
		WHERE index_key_id = $1 AND blind_index = $2)`, indexKeyID, index))
}

// Reassign sets a client's primary manager and partners (reassignTx) and
// audits it.
func (s *Store) Reassign(ctx context.Context, clientID, managerID string, partnerIDs []string, actor string) (Client, error) {
	if !validUUID(clientID) {
		return Client{}, ErrNotFound
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockLiveClient(ctx, tx, clientID); err != nil {
			return err
		}
		if err := reassignTx(ctx, tx, clientID, managerID, partnerIDs, actor); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "client.reassign", Object: "client:" + clientID,
			Reason: "primary manager:" + managerID})
	})
	if err != nil {
		return Client{}, err
	}
	return s.Client(ctx, clientID)
}

// reassignTx sets a locked, live client's primary manager and partners,
// who must be active and permitted for his segment. Rows that stay the same
// are kept; the others are closed, so history shows who had him when.
func reassignTx(ctx context.Context, tx pgx.Tx, clientID, managerID string, partnerIDs []string, actor string) error {
	partners := withoutID(uniq(partnerIDs), managerID)
	want := map[string]string{managerID: "primary"}
	for _, p := range partners {
		want[p] = "partner"
	}
	if err := lockActiveManagers(ctx, tx, append([]string{managerID}, partners...)); err != nil {
		return err
	}
	if err := checkClientSegmentPermits(ctx, tx, clientID, append([]string{managerID}, partners...)); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT manager_id::text, kind FROM assignments WHERE client_id = $1 AND valid_until IS NULL`, clientID)
	if err != nil {
		return err
	}
	type current struct{ manager, kind string }
	have, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (current, error) {
		var c current
		return c, r.Scan(&c.manager, &c.kind)
	})
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, h := range have {
		if want[h.manager] == h.kind {
			kept[h.manager] = true
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE assignments SET valid_until = now(), changed_by = $3
			WHERE client_id = $1 AND manager_id = $2 AND valid_until IS NULL`, clientID, h.manager, actor); err != nil {
			return err
		}
	}
	for m, kind := range want {
		if kept[m] {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO assignments (client_id, manager_id, kind, changed_by) VALUES ($1, $2, $3, $4)`,
			clientID, m, kind, actor); err != nil {
			return fmt.Errorf("storage: reassign: %w", err)
		}
	}
	return releaseAliases(ctx, tx)
}

// AssignmentRow is one row of a client's assignment history.
type AssignmentRow struct {
	ManagerID  string
	Kind       string
	ValidFrom  time.Time
	ValidUntil *time.Time
}

// AssignmentHistory returns every assignment a client ever had, oldest first.
func (s *Store) AssignmentHistory(ctx context.Context, clientID string) ([]AssignmentRow, error) {
	if !validUUID(clientID) {
		return nil, ErrNotFound
	}
	rows, err := s.pool.Query(ctx, `SELECT manager_id::text, kind, valid_from, valid_until FROM assignments
		WHERE client_id = $1 ORDER BY id`, clientID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AssignmentRow, error) {
		var a AssignmentRow
		return a, r.Scan(&a.ManagerID, &a.Kind, &a.ValidFrom, &a.ValidUntil)
	})
}

// RevealPhones returns a client's sealed phones and writes the audit row for
// the reveal in the same transaction: no audit row, no phones.
func (s *Store) RevealPhones(ctx context.Context, clientID, actor, reason string) ([]masking.SealedPhone, error) {
	if !validUUID(clientID) {
		return nil, ErrNotFound
	}
	var phones []masking.SealedPhone
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)`, clientID).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return ErrNotFound
		}
		var err error
		if phones, err = sealedPhones(ctx, tx, clientID); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "client.reveal", Object: "client:" + clientID, Reason: reason})
	})
	return phones, err
}

func withoutID(ids []string, drop string) []string {
	out := ids[:0:0]
	for _, id := range ids {
		if id != drop {
			out = append(out, id)
		}
	}
	return out
}

// ClientByCode returns the client with a client code.
func (s *Store) ClientByCode(ctx context.Context, code string) (Client, error) {
	return scanClient(s.pool.QueryRow(ctx, clientSelect+`WHERE c.code = $1`, code))
}

// PhonesForCall returns a client's sealed phones for the PBX to dial. It
// writes no reveal audit row: the number goes to the trunk, never to a
// person; the caller audits the call itself.
func (s *Store) PhonesForCall(ctx context.Context, clientID string) ([]masking.SealedPhone, error) {
	if !validUUID(clientID) {
		return nil, ErrNotFound
	}
	return sealedPhones(ctx, s.pool, clientID)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func sealedPhones(ctx context.Context, q querier, clientID string) ([]masking.SealedPhone, error) {
	rows, err := q.Query(ctx, `SELECT ciphertext, enc_key_id, blind_index, index_key_id FROM client_phones
		WHERE client_id = $1 ORDER BY id`, clientID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (masking.SealedPhone, error) {
		var p masking.SealedPhone
		return p, r.Scan(&p.Ciphertext, &p.EncKeyID, &p.BlindIndex, &p.IndexKeyID)
	})
}
