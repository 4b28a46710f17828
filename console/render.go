package console

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"
)

// pageTemplate is one page: the shared layout plus the page's own blocks.
type pageTemplate struct{ t *template.Template }

// loadPages parses every page under templates/ with the layout.
func loadPages(funcs template.FuncMap) (map[string]*pageTemplate, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*pageTemplate{}
	for _, n := range names {
		base := strings.TrimPrefix(n, "templates/")
		if base == "layout.html" || strings.HasPrefix(base, "_") {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/_*.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", base, err)
		}
		pages[strings.TrimSuffix(base, ".html")] = &pageTemplate{t}
	}
	return pages, nil
}

// view is what every page's template gets.
type view struct {
	Lang  string // the page's language code, for <html lang>
	Title string
	Nav   string // which navigation entry is current
	User  *userView
	CSRF  string
	Flash *flash
	Data  any
}

type userView struct {
	Name, Role, ManagerID string
}

// flash is a one-time message shown on the page after a redirect.
type flash struct {
	Kind string // "ok" or "error"
	Text string
}

const flashCookie = "mpx_flash"

// setFlash leaves a message for the next page this browser loads. It never
// carries a phone number: callers pass texts they composed.
func (c *Console) setFlash(w http.ResponseWriter, r *http.Request, kind, text string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: kind + "." + base64.RawURLEncoding.EncodeToString([]byte(text)),
		Path: "/console/", HttpOnly: true, Secure: c.cfg.Sessions.secureFor(r), SameSite: http.SameSiteLaxMode, MaxAge: 60})
}

func (c *Console) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	ck, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/console/", HttpOnly: true, MaxAge: -1})
	kind, enc, ok := strings.Cut(ck.Value, ".")
	text, err := base64.RawURLEncoding.DecodeString(enc)
	if !ok || err != nil || (kind != "ok" && kind != "error") {
		return nil
	}
	return &flash{Kind: kind, Text: string(text)}
}

// redirect answers a form post: a flash message and a 303 to the next page.
func (c *Console) redirect(w http.ResponseWriter, r *http.Request, to, kind, text string) error {
	if text != "" {
		c.setFlash(w, r, kind, text)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}

// render writes a page with status 200.
func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, name, title, nav string, data any) error {
	return c.renderStatus(w, r, s, http.StatusOK, name, title, nav, data)
}

func (c *Console) renderStatus(w http.ResponseWriter, r *http.Request, s *session, status int, name, title, nav string, data any) error {
	lc := c.localeFor(r, s)
	pages, err := c.pagesFor(lc)
	if err != nil {
		return err
	}
	p, ok := pages[name]
	if !ok {
		return fmt.Errorf("console: no page %q", name)
	}
	v := view{Lang: lc.lang.Code(), Title: title, Nav: nav, Data: data, Flash: c.takeFlash(w, r)}
	if s != nil {
		v.User = &userView{Name: s.Name, Role: s.Role, ManagerID: s.ManagerID}
		v.CSRF = s.csrf
	}
	var buf bytes.Buffer
	if err := p.t.ExecuteTemplate(&buf, "layout", v); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
	return nil
}

// renderError shows an error page (or, to scripts asking for JSON, the
// API's error shape). Errors not meant for the user are logged and shown as
// a generic failure.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	lc := c.localeFor(r, s)
	var pe *pageError
	var ae *apiError
	switch {
	case errors.As(err, &pe):
	case errors.As(err, &ae):
		pe = &pageError{Status: ae.Status, Message: ae.Message}
	default:
		c.logger.Error("console: internal error", zap.String("path", r.URL.Path), zap.Error(err))
		pe = &pageError{Status: http.StatusInternalServerError, ID: "error.internal"}
	}
	if pe.ID != "" {
		pe = &pageError{Status: pe.Status, Message: lc.t(pe.ID, pe.Args...)}
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, pe.Status, map[string]any{"error": map[string]string{"code": http.StatusText(pe.Status), "message": pe.Message}})
		return
	}
	title := lc.t("status." + strconv.Itoa(pe.Status))
	if strings.HasPrefix(title, "status.") {
		title = http.StatusText(pe.Status) // a status the catalogs don't name
	}
	if rerr := c.renderStatus(w, r, s, pe.Status, "error", title, "", pe); rerr != nil {
		c.logger.Error("console: error page failed", zap.Error(rerr))
		http.Error(w, pe.Message, pe.Status)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// funcs are the helpers templates use, bound to one locale.
func (c *Console) funcs(lc *locale) template.FuncMap {
	return template.FuncMap{
		"t":    lc.t,
		"tn":   lc.n,
		"num":  lc.lang.Number,
		"when": lc.when,
		"isodate": func(t any) string {
			tt := asTime(t)
			if tt.IsZero() {
				return ""
			}
			return tt.In(lc.loc).Format(time.RFC3339)
		},
		"dur":       duration,
		"disp":      func(d string) string { return dispositionLabel(lc, d) },
		"dispClass": dispositionClass,
		"initials":  initials,
		"segClass": func(s string) string {
			switch strings.ToLower(s) {
			case "vip":
				return "seg-vip"
			case "new":
				return "seg-new"
			case "":
				return "seg-none"
			}
			return "seg"
		},
		"roleLabel": func(r string) string {
			if r == "" {
				return ""
			}
			return lc.t("role." + r)
		},
		"tz":    func() string { return lc.loc.String() },
		"asset": func(name string) string { return "/console/static/" + name + "?v=" + c.assets[name] },
		"deref": func(b *bool) bool { return b != nil && *b },
		"percent": func(part, whole int) int {
			if whole <= 0 {
				return 0
			}
			return part * 100 / whole
		},
		"dispositions": func() []string { return dispositions },
		// jsText is the messages console.js shows, in this language.
		"jsText": func() map[string]string { return jsText(lc) },
		// dict builds a map for a sub-template: dict "ID" .ID "CSRF" $.CSRF.
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, errors.New("dict: odd number of arguments")
			}
			m := make(map[string]any, len(kv)/2)
			for i := 0; i < len(kv); i += 2 {
				k, ok := kv[i].(string)
				if !ok {
					return nil, errors.New("dict: keys must be strings")
				}
				m[k] = kv[i+1]
			}
			return m, nil
		},
	}
}

func asTime(t any) time.Time {
	switch v := t.(type) {
	case time.Time:
		return v
	case *time.Time:
		if v != nil {
			return *v
		}
	}
	return time.Time{}
}

func duration(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	s := int(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

func dispositionLabel(lc *locale, d string) string {
	if d == "" {
		return lc.t("disposition.in_progress")
	}
	if dispositionKnown(d) {
		return lc.t("disposition." + d)
	}
	return d
}

func dispositionClass(d string) string {
	switch d {
	case "answered":
		return "ok"
	case "missed", "failed":
		return "bad"
	case "":
		return "live"
	}
	return "warn"
}

func initials(name string) string {
	var out []rune
	for _, w := range strings.Fields(name) {
		for _, r := range w {
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				out = append(out, unicode.ToUpper(r))
				break
			}
		}
		if len(out) == 2 {
			break
		}
	}
	if len(out) == 0 {
		return "?"
	}
	return string(out)
}
