package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/storage"
)

// The segments and rotation pages (supervisors and admins): everything
// goes through /api/v1/segments and /api/v1/rotations as the signed-in
// person.

// segmentRow is a segment with what its form needs.
type segmentRow struct {
	api.SegmentView
	Allowed    map[string]bool
	Days       map[int]bool
	Supervisor string // the supervisor's id, "" none
	// AllowedText names the permitted managers; SupervisorName the
	// supervisor.
	AllowedText    string
	SupervisorName string
	HoursText      string
}

type dayChoice struct {
	N    int
	Name string
}

type segmentsView struct {
	Rows        []segmentRow
	People      []storage.Manager // active, who may be permitted
	Supervisors []storage.Manager // active supervisors and admins
	Days        []dayChoice
	New         segmentRow // the empty form
}

func (c *Console) segmentsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	lc := c.localeFor(r, s)
	var segs []api.SegmentView
	if err := c.apiFor(r, s).do(ctx, http.MethodGet, "/api/v1/segments", nil, &segs); err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	v := segmentsView{People: ppl.active(), New: segmentRow{Allowed: map[string]bool{}, Days: map[int]bool{},
		SegmentView: api.SegmentView{SegmentRules: api.SegmentRules{Hours: &api.HoursView{}}}}}
	for _, m := range v.People {
		if m.Role == storage.RoleSupervisor || m.Role == storage.RoleAdmin {
			v.Supervisors = append(v.Supervisors, m)
		}
	}
	// Monday first, as the week is read where maskpbx is sold.
	for _, d := range []int{1, 2, 3, 4, 5, 6, 0} {
		v.Days = append(v.Days, dayChoice{N: d, Name: lc.t("weekday." + strconv.Itoa(d))})
	}
	for _, sg := range segs {
		if sg.Hours == nil {
			sg.Hours = &api.HoursView{}
		}
		row := segmentRow{SegmentView: sg, Allowed: map[string]bool{}, Days: map[int]bool{}}
		var names []string
		for _, id := range sg.AllowedManagerIDs {
			row.Allowed[id] = true
			names = append(names, ppl.name(id))
		}
		sort.Strings(names)
		row.AllowedText = strings.Join(names, ", ")
		if sg.SupervisorID != nil {
			row.Supervisor, row.SupervisorName = *sg.SupervisorID, ppl.name(*sg.SupervisorID)
		}
		var days []string
		for _, d := range v.Days {
			if slices.Contains(sg.Hours.Days, d.N) {
				row.Days[d.N] = true
				days = append(days, d.Name)
			}
		}
		row.HoursText = lc.t("segments.hours_any")
		if len(days) > 0 {
			row.HoursText = lc.t("segments.hours_text", "Days", strings.Join(days, ", "), "From", sg.Hours.From, "To", sg.Hours.To)
		}
		v.Rows = append(v.Rows, row)
	}
	return c.render(w, r, s, "segments", lc.t("segments.nav"), "segments", v)
}

// segmentBody reads a segment's form into the API's request.
func segmentBody(r *http.Request) map[string]any {
	_ = r.ParseForm()
	days := []int{}
	for _, d := range r.PostForm["days"] {
		if n, err := strconv.Atoi(d); err == nil {
			days = append(days, n)
		}
	}
	allowed := r.PostForm["allowed_manager_ids"]
	if allowed == nil {
		allowed = []string{}
	}
	on := func(name string) bool { return r.PostFormValue(name) == "on" }
	body := map[string]any{"name": r.PostFormValue("name"), "restricted": on("restricted"), "allowed_manager_ids": allowed,
		"supervisor_id": r.PostFormValue("supervisor_id"), "overflow_to_supervisor": on("overflow_to_supervisor"),
		"alert_missed": on("alert_missed")}
	if len(days) > 0 {
		body["hours"] = map[string]any{"days": days, "from": r.PostFormValue("from"), "to": r.PostFormValue("to")}
	}
	return body
}

