package console

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/ha1"
	"github.com/maskpbx/maskpbx/storage"
)

// createManager creates a person through the API and, if given, his web
// password. His API token is shown on this answer only.
func (c *Console) createManager(w http.ResponseWriter, r *http.Request, s *session) error {
	f := managerForm{Name: strings.TrimSpace(r.PostFormValue("name")), Username: strings.TrimSpace(r.PostFormValue("sip_username")),
		Team: strings.TrimSpace(r.PostFormValue("team")), Role: r.PostFormValue("role")}
	webPassword := r.PostFormValue("web_password")
	lc := c.localeFor(r, s)
	fail := func(status int, msg string) error {
		v, err := c.managersView(r, s)
		if err != nil {
			return err
		}
		f.Error, v.Form = msg, f
		return c.renderStatus(w, r, s, status, "managers", navTitle(lc, s), "managers", v)
	}
	if webPassword != "" {
		if id, args := passwordProblem(webPassword); id != "" {
			return fail(http.StatusBadRequest, lc.t("managers.web_password_bad", "Problem", lc.t(id, args...)))
		}
	}
	var created struct {
		ID       string `json:"id"`
		APIToken string `json:"api_token"`
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/managers", map[string]string{
		"name": f.Name, "sip_username": f.Username, "sip_password": r.PostFormValue("sip_password"),
		"team": f.Team, "role": f.Role}, &created)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return fail(ae.Status, ae.Message)
	}
	if err != nil {
		return err
	}
	done := &createdManager{Name: f.Name, Username: f.Username, Token: created.APIToken}
	if webPassword != "" {
		hash, err := HashPassword(webPassword)
		if err != nil {
			return err
		}
		if err := c.store.SetWebPassword(r.Context(), created.ID, hash, nil, s.principal().Actor()); err != nil {
			return err
		}
		done.WebPassword = true
	}
	v, err := c.managersView(r, s)
	if err != nil {
		return err
	}
	v.Created = done
	return c.renderStatus(w, r, s, http.StatusCreated, "managers", navTitle(lc, s), "managers", v)
}

func (c *Console) activeManager(r *http.Request, id string) (storage.Manager, error) {
	m, err := c.store.Manager(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return m, errNotFound
	}
	if err == nil && m.Status != storage.StatusActive {
		return m, &pageError{Status: http.StatusConflict, ID: "managers.is_dismissed", Args: []any{"Name", m.Name}}
	}
	return m, err
}

// setSIPPassword replaces a person's SIP password (only its digests are
// stored).
func (c *Console) setSIPPassword(w http.ResponseWriter, r *http.Request, s *session) error {
	m, err := c.activeManager(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	lc := c.localeFor(r, s)
	pw := r.PostFormValue("sip_password")
	if len(pw) < 8 || len(pw) > 128 {
		return c.redirect(w, r, "/console/managers", "error", lc.t("managers.sip_password_length"))
	}
	err = c.store.SetSIPPassword(r.Context(), m.ID, ha1.MD5(m.SIPUsername, c.cfg.SIPDomain, pw),
		ha1.SHA256(m.SIPUsername, c.cfg.SIPDomain, pw), s.principal().Actor())
	if err != nil {
		return err
	}
	return c.redirect(w, r, "/console/managers", "ok", lc.t("managers.sip_password_set", "Name", m.Name))
}

// setWebPassword sets a person's console password; his other sessions end.
func (c *Console) setWebPassword(w http.ResponseWriter, r *http.Request, s *session) error {
	m, err := c.activeManager(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	lc := c.localeFor(r, s)
	pw := r.PostFormValue("web_password")
	if id, args := passwordProblem(pw); id != "" {
		return c.redirect(w, r, "/console/managers", "error", lc.t("managers.web_password_of_bad", "Name", m.Name, "Problem", lc.t(id, args...)))
	}
	hash, err := HashPassword(pw)
	if err != nil {
		return err
	}
	var keep []byte
	if m.ID == s.ManagerID {
		keep = s.tokenHash
	}
	if err := c.store.SetWebPassword(r.Context(), m.ID, hash, keep, s.principal().Actor()); err != nil {
		return err
	}
	return c.redirect(w, r, "/console/managers", "ok", lc.t("managers.web_password_set", "Name", m.Name))
}

// dismiss cuts a manager off through the API (status, tokens, phones,
// clients to the successor) and ends his console sessions.
func (c *Console) dismiss(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	successor := r.PostFormValue("successor_id")
	ppl, err := c.people(r.Context())
	if err != nil {
		return err
	}
	var out struct {
		MovedClients int `json:"moved_clients"`
	}
	err = c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/managers/"+url.PathEscape(id)+"/dismiss",
		map[string]string{"successor_id": successor}, &out)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		msg := ae.Message
		if ae.Code == "bad_request" {
			msg = c.localeFor(r, s).t("managers.choose_successor")
		}
		return c.redirect(w, r, "/console/managers", "error", msg)
	}
	if err != nil {
		return err
	}
	n, err := c.store.RevokeWebSessions(r.Context(), id)
	if err != nil {
		return err
	}
	c.logger.Info("console: manager dismissed", zap.String("manager_id", id), zap.Int("sessions_revoked", n))
	lc := c.localeFor(r, s)
	return c.redirect(w, r, "/console/managers", "ok", lc.t("managers.dismissed_done", "Name", ppl.name(id),
		"Clients", lc.n("count.clients", out.MovedClients), "Successor", ppl.name(successor)))
}

