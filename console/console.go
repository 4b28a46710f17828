package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/allow"
	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/storage"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config wires the console to the rest of maskpbx.
type Config struct {
	Store    *storage.Store
	Sessions *Sessions
	// API is the JSON API the console acts through, in-process, under the
	// signed-in person's own session (the API must have Sessions set).
	API http.Handler
	// SIPDomain is the digest realm SIP passwords are hashed for.
	SIPDomain string
	// TimeZone is the company's IANA zone (--timezone): pages show times
	// and count days in it unless a person set his own; empty: $TZ, else
	// UTC.
	TimeZone string
	// DefaultLanguage is the company's language (--default-language): the
	// console's language for a person who chose none and whose browser asks
	// for none maskpbx speaks; empty: English.
	DefaultLanguage string
	// ImportReports shares CSV import reports between nodes; nil keeps
	// them in this node's memory.
	ImportReports ImportReports
	Logger        *zap.Logger
}

// Console serves the web console's pages and assets.
type Console struct {
	cfg    Config
	store  *storage.Store
	logger *zap.Logger
	loc    *time.Location
	mux    *http.ServeMux
	// pageSets are the pages per language and time zone.
	pageSets pageSets
	imports  *importJobs
	csrf     *http.CrossOriginProtection
	// assets maps a static file's name to a hash of its content, so that
	// pages link each version under its own URL and browsers may cache
	// them for good.
	assets map[string]string
}

// New builds the console.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.Sessions == nil || cfg.API == nil {
		return nil, errors.New("console: Store, Sessions and API are required")
	}
	c := &Console{cfg: cfg, store: cfg.Store, logger: cfg.Logger, mux: http.NewServeMux(),
		csrf: http.NewCrossOriginProtection()}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	c.imports = newImportJobs(cfg.ImportReports, c.logger)
	tz := cfg.TimeZone
	if tz == "" {
		tz = os.Getenv("TZ")
	}
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, errors.New("console: unknown time zone " + tz)
	}
	c.loc = loc
	if c.assets, err = hashAssets(); err != nil {
		return nil, err
	}
	if cfg.DefaultLanguage != "" && !i18n.Supported(cfg.DefaultLanguage) {
		return nil, fmt.Errorf("console: default language %q is not one of %s", cfg.DefaultLanguage, strings.Join(i18n.Codes, ", "))
	}
	// Parse the company's pages now: a template error stops the start.
	if _, err = c.pagesFor(&locale{lang: i18n.Get(cfg.DefaultLanguage), loc: loc}); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

const (
	anyone     = "*"
	admin      = storage.RoleAdmin
	supervisor = storage.RoleSupervisor
	manager    = storage.RoleManager
)

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	c.mux.Handle("GET /console/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/console/static/")
		if v := r.URL.Query().Get("v"); v != "" && v == c.assets[name] {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "public, max-age=300")
		}
		files.ServeHTTP(w, r)
	}))
	c.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	c.mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	c.mux.HandleFunc("GET /console/signin", c.signinPage)
	c.mux.HandleFunc("POST /console/signin", c.signin)
	c.handle("POST /console/signout", c.signout, anyone)
	c.handle("GET /console/{$}", c.home, anyone)

	c.handle("GET /console/clients", c.clientsPage, anyone)
	c.handle("GET /console/clients/new", c.newClientPage, admin, supervisor)
	c.handle("POST /console/clients", c.createClient, admin, supervisor)
	c.handle("GET /console/clients/{id}", c.clientPage, anyone)
	c.handle("POST /console/clients/{id}/call", c.callClient, anyone)
	// transfers
	c.handle("POST /console/calls/{id}/transfer", c.transferCall, anyone)
	c.handle("POST /console/clients/{id}/assignment", c.reassign, admin, supervisor)
	c.handle("POST /console/clients/{id}/reveal", c.reveal, admin)
	c.handle("POST /console/clients/{id}/erase", c.erase, admin)
	c.handle("POST /console/clients/{id}/legal-hold", c.legalHold, admin)
	c.handle("POST /console/clients/{id}/export", c.exportData, admin)
	c.handle("GET /console/clients/export.csv", c.exportClients, admin)
	c.handle("GET /console/clients/import", c.importPage, admin)
	c.handle("POST /console/clients/import", c.startImport, admin)
	c.handle("GET /console/imports/{id}", c.importJobPage, admin)
	c.handle("GET /console/imports/{id}/progress", c.importProgress, admin)

	c.handle("GET /console/overview", c.overview, admin, supervisor)
	c.handle("GET /console/calls", c.callsPage, admin, supervisor)
	// Live listen, whisper, barge (monitor.go).
	c.handle("POST /console/calls/{id}/monitor", c.monitorCall, admin, supervisor)
	c.handle("GET /console/managers", c.managersPage, admin, supervisor)
	c.handle("POST /console/managers", c.createManager, admin)
	c.handle("POST /console/managers/{id}/sip-password", c.setSIPPassword, admin)
	c.handle("POST /console/managers/{id}/web-password", c.setWebPassword, admin)
	c.handle("POST /console/managers/{id}/dismiss", c.dismiss, admin)
	c.handle("POST /console/managers/{id}/settings", c.setPersonSettings, admin)
	c.handle("POST /console/managers/{id}/mobile", c.setMobile, admin)
	c.handle("POST /console/managers/{id}/mobile/remove", c.removeMobile, admin)
	c.handle("GET /console/audit", c.auditPage, admin)
	c.alertRoutes()
	// Missed-call tasks (tasks.go).
	c.handle("GET /console/tasks", c.tasksPage, anyone)
	// Segments with rules and rotation (segments.go).
	c.handle("GET /console/segments", c.segmentsPage, admin, supervisor)
	c.handle("POST /console/segments", c.createSegment, admin, supervisor)
	c.handle("POST /console/segments/{id}", c.updateSegment, admin, supervisor)
	c.handle("POST /console/segments/{id}/delete", c.deleteSegment, admin, supervisor)
	c.handle("GET /console/rotations", c.rotationsPage, admin, supervisor)
	c.handle("POST /console/rotations/preview", c.previewRotation, admin, supervisor)
	c.handle("POST /console/rotations", c.carryOutRotation, admin, supervisor)
	c.handle("POST /console/rotations/schedules", c.scheduleRotation, admin, supervisor)
	c.handle("POST /console/rotations/schedules/{id}/delete", c.unscheduleRotation, admin, supervisor)
	c.handle("GET /console/settings", c.settingsPage, anyone)
	c.handle("POST /console/settings", c.saveSettings, anyone)

	c.mux.HandleFunc(catchAll, c.noRoute)
}

