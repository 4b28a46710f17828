package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// people is every person by id, to show names instead of ids.
type people map[string]storage.Manager

func (c *Console) people(ctx context.Context) (people, error) {
	ms, err := c.store.Managers(ctx)
	if err != nil {
		return nil, err
	}
	out := make(people, len(ms))
	for _, m := range ms {
		out[m.ID] = m
	}
	return out, nil
}

func (p people) name(id string) string {
	if m, ok := p[id]; ok {
		return m.Name
	}
	return "—"
}

// active lists the active people by name, for assignment and successor
// choices.
func (p people) active() []storage.Manager {
	var out []storage.Manager
	for _, m := range p {
		if m.Status == storage.StatusActive {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].Name) < strings.ToLower(out[j].Name) })
	return out
}

type clientRow struct {
	ID, Code, Name, Segment string
	Partner                 bool
	ManagerName             string
	PartnerNames            []string
	LastCall                *callRow
	CanCall                 bool
}

type callRow struct {
	ID, ClientID, ClientName, ClientCode string
	Direction, Disposition, HangupSide   string
	ManagerName                          string
	// ManagerID and CanTransfer: a connected call the person looking may
	// hand to a colleague (his own, or any for supervisors and admins).
	ManagerID   string
	CanTransfer bool
	At          *time.Time
	Duration    time.Duration
	Recording   *recordingView
	// Live: answered and not ended yet (supervisors may listen in).
	Live bool
}

type clientsView struct {
	Mine        bool // a manager's own list
	Query       string
	Clients     []clientRow
	ShowManager bool
	CanCreate   bool
	CanImport   bool
}

// clientsPage is "My clients" for a manager and the client list for
// supervisors and admins, with search by name or code.
func (c *Console) clientsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > 100 {
		q = q[:100]
	}
	scope := ""
	if s.Role == manager {
		scope = s.ManagerID
		if scope == "" {
			return errForbidden
		}
	}
	list, err := c.store.ClientSummaries(ctx, scope, q, 1000)
	if err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	v := clientsView{Mine: s.Role == manager, Query: q, ShowManager: s.Role != manager,
		CanCreate: s.Role != manager, CanImport: s.Role == admin}
	for _, cs := range list {
		row := clientRow{ID: cs.ID, Code: cs.Code, Name: cs.Name, Segment: cs.Segment, Partner: cs.Partner,
			ManagerName: ppl.name(cs.ManagerID), CanCall: s.ManagerID != "" && mayReach(cs.Client, s.ManagerID)}
		for _, p := range cs.PartnerIDs {
			row.PartnerNames = append(row.PartnerNames, ppl.name(p))
		}
		if cs.LastCall != nil {
			row.LastCall = viewCall(*cs.LastCall, ppl, nil)
		}
		v.Clients = append(v.Clients, row)
	}
	title := c.localeFor(r, s).t("nav.clients")
	if v.Mine {
		title = c.localeFor(r, s).t("nav.my_clients")
	}
	return c.render(w, r, s, "clients", title, "clients", v)
}

func mayReach(cl storage.Client, managerID string) bool {
	return masking.Assignment{Primary: cl.ManagerID, Partners: cl.PartnerIDs}.MayReach(managerID)
}

func viewCall(cdr storage.CDR, ppl people, clients map[string]storage.Client) *callRow {
	row := &callRow{ID: cdr.CallID, ClientID: cdr.ClientID, Direction: cdr.Direction, Disposition: cdr.Disposition,
		HangupSide: cdr.HangupSide, ManagerName: ppl.name(cdr.ManagerID), ManagerID: cdr.ManagerID, At: cdr.OfferedAt,
		Duration: cdr.Duration, Live: cdr.AnsweredAt != nil && cdr.EndedAt == nil}
	if row.At == nil {
		row.At = cdr.EndedAt
	}
	if cl, ok := clients[cdr.ClientID]; ok {
		row.ClientName, row.ClientCode = cl.Name, cl.Code
	}
	return row
}

