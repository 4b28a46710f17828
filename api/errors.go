package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Error is an error meant for the API caller: its code and message say what
// was wrong with the request. Anything else is logged and answered as a 500.
// The code is stable; the message is the catalog's (internal/i18n) message
// ID in the caller's language (Accept-Language, else the company's).
type Error struct {
	Status int
	Code   string
	// Message is the message in English (for logs and Go callers).
	Message string
	ID      string
	Args    []any // name, value pairs for the message's fields
}

func (e *Error) Error() string { return e.Message }

// newError is an API error whose message is the catalog's id.
func newError(status int, code, id string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: i18n.Get("en").T(id, args...), ID: id, Args: args}
}

func badRequest(id string, args ...any) *Error {
	return newError(http.StatusBadRequest, "bad_request", id, args...)
}

var (
	errUnauthorized = newError(http.StatusUnauthorized, "unauthorized", "api.unauthorized")
	// errInvalidToken is errUnauthorized for a request that did carry a
	// token: the same body, but its challenge says the token was refused.
	errInvalidToken = newError(http.StatusUnauthorized, "unauthorized", "api.unauthorized")
	errForbidden    = newError(http.StatusForbidden, "forbidden", "api.forbidden")
	errNotFound     = newError(http.StatusNotFound, "not_found", "api.not_found")
	// errMethodNotAllowed goes with an Allow header naming what the path takes.
	errMethodNotAllowed = newError(http.StatusMethodNotAllowed, "method_not_allowed", "api.method_not_allowed")
)

// asAPIError maps domain errors to API errors; this is the one place that
// decides which status a storage or masking error becomes.
func asAPIError(err error) *Error {
	var e *Error
	if se := segmentAPIError(err); se != nil {
		return se
	}
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound
	case errors.Is(err, storage.ErrDuplicatePhone):
		return newError(http.StatusConflict, "duplicate_phone", "api.duplicate_phone")
	case errors.Is(err, storage.ErrDuplicateMobile):
		return newError(http.StatusConflict, "duplicate_mobile", "api.duplicate_mobile")
	case errors.Is(err, storage.ErrDuplicateUsername):
		return newError(http.StatusConflict, "duplicate_sip_username", "api.duplicate_username")
	case errors.Is(err, storage.ErrUnknownManager):
		return newError(http.StatusUnprocessableEntity, "unknown_manager", "api.unknown_manager")
	case errors.Is(err, storage.ErrClientErased):
		return newError(http.StatusConflict, "client_erased", "api.client_erased")
	case errors.Is(err, storage.ErrManagerDismissed):
		return newError(http.StatusConflict, "already_dismissed", "api.already_dismissed")
	case errors.Is(err, storage.ErrAlreadyAcked):
		return errAlreadyAcked
	case errors.Is(err, ErrNotRegistered):
		return errNotReg
	case errors.Is(err, ErrNoMobile):
		return errNoMobile
	case errors.Is(err, ErrTooManyCalls):
		return errTooMany
	case errors.Is(err, ErrNoTrunk):
		return errNoTrunk
	case errors.Is(err, ErrNoPhone):
		return errNoPhone
	case errors.Is(err, ErrNotAssigned):
		return errNotAssigned
	case errors.Is(err, ErrShuttingDown):
		return errShuttingDown
	case errors.Is(err, ErrCallNotConnected):
		return errCallNotConnected
	case errors.Is(err, ErrTransferRefused):
		return errTransferRefused
	case errors.Is(err, ErrTransferBusy):
		return errTransferBusy
	case errors.Is(err, masking.ErrBadNumber):
		// The message names no number: it may be echoed into logs or UIs.
		return newError(http.StatusUnprocessableEntity, "bad_phone", "api.bad_phone")
	}
	return nil
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := asAPIError(err)
	if e == nil {
		s.logger.Error("api: internal error", zap.String("path", r.URL.Path), zap.Error(err))
		e = newError(http.StatusInternalServerError, "internal", "api.internal")
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", challenge(e))
	}
	if e == errTooManyTokenFailures {
		w.Header().Set("Retry-After", retryAfter)
	}
	var body errorBody
	body.Error.Code, body.Error.Message = e.Code, e.Message
	if e.ID != "" {
		lang := i18n.Match(r.Header.Get("Accept-Language"), s.DefaultLanguage)
		body.Error.Message = lang.T(e.ID, e.Args...)
		w.Header().Set("Content-Language", lang.Code())
	}
	writeJSON(w, e.Status, body)
}

// authRealm is the realm of the API's bearer challenge.
const authRealm = "maskpbx"

// challenge is the WWW-Authenticate header of a 401 (RFC 6750): every 401
// names the scheme and realm; a refused token also says invalid_token, so a
// client knows to get a new one rather than to add one.
func challenge(e *Error) string {
	if e == errInvalidToken {
		return `Bearer realm="` + authRealm + `", error="invalid_token"`
	}
	return `Bearer realm="` + authRealm + `"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
