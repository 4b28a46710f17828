package api

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/storage"
)

// The alerts and webhooks routes (issue 13 item 3), registered by New.
func (s *Server) alertRoutes() {
	s.handle("GET /api/v1/alerts", s.listAlerts, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/alerts/{id}/ack", s.ackAlert, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("GET /api/v1/webhooks", s.listWebhooks, storage.RoleAdmin)
	s.handle("POST /api/v1/webhooks", s.createWebhook, storage.RoleAdmin)
	s.handle("DELETE /api/v1/webhooks/{id}", s.deleteWebhook, storage.RoleAdmin)
	s.handle("GET /api/v1/webhooks/deliveries/dead", s.listDeadLetters, storage.RoleAdmin)
	s.handle("POST /api/v1/webhooks/deliveries/{id}/retry", s.retryDeadLetter, storage.RoleAdmin)
}

var (
	errAlreadyAcked = newError(http.StatusConflict, "already_acked", "alerts_api.already_acked")
	errBadRule      = badRequest("alerts_api.bad_rule")
	errBadOpen      = badRequest("alerts_api.bad_open")
	errWebhookURL   = newError(http.StatusUnprocessableEntity, "bad_url", "alerts_api.bad_url")
	errNoKeys       = newError(http.StatusServiceUnavailable, "no_keys", "alerts_api.no_keys")
)

// listAlerts: GET /api/v1/alerts?rule=&client_id=&manager_id=&open=true,
// newest first, at most 500.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request, _ Principal) error {
	q := r.URL.Query()
	f := storage.AlertFilter{Rule: q.Get("rule"), ClientID: q.Get("client_id"), ManagerID: q.Get("manager_id"), Limit: 500}
	if f.Rule != "" && !slices.Contains(alerts.Rules, f.Rule) {
		return errBadRule
	}
	if open := q.Get("open"); open != "" {
		var err error
		if f.Open, err = strconv.ParseBool(open); err != nil {
			return errBadOpen
		}
	}
	list, err := s.Store.Alerts(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]alerts.Message, 0, len(list))
	for _, a := range list {
		out = append(out, alerts.MessageOf(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ackAlert: POST /api/v1/alerts/{id}/ack; audited as alert.ack.
func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.Store.AckAlert(r.Context(), r.PathValue("id"), p.Actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, alerts.MessageOf(a))
	return nil
}

type webhookView struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// Secret is in the answer to POST only: it is never shown again.
	Secret string `json:"secret,omitempty"`
}

func viewWebhook(wh storage.Webhook) webhookView {
	return webhookView{ID: wh.ID, URL: wh.URL, CreatedBy: wh.CreatedBy, CreatedAt: wh.CreatedAt}
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, _ Principal) error {
	list, err := s.Store.Webhooks(r.Context())
	if err != nil {
		return err
	}
	out := make([]webhookView, 0, len(list))
	for _, wh := range list {
		out = append(out, viewWebhook(wh))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type webhookRequest struct {
	URL string `json:"url"`
}

// createWebhook: POST /api/v1/webhooks {url}; answers 201 with the signing
// secret, once.
func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req webhookRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := alerts.CheckWebhookURL(req.URL); err != nil {
		return errWebhookURL
	}
	if s.Keys == nil {
		return errNoKeys
	}
	secret := alerts.NewSecret()
	sealed, keyID, err := s.Keys.SealSecret([]byte(secret))
	if err != nil {
		return err
	}
	wh, err := s.Store.CreateWebhook(r.Context(), storage.Webhook{URL: req.URL, SecretCiphertext: sealed, EncKeyID: keyID}, p.Actor())
	if err != nil {
		return err
	}
	v := viewWebhook(wh)
	v.Secret = secret
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := s.Store.DeleteWebhook(r.Context(), r.PathValue("id"), p.Actor()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deadLetterView struct {
	ID         int64     `json:"id"`
	WebhookID  string    `json:"webhook_id"`
	URL        string    `json:"url"`
	AlertID    string    `json:"alert_id"`
	Rule       string    `json:"rule"`
	Attempts   int       `json:"attempts"`
	LastStatus int       `json:"last_status"`
	LastError  string    `json:"last_error"`
	FailedAt   time.Time `json:"failed_at"`
}

func deadLetterViews(list []storage.Delivery) []deadLetterView {
	out := make([]deadLetterView, 0, len(list))
	for _, d := range list {
		out = append(out, deadLetterView{ID: d.ID, WebhookID: d.Webhook.ID, URL: d.Webhook.URL, AlertID: d.Alert.ID,
			Rule: d.Alert.Rule, Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError, FailedAt: d.UpdatedAt})
	}
	return out
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request, _ Principal) error {
	list, err := s.Store.DeadDeliveries(r.Context(), 200)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, deadLetterViews(list))
	return nil
}

// retryDeadLetter: POST /api/v1/webhooks/deliveries/{id}/retry; the
// delivery is pending again with fresh tries; audited as webhook.retry.
func (s *Server) retryDeadLetter(w http.ResponseWriter, r *http.Request, p Principal) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return errNotFound
	}
	if err := s.Store.RetryDelivery(r.Context(), id, p.Actor()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