type clientView struct {
	Client       storage.Client
	ManagerName  string
	PartnerNames []string
	Role         string // "primary", "partner" or "" for the person looking
	CanCall      bool
	Calls        []*callRow
	MoreCalls    bool // the client has more calls than the page shows
	// Supervisors and admins:
	ShowRecordings bool
	Recordings     recordingsState
	People         []storage.Manager // active, for reassignment
	PartnerSet     map[string]bool
	// Partners is who may be a partner: the active managers (admins and
	// supervisors take no calls as partners); the page hides the primary's
	// box.
	Partners []storage.Manager
	// Admins:
	CanReveal bool
	// CanErase: an admin, and a client not erased yet; CanHold: an admin,
	// who may set or release the legal hold and export the client's data.
	CanErase, CanHold bool
	Revealed          []string
	Reason            string
	// A click-to-call started by the form (no script): its id.
	LiveCall string
	// Colleagues a connected call may be transferred to: the active
	// managers (each row leaves out its own manager).
	Colleagues []storage.Manager
}

// historyLimit is how many calls a client page lists.
const historyLimit = 50

// clientPage shows one client and his calls. A manager sees it only for a
// client assigned to him; anyone else's is "not found".
func (c *Console) clientPage(w http.ResponseWriter, r *http.Request, s *session) error {
	v, err := c.clientView(r, s, r.PathValue("id"))
	if err != nil {
		return err
	}
	// Every card opened is audited: the alerts' access_burst rule counts them.
	if err := c.store.Audit(r.Context(), storage.AuditEntry{Actor: s.principal().Actor(), Action: "client.view",
		Object: "client:" + v.Client.ID}); err != nil {
		return err
	}
	if call := r.URL.Query().Get("call"); storageID(call) {
		v.LiveCall = call
	}
	return c.render(w, r, s, "client", v.Client.Name, "clients", v)
}

// storageID is a loose check that a query value looks like one of our ids.
func storageID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f')) {
			return false
		}
	}
	return true
}

func (c *Console) clientView(r *http.Request, s *session, id string) (*clientView, error) {
	ctx := r.Context()
	cl, err := c.store.Client(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	if s.Role == manager && !mayReach(cl, s.ManagerID) {
		return nil, errNotFound
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return nil, err
	}
	v := &clientView{Client: cl, ManagerName: ppl.name(cl.ManagerID), CanCall: s.ManagerID != "" && mayReach(cl, s.ManagerID),
		ShowRecordings: s.Role != manager, CanReveal: s.Role == admin && cl.ErasedAt == nil, PartnerSet: map[string]bool{},
		CanErase: s.Role == admin && cl.ErasedAt == nil, CanHold: s.Role == admin}
	switch {
	case cl.ManagerID == s.ManagerID && s.ManagerID != "":
		v.Role = "primary"
	case mayReach(cl, s.ManagerID):
		v.Role = "partner"
	}
	for _, p := range cl.PartnerIDs {
		v.PartnerNames = append(v.PartnerNames, ppl.name(p))
		v.PartnerSet[p] = true
	}
	cdrs, err := c.store.CDRs(ctx, storage.CDRFilter{ClientID: cl.ID, Limit: historyLimit + 1})
	if err != nil {
		return nil, err
	}
	if len(cdrs) > historyLimit {
		cdrs, v.MoreCalls = cdrs[:historyLimit], true
	}
	if v.ShowRecordings {
		v.People = ppl.active()
		for _, m := range v.People {
			if m.Role == manager {
				v.Partners = append(v.Partners, m)
			}
		}
		v.Recordings = c.recordingsFor(r, s, cl.ID)
	}
	for _, cdr := range cdrs {
		row := viewCall(cdr, ppl, nil)
		if v.ShowRecordings {
			row.Recording = v.Recordings.byCall[cdr.CallID]
		}
		row.CanTransfer = row.Live && (s.Role != manager || cdr.ManagerID == s.ManagerID)
		if row.CanTransfer && v.Colleagues == nil {
			for _, m := range ppl.active() {
				if m.Role == manager {
					v.Colleagues = append(v.Colleagues, m)
				}
			}
		}
		v.Calls = append(v.Calls, row)
	}
	return v, nil
}

// transferCall is the Transfer form of a connected call on the client
// page: a blind transfer to a colleague through the API, which checks who
// may ask and who may take the client.
func (c *Console) transferCall(w http.ResponseWriter, r *http.Request, s *session) error {
	id, client := r.PathValue("id"), r.FormValue("client")
	if !storageID(client) {
		return errNotFound
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/calls/"+url.PathEscape(id)+"/transfer",
		map[string]string{"to_manager_id": r.FormValue("to_manager_id")}, nil)
	back := "/console/clients/" + url.PathEscape(client)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return c.redirect(w, r, back, "error", ae.Message)
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, back, "ok", c.localeFor(r, s).t("call.transfer_started"))
}