// setMobile sets a person's corporate mobile and when it rings, through the
// API; the page never shows the number back.
func (c *Console) setMobile(w http.ResponseWriter, r *http.Request, s *session) error {
	m, err := c.activeManager(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	lc := c.localeFor(r, s)
	policy := r.PostFormValue("policy")
	body := map[string]any{"number": r.PostFormValue("number"), "policy": policy}
	if policy == storage.MobileAfter {
		n, err := strconv.Atoi(r.PostFormValue("after_s"))
		if err != nil {
			return c.redirect(w, r, "/console/managers", "error", lc.t("managers.mobile_bad", "Name", m.Name,
				"Problem", lc.t("managers.mobile_after_needed")))
		}
		body["after_s"] = n
	}
	var when string
	switch policy {
	case storage.MobileTogether:
		when = lc.t("managers.mobile_rings_together")
	case storage.MobileAfter:
		when = lc.t("managers.mobile_rings_after")
	case storage.MobileOnly:
		when = lc.t("managers.mobile_rings_only")
	default:
		when = lc.t("managers.mobile_rings_off")
	}
	return c.mobileCall(w, r, s, m, http.MethodPut, body, lc.t("managers.mobile_set", "Name", m.Name, "When", when))
}

// removeMobile removes a person's corporate mobile through the API.
func (c *Console) removeMobile(w http.ResponseWriter, r *http.Request, s *session) error {
	m, err := c.activeManager(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	return c.mobileCall(w, r, s, m, http.MethodDelete, nil, c.localeFor(r, s).t("managers.mobile_removed", "Name", m.Name))
}

// mobileCall sends a person's mobile change to the API and says how it went.
func (c *Console) mobileCall(w http.ResponseWriter, r *http.Request, s *session, m storage.Manager, method string, body any, done string) error {
	err := c.apiFor(r, s).do(r.Context(), method, "/api/v1/managers/"+url.PathEscape(m.ID)+"/mobile", body, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		lc := c.localeFor(r, s)
		msg := ae.Message
		if ae.Status == http.StatusNotFound {
			msg = lc.t("managers.mobile_none")
		}
		return c.redirect(w, r, "/console/managers", "error", lc.t("managers.mobile_bad", "Name", m.Name, "Problem", msg))
	}
	if err != nil {
		return err
	}
	return c.redirect(w, r, "/console/managers", "ok", done)
}

type auditRow struct {
	storage.AuditEntry
	ActorName, ObjectName, ObjectLink string
}

type auditView struct {
	Verified int
	Broken   string
	Rows     []auditRow
	Limit    int
}

const auditLimit = 300

// auditPage shows the newest audit rows and whether the whole chain
// verifies.
func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	v := auditView{Limit: auditLimit}
	n, err := c.store.VerifyAudit(ctx)
	switch {
	case errors.Is(err, storage.ErrAuditTampered):
		v.Broken = err.Error()
	case err != nil:
		return err
	}
	v.Verified = n
	entries, err := c.store.AuditLog(ctx, auditLimit)
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
	v.Rows = c.auditRows(r, s, entries, ppl, clients)
	return c.render(w, r, s, "audit", c.localeFor(r, s).t("nav.audit"), "audit", v)
}

// auditRows names the actors and objects of audit entries for a page.
func (c *Console) auditRows(r *http.Request, s *session, entries []storage.AuditEntry, ppl people,
	clients map[string]storage.Client) []auditRow {
	rows := make([]auditRow, 0, len(entries))
	for _, e := range entries {
		row := auditRow{AuditEntry: e, ActorName: e.Actor, ObjectName: e.Object}
		if role, id, ok := strings.Cut(e.Actor, ":"); ok {
			if m, ok := ppl[id]; ok {
				row.ActorName = m.Name + " (" + c.localeFor(r, s).t("role."+role) + ")"
			} else if id == "bootstrap" {
				row.ActorName = c.localeFor(r, s).t("audit.bootstrap_token")
			}
		}
		if kind, id, ok := strings.Cut(e.Object, ":"); ok {
			switch kind {
			case "client":
				if cl, ok := clients[id]; ok {
					row.ObjectName, row.ObjectLink = cl.Name+" #"+cl.Code, "/console/clients/"+id
				}
			case "manager":
				if m, ok := ppl[id]; ok {
					row.ObjectName = m.Name
				}
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// exportClients writes every client as CSV, without numbers, and audits
// the export.
func (c *Console) exportClients(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	clients, err := c.store.Clients(ctx, "")
	if err != nil {
		return err
	}
	ppl, err := c.people(ctx)
	if err != nil {
		return err
	}
	if err := c.store.Audit(ctx, storage.AuditEntry{Actor: s.principal().Actor(), Action: "client.export",
		Object: "clients", Reason: fmt.Sprintf("%d clients, CSV without numbers", len(clients))}); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="clients-%s.csv"`, time.Now().UTC().Format("20060102")))
	bw := bufio.NewWriter(w)
	writeCSVRow(bw, []string{"id", "code", "name", "segment", "manager", "manager_name", "partners", "created_at"})
	for _, cl := range clients {
		var partners []string
		for _, p := range cl.PartnerIDs {
			partners = append(partners, ppl[p].SIPUsername)
		}
		writeCSVRow(bw, []string{cl.ID, cl.Code, cl.Name, cl.Segment, ppl[cl.ManagerID].SIPUsername,
			ppl.name(cl.ManagerID), strings.Join(partners, ";"), cl.CreatedAt.UTC().Format(time.RFC3339)})
	}
	return bw.Flush()
}

// writeCSVRow writes one CSV line that a spreadsheet reads as the same
// cells, and as text, whichever of comma, semicolon (Russian-locale Excel)
// or tab it splits on: see csvCell.
func writeCSVRow(w *bufio.Writer, cells []string) {
	for i, cell := range cells {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(csvCell(cell))
	}
	w.WriteString("\r\n")
}

// csvCell makes s one text cell, whichever of comma, semicolon or tab a
// spreadsheet splits on. A quoted cell is one cell only to a reader that
// splits on the file's own separator: Excel splitting on ';' reads
// `1,"x;=1+2"` as `1,"x` and `=1+2"`. So every piece of the cell that
// would start a cell under some separator (the start, and what follows a
// separator or line break, spaces skipped) gets a leading apostrophe if it
// starts like a formula, and a cell holding a separator, a quote, a line
// break or an outer space is quoted.
func csvCell(s string) string {
	var b strings.Builder
	cellStart := true
	for _, r := range s {
		if cellStart && strings.ContainsRune(formulaStart, r) {
			b.WriteByte('\'')
		}
		b.WriteRune(r)
		switch {
		case strings.ContainsRune(",;\t\r\n", r):
			cellStart = true
		case r != ' ':
			cellStart = false
		}
	}
	s = b.String()
	if strings.ContainsAny(s, ",;\t\"\r\n") || strings.TrimSpace(s) != s {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

// formulaStart are the characters a spreadsheet takes as the start of a
// formula (or, \t and \r, that some strip before looking).
const formulaStart = "=+-@\t\r"
