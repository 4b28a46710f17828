package console

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// The alerts page (issue 13 item 3): supervisors and admins see the alerts
// with their evidence and acknowledge them; admins also see the webhooks'
// dead letters and send them again.
func (c *Console) alertRoutes() {
	c.handle("GET /console/alerts", c.alertsPage, admin, supervisor)
	c.handle("POST /console/alerts/{id}/ack", c.ackAlert, admin, supervisor)
	c.handle("POST /console/alerts/dead-letters/{id}/retry", c.retryDeadLetter, admin)
}

// alertsShown bounds the alerts the page lists.
const alertsShown = 100

type alertRow struct {
	storage.Alert
	ClientName, ClientCode  string
	ManagerName, ActorName  string
	SupervisorName, AckedBy string
	Calls                   []*callRow
	Audit                   []auditRow
	Figures                 []figure
}

// figure is one number an alert's rule compared, named by its catalog id
// (alerts.fig_<name>).
type figure struct {
	Name, Text string
}

type alertsView struct {
	Alerts      []alertRow
	ShowAll     bool
	DeadLetters []storage.Delivery
	IsAdmin     bool
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	v := alertsView{ShowAll: r.URL.Query().Get("all") == "1", IsAdmin: s.Role == admin}
	list, err := c.store.Alerts(ctx, storage.AlertFilter{Open: !v.ShowAll, Limit: alertsShown})
	if err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	clients, err := c.clientsByID(ctx)
	if err != nil {
		return err
	}
	for _, a := range list {
		row := alertRow{Alert: a, ManagerName: ppl.name(a.ManagerID), SupervisorName: ppl.name(a.SupervisorID)}
		if cl, ok := clients[a.ClientID]; ok {
			row.ClientName, row.ClientCode = cl.Name, cl.Code
		}
		actors := c.auditRows(r, s, []storage.AuditEntry{{Actor: a.Actor}, {Actor: a.AckedBy}}, ppl, clients)
		row.ActorName, row.AckedBy = actors[0].ActorName, actors[1].ActorName
		for _, name := range alertFigures {
			if n, ok := a.Evidence.Figures[name]; ok {
				row.Figures = append(row.Figures, figure{Name: "alerts.fig_" + name, Text: figureText(c.localeFor(r, s), name, n)})
			}
		}
		cdrs, err := c.store.CDRsByID(ctx, a.Evidence.CallIDs)
		if err != nil {
			return err
		}
		for _, cdr := range cdrs {
			row.Calls = append(row.Calls, viewCall(cdr, ppl, clients))
		}
		entries, err := c.store.AuditRows(ctx, a.Evidence.AuditSeqs)
		if err != nil {
			return err
		}
		row.Audit = c.auditRows(r, s, entries, ppl, clients)
		v.Alerts = append(v.Alerts, row)
	}
	if v.IsAdmin {
		if v.DeadLetters, err = c.store.DeadDeliveries(ctx, 50); err != nil {
			return err
		}
	}
	return c.render(w, r, s, "alerts", c.localeFor(r, s).t("alerts.title"), "alerts", v)
}

// ackAlert acknowledges through the API (which audits alert.ack).
func (c *Console) ackAlert(w http.ResponseWriter, r *http.Request, s *session) error {
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/alerts/"+url.PathEscape(r.PathValue("id"))+"/ack", nil, nil)
	return c.afterAdminAction(w, r, "/console/alerts", err, c.localeFor(r, s).t("alerts.acked"))
}

// retryDeadLetter sends a dead letter again through the API.
func (c *Console) retryDeadLetter(w http.ResponseWriter, r *http.Request, s *session) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return errNotFound
	}
	err = c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/webhooks/deliveries/"+strconv.FormatInt(id, 10)+"/retry", nil, nil)
	return c.afterAdminAction(w, r, "/console/alerts", err, c.localeFor(r, s).t("alerts.retried"))
}

// figureText shows a figure of an alert's evidence: seconds as days (or a
// duration under a day), counts as numbers.
func figureText(lc *locale, name string, n int64) string {
	switch name {
	case "median_gap_seconds", "silent_seconds", "window_seconds":
		if n >= 86400 {
			return lc.n("alerts.days", int(n/86400))
		}
		return duration(time.Duration(n) * time.Second)
	}
	return lc.lang.Number(int(n))
}

// alertFigures are the figures an alert may carry, in the order shown.
var alertFigures = []string{"calls", "median_gap_seconds", "silent_seconds", "previous_week", "last_week", "count", "window_seconds"}
