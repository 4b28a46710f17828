package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/storage"
)

func TestManagerMobile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	anna := e.manager("anna", "manager")
	bob := e.manager("bob", "manager")
	sup := e.manager("sue", "supervisor")
	const number = "+79035551234"
	path := "/api/v1/managers/" + anna.ID + "/mobile"

	t.Run("only an admin sets it, and no answer carries it", func(t *testing.T) {
		for _, tok := range []string{anna.APIToken, sup.APIToken} {
			e.must(403, "PUT", path, tok, map[string]any{"number": number, "policy": "together"}, nil)
		}
		var got struct {
			ManagerID string `json:"manager_id"`
			Policy    string `json:"policy"`
			AfterS    int    `json:"after_s"`
		}
		raw := e.must(200, "PUT", path, adminToken, map[string]any{"number": "8 (903) 555-12-34", "policy": "after", "after_s": 3}, &got)
		if got.ManagerID != anna.ID || got.Policy != "after" || got.AfterS != 3 {
			t.Fatalf("answer %s", raw)
		}
		assertNoNumber(t, "set answer", raw, number)
		for _, tok := range []string{sup.APIToken, adminToken} {
			_, raw := e.call("GET", "/api/v1/managers", tok, nil)
			assertNoNumber(t, "managers list", raw, number)
		}
		_, raw = e.call("GET", "/api/v1/clients", anna.APIToken, nil)
		assertNoNumber(t, "manager's clients", raw, number)
	})

	t.Run("stored sealed and blind-indexed like a client's number", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var dump string
		if err := conn.QueryRow(ctx, `SELECT string_agg(m::text, '|') FROM manager_mobiles m`).Scan(&dump); err != nil {
			t.Fatal(err)
		}
		assertNoNumber(t, "manager_mobiles row", []byte(dump), number)
		keys := e.srv.Keys
		m, err := e.store.ManagerByMobile(ctx, keys.IndexKeyID(), keys.BlindIndex(number))
		if err != nil || m.ID != anna.ID || m.Status != "active" {
			t.Fatalf("lookup by blind index: %+v %v", m, err)
		}
		if _, err := e.store.ManagerByMobile(ctx, keys.IndexKeyID(), keys.BlindIndex("+79035551235")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("another number found a manager: %v", err)
		}
	})

	t.Run("bad input is a 4xx", func(t *testing.T) {
		for _, body := range []map[string]any{
			{"policy": "together"},
			{"number": number, "policy": "sometimes"},
			{"number": number, "policy": "after"},
			{"number": number, "policy": "after", "after_s": 601},
			{"number": number, "policy": "together", "after_s": 5},
		} {
			e.must(400, "PUT", path, adminToken, body, nil)
		}
		_, raw := e.call("PUT", path, adminToken, map[string]any{"number": "12ab", "policy": "only"})
		if !strings.Contains(string(raw), "bad_phone") {
			t.Fatalf("bad number: %s", raw)
		}
		e.must(404, "PUT", "/api/v1/managers/00000000-0000-0000-0000-000000000000/mobile", adminToken, map[string]any{"number": "+79035550000"}, nil)
		e.must(404, "PUT", "/api/v1/managers/nope/mobile", adminToken, map[string]any{"number": "+79035550000"}, nil)
		// One SIM, one manager: the caller-ID lookup must be unique.
		_, raw = e.call("PUT", "/api/v1/managers/"+bob.ID+"/mobile", adminToken, map[string]any{"number": number, "policy": "only"})
		if !strings.Contains(string(raw), "duplicate_mobile") {
			t.Fatalf("a second manager got the same mobile: %s", raw)
		}
		assertNoNumber(t, "409 body", raw, number)
	})

	t.Run("reveal is admin-only, needs a reason and is audited", func(t *testing.T) {
		for _, tok := range []string{anna.APIToken, sup.APIToken} {
			e.must(403, "POST", path+"/reveal", tok, map[string]string{"reason": "curious person"}, nil)
		}
		e.must(400, "POST", path+"/reveal", adminToken, map[string]string{"reason": ""}, nil)
		var got struct{ Number, Policy string }
		e.must(200, "POST", path+"/reveal", adminToken, map[string]string{"reason": "lost SIM report"}, &got)
		if got.Number != number || got.Policy != "after" {
			t.Fatalf("reveal: %+v", got)
		}
		log, _ := e.store.AuditLog(ctx, 1)
		if len(log) != 1 || log[0].Action != "manager.mobile_reveal" || log[0].Reason != "lost SIM report" || log[0].Object != "manager:"+anna.ID {
			t.Fatalf("no audit row for the reveal: %+v", log)
		}
	})

	t.Run("delete removes it", func(t *testing.T) {
		e.must(403, "DELETE", path, sup.APIToken, nil, nil)
		e.must(204, "DELETE", path, adminToken, nil, nil)
		e.must(404, "DELETE", path, adminToken, nil, nil)
		e.must(404, "POST", path+"/reveal", adminToken, map[string]string{"reason": "lost SIM report"}, nil)
		keys := e.srv.Keys
		if _, err := e.store.ManagerByMobile(ctx, keys.IndexKeyID(), keys.BlindIndex(number)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("removed mobile still found: %v", err)
		}
		log, _ := e.store.AuditLog(ctx, 1)
		if len(log) != 1 || log[0].Action != "manager.mobile_remove" {
			t.Fatalf("no audit row for the removal: %+v", log)
		}
	})

	t.Run("dismissal stops the mobile ringing at once and frees the SIM", func(t *testing.T) {
		e.must(200, "PUT", path, adminToken, map[string]any{"number": number, "policy": "together"}, nil)
		e.must(200, "POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminToken, map[string]any{"successor_id": bob.ID}, nil)
		keys := e.srv.Keys
		// Still recognised (a call from it is refused and audited), as his.
		if m, err := e.store.ManagerByMobile(ctx, keys.IndexKeyID(), keys.BlindIndex(number)); err != nil || m.Status != storage.StatusDismissed {
			t.Fatalf("a dismissed manager's mobile: %+v %v", m, err)
		}
		if ms, err := e.store.RingableMobiles(ctx, []string{anna.ID, bob.ID}); err != nil || len(ms) != 0 {
			t.Fatalf("ringable after dismissal: %v %v", ms, err)
		}
		e.must(404, "PUT", path, adminToken, map[string]any{"number": number, "policy": "together"}, nil)
		e.must(200, "PUT", "/api/v1/managers/"+bob.ID+"/mobile", adminToken, map[string]any{"number": number, "policy": "only"}, nil)
		if ms, err := e.store.RingableMobiles(ctx, []string{anna.ID, bob.ID}); err != nil || len(ms) != 1 || ms[bob.ID].Policy != "only" {
			t.Fatalf("successor's mobile: %v %v", ms, err)
		}
		if m, err := e.store.ManagerByMobile(ctx, keys.IndexKeyID(), keys.BlindIndex(number)); err != nil || m.ID != bob.ID {
			t.Fatalf("the SIM handed over: %+v %v", m, err)
		}
	})
}
