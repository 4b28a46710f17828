package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// supIP is the segment supervisor's phone; carl's is on strangerIP.
const supIP = "127.0.0.27"

// quiet fails if a phone that must not ring received anything.
func quiet(t *testing.T, who string, p *testenv.SIPp) {
	t.Helper()
	p.Kill()
	if got := p.Received(); len(got) != 0 {
		t.Errorf("%s's phone rang: %d messages", who, len(got))
	}
}

// A VIP (restricted) client's call rings only the managers permitted for
// his segment and ends at the segment supervisor's phone; without the
// overflow the team is cut to the permitted. Working hours stop calls out,
// never calls in. A rotation moves a client with history, and his next call
// rings his new manager at once.
func TestSegmentRulesRouteCalls(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna, bob, carl := s.manager("anna"), s.manager("bob"), s.manager("carl")
	var sue apiManager
	if st := s.call("POST", "/api/v1/managers", adminTok, map[string]string{"name": "Sue", "sip_username": "sue",
		"sip_password": "sue-secret", "team": "sales", "role": "supervisor"}, &sue); st != 201 {
		t.Fatalf("create supervisor: %d", st)
	}
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)
	s.register("carl", strangerIP, 5073)
	s.register("sue", supIP, 5072)

	vipRules := map[string]any{"name": "vip", "restricted": true, "allowed_manager_ids": []string{anna.ID, bob.ID},
		"supervisor_id": sue.ID, "overflow_to_supervisor": true}
	var vip struct{ ID string }
	if st := s.call("POST", "/api/v1/segments", sue.APIToken, vipRules, &vip); st != 201 {
		t.Fatalf("create segment: %d", st)
	}
	var acme apiClient
	if st := s.call("POST", "/api/v1/clients", adminTok, map[string]any{"name": "Acme Trading", "phones": []string{acmeNumber},
		"segment": "vip", "manager_id": anna.ID}, &acme); st != 201 {
		t.Fatalf("create client: %d", st)
	}

	// vipCall brings Acme's call while anna's phone rings unanswered and
	// the others' answer; who must take it, and the phones that must not
	// ring stay quiet.
	people := map[string]apiManager{"bob": bob, "carl": carl, "sue": sue}
	vipCall := func(t *testing.T, rtpBase int, who string, mustNotRing ...string) {
		t.Helper()
		annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
		phones := map[string]*testenv.SIPp{
			"bob":  phone(t, s, "bob", bobIP, 5071, rtpBase+2, false, 1),
			"carl": phone(t, s, "carl", strangerIP, 5073, rtpBase+4, false, 1),
			"sue":  phone(t, s, "sue", supIP, 5072, rtpBase+6, false, 1),
		}
		tr := trunkCall(t, s, acmeNumber, rtpBase, true, 1000)
		annaPh.Wait()
		tr.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.ManagerID != people[who].ID || cdr.Disposition != "answered" {
			t.Errorf("CDR %+v, want answered by %s", cdr, who)
		}
		phones[who].Wait()
		assertNoLeak(t, phones[who], acmeNumber, acme.Code)
		for _, name := range mustNotRing {
			quiet(t, name, phones[name])
		}
	}

	t.Run("nobody answers: the call ends at the supervisor's phone, never at a manager not permitted", func(t *testing.T) {
		// bob is permitted, but the overflow replaces the team; carl is not.
		vipCall(t, 41600, "sue", "bob", "carl")
	})

	t.Run("without the overflow the team is cut to the permitted managers", func(t *testing.T) {
		vipRules["overflow_to_supervisor"] = false
		if st := s.call("PUT", "/api/v1/segments/"+vip.ID, sue.APIToken, vipRules, nil); st != 200 {
			t.Fatalf("update segment: %d", st)
		}
		vipCall(t, 41610, "bob", "carl", "sue")
	})

	t.Run("outside the working hours a manager may not call, but the client still reaches him", func(t *testing.T) {
		closed := (int(time.Now().UTC().Weekday()) + 3) % 7 // never today
		vipRules["hours"] = map[string]any{"days": []int{closed}, "from": "09:00", "to": "18:00"}
		if st := s.call("PUT", "/api/v1/segments/"+vip.ID, sue.APIToken, vipRules, nil); st != 200 {
			t.Fatalf("update segment: %d", st)
		}
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, nil); st != 409 {
			t.Errorf("click-to-call outside the hours: %d, want 409", st)
		}
		ph := dial(t, s, acme.Code, 41622)
		if st, _ := ph.LogValue("STATUS", time.Second); st != "403" {
			t.Errorf("desk dial outside the hours: %s, want 403", st)
		}
		if !s.audited("call.outside_hours", "client:"+acme.ID) {
			t.Error("no audit row for the refused call")
		}
		acmeCallsAnna(t, s, acme, 41630)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.ManagerID != anna.ID || cdr.Disposition != "answered" || cdr.Direction != "inbound" {
			t.Errorf("CDR %+v, want the client's call answered by anna", cdr)
		}
	})

	t.Run("a rotation moves a client with history; his next call rings his new manager", func(t *testing.T) {
		const retailNumber = "+74957654321"
		var retail apiClient
		if st := s.call("POST", "/api/v1/clients", adminTok, map[string]any{"name": "Retail", "phones": []string{retailNumber},
			"segment": "retail", "manager_id": bob.ID}, &retail); st != 201 {
			t.Fatalf("create client: %d", st)
		}
		if st := s.call("PUT", "/api/v1/clients/"+retail.ID+"/assignment", adminTok, map[string]any{"manager_id": carl.ID}, nil); st != 200 {
			t.Fatalf("reassign: %d", st)
		}
		plan := map[string]any{"manager_ids": []string{anna.ID, bob.ID, carl.ID}, "segment": "retail", "dry_run": true}
		type moves struct {
			ID    string
			Moves []struct{ ClientID, From, To string } `json:"moves"`
		}
		var dry, done moves
		if st := s.call("POST", "/api/v1/rotations", sue.APIToken, plan, &dry); st != 200 {
			t.Fatalf("dry run: %d", st)
		}
		plan["dry_run"] = false
		if st := s.call("POST", "/api/v1/rotations", sue.APIToken, plan, &done); st != 200 {
			t.Fatalf("rotation: %d", st)
		}
		// bob held him before carl: a recent holder, so anna gets him.
		if fmt.Sprint(dry.Moves) != fmt.Sprint(done.Moves) || len(done.Moves) != 1 || done.Moves[0].To != anna.ID || done.Moves[0].From != carl.ID {
			t.Fatalf("previewed %+v, carried out %+v", dry, done)
		}
		annaPh := phone(t, s, "anna", annaIP, 5070, 41642, false, 1)
		carlPh := phone(t, s, "carl", strangerIP, 5073, 41644, false, 1)
		tr := trunkCall(t, s, retailNumber, 41640, true, 1000)
		annaPh.Wait()
		tr.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: retail.ID})
		if cdr.ManagerID != anna.ID || cdr.Disposition != "answered" {
			t.Errorf("CDR %+v, want answered by anna", cdr)
		}
		quiet(t, "carl (the holder before the rotation)", carlPh)
	})
}

