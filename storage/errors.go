package storage

import "errors"

// ErrNotFound means the row asked for does not exist (or is not visible to
// the caller).
var ErrNotFound = errors.New("storage: not found")

// ErrDuplicatePhone means a phone number (by blind index) already belongs to
// a client.
var ErrDuplicatePhone = errors.New("storage: phone number already belongs to a client")

// ErrDuplicateUsername means the SIP username is taken.
var ErrDuplicateUsername = errors.New("storage: SIP username already exists")

// ErrUnknownManager means a manager id named in a request does not exist or
// is dismissed, so nothing may be assigned to him.
var ErrUnknownManager = errors.New("storage: unknown or dismissed manager")

// ErrManagerDismissed means the manager was already dismissed.
var ErrManagerDismissed = errors.New("storage: manager already dismissed")

// ErrAuditTampered means the audit chain does not verify.
var ErrAuditTampered = errors.New("storage: audit chain broken")

// ErrNoAuditKey means the Store was opened without WithAudit, so it can
// neither write nor verify audit rows.
var ErrNoAuditKey = errors.New("storage: no audit key configured")

// ErrClientErased means the client was erased: he has no numbers left and
// can be neither erased again nor assigned.
var ErrClientErased = errors.New("storage: client erased")
