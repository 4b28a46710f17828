package events

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"time"
)

// Kind names what happened to a call; it is the last part of the subject.
type Kind string

// The kinds of call events, in the order a call normally produces them.
const (
	Offered        Kind = "offered"
	Ringing        Kind = "ringing"
	Answered       Kind = "answered"
	Ended          Kind = "ended"
	RecordingReady Kind = "recording.ready"
)

// Call directions.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Dispositions: how a call ended (Event.Disposition on Ended).
const (
	DispositionAnswered  = "answered"
	DispositionMissed    = "missed"
	DispositionBusy      = "busy"
	DispositionRejected  = "rejected"
	DispositionFailed    = "failed"
	DispositionCancelled = "cancelled"
	DispositionNoAnswer  = "no_answer"
	// DispositionOverload: refused at admission, the node at capacity.
	DispositionOverload = "overload"
)

// Hang-up sides: who ended a call (Event.HangupSide on Ended).
const (
	HangupClient  = "client"
	HangupManager = "manager"
	HangupSystem  = "system"
	// HangupNodeLost: the node handling the call died; a restarted node or
	// a survivor closed its CDR.
	HangupNodeLost = "node_lost"
)

// Event is one JSON message on the CALLS stream. It names people by id only:
// a phone number never goes into an event.
type Event struct {
	ID          string    `json:"event_id"` // unique per event (uuid); the JetStream Nats-Msg-Id
	Kind        Kind      `json:"event"`
	Time        time.Time `json:"time"`
	CallID      string    `json:"call_id"`   // our own call id (uuid), never a SIP Call-ID of a leg
	Direction   string    `json:"direction"` // Inbound or Outbound
	ClientID    string    `json:"client_id,omitempty"`
	ManagerID   string    `json:"manager_id,omitempty"`
	Disposition string    `json:"disposition,omitempty"` // on Ended
	HangupSide  string    `json:"hangup_side,omitempty"` // on Ended
	Recording   string    `json:"recording,omitempty"`   // on Ended and RecordingReady: "ok", "missing", ...
	// Via is ViaMobile on Ended when the manager took part from his
	// corporate mobile; Mobile is how a mobile that answered the ring ended
	// its press-1 whisper (MobileAccepted, MobileDeclined, MobileTimedOut).
	Via    string `json:"via,omitempty"`
	Mobile string `json:"mobile,omitempty"`
	// Node names the pbx node handling the call (--node), so a node that
	// restarts, or a survivor, can close the calls a dead node left open.
	Node string `json:"node,omitempty"`
	// TransferredFrom is, on every event of a call part that a transfer
	// began, the call id of the part before it: the client's conversation
	// with the transferring manager.
	TransferredFrom string `json:"transferred_from,omitempty"`
}

// ViaMobile is Event.Via of a call the manager took on his corporate mobile.
const ViaMobile = "mobile"

// How a manager's mobile ended the press-1 whisper (Event.Mobile).
const (
	MobileAccepted = "accepted"
	MobileDeclined = "declined"
	MobileTimedOut = "timed_out"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var (
	kinds        = map[Kind]bool{Offered: true, Ringing: true, Answered: true, Ended: true, RecordingReady: true}
	directions   = map[string]bool{Inbound: true, Outbound: true}
	dispositions = map[string]bool{
		DispositionAnswered: true, DispositionMissed: true, DispositionBusy: true, DispositionRejected: true,
		DispositionFailed: true, DispositionCancelled: true, DispositionNoAnswer: true, DispositionOverload: true,
	}
	hangupSides = map[string]bool{HangupClient: true, HangupManager: true, HangupSystem: true, HangupNodeLost: true}
	mobileEnds  = map[string]bool{"": true, MobileAccepted: true, MobileDeclined: true, MobileTimedOut: true}
)

// Validate reports whether e fits the schema. The call id must be a uuid: it
// becomes a subject token and the CDR's key.
func (e Event) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: no event id", ErrInvalidEvent)
	case !kinds[e.Kind]:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidEvent, e.Kind)
	case e.Time.IsZero():
		return fmt.Errorf("%w: no time", ErrInvalidEvent)
	case !uuidRE.MatchString(e.CallID):
		return fmt.Errorf("%w: call id is not a uuid", ErrInvalidEvent)
	case !directions[e.Direction]:
		return fmt.Errorf("%w: direction %q", ErrInvalidEvent, e.Direction)
	case e.ClientID != "" && !uuidRE.MatchString(e.ClientID):
		return fmt.Errorf("%w: client id is not a uuid", ErrInvalidEvent)
	case e.ManagerID != "" && !uuidRE.MatchString(e.ManagerID):
		return fmt.Errorf("%w: manager id is not a uuid", ErrInvalidEvent)
	case e.Kind == Ended && !dispositions[e.Disposition]:
		return fmt.Errorf("%w: disposition %q", ErrInvalidEvent, e.Disposition)
	case e.Kind != Ended && e.Disposition != "":
		return fmt.Errorf("%w: disposition on %s", ErrInvalidEvent, e.Kind)
	case e.HangupSide != "" && (e.Kind != Ended || !hangupSides[e.HangupSide]):
		return fmt.Errorf("%w: hang-up side %q on %s", ErrInvalidEvent, e.HangupSide, e.Kind)
	case e.Via != "" && e.Via != ViaMobile:
		return fmt.Errorf("%w: via %q", ErrInvalidEvent, e.Via)
	case !mobileEnds[e.Mobile]:
		return fmt.Errorf("%w: mobile %q", ErrInvalidEvent, e.Mobile)
	case e.TransferredFrom != "" && (!uuidRE.MatchString(e.TransferredFrom) || e.TransferredFrom == e.CallID):
		return fmt.Errorf("%w: transferred_from is not another call's uuid", ErrInvalidEvent)
	}
	return nil
}

// Subject is where e is published: calls.<call_id>.<kind>.
func (e Event) Subject() string { return "calls." + e.CallID + "." + string(e.Kind) }

// newUUID returns a random (version 4) uuid.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
