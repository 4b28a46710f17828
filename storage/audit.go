package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditEntry is one row of the append-only audit log.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Object string    `json:"object"`
	Reason string    `json:"reason,omitempty"`
}

// auditLock serialises appends so the chain has one head.
const auditLock = 0x6d61736b70627801

// chainHash is sha256(prev || canonical entry). The canonical form separates
// fields with a unit separator so no field can impersonate its neighbour.
func chainHash(prev []byte, e AuditEntry) []byte {
	h := sha256.New()
	h.Write(prev)
	fields := []string{
		"v1",
		strconv.FormatInt(e.Seq, 10),
		e.At.UTC().Format(time.RFC3339Nano),
		e.Actor, e.Action, e.Object, e.Reason,
	}
	h.Write([]byte(strings.Join(fields, "\x1f")))
	return h.Sum(nil)
}

// appendAudit writes e as the next link of the chain inside tx, so the audit
// row and the action it records commit or fail together.
func appendAudit(ctx context.Context, tx pgx.Tx, e AuditEntry) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(auditLock)); err != nil {
		return fmt.Errorf("storage: audit lock: %w", err)
	}
	prev := make([]byte, sha256.Size)
	var last int64
	err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("storage: audit head: %w", err)
	}
	e.Seq = last + 1
	// Postgres keeps microseconds; hash what will be read back.
	e.At = time.Now().UTC().Truncate(time.Microsecond)
	_, err = tx.Exec(ctx, `INSERT INTO audit_log (seq, at, actor, action, object, reason, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		e.Seq, e.At, e.Actor, e.Action, e.Object, e.Reason, prev, chainHash(prev, e))
	if err != nil {
		return fmt.Errorf("storage: audit append: %w", err)
	}
	return nil
}

// Audit appends one audit row on its own.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	return s.inTx(ctx, func(tx pgx.Tx) error { return appendAudit(ctx, tx, e) })
}

// AuditLog returns the newest entries first, at most limit of them.
func (s *Store) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, at, actor, action, object, reason
		FROM audit_log ORDER BY seq DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Object, &e.Reason)
		return e, err
	})
}

// VerifyAudit walks the whole chain and returns how many rows verified. A
// changed, removed or reordered row makes it fail with ErrAuditTampered.
func (s *Store) VerifyAudit(ctx context.Context) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, at, actor, action, object, reason, prev_hash, hash
		FROM audit_log ORDER BY seq`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	prev := make([]byte, sha256.Size)
	var n int
	for rows.Next() {
		var e AuditEntry
		var rowPrev, rowHash []byte
		if err := rows.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Object, &e.Reason, &rowPrev, &rowHash); err != nil {
			return n, err
		}
		if e.Seq != int64(n+1) || !bytes.Equal(rowPrev, prev) || !bytes.Equal(rowHash, chainHash(prev, e)) {
			return n, fmt.Errorf("%w at seq %d", ErrAuditTampered, e.Seq)
		}
		prev = rowHash
		n++
	}
	return n, rows.Err()
}
