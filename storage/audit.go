package storage

import (
	"bytes"
	"context"
	"crypto/hmac"
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

// AuditHead is a link of the chain as an anchor remembers it: the row's
// sequence number and its hash.
type AuditHead struct {
	Seq  int64
	Hash []byte
}

// AuditAnchor keeps the newest head of the chain that this node wrote or
// verified, somewhere the database's users cannot write (the data dir). A
// chain that no longer reaches the anchored row, or whose row there has
// another hash, was truncated or rewritten.
type AuditAnchor interface {
	// Load returns the anchored head; a zero Seq means none yet.
	Load() (AuditHead, error)
	// Advance anchors h unless a newer head is anchored already.
	Advance(h AuditHead) error
}

// auditLock serialises appends so the chain has one head.
const auditLock = 0x6d61736b70627801

// AuditKeySize is the length of the audit chain's HMAC key.
const AuditKeySize = 32

// Option configures a Store at Open.
type Option func(*Store)

// WithAudit keys the audit chain with key (AuditKeySize bytes, kept out of
// the database) and anchors its head with anchor (nil: no anchor, so only
// rewriting is detected, not truncation of the newest rows). A Store without
// it refuses to write or verify audit rows.
func WithAudit(key []byte, anchor AuditAnchor) Option {
	k := bytes.Clone(key)
	return func(s *Store) { s.auditKey, s.auditAnchor = k, anchor }
}

// chainHash is HMAC-SHA256(key, prev || canonical entry). The canonical form
// separates fields with a unit separator so no field can impersonate its
// neighbour; the key, which is not in the database, keeps someone who can
// write to the table from recomputing the chain after an edit.
func chainHash(key, prev []byte, e AuditEntry) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(prev)
	fields := []string{
		"v2",
		strconv.FormatInt(e.Seq, 10),
		e.At.UTC().Format(time.RFC3339Nano),
		e.Actor, e.Action, e.Object, e.Reason,
	}
	h.Write([]byte(strings.Join(fields, "\x1f")))
	return h.Sum(nil)
}

// storeTx is the transaction inTx hands out: appendAudit finds the key
// through it and leaves the head it wrote for inTx to anchor after commit.
type storeTx struct {
	pgx.Tx
	store *Store
	head  *AuditHead
}

// appendAudit writes e as the next link of the chain inside tx, so the audit
// row and the action it records commit or fail together.
func appendAudit(ctx context.Context, tx pgx.Tx, e AuditEntry) error {
	st, ok := tx.(*storeTx)
	if !ok || len(st.store.auditKey) == 0 {
		return ErrNoAuditKey
	}
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
	hash := chainHash(st.store.auditKey, prev, e)
	_, err = tx.Exec(ctx, `INSERT INTO audit_log (seq, at, actor, action, object, reason, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		e.Seq, e.At, e.Actor, e.Action, e.Object, e.Reason, prev, hash)
	if err != nil {
		return fmt.Errorf("storage: audit append: %w", err)
	}
	st.head = &AuditHead{Seq: e.Seq, Hash: hash}
	return nil
}

// anchorHead anchors a head that has committed. The row is in the database
// whatever happens here, so a failure is reported but undoes nothing.
func (s *Store) anchorHead(h *AuditHead) error {
	if h == nil || s.auditAnchor == nil {
		return nil
	}
	if err := s.auditAnchor.Advance(*h); err != nil {
		return fmt.Errorf("storage: audit anchor: %w", err)
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
	return collectAudit(rows)
}

// collectAudit reads rows of seq, at, actor, action, object, reason.
func collectAudit(rows pgx.Rows) ([]AuditEntry, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Object, &e.Reason)
		return e, err
	})
}

// VerifyAudit walks the whole chain and returns how many rows verified. A
// changed, removed or reordered row, a hash not made with this store's key,
// or a chain that stops short of the anchored head makes it fail with
// ErrAuditTampered. A chain that verifies becomes the new anchored head.
func (s *Store) VerifyAudit(ctx context.Context) (int, error) {
	if len(s.auditKey) == 0 {
		return 0, ErrNoAuditKey
	}
	var anchored AuditHead
	if s.auditAnchor != nil {
		var err error
		if anchored, err = s.auditAnchor.Load(); err != nil {
			return 0, fmt.Errorf("storage: audit anchor: %w", err)
		}
	}
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
		if e.Seq != int64(n+1) || !bytes.Equal(rowPrev, prev) || !hmac.Equal(rowHash, chainHash(s.auditKey, prev, e)) {
			return n, fmt.Errorf("%w at seq %d", ErrAuditTampered, e.Seq)
		}
		if e.Seq == anchored.Seq && !hmac.Equal(rowHash, anchored.Hash) {
			return n, fmt.Errorf("%w: seq %d is not the anchored row", ErrAuditTampered, e.Seq)
		}
		prev = rowHash
		n++
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	if int64(n) < anchored.Seq {
		return n, fmt.Errorf("%w: the chain ends at seq %d, the anchored head is seq %d", ErrAuditTampered, n, anchored.Seq)
	}
	if n > 0 {
		if err := s.anchorHead(&AuditHead{Seq: int64(n), Hash: prev}); err != nil {
			return n, err
		}
	}
	return n, nil
}
