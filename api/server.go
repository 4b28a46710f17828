package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/allow"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Registrations is what the API needs of the registrar: whether a manager
// has a live registration, and cutting all of his off.
type Registrations interface {
	Registered(ctx context.Context, managerID string) (bool, error)
	RemoveManager(ctx context.Context, managerID string) error
}

// Config wires the API to the rest of maskpbx.
type Config struct {
	Store         *storage.Store
	Keys          *masking.Keyring
	Numbers       masking.Normalizer
	Registrations Registrations
	// SIPDomain is the digest realm the SIP password digests are made for.
	SIPDomain string
	// AdminToken, if set, is a bootstrap admin token that is never stored.
	AdminToken string
	// Dialer places click-to-calls; nil on a node without a PBX.
	Dialer Dialer
	// Metrics is where request metrics go and what /metrics serves.
	Metrics *prometheus.Registry
	Logger  *zap.Logger
	// Sessions, if set, lets a request without a bearer token authenticate
	// with a web console session (its cookie); nil accepts tokens only.
	Sessions Sessions
	// Recordings serves recording audio for replay; nil answers 503.
	Recordings RecordingAudio
	// Trunk, if set, adds the registration at the SIP provider to /healthz.
	Trunk TrunkStatus
	// Changes, if set, hears of every change routing depends on (the PBX's
	// routing cache); nil on a node without a PBX.
	Changes Changes
	// DefaultLanguage is the language of error messages for a request
	// whose Accept-Language names none maskpbx speaks (empty: English).
	DefaultLanguage string
	// AudioErasure, if set, deletes erased clients' recording audio held by
	// this node right after an erasure commits; without it (or for audio
	// on other nodes) the recorder nodes' own runs delete it.
	AudioErasure AudioErasure
	// Monitors, if set, lets supervisors listen in on live calls of this
	// node (monitor.go); nil on a node without a PBX.
	Monitors Monitors
	// TaskOverdue is how long a missed-call task stays open before it is
	// overdue (--task-overdue); zero is DefaultTaskOverdue.
	TaskOverdue time.Duration
}

// Changes is told what the API changed that routing depends on: ids and a
// manager's status, never a number or a name.
type Changes interface {
	// ClientChanged: created, reassigned, partners changed, erased.
	ClientChanged(id string)
	// ManagerChanged: created, changed, dismissed; status is his now.
	ManagerChanged(id, status string)
	// SegmentChanged: a segment's rules changed, or it was made or deleted.
	SegmentChanged(id string)
	// RoutingFromCache reports whether calls route from the cache because
	// Postgres does not answer, and whether the cache could (it is loaded).
	RoutingFromCache() (warm, fromCache bool)
}

// TrunkStatus is what /healthz shows of the PBX's registration at the SIP
// provider (--trunk-register).
type TrunkStatus interface {
	// TrunkRegistered says whether the PBX registers at all, and whether
	// it is registered now.
	TrunkRegistered() (enabled, registered bool)
}

// Sessions is what the API needs of the web console: who a request's
// session belongs to. The console's pages call this API from the browser
// with their session cookie instead of a token.
type Sessions interface {
	// SessionPrincipal returns the principal of the request's console
	// session; ok is false when the request carries no session cookie. It
	// returns ErrSessionEnded for a session that is unknown, expired,
	// signed out or whose manager was dismissed, and, for a method other
	// than GET, HEAD and OPTIONS, ErrCSRF unless the request carries the
	// session's CSRF token.
	SessionPrincipal(r *http.Request) (p Principal, ok bool, err error)
}

// Console session errors, answered 401 and 403.
var (
	// ErrSessionEnded means the request's console session is no longer live.
	ErrSessionEnded = errors.New("api: console session ended")
	// ErrCSRF means a request authenticated by a console session changes
	// state without the session's CSRF token.
	ErrCSRF = errors.New("api: missing or wrong CSRF token")
)

var (
	errCSRF         = newError(http.StatusForbidden, "csrf", "api.csrf")
	errSessionEnded = newError(http.StatusUnauthorized, "unauthorized", "api.session_ended")
)

// Server serves the REST API.
type Server struct {
	Config
	logger   *zap.Logger
	mux      *http.ServeMux
	requests *prometheus.CounterVec
	// routes are the patterns registered on mux ("GET /api/v1/clients"),
	// which openapi.json must describe one for one (tested).
	routes []string
	// tokenFails counts refused bearer tokens per source (tokenlimit.go).
	tokenFails *tokenFailures
	// dismissedTries audits a dismissed manager's token tried (rate-limited).
	dismissedTries *storage.DismissedTries
}

