package api

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Audit reasons (reveal, listening to a recording) must say something: at
// least minReasonRunes printable characters, at most maxAuditReason.
const (
	minReasonRunes = 10
	maxAuditReason = 200
)

// auditReason checks a reason given for an audited access and returns it
// trimmed. Control, format (bidi, zero-width) and line-separator characters
// are refused, not stripped: an audit row says what was typed or nothing.
func auditReason(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		return "", badRequest("api.reason_utf8")
	}
	n := 0
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return "", badRequest("api.reason_printable")
		}
		n++
	}
	switch {
	case n < minReasonRunes:
		return "", badRequest("api.reason_required")
	case n > maxAuditReason:
		return "", badRequest("api.reason_too_long")
	}
	return s, nil
}
