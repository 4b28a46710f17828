package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// chartDays is how many days the overview's charts cover, today included.
const chartDays = 14

// apiManager is a person as GET /api/v1/managers shows him, with whether
// his phone is registered.
type apiManager struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	SIPUsername string `json:"sip_username"`
	Team        string `json:"team"`
	Role        string `json:"role"`
	Status      string `json:"status"`
	Registered  *bool  `json:"registered"`
}

func (c *Console) apiManagers(r *http.Request, s *session) ([]apiManager, error) {
	var ms []apiManager
	err := c.apiFor(r, s).do(r.Context(), http.MethodGet, "/api/v1/managers", nil, &ms)
	return ms, err
}

type overviewView struct {
	Days                          int
	CallsToday, AnsweredToday     int
	MissedToday, MissedPeriod     int
	Online, Active                int
	CallsChart, MissedChart       barChart
	Team                          []apiManager
	RecentMissed                  []*callRow
	AnsweredShare                 int // percent of today's calls answered
	PeriodStart, PeriodEndInclude time.Time
}

// overview is the supervisors' and admins' first page: today in numbers, a
// chart of calls per manager per day, missed calls per day, who is online.
func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	lc := c.localeFor(r, s)
	now := time.Now().In(lc.loc)
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, lc.loc)
	start := today.AddDate(0, 0, -(chartDays - 1))
	end := today.AddDate(0, 0, 1)
	daily, err := c.store.CallsPerDay(ctx, start, end, lc.loc.String())
	if err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	team, err := c.apiManagers(r, s)
	if err != nil {
		return err
	}
	v := overviewView{Days: chartDays, PeriodStart: start, PeriodEndInclude: today}
	days := make([]time.Time, chartDays)
	index := map[string]int{}
	for i := range days {
		days[i] = start.AddDate(0, 0, i)
		index[days[i].Format(time.DateOnly)] = i
	}
	perManager := map[string][]int{}
	missed := make([]int, chartDays)
	var order []string
	for _, d := range daily {
		i, ok := index[d.Day.Format(time.DateOnly)]
		if !ok {
			continue
		}
		if _, seen := perManager[d.ManagerID]; !seen {
			perManager[d.ManagerID] = make([]int, chartDays)
			order = append(order, d.ManagerID)
		}
		perManager[d.ManagerID][i] += d.Calls
		missed[i] += d.Missed
		v.MissedPeriod += d.Missed
		if i == chartDays-1 {
			v.CallsToday += d.Calls
			v.AnsweredToday += d.Answered
			v.MissedToday += d.Missed
		}
	}
	sort.Slice(order, func(i, j int) bool {
		// Calls nobody took go last; managers by name.
		if (order[i] == "") != (order[j] == "") {
			return order[j] == ""
		}
		return strings.ToLower(ppl.name(order[i])) < strings.ToLower(ppl.name(order[j]))
	})
	var series []chartSeries
	for n, id := range order {
		name, class := ppl.name(id), seriesClass(n)
		if id == "" {
			name, class = lc.t("overview.nobody_answered"), "s-none"
		}
		series = append(series, chartSeries{Name: name, Class: class, Values: perManager[id]})
	}
	v.CallsChart = newBarChart(lc, "calls-chart", lc.t("overview.calls_chart"),
		lc.n("overview.calls_chart_desc", chartDays), days, series)
	v.MissedChart = newBarChart(lc, "missed-chart", lc.t("overview.missed_chart"),
		lc.n("overview.missed_chart_desc", chartDays), days,
		[]chartSeries{{Name: lc.t("disposition.missed"), Class: "s-missed", Values: missed}})
	if !v.CallsChart.Empty {
		// There were calls, none of them missed: say so, not "no calls".
		v.MissedChart.EmptyText = lc.t("chart.no_missed")
	}

	if v.CallsToday > 0 {
		v.AnsweredShare = v.AnsweredToday * 100 / v.CallsToday
	}
	for _, m := range team {
		if m.Status != storage.StatusActive {
			continue
		}
		v.Active++
		if m.Registered != nil && *m.Registered {
			v.Online++
		}
		v.Team = append(v.Team, m)
	}
	recent, err := c.store.SearchCalls(ctx, storage.CallSearch{Disposition: "missed", Limit: 6})
	if err != nil {
		return err
	}
	clients, err := c.clientsByID(ctx)
	if err != nil {
		return err
	}
	for _, cdr := range recent {
		v.RecentMissed = append(v.RecentMissed, viewCall(cdr, ppl, clients))
	}
	return c.render(w, r, s, "overview", lc.t("nav.overview"), "overview", v)
}