func (c *Console) createSegment(w http.ResponseWriter, r *http.Request, s *session) error {
	body := segmentBody(r)
	return c.segmentCall(w, r, s, http.MethodPost, "/api/v1/segments", body,
		c.localeFor(r, s).t("segments.created", "Name", body["name"]))
}

func (c *Console) updateSegment(w http.ResponseWriter, r *http.Request, s *session) error {
	body := segmentBody(r)
	return c.segmentCall(w, r, s, http.MethodPut, "/api/v1/segments/"+url.PathEscape(r.PathValue("id")), body,
		c.localeFor(r, s).t("segments.saved", "Name", body["name"]))
}

func (c *Console) deleteSegment(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.segmentCall(w, r, s, http.MethodDelete, "/api/v1/segments/"+url.PathEscape(r.PathValue("id")), nil,
		c.localeFor(r, s).t("segments.deleted"))
}

// segmentCall sends a segment's change to the API and says how it went on
// the segments page.
func (c *Console) segmentCall(w http.ResponseWriter, r *http.Request, s *session, method, path string, body any, done string) error {
	return c.changeThen(w, r, s, "/console/segments", method, path, body, nil, func() string { return done })
}

// rotationCall is segmentCall for the rotation page.
func (c *Console) rotationCall(w http.ResponseWriter, r *http.Request, s *session, method, path string, body any, done string) error {
	return c.changeThen(w, r, s, "/console/rotations", method, path, body, nil, func() string { return done })
}

// changeThen sends a change to the API (its answer into out) and goes back
// to page saying how it went: the API's message when it refused.
func (c *Console) changeThen(w http.ResponseWriter, r *http.Request, s *session, page, method, path string, body, out any, done func() string) error {
	err := c.apiFor(r, s).do(r.Context(), method, path, body, out)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return c.redirect(w, r, page, "error", ae.Message)
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, page, "ok", done())
}

// moveRow is one move as a person reads it.
type moveRow struct {
	ClientID, Client, Code, From, To string
}

type rotationRow struct {
	api.RotationView
	When  string
	Moves []moveRow
	Scope string
}

type rotationsView struct {
	Segments []api.SegmentView
	People   []storage.Manager
	// The plan asked for, kept in the form.
	Segment, Team string
	Chosen        map[string]bool
	// Preview is the dry run's moves, nil before one.
	Preview *rotationRow
	History []rotationRow
	// Schedules are the repeating rotations.
	Schedules []scheduleRow
}

type scheduleRow struct {
	api.ScheduleView
	Scope, Next, Last string
}

// rotationRequest reads the rotation form into the API's request.
func rotationRequest(r *http.Request, dryRun bool) map[string]any {
	_ = r.ParseForm()
	ids := r.PostForm["manager_ids"]
	if ids == nil {
		ids = []string{}
	}
	return map[string]any{"manager_ids": ids, "segment": r.PostFormValue("segment"), "team": r.PostFormValue("team"), "dry_run": dryRun}
}

func (c *Console) rotationsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.renderRotations(w, r, s, nil, nil)
}

// previewRotation shows a dry run of the plan in the form, with the button
// that carries it out.
func (c *Console) previewRotation(w http.ResponseWriter, r *http.Request, s *session) error {
	req := rotationRequest(r, true)
	var rot api.RotationView
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/rotations", req, &rot)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return c.redirect(w, r, "/console/rotations", "error", ae.Message)
	}
	if err != nil {
		return err
	}
	return c.renderRotations(w, r, s, req, &rot)
}

// carryOutRotation carries the plan out (it is planned again: whatever
// changed since the preview counts).
func (c *Console) carryOutRotation(w http.ResponseWriter, r *http.Request, s *session) error {
	var rot api.RotationView
	return c.changeThen(w, r, s, "/console/rotations", http.MethodPost, "/api/v1/rotations", rotationRequest(r, false), &rot,
		func() string { return c.localeFor(r, s).n("rotation.done", len(rot.Moves)) })
}