// catchAll is the pattern of noRoute: every request no page takes.
const catchAll = "/"

// noRoute answers a request no page takes: 405 with Allow when its path is
// a page for other methods (a form posted to a page that only shows), else
// 404.
func (c *Console) noRoute(w http.ResponseWriter, r *http.Request) {
	if methods := allow.Methods(c.mux, r, catchAll); len(methods) > 0 {
		w.Header().Set("Allow", allow.Header(methods))
		c.renderError(w, r, nil, errMethodNotAllowed)
		return
	}
	c.renderError(w, r, nil, &pageError{Status: http.StatusNotFound, ID: "error.no_page"})
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Pages load only their own scripts, styles and media; nothing frames them.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"media-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if !strings.HasPrefix(r.URL.Path, "/console/static/") {
		h.Set("Cache-Control", "no-store")
	}
	// Cross-origin form posts are refused before the CSRF token is even
	// looked at; the token is checked by each handler.
	if err := c.csrf.Check(r); err != nil {
		c.renderError(w, r, nil, errCSRF)
		return
	}
	c.mux.ServeHTTP(w, r)
}

// hashAssets hashes every embedded static file.
func hashAssets() (map[string]string, error) {
	out := map[string]string{}
	err := fs.WalkDir(staticFS, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(path, "static/")] = hex.EncodeToString(sum[:6])
		return nil
	})
	return out, err
}

// pageError is an error meant for the person at the browser: a message of
// the catalog (ID, with Args) shown in his language, or a Message already
// written for him (the API's, in his language too).
type pageError struct {
	Status  int
	ID      string
	Args    []any
	Message string
}

// Error is the message in English (for logs and tests).
func (e *pageError) Error() string {
	if e.ID != "" {
		return i18n.Get("en").T(e.ID, e.Args...)
	}
	return e.Message
}

var (
	errCSRF      = &pageError{Status: http.StatusForbidden, ID: "error.csrf"}
	errForbidden = &pageError{Status: http.StatusForbidden, ID: "error.forbidden"}
	errNotFound  = &pageError{Status: http.StatusNotFound, ID: "error.not_found"}
	// errMethodNotAllowed goes with an Allow header.
	errMethodNotAllowed = &pageError{Status: http.StatusMethodNotAllowed, ID: "error.method_not_allowed"}
)

type handlerFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// handle registers a page that needs a signed-in person of one of roles
// (anyone: every role). Every method but GET must carry the session's CSRF
// token, in the form or in the X-CSRF-Token header.
func (c *Console) handle(pattern string, h handlerFunc, roles ...string) {
	c.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		sess, err := c.cfg.Sessions.lookup(r)
		if errors.Is(err, errNoSession) || errors.Is(err, api.ErrSessionEnded) {
			c.toSignin(w, r, errors.Is(err, api.ErrSessionEnded))
			return
		}
		if err == nil && !safeMethod(r.Method) {
			r.Body = http.MaxBytesReader(w, r.Body, maxUpload+64<<10)
			var token string
			if token, err = csrfToken(r); err == nil && !validCSRF(sess.csrf, token) {
				err = errCSRF
			}
		}
		if err == nil && !allowed(sess.Role, roles) {
			err = errForbidden
		}
		if err == nil {
			err = h(w, r, sess)
		}
		if err != nil {
			c.renderError(w, r, sess, err)
		}
	})
}

func allowed(role string, roles []string) bool {
	for _, r := range roles {
		if r == anyone || r == role {
			return true
		}
	}
	return false
}

// csrfToken is the token a request carries, in its header or its form.
func csrfToken(r *http.Request) (string, error) {
	if t := r.Header.Get(csrfHeader); t != "" {
		return t, nil
	}
	if err := r.ParseMultipartForm(maxUpload); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", &pageError{Status: http.StatusRequestEntityTooLarge, ID: "error.upload_too_large", Args: []any{"MiB", maxUpload >> 20}}
		}
		return "", &pageError{Status: http.StatusBadRequest, ID: "error.bad_form"}
	}
	return r.PostFormValue(csrfField), nil
}

// toSignin answers a request without a live session with the sign-in
// form: a page comes back to itself after it, a form post to the console.
func (c *Console) toSignin(w http.ResponseWriter, r *http.Request, ended bool) {
	q := url.Values{}
	if ended {
		c.cfg.Sessions.clearCookie(w, r)
		q.Set("ended", "1")
	}
	if next := r.URL.RequestURI(); r.Method == http.MethodGet && next != "/console/" {
		q.Set("next", next)
	}
	to := "/console/signin"
	if len(q) > 0 {
		to += "?" + q.Encode()
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// home sends each role to its first page.
func (c *Console) home(w http.ResponseWriter, r *http.Request, s *session) error {
	to := "/console/clients"
	if s.Role != manager {
		to = "/console/overview"
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}
