package console

import (
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// apiTask is a missed-call task as GET /api/v1/tasks shows it.
type apiTask struct {
	ID         string    `json:"id"`
	ClientID   string    `json:"client_id"`
	ClientName string    `json:"client_name"`
	ClientCode string    `json:"client_code"`
	CallID     string    `json:"call_id"`
	ManagerID  string    `json:"manager_id"`
	CreatedAt  time.Time `json:"created_at"`
	DueAt      time.Time `json:"due_at"`
	Overdue    bool      `json:"overdue"`
}

// taskRow is one task on the page.
type taskRow struct {
	apiTask
	ManagerName string
}

// overdueCount is one manager's overdue tasks.
type overdueCount struct {
	ManagerID, ManagerName string
	Count                  int
}

type tasksView struct {
	Mine bool // a manager's own open tasks, with the Call button
	// Tasks are a manager's open tasks, oldest first, or the overdue tasks
	// (of ManagerID, if set) for supervisors and admins.
	Tasks     []taskRow
	PerMgr    []overdueCount // supervisors and admins: overdue per manager, most first
	ManagerID string
	Manager   string
}

// tasksPage is the missed-call tasks: a manager's own open ones to call
// back, and for supervisors and admins the overdue ones per manager.
func (c *Console) tasksPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	v := tasksView{Mine: s.Role == manager}
	q := url.Values{"limit": {"1000"}}
	if v.Mine {
		q.Set("status", "open")
	} else {
		q.Set("overdue", "true")
	}
	var list []apiTask
	if err := c.apiFor(r, s).do(ctx, http.MethodGet, "/api/v1/tasks?"+q.Encode(), nil, &list); err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	if filter := r.URL.Query().Get("manager"); !v.Mine && filter != "" {
		if _, ok := ppl[filter]; ok {
			v.ManagerID, v.Manager = filter, ppl.name(filter)
		}
	}
	for _, t := range list {
		counts[t.ManagerID]++
		if v.ManagerID == "" || t.ManagerID == v.ManagerID {
			v.Tasks = append(v.Tasks, taskRow{apiTask: t, ManagerName: ppl.name(t.ManagerID)})
		}
	}
	// Oldest first: the client who has waited longest comes first.
	sort.SliceStable(v.Tasks, func(i, j int) bool { return v.Tasks[i].CreatedAt.Before(v.Tasks[j].CreatedAt) })
	for id, n := range counts {
		v.PerMgr = append(v.PerMgr, overdueCount{ManagerID: id, ManagerName: ppl.name(id), Count: n})
	}
	sort.Slice(v.PerMgr, func(i, j int) bool {
		a, b := v.PerMgr[i], v.PerMgr[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return strings.ToLower(a.ManagerName) < strings.ToLower(b.ManagerName)
	})
	return c.render(w, r, s, "tasks", c.localeFor(r, s).t("tasks.title"), "tasks", v)
}