func (c *Console) clientsByID(ctx context.Context) (map[string]storage.Client, error) {
	all, err := c.store.Clients(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make(map[string]storage.Client, len(all))
	for _, cl := range all {
		out[cl.ID] = cl
	}
	return out, nil
}

type callsFilter struct {
	ManagerID, ClientID, From, To, Direction, Disposition string
}

type callsView struct {
	Filter           callsFilter
	Error            string
	Calls            []*callRow
	People           []storage.Manager
	Clients          []storage.Client
	PerPage          int
	Filtered         bool
	Page             int
	PrevURL, NextURL string
}

// callsPerPage is how many calls one page of the list shows.
const callsPerPage = 50

// maxPlayerClients caps how many clients' recordings one calls page looks
// up for its players.
const maxPlayerClients = 50

// callsPage lists calls with filters: manager, client, date range,
// direction, disposition; calls with a recording get a player.
func (c *Console) callsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	lc := c.localeFor(r, s)
	q := r.URL.Query()
	f := callsFilter{ManagerID: q.Get("manager"), ClientID: q.Get("client"), From: q.Get("from"), To: q.Get("to"),
		Direction: q.Get("direction"), Disposition: q.Get("disposition")}
	v := callsView{Filter: f, PerPage: callsPerPage, Page: 1}
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 1 && n <= 10000 {
		v.Page = n
	}
	// One row more than a page tells whether there is a next page.
	search := storage.CallSearch{ManagerID: f.ManagerID, ClientID: f.ClientID, Direction: f.Direction,
		Disposition: f.Disposition, Limit: callsPerPage + 1, Offset: (v.Page - 1) * callsPerPage}
	var bad []string
	if f.From != "" {
		t, err := time.ParseInLocation(time.DateOnly, f.From, lc.loc)
		if err != nil {
			bad = append(bad, lc.t("calls.bad_from"))
		}
		search.From = t
	}
	if f.To != "" {
		t, err := time.ParseInLocation(time.DateOnly, f.To, lc.loc)
		if err != nil {
			bad = append(bad, lc.t("calls.bad_to"))
		}
		search.To = t.AddDate(0, 0, 1) // the end date is included
	}
	switch f.Direction {
	case "", "inbound", "outbound":
	default:
		bad = append(bad, lc.t("calls.bad_direction"))
	}
	if !dispositionKnown(f.Disposition) && f.Disposition != "" {
		bad = append(bad, lc.t("calls.bad_outcome"))
	}
	if len(bad) > 0 {
		v.Error = lc.t("calls.bad_filter", "Fields", strings.Join(bad, ", "))
	}
	v.Filtered = f != callsFilter{}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	clients, err := c.clientsByID(ctx)
	if err != nil {
		return err
	}
	for _, m := range ppl {
		v.People = append(v.People, m)
	}
	sort.Slice(v.People, func(i, j int) bool { return strings.ToLower(v.People[i].Name) < strings.ToLower(v.People[j].Name) })
	for _, cl := range clients {
		v.Clients = append(v.Clients, cl)
	}
	sort.Slice(v.Clients, func(i, j int) bool { return strings.ToLower(v.Clients[i].Name) < strings.ToLower(v.Clients[j].Name) })
	if v.Error == "" {
		cdrs, err := c.store.SearchCalls(ctx, search)
		if err != nil {
			return err
		}
		if len(cdrs) > callsPerPage {
			cdrs = cdrs[:callsPerPage]
			v.NextURL = pageURL(q, v.Page+1)
		}
		if v.Page > 1 {
			v.PrevURL = pageURL(q, v.Page-1)
		}
		recs := map[string]recordingsState{}
		for _, cdr := range cdrs {
			row := viewCall(cdr, ppl, clients)
			if cdr.ClientID != "" && cdr.AnsweredAt != nil {
				st, ok := recs[cdr.ClientID]
				if !ok && len(recs) < maxPlayerClients {
					st = c.recordingsFor(r, s, cdr.ClientID)
					recs[cdr.ClientID] = st
				}
				row.Recording = st.byCall[cdr.CallID]
			}
			v.Calls = append(v.Calls, row)
		}
	}
	return c.render(w, r, s, "calls", lc.t("nav.calls"), "calls", v)
}

