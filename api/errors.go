package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Error is an error meant for the API caller: its code and message say what
// was wrong with the request. Anything else is logged and answered as a 500.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func badRequest(msg string) *Error { return &Error{http.StatusBadRequest, "bad_request", msg} }

var (
	errUnauthorized = &Error{http.StatusUnauthorized, "unauthorized", "missing, invalid or revoked API token"}
	// errInvalidToken is errUnauthorized for a request that did carry a
	// token: the same body, but its challenge says the token was refused.
	errInvalidToken = &Error{http.StatusUnauthorized, "unauthorized", "missing, invalid or revoked API token"}
	errForbidden    = &Error{http.StatusForbidden, "forbidden", "your role may not do this"}
	errNotFound     = &Error{http.StatusNotFound, "not_found", "no such object"}
	// errMethodNotAllowed goes with an Allow header naming what the path takes.
	errMethodNotAllowed = &Error{http.StatusMethodNotAllowed, "method_not_allowed", "this path does not take this method (see Allow)"}
)

// asAPIError maps domain errors to API errors; this is the one place that
// decides which status a storage or masking error becomes.
func asAPIError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound
	case errors.Is(err, storage.ErrDuplicatePhone):
		return &Error{http.StatusConflict, "duplicate_phone", "a phone number already belongs to another client"}
	case errors.Is(err, storage.ErrDuplicateMobile):
		return &Error{http.StatusConflict, "duplicate_mobile", "this mobile number belongs to another manager"}
	case errors.Is(err, storage.ErrDuplicateUsername):
		return &Error{http.StatusConflict, "duplicate_sip_username", "this SIP username is taken"}
	case errors.Is(err, storage.ErrUnknownManager):
		return &Error{http.StatusUnprocessableEntity, "unknown_manager", "a manager id does not name an active manager"}
	case errors.Is(err, storage.ErrClientErased):
		return &Error{http.StatusConflict, "client_erased", "the client was erased"}
	case errors.Is(err, storage.ErrManagerDismissed):
		return &Error{http.StatusConflict, "already_dismissed", "the manager is already dismissed"}
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
	case errors.Is(err, masking.ErrBadNumber):
		// The message names no number: it may be echoed into logs or UIs.
		return &Error{http.StatusUnprocessableEntity, "bad_phone", "a phone number is not a valid number"}
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
		e = &Error{http.StatusInternalServerError, "internal", "internal error"}
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", challenge(e))
	}
	if e == errTooManyTokenFailures {
		w.Header().Set("Retry-After", retryAfter)
	}
	var body errorBody
	body.Error.Code, body.Error.Message = e.Code, e.Message
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
