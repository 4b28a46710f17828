package console

import (
	"net/http"
	"strings"

	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/storage"
)

// A person's own settings: the console's language and time zone, which
// also choose the wording his phone shows. An admin sets them for anyone
// from the managers page.

type languageChoice struct{ Code, Name string }

type settingsView struct {
	Settings  storage.PersonSettings
	Languages []languageChoice
	// CompanyZone is the company's --timezone, shown as the default.
	CompanyZone string
	Error       string
	// Suffix keeps the fields' ids apart when a page has several forms.
	Suffix string
}

func languageChoices() []languageChoice {
	out := make([]languageChoice, 0, len(i18n.Codes))
	for _, code := range i18n.Codes {
		out = append(out, languageChoice{Code: code, Name: i18n.Get(code).Name()})
	}
	return out
}

func (c *Console) settingsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	if s.ManagerID == "" {
		return errNotFound // the bootstrap token is nobody's account
	}
	ps, err := c.store.Settings(r.Context(), s.ManagerID)
	if err != nil {
		return err
	}
	return c.render(w, r, s, "settings", c.localeFor(r, s).t("nav.settings"), "settings",
		settingsView{Settings: ps, Languages: languageChoices(), CompanyZone: c.loc.String()})
}

// readSettings takes the settings form: a language maskpbx speaks or none,
// an IANA time zone or none.
func (c *Console) readSettings(r *http.Request) (storage.PersonSettings, string) {
	ps := storage.PersonSettings{Language: r.PostFormValue("language"), TimeZone: strings.TrimSpace(r.PostFormValue("time_zone"))}
	if ps.Language != "" && !i18n.Supported(ps.Language) {
		return ps, "settings.bad_language"
	}
	if _, ok := c.zone(ps.TimeZone); ps.TimeZone != "" && !ok {
		return ps, "settings.bad_zone"
	}
	return ps, ""
}

// saveSettings is the person changing his own settings.
func (c *Console) saveSettings(w http.ResponseWriter, r *http.Request, s *session) error {
	if s.ManagerID == "" {
		return errNotFound
	}
	ps, problem := c.readSettings(r)
	if problem != "" {
		lc := c.localeFor(r, s)
		return c.renderStatus(w, r, s, http.StatusBadRequest, "settings", lc.t("nav.settings"), "settings",
			settingsView{Settings: ps, Languages: languageChoices(), CompanyZone: c.loc.String(), Error: lc.t(problem)})
	}
	if err := c.store.SetSettings(r.Context(), s.ManagerID, ps, s.principal().Actor()); err != nil {
		return err
	}
	// The page after the redirect is in the new language: so is its note.
	s.Settings, s.lc = ps, nil
	return c.redirect(w, r, "/console/settings", "ok", c.localeFor(r, s).t("settings.saved"))
}

// setPersonSettings is an admin setting someone's language and time zone.
func (c *Console) setPersonSettings(w http.ResponseWriter, r *http.Request, s *session) error {
	m, err := c.activeManager(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	lc := c.localeFor(r, s)
	ps, problem := c.readSettings(r)
	if problem != "" {
		return c.redirect(w, r, "/console/managers", "error", lc.t(problem))
	}
	if err := c.store.SetSettings(r.Context(), m.ID, ps, s.principal().Actor()); err != nil {
		return err
	}
	return c.redirect(w, r, "/console/managers", "ok", lc.t("settings.saved_for", "Name", m.Name))
}
