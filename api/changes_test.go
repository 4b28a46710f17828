package api_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// changeLog records what the API tells the routing cache (the unit's edge).
type changeLog struct {
	mu              sync.Mutex
	changes         []string
	warm, fromCache bool
}

func (c *changeLog) ClientChanged(id string) { c.add("client " + id) }
func (c *changeLog) ManagerChanged(id, status string) {
	c.add("manager " + id + " " + status)
}
func (c *changeLog) SegmentChanged(id string)       { c.add("segment " + id) }
func (c *changeLog) RoutingFromCache() (bool, bool) { return c.warm, c.fromCache }

func (c *changeLog) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes = append(c.changes, s)
}

func (c *changeLog) has(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.changes, s)
}

// TestChangesForRouting: every change routing depends on is told, with
// ids (and a dismissed manager's status) only.
func TestChangesForRouting(t *testing.T) {
	e := newEnv(t)
	log := &changeLog{}
	e.srv.Changes = log
	var anna, bob manager
	e.must(201, "POST", "/api/v1/managers", adminToken, map[string]any{"name": "Anna", "sip_username": "anna", "sip_password": "anna-secret-1"}, &anna)
	e.must(201, "POST", "/api/v1/managers", adminToken, map[string]any{"name": "Bob", "sip_username": "bob", "sip_password": "bob-secret-1"}, &bob)
	var acme client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "Acme", "phones": []string{"+79161234567"}, "manager_id": anna.ID}, &acme)
	if !log.has("client "+acme.ID) || !log.has("manager "+anna.ID+" active") {
		t.Fatalf("creations not told: %v", log.changes)
	}
	log.changes = nil
	e.must(200, "PUT", "/api/v1/clients/"+acme.ID+"/assignment", adminToken, map[string]any{"manager_id": anna.ID, "partner_ids": []string{bob.ID}}, nil)
	if !log.has("client " + acme.ID) {
		t.Errorf("reassignment not told: %v", log.changes)
	}
	e.must(200, "POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminToken, map[string]any{"successor_id": bob.ID}, nil)
	if !log.has("manager " + anna.ID + " dismissed") {
		t.Errorf("dismissal not told: %v", log.changes)
	}
	log.changes = nil
	e.must(200, "DELETE", "/api/v1/clients/"+acme.ID, adminToken, map[string]any{"reason": "data subject request 42"}, nil)
	if !log.has("client " + acme.ID) {
		t.Errorf("erasure not told: %v", log.changes)
	}
	// A refused change tells nothing.
	log.changes = nil
	e.must(409, "PUT", "/api/v1/clients/"+acme.ID+"/assignment", adminToken, map[string]any{"manager_id": bob.ID}, nil)
	e.must(404, "DELETE", "/api/v1/clients/"+anna.ID, adminToken, map[string]any{"reason": "data subject request 42"}, nil)
	if len(log.changes) != 0 {
		t.Errorf("a refused reassignment told %v", log.changes)
	}
}

// TestHealthzDegraded: with the database down, /healthz is 200 degraded
// while the routing cache can route calls, 503 while it can't.
func TestHealthzDegraded(t *testing.T) {
	pg := testenv.OwnPostgres(t)
	ctx := context.Background()
	if _, err := storage.Migrate(ctx, pg.URL); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(ctx, pg.URL, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	keys, _ := masking.NewKeyring(make([]byte, 32), append(make([]byte, 31), 1))
	log := &changeLog{warm: true}
	srv := api.New(api.Config{Store: st, Keys: keys, Numbers: masking.NewNormalizer("RU"), SIPDomain: "pbx.test", Changes: log})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := &env{t: t, url: hs.URL, store: st, srv: srv}
	health := func(status int) map[string]string {
		var body map[string]string
		_ = json.Unmarshal(e.must(status, "GET", "/healthz", "", nil, nil), &body)
		return body
	}
	if h := health(200); h["status"] != "ok" || len(h) != 1 {
		t.Fatalf("up: %v", h)
	}
	pg.Stop()
	log.fromCache = true
	if h := health(200); h["status"] != "degraded" || h["database"] != "down" || h["routing"] != "cache" {
		t.Errorf("database down, cache warm: %v", h)
	}
	log.warm = false
	if h := health(503); h["status"] != "unavailable" || h["database"] != "down" {
		t.Errorf("database down, no cache: %v", h)
	}
}
