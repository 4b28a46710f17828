package alerts

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// ErrWebhookURL means a webhook URL is not an absolute http or https URL.
var ErrWebhookURL = errors.New("alerts: webhook url must be an absolute http:// or https:// URL")

// CheckWebhookURL validates a webhook URL: http or https, a host, no user
// info, at most 2000 bytes.
func CheckWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || len(raw) > 2000 || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return ErrWebhookURL
	}
	return nil
}

// NewSecret makes a webhook signing secret ("whsec_" and 32 random bytes).
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b)
}

// deliveryPage is how many due deliveries one pass sends, and deliverPass
// how long it goes on starting them: well inside the alerts lease's TTL, so
// no other node takes the lease and sends the same ones meanwhile.
const (
	deliveryPage = 100
	deliverPass  = 10 * time.Second
)

// Headers of a webhook POST besides SignatureHeader.
const (
	AlertHeader    = "X-Maskpbx-Alert"
	DeliveryHeader = "X-Maskpbx-Delivery"
)

// Deliver POSTs every due delivery once. A 2xx answer delivers it; anything
// else retries after Backoff, doubled each time, until Tries are spent and
// it becomes a dead letter.
func (e *Evaluator) Deliver(ctx context.Context) error {
	due, err := e.store.DueDeliveries(ctx, time.Now(), deliveryPage)
	if err != nil {
		return err
	}
	start := time.Now()
	for _, d := range due {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > deliverPass {
			return nil // the rest at the next pass, while the lease is surely ours
		}
		now := time.Now()
		claimed, err := e.store.ClaimDelivery(ctx, d.ID, now, now.Add(2*e.cfg.Webhooks.Timeout))
		if err != nil {
			return err
		}
		if !claimed {
			continue // another node sends it
		}
		code, perr := e.post(ctx, d)
		a := storage.DeliveryAttempt{Status: storage.DeliveryDelivered, HTTPStatus: code}
		if perr != nil {
			a.Error = perr.Error()
			a.Status = storage.DeliveryPending
			a.NextAt = time.Now().Add(e.cfg.Webhooks.Backoff << min(d.Attempts, 20))
			if d.Attempts+1 >= e.cfg.Webhooks.Tries {
				a.Status = storage.DeliveryDead
			}
			e.logger.Info("webhook delivery failed", zap.Int64("delivery", d.ID), zap.String("webhook_id", d.Webhook.ID),
				zap.Int("attempt", d.Attempts+1), zap.Int("status", code), zap.String("outcome", a.Status))
		}
		if err := e.store.RecordDelivery(ctx, d.ID, a); err != nil {
			return err
		}
	}
	return nil
}

// post sends one delivery; it returns the receiver's status and an error
// unless that was 2xx.
func (e *Evaluator) post(ctx context.Context, d storage.Delivery) (int, error) {
	secret, err := e.cfg.Keys.OpenSecret(d.Webhook.SecretCiphertext, d.Webhook.EncKeyID)
	if err != nil {
		return 0, fmt.Errorf("secret: %w", err)
	}
	body, err := json.Marshal(MessageOf(d.Alert))
	if err != nil {
		return 0, err
	}
	pctx, cancel := context.WithTimeout(ctx, e.cfg.Webhooks.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, d.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "maskpbx-webhook")
	req.Header.Set(SignatureHeader, Sign(secret, body, time.Now()))
	req.Header.Set(AlertHeader, d.Alert.ID)
	req.Header.Set(DeliveryHeader, strconv.FormatInt(d.ID, 10))
	res, err := e.cfg.Webhooks.Client.Do(req)
	if err != nil {
		return 0, errors.New("no answer") // the error may quote the URL; it stays in the row short
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, fmt.Errorf("HTTP %d", res.StatusCode)
	}
	return res.StatusCode, nil
}
