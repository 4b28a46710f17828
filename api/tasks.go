package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// DefaultTaskOverdue is how long a missed-call task may stay open before it
// counts as overdue, when Config.TaskOverdue is not set.
const DefaultTaskOverdue = 4 * time.Hour

// taskView is a missed-call task as GET /api/v1/tasks shows it: the client
// by id, name and code, never his number.
type taskView struct {
	ID             string     `json:"id"`
	ClientID       string     `json:"client_id"`
	ClientName     string     `json:"client_name"`
	ClientCode     string     `json:"client_code"`
	CallID         string     `json:"call_id"`
	ManagerID      string     `json:"manager_id,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	Status         string     `json:"status"`
	DueAt          time.Time  `json:"due_at"`
	Overdue        bool       `json:"overdue"`
	ClosedAt       *time.Time `json:"closed_at,omitempty"`
	ClosedByCallID string     `json:"closed_by_call_id,omitempty"`
}

// taskOverdue is the time an open task has before it is overdue.
func (s *Server) taskOverdue() time.Duration {
	if s.TaskOverdue > 0 {
		return s.TaskOverdue
	}
	return DefaultTaskOverdue
}

// listTasks lists missed-call tasks, newest first: a manager sees the tasks
// of the clients he is primary manager of; supervisors and admins see all,
// filtered by manager_id, status and overdue=true.
func (s *Server) listTasks(w http.ResponseWriter, r *http.Request, p Principal) error {
	q := r.URL.Query()
	f := storage.TaskFilter{ManagerID: q.Get("manager_id"), Status: q.Get("status"), Limit: 200}
	if f.ManagerID != "" && !uuidParam.MatchString(f.ManagerID) {
		return badRequest("api.must_be_uuid", "Name", "manager_id")
	}
	if f.Status != "" && !storage.ValidTaskStatus(f.Status) {
		return badRequest("api.bad_task_status")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return badRequest("api.bad_limit")
		}
		f.Limit = n
	}
	now, grace := time.Now(), s.taskOverdue()
	switch q.Get("overdue") {
	case "", "false":
	case "true":
		if f.Status != "" && f.Status != storage.TaskOpen {
			writeJSON(w, http.StatusOK, []taskView{}) // only an open task is ever overdue
			return nil
		}
		f.Status, f.CreatedBefore = storage.TaskOpen, now.Add(-grace)
	default:
		return badRequest("api.bad_overdue")
	}
	if p.Role == storage.RoleManager {
		if f.ManagerID != "" && f.ManagerID != p.ManagerID {
			return errForbidden
		}
		f.ManagerID = p.ManagerID
	}
	tasks, err := s.Store.Tasks(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]taskView, 0, len(tasks))
	for _, t := range tasks {
		due := t.CreatedAt.Add(grace)
		out = append(out, taskView{ID: t.ID, ClientID: t.ClientID, ClientName: t.ClientName, ClientCode: t.ClientCode,
			CallID: t.CallID, ManagerID: t.ManagerID, CreatedAt: t.CreatedAt, Status: t.Status, DueAt: due,
			Overdue: t.Status == storage.TaskOpen && now.After(due), ClosedAt: t.ClosedAt, ClosedByCallID: t.ClosedByCallID})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