// callClient is the Call button without a script: it starts the
// click-to-call through the API and shows the client page, which follows
// the call live. With a script the page calls the API itself.
func (c *Console) callClient(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	var started struct {
		ID string `json:"id"`
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/calls", map[string]string{"client_id": id}, &started)
	back := "/console/clients/" + url.PathEscape(id)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusNotFound {
		return c.redirect(w, r, back, "error", ae.Message)
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, back+"?call="+url.QueryEscape(started.ID), "ok", c.localeFor(r, s).t("call.started"))
}

type createClientForm struct {
	Name, Segment, ManagerID string
	PartnerIDs               map[string]bool
	Error                    string
	People                   []storage.Manager
	Segments                 []string // the segments there are, offered as the field's choices
}

// withChoices fills in the people and segments the form offers.
func (c *Console) withChoices(ctx context.Context, f createClientForm) (createClientForm, error) {
	ppl, err := c.people(ctx)
	if err != nil {
		return f, err
	}
	segs, err := c.store.Segments(ctx)
	if err != nil {
		return f, err
	}
	f.People, f.Segments = ppl.active(), nil
	for _, sg := range segs {
		f.Segments = append(f.Segments, sg.Name)
	}
	return f, nil
}

func (c *Console) newClientPage(w http.ResponseWriter, r *http.Request, s *session) error {
	f, err := c.withChoices(r.Context(), createClientForm{PartnerIDs: map[string]bool{}})
	if err != nil {
		return err
	}
	return c.render(w, r, s, "client_new", c.localeFor(r, s).t("client_new.title"), "clients", f)
}

// createClient creates a client through the API; the number typed in goes
// to the API and is never written back into the page.
func (c *Console) createClient(w http.ResponseWriter, r *http.Request, s *session) error {
	f := createClientForm{Name: strings.TrimSpace(r.PostFormValue("name")), Segment: strings.TrimSpace(r.PostFormValue("segment")),
		ManagerID: r.PostFormValue("manager_id"), PartnerIDs: map[string]bool{}}
	partners := []string{}
	for _, p := range r.PostForm["partner_ids"] {
		if p != "" && p != f.ManagerID {
			partners = append(partners, p)
			f.PartnerIDs[p] = true
		}
	}
	var phones []string
	for _, p := range strings.FieldsFunc(r.PostFormValue("phones"), func(r rune) bool { return r == '\n' || r == ';' || r == ',' }) {
		if p = strings.TrimSpace(p); p != "" {
			phones = append(phones, p)
		}
	}
	var created struct {
		ID   string `json:"id"`
		Code string `json:"code"`
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/clients", map[string]any{
		"name": f.Name, "segment": f.Segment, "phones": phones, "manager_id": f.ManagerID, "partner_ids": partners}, &created)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		f, err = c.withChoices(r.Context(), f)
		if err != nil {
			return err
		}
		f.Error = ae.Message
		return c.renderStatus(w, r, s, ae.Status, "client_new", c.localeFor(r, s).t("client_new.title"), "clients", f)
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, "/console/clients/"+created.ID, "ok", c.localeFor(r, s).t("client_new.created", "Name", f.Name, "Code", created.Code))
}

