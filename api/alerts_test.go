package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/storage"
)

type alertBody struct {
	ID       string `json:"id"`
	Rule     string `json:"rule"`
	Actor    string `json:"actor"`
	Manager  string `json:"manager_id"`
	AckedBy  string `json:"acked_by"`
	Evidence struct {
		AuditSeqs []int64 `json:"audit_seqs"`
	} `json:"evidence"`
}

func (e *env) auditActions(action string) []storage.AuditEntry {
	e.t.Helper()
	rows, err := e.store.AuditLog(context.Background(), 500)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []storage.AuditEntry
	for _, r := range rows {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

// A manager who opens client cards in a burst through the API raises
// access_burst (each view audited as client.view); a supervisor sees it and
// acknowledges it once (audited), a manager sees no alerts.
func TestAccessBurstAlertAndAck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	anna := e.manager("anna", "manager")
	sue := e.manager("sue", "supervisor")
	var acme client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
		"name": "Acme", "phones": []string{"+79161234567"}, "manager_id": anna.ID}, &acme)
	ev := alerts.New(alerts.Config{Store: e.store, Thresholds: alerts.Thresholds{BurstCount: 5}})
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 4; i++ {
		e.must(200, "GET", "/api/v1/clients/"+acme.ID, anna.APIToken, nil, nil)
	}
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	var list []alertBody
	e.must(200, "GET", "/api/v1/alerts", sue.APIToken, nil, &list)
	if len(list) != 0 {
		t.Fatalf("4 views raised %+v", list)
	}
	e.must(200, "GET", "/api/v1/clients/"+acme.ID, anna.APIToken, nil, nil)
	if n := len(e.auditActions("client.view")); n != 5 {
		t.Fatalf("%d client.view rows, want 5", n)
	}
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	raw := e.must(200, "GET", "/api/v1/alerts?rule=access_burst&open=true", sue.APIToken, nil, &list)
	if len(list) != 1 || list[0].Actor != "manager:"+anna.ID || list[0].Manager != anna.ID || len(list[0].Evidence.AuditSeqs) != 5 {
		t.Fatalf("alerts: %s", raw)
	}
	assertNoNumber(t, "alerts", raw, "+79161234567", acme.Code)
	e.must(403, "GET", "/api/v1/alerts", anna.APIToken, nil, nil)
	e.must(400, "GET", "/api/v1/alerts?rule=nonsense", sue.APIToken, nil, nil)
	e.must(400, "GET", "/api/v1/alerts?open=maybe", sue.APIToken, nil, nil)

	id := list[0].ID
	var acked alertBody
	e.must(200, "POST", "/api/v1/alerts/"+id+"/ack", sue.APIToken, nil, &acked)
	if acked.AckedBy != "supervisor:"+sue.ID {
		t.Fatalf("acked by %q", acked.AckedBy)
	}
	e.must(409, "POST", "/api/v1/alerts/"+id+"/ack", adminToken, nil, nil)
	e.must(404, "POST", "/api/v1/alerts/00000000-0000-0000-0000-000000000000/ack", sue.APIToken, nil, nil)
	e.must(404, "POST", "/api/v1/alerts/not-an-id/ack", sue.APIToken, nil, nil)
	e.must(403, "POST", "/api/v1/alerts/"+id+"/ack", anna.APIToken, nil, nil)
	if rows := e.auditActions("alert.ack"); len(rows) != 1 || rows[0].Object != "alert:"+id || rows[0].Actor != "supervisor:"+sue.ID {
		t.Fatalf("alert.ack rows %+v", rows)
	}
	e.must(200, "GET", "/api/v1/alerts?open=true", sue.APIToken, nil, &list)
	if len(list) != 0 {
		t.Fatalf("open alerts after the ack: %+v", list)
	}

	// More views inside the same window raise nothing more.
	e.must(200, "GET", "/api/v1/clients/"+acme.ID, anna.APIToken, nil, nil)
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	e.must(200, "GET", "/api/v1/alerts", sue.APIToken, nil, &list)
	if len(list) != 1 {
		t.Fatalf("one burst alerted %d times", len(list))
	}
}