// TestRotationScheduleRuns: serve carries out a repeating rotation when it
// falls due, once, and routing follows.
func TestRotationScheduleRuns(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) { c.rotationCheck = 200 * time.Millisecond })
	anna, bob := s.manager("anna"), s.manager("bob")
	var sue apiManager
	if st := s.call("POST", "/api/v1/managers", adminTok, map[string]string{"name": "Sue", "sip_username": "sue",
		"sip_password": "sue-secret", "role": "supervisor"}, &sue); st != 201 {
		t.Fatalf("create supervisor: %d", st)
	}
	var retail apiClient
	if st := s.call("POST", "/api/v1/clients", adminTok, map[string]any{"name": "Retail", "phones": []string{acmeNumber},
		"segment": "retail", "manager_id": anna.ID}, &retail); st != 201 {
		t.Fatalf("create client: %d", st)
	}
	var sch struct {
		ID             string
		LastRotationID string `json:"last_rotation_id"`
	}
	if st := s.call("POST", "/api/v1/rotations/schedules", sue.APIToken, map[string]any{"segment": "retail",
		"manager_ids": []string{anna.ID, bob.ID}, "every_days": 7, "first_run_at": time.Now().Add(-time.Minute)}, &sch); st != 201 {
		t.Fatalf("schedule: %d", st)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		var c apiClient
		return s.call("GET", "/api/v1/clients/"+retail.ID, adminTok, nil, &c) == 200 && c.ManagerID == bob.ID
	}, "the due rotation moves the client to bob")
	var list []struct {
		LastRotationID string    `json:"last_rotation_id"`
		NextRunAt      time.Time `json:"next_run_at"`
	}
	s.call("GET", "/api/v1/rotations/schedules", sue.APIToken, nil, &list)
	if len(list) != 1 || list[0].LastRotationID == "" || list[0].NextRunAt.Before(time.Now().Add(6*24*time.Hour)) {
		t.Fatalf("schedules after the run: %+v", list)
	}
	var hist []struct{ ID, Actor string }
	s.call("GET", "/api/v1/rotations", sue.APIToken, nil, &hist)
	if len(hist) != 1 || hist[0].ID != list[0].LastRotationID || hist[0].Actor != "system:rotation_schedule:"+sch.ID {
		t.Fatalf("history: %+v", hist)
	}
}