// reassign sets a client's primary manager and partners through the API.
func (c *Console) reassign(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	primary := r.PostFormValue("manager_id")
	partners := []string{}
	for _, p := range r.PostForm["partner_ids"] {
		if p != "" && p != primary {
			partners = append(partners, p)
		}
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPut, "/api/v1/clients/"+url.PathEscape(id)+"/assignment",
		map[string]any{"manager_id": primary, "partner_ids": partners}, nil)
	back := "/console/clients/" + url.PathEscape(id)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return c.redirect(w, r, back, "error", ae.Message)
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, back, "ok", c.localeFor(r, s).t("client.assignment_saved"))
}

// reveal shows an admin a client's numbers for a stated reason; the API
// audits it. The numbers appear on this one answer only (never in a
// redirect, a cookie or a cache).
func (c *Console) reveal(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	var out struct {
		Phones []string `json:"phones"`
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/clients/"+url.PathEscape(id)+"/reveal",
		map[string]string{"reason": reason}, &out)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		msg := ae.Message
		if ae.Code == "bad_request" && strings.Contains(msg, "reason") {
			msg = c.localeFor(r, s).t("client.reveal_reason_needed")
		}
		return c.redirect(w, r, "/console/clients/"+url.PathEscape(id), "error", msg)
	}
	if err != nil {
		return err
	}
	v, err := c.clientView(r, s, id)
	if err != nil {
		return err
	}
	v.Revealed, v.Reason = out.Phones, reason
	c.logger.Info("console: numbers revealed", zap.String("client_id", id), zap.String("actor", s.principal().Actor()))
	return c.render(w, r, s, "client", v.Client.Name, "clients", v)
}

// erase erases a client for an admin who gave a reason and confirmed it,
// through the API (one transaction there, audited).
func (c *Console) erase(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	back := "/console/clients/" + url.PathEscape(id)
	if r.PostFormValue("confirm") != "yes" {
		return c.redirect(w, r, back, "error", c.localeFor(r, s).t("erase.confirm_needed"))
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodDelete, "/api/v1/clients/"+url.PathEscape(id),
		map[string]string{"reason": strings.TrimSpace(r.PostFormValue("reason"))}, nil)
	return c.afterAdminAction(w, r, back, err, c.localeFor(r, s).t("erase.done"))
}

// legalHold sets or releases a client's legal hold through the API.
func (c *Console) legalHold(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	hold := r.PostFormValue("hold") == "on"
	err := c.apiFor(r, s).do(r.Context(), http.MethodPut, "/api/v1/clients/"+url.PathEscape(id)+"/legal-hold",
		map[string]any{"hold": hold, "reason": strings.TrimSpace(r.PostFormValue("reason"))}, nil)
	done := c.localeFor(r, s).t("hold.released")
	if hold {
		done = c.localeFor(r, s).t("hold.set")
	}
	return c.afterAdminAction(w, r, "/console/clients/"+url.PathEscape(id), err, done)
}

// exportData downloads everything held about a client (a data-subject
// request) through the API: JSON, or a ZIP with his recordings' audio.
func (c *Console) exportData(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	body := map[string]any{"reason": strings.TrimSpace(r.PostFormValue("reason"))}
	if r.PostFormValue("audio") == "yes" {
		body["format"], body["audio"] = "zip", true
	}
	err := c.apiFor(r, s).download(r.Context(), w, http.MethodPost, "/api/v1/clients/"+url.PathEscape(id)+"/export", body)
	if err == nil {
		return nil
	}
	return c.afterAdminAction(w, r, "/console/clients/"+url.PathEscape(id), err, "")
}

// afterAdminAction goes back to the client page with the API's refusal or
// with done.
func (c *Console) afterAdminAction(w http.ResponseWriter, r *http.Request, back string, err error, done string) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return c.redirect(w, r, back, "error", ae.Message)
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, back, "ok", done)
}
