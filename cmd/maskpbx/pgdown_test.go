package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// health is /healthz's status code and body.
func (s *system) health() (int, map[string]string) {
	s.t.Helper()
	resp, err := http.Get(s.api + "/healthz")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, body
}

// cdrAfterOutage waits for a finished CDR that the CDR writer could only
// write once Postgres was back (its retries back off up to 15 s, and the
// call's events arrive in any order): offered, ended, and answered if the
// call was.
func (s *system) cdrAfterOutage(filter storage.CDRFilter) storage.CDR {
	s.t.Helper()
	var cdr storage.CDR
	testenv.Eventually(s.t, 60*time.Second, func() bool {
		cdrs, err := s.run.Store.CDRs(context.Background(), filter)
		if err != nil || len(cdrs) == 0 {
			return false
		}
		cdr = cdrs[0]
		return cdr.OfferedAt != nil && cdr.EndedAt != nil && (cdr.Disposition != "answered" || cdr.AnsweredAt != nil)
	}, "the call's CDR, written once Postgres is back")
	return cdr
}

// TestPostgresOutage: with the test's own Postgres stopped, a known
// client's call rings his manager and connects with audio both ways, a
// first-time caller is given to a manager in turn and connects, /healthz
// says degraded (200, so the trunk keeps sending calls); when Postgres is
// back the calls' CDRs and the new caller's client row are written. Then a
// manager is dismissed, Postgres stopped again: his client's call rings
// the partner, never him.
func TestPostgresOutage(t *testing.T) {
	pg := testenv.OwnPostgres(t)
	cfg := systemConfig(t)
	cfg.DatabaseURL = pg.URL
	s := startSystemFrom(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	anna := s.manager("anna")
	bob := s.manager("bob")
	carl := s.manager("carl") // never registered
	acme := s.client("Acme Trading", acmeNumber, anna.ID, bob.ID)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)
	if code, h := s.health(); code != 200 || h["status"] != "ok" {
		t.Fatalf("/healthz %d %v before the outage", code, h)
	}

	pg.Stop()
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, h := s.health()
		return code == 200 && h["status"] == "degraded" && h["database"] == "down" && h["routing"] == "cache"
	}, `/healthz 200 {"status":"degraded","database":"down","routing":"cache"}`)
	if m := s.metrics(); !strings.Contains(m, "maskpbx_routing_cache_clients 1\n") {
		t.Errorf("/metrics does not show Acme in the routing cache")
	}

	// A known client: his own manager's phone rings, shows only his name
	// and code, and the call carries audio both ways.
	acmeCallsAnna(t, s, acme, 41300)
	if m := s.metrics(); !strings.Contains(m, "maskpbx_routing_from_cache 1\n") {
		t.Errorf("/metrics does not show calls routing from the cache")
	}

	// A first-time caller goes to the next manager in turn.
	const newNumber = "+79167770011"
	annaPh := phone(t, s, "anna", annaIP, 5070, 41312, false, 1)
	bobPh := phone(t, s, "bob", bobIP, 5071, 41314, false, 1)
	tr := trunkCall(t, s, strings.TrimPrefix(newNumber, "+"), 41310, true, 1000)
	tr.Wait()

	pg.Start()
	cdr := s.cdrAfterOutage(storage.CDRFilter{ClientID: acme.ID})
	if cdr.Disposition != "answered" || cdr.ManagerID != anna.ID || cdr.AnsweredAt == nil {
		t.Errorf("the known client's CDR %+v, want answered by anna", cdr)
	}
	var clients []apiClient
	testenv.Eventually(t, 30*time.Second, func() bool {
		clients = nil
		if s.call("GET", "/api/v1/clients", adminTok, nil, &clients) != 200 {
			return false
		}
		for _, c := range clients {
			if c.Name == "New client" {
				return true
			}
		}
		return false
	}, "the new caller's client row, written once Postgres is back")
	var newClient apiClient
	for _, c := range clients {
		if c.Name == "New client" {
			newClient = c
		}
	}
	cdr = s.cdrAfterOutage(storage.CDRFilter{ClientID: newClient.ID})
	if cdr.Disposition != "answered" || cdr.ManagerID != newClient.ManagerID {
		t.Errorf("the new caller's CDR %+v, want answered by his manager %s", cdr, newClient.ManagerID)
	}
	if newClient.ManagerID == anna.ID {
		annaPh.Wait()
		bobPh.Kill()
	} else {
		bobPh.Wait()
		annaPh.Kill()
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, h := s.health()
		return code == 200 && h["status"] == "ok" && h["routing"] == ""
	}, "/healthz ok again")
	if m := s.metrics(); !strings.Contains(m, "maskpbx_routing_from_cache 0\n") || !strings.Contains(m, "maskpbx_routing_pending_callers 0\n") {
		t.Errorf("/metrics after the outage: routing from the cache or callers pending")
	}

	// Anna leaves; Acme goes to carl (no phone), bob stays his partner.
	if st := s.call("POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminTok,
		map[string]string{"successor_id": carl.ID}, nil); st != 200 {
		t.Fatalf("dismiss: %d", st)
	}
	pg.Stop()
	testenv.Eventually(t, 10*time.Second, func() bool { _, h := s.health(); return h["status"] == "degraded" },
		"/healthz degraded again")
	annaPh = phone(t, s, "anna", annaIP, 5070, 41322, false, 1)
	bobPh = phone(t, s, "bob", bobIP, 5071, 41324, false, 1)
	tr = trunkCall(t, s, acmeNumber, 41320, true, 1000)
	tr.Wait()
	bobPh.Wait()
	annaPh.Kill()
	if got := annaPh.Received(); len(got) != 0 {
		t.Errorf("the dismissed manager's phone was rung:\n%s", got[0])
	}
	pg.Start()
	cdr = s.cdrAfterOutage(storage.CDRFilter{ClientID: acme.ID, ManagerID: bob.ID})
	if cdr.Disposition != "answered" {
		t.Errorf("the call after the dismissal: CDR %+v, want answered by bob", cdr)
	}
}
