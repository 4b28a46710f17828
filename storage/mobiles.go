package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/masking"
)

// Mobile policies: when the ring plan rings a manager's corporate mobile.
const (
	MobileOff      = "off"      // never
	MobileTogether = "together" // with his SIP phones
	MobileAfter    = "after"    // after AfterS seconds of no answer on them
	MobileOnly     = "only"     // instead of them
)

// ErrDuplicateMobile means the number is another manager's mobile already.
var ErrDuplicateMobile = errors.New("storage: the mobile number belongs to another manager")

// Mobile is a manager's corporate mobile: the number sealed exactly like a
// client's (masking.SealedPhone), and when to ring it.
type Mobile struct {
	ManagerID string
	Phone     masking.SealedPhone
	Policy    string
	AfterS    int
}

// SetMobile stores (or replaces) an active manager's mobile and its policy,
// audited in the same transaction. A dismissed manager's mobile stays
// stored (a call from it is recognised, refused and audited) until the same
// number is given to someone else.
func (s *Store) SetMobile(ctx context.Context, m Mobile, actor string) error {
	if !validUUID(m.ManagerID) {
		return ErrNotFound
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockActiveManagers(ctx, tx, []string{m.ManagerID}); err != nil {
			return ErrNotFound
		}
		p := m.Phone
		if _, err := tx.Exec(ctx, `DELETE FROM manager_mobiles mm USING managers m
			WHERE m.id = mm.manager_id AND m.status = 'dismissed' AND mm.index_key_id = $1 AND mm.blind_index = $2`,
			p.IndexKeyID, p.BlindIndex); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO manager_mobiles (manager_id, ciphertext, enc_key_id, blind_index, index_key_id, policy, after_s)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (manager_id) DO UPDATE SET ciphertext = $2, enc_key_id = $3, blind_index = $4, index_key_id = $5,
				policy = $6, after_s = $7, updated_at = now()`,
			m.ManagerID, p.Ciphertext, p.EncKeyID, p.BlindIndex, p.IndexKeyID, m.Policy, m.AfterS)
		if code, _ := pgCode(err); code == pgUniqueViolation {
			return ErrDuplicateMobile
		} else if err != nil {
			return fmt.Errorf("storage: set mobile: %w", err)
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.mobile_set", Object: "manager:" + m.ManagerID,
			Reason: fmt.Sprintf("policy %s %ds", m.Policy, m.AfterS)})
	})
}

// RemoveMobile deletes a manager's mobile, audited; ErrNotFound if he has none.
func (s *Store) RemoveMobile(ctx context.Context, managerID, actor string) error {
	if !validUUID(managerID) {
		return ErrNotFound
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM manager_mobiles WHERE manager_id = $1`, managerID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.mobile_remove", Object: "manager:" + managerID})
	})
}

// RevealMobile returns a manager's sealed mobile and writes the audit row
// for the reveal in the same transaction: no audit row, no number.
func (s *Store) RevealMobile(ctx context.Context, managerID, actor, reason string) (Mobile, error) {
	if !validUUID(managerID) {
		return Mobile{}, ErrNotFound
	}
	var m Mobile
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if m, err = scanMobile(tx.QueryRow(ctx, mobileSelect+`WHERE manager_id = $1`, managerID)); err != nil {
			return err
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "manager.mobile_reveal", Object: "manager:" + managerID, Reason: reason})
	})
	return m, err
}

const mobileSelect = `SELECT manager_id, ciphertext, enc_key_id, blind_index, index_key_id, policy, after_s FROM manager_mobiles `

func scanMobile(r pgx.Row) (Mobile, error) {
	var m Mobile
	p := &m.Phone
	err := r.Scan(&m.ManagerID, &p.Ciphertext, &p.EncKeyID, &p.BlindIndex, &p.IndexKeyID, &m.Policy, &m.AfterS)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNotFound
	}
	return m, err
}

// MobilePolicy returns a manager's mobile and policy, if he has one; the
// policy is off for none.
func (s *Store) MobilePolicy(ctx context.Context, managerID string) (Mobile, error) {
	if !validUUID(managerID) {
		return Mobile{ManagerID: managerID, Policy: MobileOff}, nil
	}
	m, err := scanMobile(s.pool.QueryRow(ctx, mobileSelect+`WHERE manager_id = $1`, managerID))
	if errors.Is(err, ErrNotFound) {
		return Mobile{ManagerID: managerID, Policy: MobileOff}, nil
	}
	return m, err
}

// RingableMobiles returns the mobiles of the given managers that a ring plan
// may ring: active managers whose policy is not off.
func (s *Store) RingableMobiles(ctx context.Context, managerIDs []string) (map[string]Mobile, error) {
	rows, err := s.pool.Query(ctx, `SELECT mm.manager_id, mm.ciphertext, mm.enc_key_id, mm.blind_index, mm.index_key_id, mm.policy, mm.after_s
		FROM manager_mobiles mm JOIN managers m ON m.id = mm.manager_id
		WHERE mm.manager_id = ANY($1::uuid[]) AND m.status = 'active' AND mm.policy <> 'off'`, validIDs(managerIDs))
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mobile, error) { return scanMobile(r) })
	if err != nil {
		return nil, err
	}
	out := make(map[string]Mobile, len(list))
	for _, m := range list {
		out[m.ManagerID] = m
	}
	return out, nil
}

// ManagerByMobile finds the manager whose mobile has this blind index; any
// other number is ErrNotFound. He may be dismissed: the caller checks
// Status (a dismissed manager's mobile reaches nobody).
func (s *Store) ManagerByMobile(ctx context.Context, indexKeyID string, index []byte) (Manager, error) {
	return scanManager(s.pool.QueryRow(ctx, `SELECT `+prefixed("m.", managerColumns)+` FROM managers m
		JOIN manager_mobiles mm ON mm.manager_id = m.id
		WHERE mm.index_key_id = $1 AND mm.blind_index = $2`, indexKeyID, index))
}

func validIDs(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if validUUID(id) {
			out = append(out, id)
		}
	}
	return out
}
