package api_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/storage"
)

type task struct {
	ID             string     `json:"id"`
	ClientID       string     `json:"client_id"`
	ClientName     string     `json:"client_name"`
	ClientCode     string     `json:"client_code"`
	CallID         string     `json:"call_id"`
	ManagerID      string     `json:"manager_id"`
	CreatedAt      time.Time  `json:"created_at"`
	Status         string     `json:"status"`
	DueAt          time.Time  `json:"due_at"`
	Overdue        bool       `json:"overdue"`
	ClosedAt       *time.Time `json:"closed_at"`
	ClosedByCallID string     `json:"closed_by_call_id"`
}

// missCall applies the events of an inbound call from the client that
// nobody answered and that ended ago.
func (e *env) missCall(clientID, managerID string, ago time.Duration) string {
	e.t.Helper()
	callID, end := uuid.NewString(), time.Now().Add(-ago)
	ev := storage.CallEvent{EventID: uuid.NewString(), Kind: storage.CallOffered, At: end.Add(-20 * time.Second),
		CallID: callID, Direction: "inbound", ClientID: clientID, ManagerID: managerID}
	ended := ev
	ended.EventID, ended.Kind, ended.At, ended.Disposition, ended.HangupSide = uuid.NewString(), storage.CallEnded, end,
		"missed", "client"
	if _, err := e.store.ApplyCallEvents(context.Background(), []storage.CallEvent{ev, ended}); err != nil {
		e.t.Fatal(err)
	}
	return callID
}

func (e *env) tasks(token, query string) []task {
	e.t.Helper()
	var out []task
	e.must(200, "GET", "/api/v1/tasks"+query, token, nil, &out)
	return out
}

func TestTasksAPI(t *testing.T) {
	e := newEnv(t)
	anna, boris := e.manager("task-anna", "manager"), e.manager("task-boris", "manager")
	sveta := e.manager("task-sveta", "supervisor")
	const number = "+79161112233"
	var acme, bolt client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
		"name": "Acme Tasks", "phones": []string{number}, "manager_id": anna.ID, "partner_ids": []string{boris.ID}}, &acme)
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
		"name": "Bolt Tasks", "phones": []string{"+79164445566"}, "manager_id": boris.ID}, &bolt)
	old := e.missCall(acme.ID, anna.ID, 5*time.Hour)    // overdue at the default 4h
	fresh := e.missCall(bolt.ID, boris.ID, time.Minute) // not yet

	t.Run("a manager sees his own clients' tasks only", func(t *testing.T) {
		got := e.tasks(anna.APIToken, "")
		if len(got) != 1 {
			t.Fatalf("anna's tasks: %+v", got)
		}
		tk := got[0]
		if tk.CallID != old || tk.ClientID != acme.ID || tk.ClientName != "Acme Tasks" || tk.ClientCode != acme.Code ||
			tk.ManagerID != anna.ID || tk.Status != "open" || !tk.Overdue || tk.ClosedAt != nil ||
			!tk.DueAt.Equal(tk.CreatedAt.Add(api.DefaultTaskOverdue)) {
			t.Fatalf("anna's task: %+v", tk)
		}
		raw, _ := json.Marshal(got)
		assertNoNumber(t, "tasks", raw, number, acme.Code)
		// boris is acme's partner, not his primary manager: not his task.
		if got := e.tasks(boris.APIToken, ""); len(got) != 1 || got[0].CallID != fresh || got[0].Overdue {
			t.Fatalf("boris's tasks: %+v", got)
		}
		e.must(403, "GET", "/api/v1/tasks?manager_id="+anna.ID, boris.APIToken, nil, nil)
		if got := e.tasks(anna.APIToken, "?manager_id="+anna.ID+"&status=open"); len(got) != 1 {
			t.Fatalf("anna's own filter: %+v", got)
		}
	})

	t.Run("supervisors see all, filtered", func(t *testing.T) {
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"", []string{fresh, old}},
			{"?manager_id=" + boris.ID, []string{fresh}},
			{"?overdue=true", []string{old}},
			{"?overdue=true&manager_id=" + boris.ID, nil},
			{"?overdue=false", []string{fresh, old}},
			{"?status=done", nil},
			{"?status=done&overdue=true", nil},
			{"?limit=1", []string{fresh}},
		} {
			got := e.tasks(sveta.APIToken, tc.query)
			var ids []string
			for _, tk := range got {
				ids = append(ids, tk.CallID)
			}
			if len(ids) != len(tc.want) || (len(ids) > 0 && ids[0] != tc.want[0]) {
				t.Errorf("%q: %v, want %v", tc.query, ids, tc.want)
			}
		}
		if got := e.tasks(adminToken, "?overdue=true"); len(got) != 1 {
			t.Fatalf("admin's overdue tasks: %+v", got)
		}
	})

	t.Run("bad queries are 400, no token 401", func(t *testing.T) {
		for _, q := range []string{"?status=closed", "?overdue=yes", "?manager_id=anna", "?limit=0", "?limit=1001"} {
			status, raw := e.call("GET", "/api/v1/tasks"+q, sveta.APIToken, nil)
			var body struct {
				Error struct{ Code, Message string }
			}
			if status != 400 || json.Unmarshal(raw, &body) != nil || body.Error.Code != "bad_request" || body.Error.Message == "" {
				t.Errorf("%s: %d %s", q, status, raw)
			}
		}
		e.must(401, "GET", "/api/v1/tasks", "", nil, nil)
		e.must(401, "GET", "/api/v1/tasks", "not-a-token", nil, nil)
	})

	t.Run("tasks follow the client to his new manager", func(t *testing.T) {
		e.must(200, "PUT", "/api/v1/clients/"+acme.ID+"/assignment", sveta.APIToken,
			map[string]any{"manager_id": boris.ID, "partner_ids": []string{}}, nil)
		if got := e.tasks(anna.APIToken, ""); len(got) != 0 {
			t.Fatalf("anna kept tasks of a client taken from her: %+v", got)
		}
		if got := e.tasks(boris.APIToken, ""); len(got) != 2 {
			t.Fatalf("boris's tasks after the reassignment: %+v", got)
		}
		// boris is dismissed, anna takes over his clients and their tasks.
		e.must(200, "POST", "/api/v1/managers/"+boris.ID+"/dismiss", adminToken,
			map[string]any{"successor_id": anna.ID}, nil)
		if got := e.tasks(anna.APIToken, "?status=open"); len(got) != 2 {
			t.Fatalf("anna's tasks after boris's dismissal: %+v", got)
		}
	})

	t.Run("an erased client's tasks are cancelled", func(t *testing.T) {
		e.must(200, "DELETE", "/api/v1/clients/"+acme.ID, adminToken, map[string]any{"reason": "data subject request 77"}, nil)
		got := e.tasks(sveta.APIToken, "?status=cancelled")
		if len(got) != 1 || got[0].CallID != old || got[0].ManagerID != "" || got[0].ClosedAt == nil ||
			got[0].Overdue || got[0].ClientName == "Acme Tasks" {
			t.Fatalf("erased client's task: %+v", got)
		}
		if got := e.tasks(anna.APIToken, ""); len(got) != 1 || got[0].CallID != fresh {
			t.Fatalf("anna's tasks after the erasure: %+v", got)
		}
	})
}