// Webhooks are the admin's: the secret is in the answer to POST and
// nowhere after; a URL that is not http(s) is refused; a delete is 204 once.
func TestWebhooksAPI(t *testing.T) {
	e := newEnv(t)
	sue := e.manager("sue", "supervisor")
	for _, bad := range []string{"ftp://crm.example.com/", "javascript:alert(1)", "crm.example.com", "https://u:p@crm.example.com/"} {
		e.must(422, "POST", "/api/v1/webhooks", adminToken, map[string]string{"url": bad}, nil)
	}
	e.must(400, "POST", "/api/v1/webhooks", adminToken, map[string]any{"url": "https://crm.example.com/h", "secret": "mine"}, nil)
	e.must(403, "POST", "/api/v1/webhooks", sue.APIToken, map[string]string{"url": "https://crm.example.com/h"}, nil)

	var created struct {
		ID     string `json:"id"`
		URL    string `json:"url"`
		Secret string `json:"secret"`
	}
	e.must(201, "POST", "/api/v1/webhooks", adminToken, map[string]string{"url": "https://crm.example.com/h"}, &created)
	if !strings.HasPrefix(created.Secret, "whsec_") || len(created.Secret) < 40 {
		t.Fatalf("secret %q", created.Secret)
	}
	raw := e.must(200, "GET", "/api/v1/webhooks", adminToken, nil, nil)
	if strings.Contains(string(raw), created.Secret) || strings.Contains(string(raw), `"secret"`) || !strings.Contains(string(raw), created.ID) {
		t.Fatalf("webhook list shows the secret or misses the hook: %s", raw)
	}
	hooks, err := e.store.Webhooks(context.Background())
	if err != nil || len(hooks) != 1 || strings.Contains(string(hooks[0].SecretCiphertext), created.Secret) {
		t.Fatalf("stored webhook %+v %v: the secret must be sealed", hooks, err)
	}
	e.must(403, "GET", "/api/v1/webhooks", sue.APIToken, nil, nil)
	var dead []json.RawMessage
	e.must(200, "GET", "/api/v1/webhooks/deliveries/dead", adminToken, nil, &dead)
	e.must(404, "POST", "/api/v1/webhooks/deliveries/12345/retry", adminToken, nil, nil)
	e.must(404, "POST", "/api/v1/webhooks/deliveries/x/retry", adminToken, nil, nil)
	e.must(204, "DELETE", "/api/v1/webhooks/"+created.ID, adminToken, nil, nil)
	e.must(404, "DELETE", "/api/v1/webhooks/"+created.ID, adminToken, nil, nil)
	if n := len(e.auditActions("webhook.create")) + len(e.auditActions("webhook.delete")); n != 2 {
		t.Fatalf("%d webhook audit rows, want 2", n)
	}
}

// A dismissed manager's API token is refused and audited (once a minute
// at most: a replay cannot flood the log).
func TestDismissedTokenAudited(t *testing.T) {
	e := newEnv(t)
	anna := e.manager("anna", "manager")
	bob := e.manager("bob", "manager")
	e.must(200, "POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminToken, map[string]string{"successor_id": bob.ID}, nil)
	for i := 0; i < 3; i++ {
		e.must(401, "GET", "/api/v1/clients", anna.APIToken, nil, nil)
	}
	e.must(401, "GET", "/api/v1/clients", "mpx_not-a-token", nil, nil)
	rows := e.auditActions("api.dismissed_token")
	if len(rows) != 1 || rows[0].Object != "manager:"+anna.ID || !strings.HasPrefix(rows[0].Actor, "api:") {
		t.Fatalf("api.dismissed_token rows %+v, want one about anna", rows)
	}
}
