package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/storage"
)

// Cookie and header names.
const (
	sessionCookie = "mpx_session"
	// signinCookie carries the CSRF token of the sign-in form, before there
	// is a session (double-submit), so nobody can sign a victim in to an
	// account of theirs.
	signinCookie = "mpx_signin"
	csrfField    = "csrf_token"
	csrfHeader   = "X-CSRF-Token"
)

// Session lifetimes.
const (
	sessionTTL  = 12 * time.Hour
	sessionIdle = 2 * time.Hour
)

// Sessions keeps console sessions in Postgres and authenticates requests by
// their cookie, for the console's pages and for the JSON API (it implements
// api.Sessions). It is safe for concurrent use.
type Sessions struct {
	store         *storage.Store
	bootstrapHash []byte // SHA-256 of MASKPBX_ADMIN_TOKEN; nil if unset
	logger        *zap.Logger
	// secure forces the Secure attribute on cookies (TLS terminated by a
	// proxy in front); requests that arrive over TLS get it anyway.
	secure bool
}

// NewSessions makes the session keeper. adminToken is the bootstrap admin
// token: if set, it can open an admin session (the first admin's way in).
func NewSessions(store *storage.Store, adminToken string, secureCookies bool, logger *zap.Logger) *Sessions {
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Sessions{store: store, logger: logger, secure: secureCookies}
	if adminToken != "" {
		s.bootstrapHash = sha(adminToken)
	}
	return s
}

// session is a signed-in person as the console's handlers see him.
type session struct {
	storage.WebSession
	tokenHash []byte
	csrf      string
	lc        *locale // set on first use (localeFor)
}

// principal is who the session acts as, for the API and the audit log.
func (s *session) principal() api.Principal {
	return api.Principal{Role: s.Role, ManagerID: s.ManagerID}
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// csrfFor derives a session's CSRF token from the session token, which only
// the browser's HttpOnly cookie and the server know, so nothing extra is
// stored and nothing a page shows lets anyone rebuild the session token.
func csrfFor(sessionToken string) string {
	m := hmac.New(sha256.New, []byte(sessionToken))
	m.Write([]byte("maskpbx console csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// errNoSession means the request carries no session cookie at all.
var errNoSession = errors.New("console: not signed in")

// lookup returns the live session of a request: errNoSession without a
// cookie, api.ErrSessionEnded for a session that is over.
func (s *Sessions) lookup(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, errNoSession
	}
	hash := sha(c.Value)
	ws, err := s.store.WebSession(r.Context(), hash, sessionIdle)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrSessionEnded
	}
	if err != nil {
		return nil, err
	}
	if ws.ManagerID == "" && (s.bootstrapHash == nil || subtle.ConstantTimeCompare(ws.BootstrapHash, s.bootstrapHash) != 1) {
		// The bootstrap token changed or was removed: its sessions end.
		return nil, api.ErrSessionEnded
	}
	return &session{WebSession: ws, tokenHash: hash, csrf: csrfFor(c.Value)}, nil
}

// SessionPrincipal implements api.Sessions.
func (s *Sessions) SessionPrincipal(r *http.Request) (api.Principal, bool, error) {
	sess, err := s.lookup(r)
	if errors.Is(err, errNoSession) {
		return api.Principal{}, false, nil
	}
	if err != nil {
		return api.Principal{}, true, err
	}
	if !safeMethod(r.Method) && !validCSRF(sess.csrf, r.Header.Get(csrfHeader)) {
		return api.Principal{}, true, api.ErrCSRF
	}
	return sess.principal(), true, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func validCSRF(want, got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// open starts a session for a manager (managerID) or the bootstrap admin
// (managerID empty) and sets its cookie.
func (s *Sessions) open(ctx context.Context, w http.ResponseWriter, r *http.Request, managerID, actor string) error {
	token := newToken()
	ns := storage.NewWebSession{TokenHash: sha(token), ManagerID: managerID, ExpiresAt: time.Now().Add(sessionTTL),
		Source: clientIP(r)}
	if managerID == "" {
		ns.BootstrapHash = s.bootstrapHash
	}
	if err := s.store.CreateWebSession(ctx, ns, actor); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true,
		Secure: s.secureFor(r), SameSite: http.SameSiteLaxMode, MaxAge: int(sessionTTL / time.Second)})
	return nil
}

// close ends the request's session and clears its cookie.
func (s *Sessions) close(ctx context.Context, w http.ResponseWriter, r *http.Request, sess *session) error {
	s.clearCookie(w, r)
	return s.store.RevokeWebSession(ctx, sess.tokenHash, sess.principal().Actor())
}

func (s *Sessions) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true,
		Secure: s.secureFor(r), SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

func (s *Sessions) secureFor(r *http.Request) bool { return s.secure || r.TLS != nil }

// signinCSRF returns the sign-in form's CSRF token, setting its cookie if
// the browser has none yet.
func (s *Sessions) signinCSRF(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(signinCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	token := newToken()
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: token, Path: "/console/", HttpOnly: true,
		Secure: s.secureFor(r), SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	return token
}

// clientIP is the address a request came from (the TCP peer: headers such
// as X-Forwarded-For are not trusted).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
