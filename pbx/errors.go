package pbx

import (
	"errors"

	"github.com/emiago/sipgo/sip"
)

// ErrUnknownUser is returned by a CredentialSource when no SIP user has the
// given username.
var ErrUnknownUser = errors.New("pbx: unknown SIP user")

// Errors of request handling. Each maps to one SIP status in sipStatus; wrap
// them with fmt.Errorf("%w: ...") to add detail for the log, never for the
// response.
var (
	// errMalformed: the request is syntactically wrong or inconsistent.
	errMalformed = errors.New("pbx: malformed request")
	// errUnknownDomain: the Request-URI or To names a domain we do not serve.
	errUnknownDomain = errors.New("pbx: domain not served here")
	// errBadExtension: the request Requires an extension we do not support.
	errBadExtension = errors.New("pbx: unsupported extension required")
	// errNoCredentials: the request carries no Authorization; challenge it.
	errNoCredentials = errors.New("pbx: no credentials")
	// errAuthFailed: the credentials are wrong, or the user is unknown; both
	// must look the same. Counts towards a source block.
	errAuthFailed = errors.New("pbx: authentication failed")
	// errInactiveUser: the right password of a dismissed manager. It answers
	// exactly like errAuthFailed, but does not count towards a block: his old
	// phone retrying must not lock out the office behind the same address.
	errInactiveUser = errors.New("pbx: SIP user is dismissed")
	// errStaleNonce: the credentials were right but the nonce had expired or
	// was issued by another process; challenge again with stale=true.
	errStaleNonce = errors.New("pbx: stale nonce")
	// errNonceReplay: the nonce count did not increase; challenge again.
	errNonceReplay = errors.New("pbx: nonce count replayed")
	// errForbidden: authenticated, but not allowed to do this (e.g. to change
	// another user's bindings).
	errForbidden = errors.New("pbx: forbidden")
	// errSourceBlocked: the source address failed authentication too often.
	errSourceBlocked = errors.New("pbx: source blocked after failed authentication")
	// errIntervalTooBrief: a binding asked for an expiry below the minimum.
	errIntervalTooBrief = errors.New("pbx: registration interval too brief")
	// errOutOfOrder: a REGISTER older than the binding it would change.
	errOutOfOrder = errors.New("pbx: out-of-order REGISTER")
	// errNoTransaction: CANCEL or BYE for nothing we know of.
	errNoTransaction = errors.New("pbx: no such call or transaction")
	// errMethodNotAllowed: a SIP method we understand but do not serve.
	errMethodNotAllowed = errors.New("pbx: method not allowed")
	// errNotImplemented: a method we do not know.
	errNotImplemented = errors.New("pbx: method not implemented")
)

// sipStatus is the one place where errors become SIP status codes. Anything
// not listed is an internal failure (a store or credential lookup that broke)
// and answers 500, which tells a phone to retry later.
func sipStatus(err error) (int, string) {
	switch {
	case errors.Is(err, errMalformed):
		return sip.StatusBadRequest, "Bad Request"
	case errors.Is(err, errNoCredentials),
		errors.Is(err, errAuthFailed),
		errors.Is(err, errInactiveUser),
		errors.Is(err, errStaleNonce),
		errors.Is(err, errNonceReplay):
		return sip.StatusUnauthorized, "Unauthorized"
	case errors.Is(err, errForbidden), errors.Is(err, errSourceBlocked):
		return sip.StatusForbidden, "Forbidden"
	case errors.Is(err, errUnknownDomain):
		return sip.StatusNotFound, "Not Found"
	case errors.Is(err, errMethodNotAllowed):
		return sip.StatusMethodNotAllowed, "Method Not Allowed"
	case errors.Is(err, errBadExtension):
		return sip.StatusBadExtension, "Bad Extension"
	case errors.Is(err, errIntervalTooBrief):
		return sip.StatusIntervalToBrief, "Interval Too Brief"
	case errors.Is(err, errNoTransaction):
		return sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist"
	case errors.Is(err, errNotImplemented):
		return sip.StatusNotImplemented, "Not Implemented"
	case errors.Is(err, errOutOfOrder):
		// RFC 3261 10.3 only says the request fails; 500 makes the phone
		// retry later with a higher CSeq.
		return sip.StatusInternalServerError, "Server Internal Error"
	default:
		return sip.StatusInternalServerError, "Server Internal Error"
	}
}

// ErrNobodyToRing means no active manager has a registered phone, so a call
// can't ring anyone (answered 480).
var ErrNobodyToRing = errors.New("pbx: no registered manager to ring")