// pageURL is the calls list with the same filters on another page.
func pageURL(q url.Values, page int) string {
	q2 := url.Values{}
	for k, v := range q {
		if k != "page" && len(v) > 0 && v[0] != "" {
			q2.Set(k, v[0])
		}
	}
	if page > 1 {
		q2.Set("page", strconv.Itoa(page))
	}
	if len(q2) == 0 {
		return "/console/calls"
	}
	return "/console/calls?" + q2.Encode()
}

// dispositions are the outcomes a call list can be filtered by (each has
// its label in the catalogs as disposition.<name>).
var dispositions = []string{"answered", "missed", "busy", "no_answer", "rejected", "cancelled", "failed", "overload"}

func dispositionKnown(d string) bool { return slices.Contains(dispositions, d) }

type managerRow struct {
	apiManager
	WebAccount bool
	Clients    int
	Settings   settingsView // for the admin's form
}

type createdManager struct {
	Name, Username, Token string
	WebPassword           bool
}

type managerForm struct {
	Name, Username, Team, Role string
	Error                      string
}

type managersView struct {
	Admin   bool
	Rows    []managerRow
	Active  []storage.Manager
	Created *createdManager
	Form    managerForm
	Online  int
}

// managersPage lists everyone with his phone's registration status; admins
// also create, set passwords and dismiss here.
func (c *Console) managersPage(w http.ResponseWriter, r *http.Request, s *session) error {
	v, err := c.managersView(r, s)
	if err != nil {
		return err
	}
	return c.render(w, r, s, "managers", navTitle(c.localeFor(r, s), s), "managers", v)
}

func navTitle(lc *locale, s *session) string {
	if s.Role == admin {
		return lc.t("nav.managers")
	}
	return lc.t("nav.team")
}

func (c *Console) managersView(r *http.Request, s *session) (*managersView, error) {
	ctx := r.Context()
	ms, err := c.apiManagers(r, s)
	if err != nil {
		return nil, err
	}
	web, err := c.store.WebAccountIDs(ctx)
	if err != nil {
		return nil, err
	}
	all, err := c.store.Clients(ctx, "")
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, cl := range all {
		count[cl.ManagerID]++
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return nil, err
	}
	settings, err := c.store.AllSettings(ctx)
	if err != nil {
		return nil, err
	}
	v := &managersView{Admin: s.Role == admin, Active: ppl.active(), Form: managerForm{Role: manager}}
	for _, m := range ms {
		v.Rows = append(v.Rows, managerRow{apiManager: m, WebAccount: web[m.ID], Clients: count[m.ID],
			Settings: settingsView{Settings: settings[m.ID], Languages: languageChoices(), CompanyZone: c.loc.String(), Suffix: "-" + m.ID}})
		if m.Registered != nil && *m.Registered {
			v.Online++
		}
	}
	// Active people first, then by name.
	sort.SliceStable(v.Rows, func(i, j int) bool {
		a, b := v.Rows[i], v.Rows[j]
		if (a.Status == storage.StatusActive) != (b.Status == storage.StatusActive) {
			return a.Status == storage.StatusActive
		}
		return strings.ToLower(a.Name) < strings.ToLower(b.Name)
	})
	return v, nil
}