func (c *Console) renderRotations(w http.ResponseWriter, r *http.Request, s *session, req map[string]any, preview *api.RotationView) error {
	ctx := r.Context()
	lc := c.localeFor(r, s)
	caller := c.apiFor(r, s)
	v := rotationsView{Chosen: map[string]bool{}}
	if err := caller.do(ctx, http.MethodGet, "/api/v1/segments", nil, &v.Segments); err != nil {
		return err
	}
	var history []api.RotationView
	if err := caller.do(ctx, http.MethodGet, "/api/v1/rotations?limit=20", nil, &history); err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	for _, m := range ppl.active() {
		if m.Role == storage.RoleManager {
			v.People = append(v.People, m)
		}
	}
	clients, err := c.clientsByID(ctx)
	if err != nil {
		return err
	}
	row := func(rot api.RotationView) rotationRow {
		out := rotationRow{RotationView: rot, When: lc.when(rot.CreatedAt)}
		for _, m := range rot.Moves {
			cl := clients[m.ClientID]
			out.Moves = append(out.Moves, moveRow{ClientID: m.ClientID, Client: cl.Name, Code: cl.Code, From: ppl.name(m.From), To: ppl.name(m.To)})
		}
		out.Scope = rotationScope(lc, ppl, rot.Segment, rot.Team, rot.ManagerIDs)
		return out
	}
	if preview != nil {
		p := row(*preview)
		v.Preview = &p
		v.Segment, _ = req["segment"].(string)
		v.Team, _ = req["team"].(string)
		ids, _ := req["manager_ids"].([]string)
		for _, id := range ids {
			v.Chosen[id] = true
		}
	}
	for _, rot := range history {
		v.History = append(v.History, row(rot))
	}
	var schedules []api.ScheduleView
	if err := caller.do(ctx, http.MethodGet, "/api/v1/rotations/schedules", nil, &schedules); err != nil {
		return err
	}
	for _, sch := range schedules {
		sr := scheduleRow{ScheduleView: sch, Scope: rotationScope(lc, ppl, sch.Segment, sch.Team, sch.ManagerIDs),
			Next: lc.t("rotation.next_run", "When", lc.when(sch.NextRunAt))}
		for _, rot := range history {
			if rot.ID == sch.LastRotationID {
				sr.Last = lc.t("rotation.last_run", "When", lc.when(rot.CreatedAt))
			}
		}
		v.Schedules = append(v.Schedules, sr)
	}
	return c.render(w, r, s, "rotations", lc.t("rotation.nav"), "rotations", v)
}

// rotationScope says whom a rotation takes: its segment, team and managers.
func rotationScope(lc *locale, ppl people, segment, team string, managerIDs []string) string {
	var scope []string
	if segment != "" {
		scope = append(scope, lc.t("rotation.scope_segment", "Segment", segment))
	}
	if team != "" {
		scope = append(scope, lc.t("rotation.scope_team", "Team", team))
	}
	if len(managerIDs) > 0 {
		var names []string
		for _, id := range managerIDs {
			names = append(names, ppl.name(id))
		}
		scope = append(scope, strings.Join(names, ", "))
	}
	return strings.Join(scope, "; ")
}

// scheduleRotation makes the plan in the form repeat every N days.
func (c *Console) scheduleRotation(w http.ResponseWriter, r *http.Request, s *session) error {
	req := rotationRequest(r, false)
	delete(req, "dry_run")
	days, err := strconv.Atoi(r.PostFormValue("every_days"))
	if err != nil {
		days = 0 // the API says what is wrong with it
	}
	req["every_days"] = days
	return c.rotationCall(w, r, s, http.MethodPost, "/api/v1/rotations/schedules", req, c.localeFor(r, s).t("rotation.scheduled"))
}

// unscheduleRotation stops a repeating rotation.
func (c *Console) unscheduleRotation(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.rotationCall(w, r, s, http.MethodDelete, "/api/v1/rotations/schedules/"+url.PathEscape(r.PathValue("id")), nil,
		c.localeFor(r, s).t("rotation.unscheduled"))
}
