package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Webhook is a receiver of alerts. Its secret is kept sealed; only the
// deliverer opens it, to sign.
type Webhook struct {
	ID               string
	URL              string
	SecretCiphertext []byte
	EncKeyID         string
	CreatedBy        string
	CreatedAt        time.Time
}

const webhookColumns = `id, url, secret_ciphertext, enc_key_id, created_by, created_at`

func scanWebhook(r pgx.Row) (Webhook, error) {
	var w Webhook
	err := r.Scan(&w.ID, &w.URL, &w.SecretCiphertext, &w.EncKeyID, &w.CreatedBy, &w.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, ErrNotFound
	}
	return w, err
}

// CreateWebhook stores a webhook (url checked by the caller, secret
// sealed), audited as webhook.create.
func (s *Store) CreateWebhook(ctx context.Context, w Webhook, actor string) (Webhook, error) {
	var out Webhook
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanWebhook(tx.QueryRow(ctx, `INSERT INTO webhooks (url, secret_ciphertext, enc_key_id, created_by)
			VALUES ($1, $2, $3, $4) RETURNING `+webhookColumns, w.URL, w.SecretCiphertext, w.EncKeyID, actor))
		if err != nil {
			return fmt.Errorf("storage: create webhook: %w", err)
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "webhook.create", Object: "webhook:" + out.ID})
	})
	return out, err
}

// Webhooks lists every webhook, oldest first.
func (s *Store) Webhooks(ctx context.Context) ([]Webhook, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Webhook, error) { return scanWebhook(r) })
}

// DeleteWebhook removes a webhook and its deliveries, audited as
// webhook.delete; ErrNotFound if there is none.
func (s *Store) DeleteWebhook(ctx context.Context, id, actor string) error {
	if !validUUID(id) {
		return ErrNotFound
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM webhooks WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "webhook.delete", Object: "webhook:" + id})
	})
}

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryDead      = "dead"
)

// Delivery is one alert on its way to one webhook.
type Delivery struct {
	ID         int64
	Webhook    Webhook
	Alert      Alert
	Status     string
	Attempts   int
	NextAt     time.Time
	LastStatus int
	LastError  string
	UpdatedAt  time.Time
}

const deliverySelect = `SELECT d.id, d.status, d.attempts, d.next_at, d.last_status, d.last_error, d.updated_at,
	w.id, w.url, w.secret_ciphertext, w.enc_key_id, w.created_by, w.created_at,
	a.id, a.rule, coalesce(a.client_id::text, ''), coalesce(a.manager_id::text, ''),
	coalesce(a.supervisor_id::text, ''), a.actor, a.evidence, a.created_at, coalesce(a.acked_by, ''), a.acked_at
	FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN alerts a ON a.id = d.alert_id `

func collectDeliveries(rows pgx.Rows, err error) ([]Delivery, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: deliveries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Delivery, error) {
		var d Delivery
		var ev []byte
		w, a := &d.Webhook, &d.Alert
		err := r.Scan(&d.ID, &d.Status, &d.Attempts, &d.NextAt, &d.LastStatus, &d.LastError, &d.UpdatedAt,
			&w.ID, &w.URL, &w.SecretCiphertext, &w.EncKeyID, &w.CreatedBy, &w.CreatedAt,
			&a.ID, &a.Rule, &a.ClientID, &a.ManagerID, &a.SupervisorID, &a.Actor, &ev, &a.CreatedAt, &a.AckedBy, &a.AckedAt)
		if err == nil {
			err = json.Unmarshal(ev, &a.Evidence)
		}
		return d, err
	})
}

// DueDeliveries returns at most limit pending deliveries due at now,
// oldest first.
func (s *Store) DueDeliveries(ctx context.Context, now time.Time, limit int) ([]Delivery, error) {
	return collectDeliveries(s.pool.Query(ctx, deliverySelect+`WHERE d.status = 'pending' AND d.next_at <= $1
		ORDER BY d.next_at, d.id LIMIT $2`, now, limit))
}

// DeadDeliveries returns the newest dead letters, at most limit.
func (s *Store) DeadDeliveries(ctx context.Context, limit int) ([]Delivery, error) {
	return collectDeliveries(s.pool.Query(ctx, deliverySelect+`WHERE d.status = 'dead'
		ORDER BY d.updated_at DESC, d.id LIMIT $1`, limit))
}

// ClaimDelivery takes a due pending delivery for one POST: its next_at moves
// to until, so another node's pass (one that held the alerts lease a moment
// ago) does not send it too. It reports false when the delivery is no longer
// due or pending.
func (s *Store) ClaimDelivery(ctx context.Context, id int64, now, until time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET next_at = $3
		WHERE id = $1 AND status = 'pending' AND next_at <= $2`, id, now, until)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// DeliveryAttempt is the outcome of one POST of a delivery.
type DeliveryAttempt struct {
	Status     string    // DeliveryDelivered, DeliveryPending (retry at NextAt) or DeliveryDead
	NextAt     time.Time // when pending
	HTTPStatus int       // the receiver's answer; 0 when none came
	Error      string    // why it failed, for the dead-letter list
}

// RecordDelivery stores the outcome of one attempt.
func (s *Store) RecordDelivery(ctx context.Context, id int64, a DeliveryAttempt) error {
	next := a.NextAt
	if next.IsZero() {
		next = time.Now()
	}
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_at = $3,
		last_status = $4, last_error = $5, updated_at = now() WHERE id = $1`, id, a.Status, next, a.HTTPStatus, clip(a.Error, 300))
	return err
}

// RetryDelivery makes a dead letter pending again (its tries start over),
// audited as webhook.retry; ErrNotFound if id is no dead letter.
func (s *Store) RetryDelivery(ctx context.Context, id int64, actor string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_at = now(),
			updated_at = now() WHERE id = $1 AND status = 'dead'`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "webhook.retry", Object: fmt.Sprint("delivery:", id)})
	})
}

// DismissedTokenOwner returns the id of the dismissed manager whose API
// token has hash tokenHash, or ErrNotFound (no such token, or its manager
// is active).
func (s *Store) DismissedTokenOwner(ctx context.Context, tokenHash []byte) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT m.id::text FROM api_tokens t JOIN managers m ON m.id = t.manager_id
		WHERE t.token_hash = $1 AND m.status = 'dismissed'`, tokenHash).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return id, err
}
