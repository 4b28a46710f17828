package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/api"
)

// fakeMonitors stands in for the PBX at the API's edge: it knows one live
// call, one supervisor with a phone and who is on which call.
type fakeMonitors struct {
	mu       sync.Mutex
	live     string
	phones   map[string]bool
	on       map[string]string // call id -> supervisor
	requests []api.MonitorCall
}

func (f *fakeMonitors) Monitor(_ context.Context, m api.MonitorCall) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, m)
	switch {
	case m.CallID != f.live:
		return "", api.ErrCallNotLive
	case f.on[m.CallID] == m.SupervisorID:
		return "active", nil
	case f.on[m.CallID] != "":
		return "", api.ErrMonitored
	case !f.phones[m.SupervisorID]:
		return "", api.ErrNotRegistered
	}
	f.on[m.CallID] = m.SupervisorID
	return "ringing", nil
}

func TestMonitorCall(t *testing.T) {
	e := newEnv(t)
	sue, olga := e.manager("sue", "supervisor"), e.manager("olga", "supervisor")
	anna := e.manager("anna", "manager")
	boss := e.manager("boss", "admin")
	live := uuid.NewString()
	fake := &fakeMonitors{live: live, phones: map[string]bool{sue.ID: true, olga.ID: true}, on: map[string]string{}}
	e.srv.Monitors = fake
	path := "/api/v1/calls/" + live + "/monitor"

	errCode := func(raw []byte) string {
		var b struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(raw, &b)
		return b.Error.Code
	}
	for _, tc := range []struct {
		name, path, token string
		body              any
		status            int
		code              string
	}{
		{"a manager may not listen in", path, anna.APIToken, map[string]string{"mode": "listen"}, 403, "forbidden"},
		{"no token", path, "", map[string]string{"mode": "listen"}, 401, "unauthorized"},
		{"unknown mode", path, sue.APIToken, map[string]string{"mode": "record"}, 400, "bad_request"},
		{"no mode", path, sue.APIToken, map[string]string{}, 400, "bad_request"},
		{"unknown field", path, sue.APIToken, map[string]string{"mode": "listen", "as": "anna"}, 400, "bad_request"},
		{"not JSON", path, sue.APIToken, "listen", 400, "bad_request"},
		{"unknown call", "/api/v1/calls/" + uuid.NewString() + "/monitor", sue.APIToken, map[string]string{"mode": "listen"}, 404, "not_found"},
		{"not a call id", "/api/v1/calls/..%2f..%2fx/monitor", sue.APIToken, map[string]string{"mode": "listen"}, 404, "not_found"},
		{"an admin without a phone", path, boss.APIToken, map[string]string{"mode": "listen"}, 409, "no_registered_phone"},
		{"the bootstrap token is nobody's phone", path, adminToken, map[string]string{"mode": "listen"}, 409, "no_registered_phone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, raw := e.call("POST", tc.path, tc.token, tc.body)
			if st != tc.status || errCode(raw) != tc.code {
				t.Fatalf("%d %s, want %d %s", st, raw, tc.status, tc.code)
			}
		})
	}
	if n := len(fake.requests); n != 2 { // the admin without a phone, and the unknown call
		t.Fatalf("the PBX was asked %d times: %+v", n, fake.requests)
	}

	var got struct{ CallID, Mode, State string }
	raw := e.must(202, "POST", path, sue.APIToken, map[string]string{"mode": "listen"}, nil)
	_ = json.Unmarshal(raw, &struct {
		CallID *string `json:"call_id"`
		Mode   *string `json:"mode"`
		State  *string `json:"state"`
	}{&got.CallID, &got.Mode, &got.State})
	if got.CallID != live || got.Mode != "listen" || got.State != "ringing" {
		t.Fatalf("answer %s", raw)
	}
	if r := fake.requests[len(fake.requests)-1]; r.SupervisorID != sue.ID || r.Actor != "supervisor:"+sue.ID || r.Mode != "listen" {
		t.Fatalf("the PBX was asked %+v", r)
	}
	if st, raw := e.call("POST", path, olga.APIToken, map[string]string{"mode": "barge"}); st != 409 || errCode(raw) != "call_monitored" {
		t.Fatalf("a second supervisor: %d %s", st, raw)
	}
	raw = e.must(202, "POST", path, sue.APIToken, map[string]string{"mode": "whisper"}, nil)
	if !strings.Contains(string(raw), `"state":"active"`) {
		t.Fatalf("a mode change: %s", raw)
	}
	log, err := e.store.AuditLog(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	var audited []string
	for _, a := range log {
		if a.Action == "call.monitor_request" && a.Object == "call:"+live && a.Actor == "supervisor:"+sue.ID {
			audited = append(audited, a.Reason)
		}
	}
	if len(audited) != 2 {
		t.Fatalf("audit rows of sue's requests: %v", audited)
	}
}
