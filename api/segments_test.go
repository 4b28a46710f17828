package api_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/api"
)

// errCode returns the error code of a JSON error body.
func errCode(t *testing.T, raw []byte) string {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("not a JSON error: %s", raw)
	}
	return b.Error.Code
}

func TestSegmentsAPI(t *testing.T) {
	e := newEnv(t)
	anna, bob, carl := e.manager("anna", "manager"), e.manager("bob", "manager"), e.manager("carl", "manager")
	sue := e.manager("sue", "supervisor")

	// A client naming a segment nobody made makes it (old scripts keep working).
	var acme client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
		"name": "Acme", "phones": []string{"+74951110001"}, "segment": "vip", "manager_id": anna.ID, "partner_ids": []string{bob.ID}}, &acme)
	var segs []api.SegmentView
	e.must(200, "GET", "/api/v1/segments", sue.APIToken, nil, &segs)
	if len(segs) != 1 || segs[0].Name != "vip" || segs[0].Clients != 1 || segs[0].Restricted {
		t.Fatalf("segments: %+v", segs)
	}
	vip := segs[0]

	t.Run("managers may neither read nor write segments nor rotate", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"GET", "/api/v1/segments"}, {"POST", "/api/v1/segments"}, {"PUT", "/api/v1/segments/" + vip.ID},
			{"DELETE", "/api/v1/segments/" + vip.ID}, {"GET", "/api/v1/rotations"}, {"POST", "/api/v1/rotations"},
		} {
			st, raw := e.call(r.method, r.path, anna.APIToken, `{"name":"x","dry_run":true,"segment":"vip"}`)
			if st != 403 || errCode(t, raw) != "forbidden" {
				t.Errorf("%s %s as a manager: %d %s", r.method, r.path, st, raw)
			}
		}
	})

	t.Run("bad input is 400 with a JSON error", func(t *testing.T) {
		for _, body := range []string{
			`{`, `{"restricted":true}`, `{"name":"  "}`, `{"name":"x","bogus":1}`, `{"name":"` + strings.Repeat("я", 101) + `"}`,
			`{"name":"x","overflow_to_supervisor":true}`,
			`{"name":"x","hours":{"days":[7],"from":"09:00","to":"18:00"}}`,
			`{"name":"x","hours":{"days":[1],"from":"18:00","to":"09:00"}}`,
			`{"name":"x","hours":{"days":[1],"from":"9","to":"18:00"}}`,
			`{"name":"x","hours":{"days":[1],"from":"09:00","to":"24:01"}}`,
		} {
			st, raw := e.call("POST", "/api/v1/segments", sue.APIToken, body)
			if st != 400 || errCode(t, raw) != "bad_request" {
				t.Errorf("POST %s: %d %s", body, st, raw)
			}
		}
		for _, body := range []string{`{}`, `{"dry_run":true}`, `{"manager_ids":["x"]}`, `{"segment":1}`} {
			st, raw := e.call("POST", "/api/v1/rotations", sue.APIToken, body)
			if st != 400 || errCode(t, raw) != "bad_request" {
				t.Errorf("rotation %s: %d %s", body, st, raw)
			}
		}
		st, raw := e.call("POST", "/api/v1/segments", sue.APIToken, map[string]any{"name": "x", "supervisor_id": anna.ID})
		if st != 422 || errCode(t, raw) != "not_a_supervisor" {
			t.Errorf("a manager as supervisor: %d %s", st, raw)
		}
		st, raw = e.call("POST", "/api/v1/rotations", sue.APIToken, map[string]any{"segment": "nope", "dry_run": true})
		if st != 422 || errCode(t, raw) != "unknown_segment" {
			t.Errorf("unknown segment: %d %s", st, raw)
		}
		if st, raw := e.call("PUT", "/api/v1/segments/not-an-id", sue.APIToken, map[string]any{"name": "x"}); st != 404 {
			t.Errorf("unknown id: %d %s", st, raw)
		}
	})

	rules := map[string]any{"name": "vip", "restricted": true, "allowed_manager_ids": []string{anna.ID},
		"supervisor_id": sue.ID, "overflow_to_supervisor": true, "alert_missed": true,
		"hours": map[string]any{"days": []int{1, 2, 3, 4, 5}, "from": "09:00", "to": "18:00"}}
	t.Run("restricting a segment to managers who don't hold its clients is refused", func(t *testing.T) {
		st, raw := e.call("PUT", "/api/v1/segments/"+vip.ID, sue.APIToken, rules)
		if st != 409 || errCode(t, raw) != "segment_holders" {
			t.Fatalf("%d %s", st, raw)
		}
	})
	rules["allowed_manager_ids"] = []string{anna.ID, bob.ID}
	e.must(200, "PUT", "/api/v1/segments/"+vip.ID, sue.APIToken, rules, &vip)
	if !vip.Restricted || len(vip.AllowedManagerIDs) != 2 || vip.SupervisorID == nil || *vip.SupervisorID != sue.ID ||
		vip.Hours.From != "09:00" || vip.Hours.To != "18:00" || len(vip.Hours.Days) != 5 {
		t.Fatalf("updated: %+v", vip)
	}

	t.Run("a manager not permitted can't be given a restricted segment's client", func(t *testing.T) {
		st, raw := e.call("PUT", "/api/v1/clients/"+acme.ID+"/assignment", adminToken, map[string]any{"manager_id": carl.ID})
		if st != 409 || errCode(t, raw) != "segment_not_permitted" {
			t.Errorf("reassign to carl: %d %s", st, raw)
		}
		st, raw = e.call("POST", "/api/v1/clients", adminToken, map[string]any{
			"name": "Bolt", "phones": []string{"+74951110002"}, "segment": "vip", "manager_id": carl.ID})
		if st != 409 || errCode(t, raw) != "segment_not_permitted" {
			t.Errorf("create for carl: %d %s", st, raw)
		}
		var all []client
		e.must(200, "GET", "/api/v1/clients", adminToken, nil, &all)
		if len(all) != 1 {
			t.Errorf("a refused client was written: %d clients", len(all))
		}
	})

	t.Run("a rename renames the segment on its clients; a segment with clients is not deleted", func(t *testing.T) {
		rules["name"] = "gold"
		e.must(200, "PUT", "/api/v1/segments/"+vip.ID, sue.APIToken, rules, &vip)
		var c struct{ Segment string }
		e.must(200, "GET", "/api/v1/clients/"+acme.ID, adminToken, nil, &c)
		if c.Segment != "gold" {
			t.Fatalf("client's segment %q after the rename", c.Segment)
		}
		st, raw := e.call("DELETE", "/api/v1/segments/"+vip.ID, sue.APIToken, nil)
		if st != 409 || errCode(t, raw) != "segment_in_use" {
			t.Fatalf("delete: %d %s", st, raw)
		}
		var empty api.SegmentView
		e.must(201, "POST", "/api/v1/segments", sue.APIToken, map[string]any{"name": "empty"}, &empty)
		if st, raw := e.call("POST", "/api/v1/segments", sue.APIToken, map[string]any{"name": "empty"}); st != 409 || errCode(t, raw) != "duplicate_segment" {
			t.Fatalf("duplicate: %d %s", st, raw)
		}
		e.must(204, "DELETE", "/api/v1/segments/"+empty.ID, sue.APIToken, nil, nil)
	})

	t.Run("rotation: a preview moves nobody, carrying it out moves as previewed", func(t *testing.T) {
		var rc []client
		for i := range 3 {
			var c client
			e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
				"name": fmt.Sprint("R", i), "phones": []string{fmt.Sprint("+7495222000", i)}, "segment": "retail", "manager_id": carl.ID}, &c)
			rc = append(rc, c)
		}
		body := map[string]any{"manager_ids": []string{anna.ID, bob.ID, carl.ID}, "segment": "retail", "dry_run": true}
		var dry api.RotationView
		e.must(200, "POST", "/api/v1/rotations", sue.APIToken, body, &dry)
		if !dry.DryRun || dry.ID != "" || len(dry.Moves) != 3 {
			t.Fatalf("dry run: %+v", dry)
		}
		for _, c := range rc {
			var now client
			e.must(200, "GET", "/api/v1/clients/"+c.ID, adminToken, nil, &now)
			if now.ManagerID != carl.ID {
				t.Fatalf("a dry run moved %s", c.ID)
			}
		}
		body["dry_run"] = false
		var done api.RotationView
		e.must(200, "POST", "/api/v1/rotations", sue.APIToken, body, &done)
		if done.DryRun || done.ID == "" || fmt.Sprint(done.Moves) != fmt.Sprint(dry.Moves) {
			t.Fatalf("carried out %+v, previewed %+v", done, dry)
		}
		for _, m := range done.Moves {
			var now client
			e.must(200, "GET", "/api/v1/clients/"+m.ClientID, adminToken, nil, &now)
			if m.From != carl.ID || m.To == carl.ID || now.ManagerID != m.To {
				t.Fatalf("move %+v, client now %+v", m, now)
			}
		}
		var hist []api.RotationView
		e.must(200, "GET", "/api/v1/rotations", sue.APIToken, nil, &hist)
		if len(hist) != 1 || hist[0].ID != done.ID || len(hist[0].Moves) != 3 {
			t.Fatalf("history: %+v", hist)
		}
		if st, _ := e.call("GET", "/api/v1/rotations?limit=0", sue.APIToken, nil); st != 400 {
			t.Fatalf("limit=0: %d", st)
		}
	})

	t.Run("every write is audited", func(t *testing.T) {
		log, err := e.store.AuditLog(t.Context(), 200)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, a := range log {
			seen[a.Action]++
		}
		// vip (by the client), retail (by the clients), empty; vip updated twice; empty deleted; one rotation.
		if seen["segment.create"] != 3 || seen["segment.update"] != 2 || seen["segment.delete"] != 1 || seen["rotation.run"] != 1 {
			t.Fatalf("audit: %v", seen)
		}
	})
}