// New builds the API server.
func New(cfg Config) *Server {
	s := &Server{Config: cfg, logger: cfg.Logger, mux: http.NewServeMux(), tokenFails: newTokenFailures(time.Now),
		dismissedTries: storage.NewDismissedTries(cfg.Store, 0)}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	if s.Metrics == nil {
		s.Metrics = prometheus.NewRegistry()
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "maskpbx_api_requests_total", Help: "API requests by route and status.",
	}, []string{"route", "status"})
	s.Metrics.MustRegister(s.requests)

	s.public("GET /healthz", http.HandlerFunc(s.healthz))
	s.public("GET /metrics", promhttp.HandlerFor(s.Metrics, promhttp.HandlerOpts{}))
	s.public("GET /api/v1/openapi.json", http.HandlerFunc(serveOpenAPI))
	s.handle("POST /api/v1/managers", s.createManager, storage.RoleAdmin)
	s.handle("GET /api/v1/managers", s.listManagers, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/managers/{id}/dismiss", s.dismissManager, storage.RoleAdmin)
	s.handle("PUT /api/v1/managers/{id}/mobile", s.setMobile, storage.RoleAdmin)
	s.handle("DELETE /api/v1/managers/{id}/mobile", s.removeMobile, storage.RoleAdmin)
	s.handle("POST /api/v1/managers/{id}/mobile/reveal", s.revealMobile, storage.RoleAdmin)
	s.handle("POST /api/v1/clients", s.createClient, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("GET /api/v1/clients", s.listClients, storage.RoleAdmin, storage.RoleSupervisor, storage.RoleManager)
	s.handle("GET /api/v1/clients/{id}", s.getClient, storage.RoleAdmin, storage.RoleSupervisor, storage.RoleManager)
	s.handle("PUT /api/v1/clients/{id}/assignment", s.reassign, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/clients/{id}/reveal", s.reveal, storage.RoleAdmin)
	s.handle("DELETE /api/v1/clients/{id}", s.eraseClient, storage.RoleAdmin)
	s.handle("PUT /api/v1/clients/{id}/legal-hold", s.setLegalHold, storage.RoleAdmin)
	s.handle("POST /api/v1/clients/{id}/export", s.exportClient, storage.RoleAdmin)
	s.handle("GET /api/v1/recordings", s.listRecordings, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("GET /api/v1/recordings/{id}", s.getRecording, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("GET /api/v1/recordings/{id}/audio", s.recordingAudio, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/recordings/{id}/listen", s.listenRecording, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/calls", s.startCall, storage.RoleManager, storage.RoleSupervisor, storage.RoleAdmin)
	s.handle("GET /api/v1/calls", s.listCalls, storage.RoleAdmin, storage.RoleSupervisor, storage.RoleManager)
	s.handle("GET /api/v1/calls/{id}", s.getCall, storage.RoleAdmin, storage.RoleSupervisor, storage.RoleManager)
	// transfers
	s.handle("POST /api/v1/calls/{id}/transfer", s.transferCall, storage.RoleManager, storage.RoleSupervisor, storage.RoleAdmin)
	s.alertRoutes()
	// Live listen, whisper, barge (monitor.go).
	s.handle("POST /api/v1/calls/{id}/monitor", s.monitorCall, storage.RoleAdmin, storage.RoleSupervisor)
	// Missed-call tasks (tasks.go).
	s.handle("GET /api/v1/tasks", s.listTasks, storage.RoleAdmin, storage.RoleSupervisor, storage.RoleManager)
	// Segments with rules and rotation (segments.go).
	s.handle("GET /api/v1/segments", s.listSegments, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/segments", s.createSegment, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("PUT /api/v1/segments/{id}", s.updateSegment, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("DELETE /api/v1/segments/{id}", s.deleteSegment, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("GET /api/v1/rotations", s.listRotations, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/rotations", s.rotate, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("GET /api/v1/rotations/schedules", s.listSchedules, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("POST /api/v1/rotations/schedules", s.createSchedule, storage.RoleAdmin, storage.RoleSupervisor)
	s.handle("DELETE /api/v1/rotations/schedules/{id}", s.deleteSchedule, storage.RoleAdmin, storage.RoleSupervisor)
	s.mux.HandleFunc(catchAll, s.noRoute)
	return s
}

// catchAll is the pattern of noRoute: every request no route takes.
const catchAll = "/"

// noRoute answers a request no route takes: 405 with Allow when its path
// is served for other methods, else 404; both with a JSON error body.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	methods := allow.Methods(s.mux, r, catchAll)
	if len(methods) == 0 {
		s.writeError(w, r, errNotFound)
		return
	}
	w.Header().Set("Allow", allow.Header(methods))
	s.writeError(w, r, errMethodNotAllowed)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Principal is who is calling: his role, and for people with a manager row,
// the manager id.
type Principal struct {
	Role      string
	ManagerID string
}

// Actor is how the principal appears in the audit log.
func (p Principal) Actor() string {
	if p.ManagerID == "" {
		return p.Role + ":bootstrap"
	}
	return p.Role + ":" + p.ManagerID
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, p Principal) error

// public registers a route anyone may call.
func (s *Server) public(pattern string, h http.Handler) {
	s.routes = append(s.routes, pattern)
	s.mux.Handle(pattern, h)
}

// handle registers a route that needs a bearer token of one of roles.
func (s *Server) handle(pattern string, h handlerFunc, roles ...string) {
	s.routes = append(s.routes, pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() { s.requests.WithLabelValues(pattern, fmt.Sprint(rec.status)).Inc() }()
		p, err := s.authenticate(r)
		if err == nil && !hasRole(p.Role, roles) {
			err = errForbidden
		}
		if err == nil {
			err = h(rec, r, p)
		}
		if err != nil {
			s.writeError(rec, r, err)
		}
	})
}

func hasRole(role string, roles []string) bool {
	for _, r := range roles {
		if r == role {
			return true
		}
	}
	return false
}

func (s *Server) authenticate(r *http.Request) (Principal, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	if r.Header.Get("Authorization") == "" && s.Sessions != nil {
		p, hasSession, err := s.Sessions.SessionPrincipal(r)
		switch {
		case errors.Is(err, ErrCSRF):
			return Principal{}, errCSRF
		case errors.Is(err, ErrSessionEnded):
			return Principal{}, errSessionEnded
		case err != nil:
			return Principal{}, err
		case hasSession:
			return p, nil
		}
	}
	if !ok || token == "" {
		return Principal{}, errUnauthorized
	}
	source := sourceOf(r)
	if s.tokenFails.blocked(source) {
		return Principal{}, errTooManyTokenFailures
	}
	if s.AdminToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.AdminToken)) == 1 {
		return Principal{Role: storage.RoleAdmin}, nil
	}
	m, err := s.Store.ManagerByToken(r.Context(), HashToken(token))
	if errors.Is(err, storage.ErrNotFound) {
		s.tokenFails.fail(source)
		s.auditDismissedToken(r, token, source)
		return Principal{}, errInvalidToken
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{Role: m.Role, ManagerID: m.ID}, nil
}

// auditDismissedToken audits (api.dismissed_token, at most once a minute
// per manager) a refused token that belongs to a dismissed manager: the
// alerts' dismissed_login rule reads it.
func (s *Server) auditDismissedToken(r *http.Request, token, source string) {
	id, err := s.Store.DismissedTokenOwner(r.Context(), HashToken(token))
	if err == nil {
		_, err = s.dismissedTries.Record(r.Context(), "api.dismissed_token", id, "api:"+source)
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.logger.Warn("api: dismissed token not audited", zap.Error(err))
	}
}

// NewToken makes a random API token; only its hash is stored.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "mpx_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashToken is how a token is stored and looked up.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

const maxBody = 1 << 20

// decode reads a JSON body strictly: unknown fields, wrong types and
// trailing data are the caller's error, answered before anything is written.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return badRequest("api.field_type", "Field", strconv.Quote(typeErr.Field), "Type", typeErr.Type.String())
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return badRequest("api.unknown_field", "Field", strings.TrimPrefix(err.Error(), "json: unknown field "))
		case errors.Is(err, io.EOF):
			return badRequest("api.body_empty")
		default:
			return badRequest("api.body_not_json")
		}
	}
	if dec.More() {
		return badRequest("api.body_trailing")
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]string{"status": "ok"}
	if err := s.Store.Ping(ctx); err != nil {
		warm := false
		if s.Changes != nil {
			warm, _ = s.Changes.RoutingFromCache()
		}
		if !warm {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "database": "down"})
			return
		}
		// Calls still route and connect from the cache: the trunk must
		// keep sending them here, so the node is degraded, not down.
		body = map[string]string{"status": "degraded", "database": "down", "routing": "cache"}
	} else if s.Changes != nil {
		if _, fromCache := s.Changes.RoutingFromCache(); fromCache {
			// Postgres answers again; routing follows within a moment.
			body["routing"] = "cache"
		}
	}
	if s.Trunk != nil {
		// The node lives without its provider: the field alarms, the
		// status stays ok.
		if enabled, registered := s.Trunk.TrunkRegistered(); enabled {
			body["trunk_registration"] = "unregistered"
			if registered {
				body["trunk_registration"] = "registered"
			}
		}
	}
	writeJSON(w, http.StatusOK, body)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) clientChanged(id string) {
	if s.Changes != nil {
		s.Changes.ClientChanged(id)
	}
}

func (s *Server) managerChanged(id, status string) {
	if s.Changes != nil {
		s.Changes.ManagerChanged(id, status)
	}
}
