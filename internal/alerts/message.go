package alerts

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// The rules, as alert.rule and the last token of the NATS subject.
const (
	RuleClientQuiet    = "client_quiet"
	RuleManagerDrop    = "manager_drop"
	RuleAccessBurst    = "access_burst"
	RuleOffHours       = "off_hours"
	RuleDismissedLogin = "dismissed_login"
	RuleMissedCall     = "missed_call"
)

// Rules lists every rule.
var Rules = []string{RuleClientQuiet, RuleManagerDrop, RuleAccessBurst, RuleOffHours, RuleDismissedLogin, RuleMissedCall}

// SubjectPrefix is where alerts are published: alerts.<rule>.
const SubjectPrefix = "alerts."

// Message is an alert as the API answers it, NATS carries it and webhooks
// receive it: ids, counts and times, never a number or a name.
type Message struct {
	ID           string                `json:"id"`
	Rule         string                `json:"rule"`
	ClientID     string                `json:"client_id,omitempty"`
	ManagerID    string                `json:"manager_id,omitempty"`
	SupervisorID string                `json:"supervisor_id,omitempty"`
	Actor        string                `json:"actor,omitempty"`
	Evidence     storage.AlertEvidence `json:"evidence"`
	CreatedAt    time.Time             `json:"created_at"`
	AckedBy      string                `json:"acked_by,omitempty"`
	AckedAt      *time.Time            `json:"acked_at,omitempty"`
}

// MessageOf is the Message of a stored alert.
func MessageOf(a storage.Alert) Message {
	return Message{ID: a.ID, Rule: a.Rule, ClientID: a.ClientID, ManagerID: a.ManagerID, SupervisorID: a.SupervisorID,
		Actor: a.Actor, Evidence: a.Evidence, CreatedAt: a.CreatedAt, AckedBy: a.AckedBy, AckedAt: a.AckedAt}
}

// SignatureHeader carries a webhook body's signature:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
const SignatureHeader = "X-Maskpbx-Signature"

// Sign is the SignatureHeader value of body sent at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Errors of Verify.
var (
	// ErrBadSignature means the header is malformed or the MAC is wrong.
	ErrBadSignature = errors.New("alerts: bad webhook signature")
	// ErrStaleSignature means the signature's time is outside the replay
	// window.
	ErrStaleSignature = errors.New("alerts: webhook signature outside the replay window")
)

// Verify checks a SignatureHeader value against body as a receiver should:
// the MAC, and a time within tolerance of now (the replay window).
func Verify(secret, body []byte, header string, now time.Time, tolerance time.Duration) error {
	var ts, v1 string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	got, herr := hex.DecodeString(v1)
	if err != nil || herr != nil || !hmac.Equal(got, mac(secret, ts, body)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStaleSignature
	}
	return nil
}