func TestRotationSchedulesAPI(t *testing.T) {
	e := newEnv(t)
	anna, bob := e.manager("anna", "manager"), e.manager("bob", "manager")
	sue := e.manager("sue", "supervisor")
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
		"name": "Acme", "phones": []string{"+74951110001"}, "segment": "retail", "manager_id": anna.ID}, nil)
	for _, body := range []string{`{"segment":"retail"}`, `{"segment":"retail","every_days":0}`, `{"segment":"retail","every_days":366}`,
		`{"every_days":7}`, `{"segment":"retail","every_days":7,"first_run_at":"tomorrow"}`} {
		st, raw := e.call("POST", "/api/v1/rotations/schedules", sue.APIToken, body)
		if st != 400 || errCode(t, raw) != "bad_request" {
			t.Errorf("POST %s: %d %s", body, st, raw)
		}
	}
	if st, raw := e.call("POST", "/api/v1/rotations/schedules", anna.APIToken, `{"segment":"retail","every_days":7}`); st != 403 {
		t.Errorf("a manager schedules: %d %s", st, raw)
	}
	var sch api.ScheduleView
	e.must(201, "POST", "/api/v1/rotations/schedules", sue.APIToken, map[string]any{"segment": "retail",
		"manager_ids": []string{anna.ID, bob.ID}, "every_days": 14}, &sch)
	if sch.EveryDays != 14 || sch.NextRunAt.Before(time.Now().AddDate(0, 0, 13)) || len(sch.ManagerIDs) != 2 {
		t.Fatalf("created %+v", sch)
	}
	var all []api.ScheduleView
	e.must(200, "GET", "/api/v1/rotations/schedules", sue.APIToken, nil, &all)
	if len(all) != 1 || all[0].ID != sch.ID {
		t.Fatalf("listed %+v", all)
	}
	e.must(204, "DELETE", "/api/v1/rotations/schedules/"+sch.ID, sue.APIToken, nil, nil)
	if st, _ := e.call("DELETE", "/api/v1/rotations/schedules/"+sch.ID, sue.APIToken, nil); st != 404 {
		t.Fatalf("second delete: %d", st)
	}
}
