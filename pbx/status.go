package pbx

import (
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/events"
)

// States of a call, as GET /api/v1/calls/{id} shows them.
const (
	StateCallingManager = "calling_manager"
	StateCallingClient  = "calling_client"
	StateConnected      = "connected"
	StateEnded          = "ended"
)

// Dispositions of a call, as CDRs and events name them.
const (
	DispAnswered  = events.DispositionAnswered
	DispMissed    = events.DispositionMissed
	DispBusy      = events.DispositionBusy
	DispFailed    = events.DispositionFailed
	DispNoAnswer  = events.DispositionNoAnswer
	DispRejected  = events.DispositionRejected
	DispCancelled = events.DispositionCancelled
	// DispOverload: the node refused the call at admission because it was
	// at capacity (503 with Retry-After, so the trunk tries another node).
	DispOverload = events.DispositionOverload
)

// Who ended a call, as the ended event's hangup_side names it.
const (
	sideClient  = events.HangupClient
	sideManager = events.HangupManager
	sideSystem  = events.HangupSystem
)

// CallStatus is what a caller may see of a call: never a number.
type CallStatus struct {
	ID          string
	Direction   string
	State       string
	Disposition string
	ClientID    string
	ManagerID   string
	StartedAt   time.Time
	AnsweredAt  time.Time
	EndedAt     time.Time
	// Via is ViaMobile for a call whose manager side is his corporate
	// mobile; Mobile is how the last mobile that answered the call's ring
	// ended its whisper (MobileAccepted, MobileDeclined, MobileTimedOut).
	Via    string
	Mobile string
	// TransferredFrom is the call id of the part before this one, when a
	// transfer to a colleague began this part.
	TransferredFrom string
}

// ViaMobile: the manager's side of the call is his corporate mobile.
const ViaMobile = events.ViaMobile

// setVia records the way the manager takes part in the call.
func (c *call) setVia(via string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.Via = via
}

// setMobileOutcome records how a mobile's whisper ended.
func (c *call) setMobileOutcome(outcome string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.Mobile = outcome
}

// retryAfter is what a call refused for overload tells the trunk to wait.
const retryAfter = 2 * time.Second

// failureResponse is the one place where the disposition of a call that did
// not connect becomes the SIP final response to the leg that asked for it
// (the trunk's INVITE, or a desk phone's). ok is false for a cancelled call:
// the transaction layer has answered it 487 already.
func failureResponse(disp string) (code int, reason string, hdrs []sip.Header, ok bool) {
	switch disp {
	case DispCancelled:
		return 0, "", nil, false
	case DispBusy:
		return sip.StatusBusyHere, "Busy Here", nil, true
	case DispRejected:
		return sip.StatusGlobalDecline, "Decline", nil, true
	case DispMissed, DispNoAnswer:
		return sip.StatusTemporarilyUnavailable, "Temporarily Unavailable", nil, true
	case DispOverload:
		secs := strconv.Itoa(int(retryAfter / time.Second))
		return sip.StatusServiceUnavailable, "Service Unavailable", []sip.Header{sip.NewHeader("Retry-After", secs)}, true
	default:
		return sip.StatusServiceUnavailable, "Service Unavailable", nil, true
	}
}

// dispositionOf names the outcome of a failed INVITE we sent (to a phone or
// the trunk) by its final status.
func dispositionOf(status int) string {
	switch status {
	case 486, 600:
		return DispBusy
	case 408, 480, 487:
		return DispNoAnswer
	case 403, 603:
		return DispRejected
	}
	return DispFailed
}

// numberUnusable says whether a trunk's failure is about the number itself
// (wrong, gone, unreachable) rather than the person: then the client's next
// number is worth trying.
func numberUnusable(status int) bool {
	switch status {
	case 404, 410, 484, 485, 502, 503, 504, 604:
		return true
	}
	return false
}

// setState moves the call to a new state (see the State constants).
func (c *call) setState(state string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.State = state
	if state == StateConnected && c.status.AnsweredAt.IsZero() {
		c.status.AnsweredAt = time.Now()
	}
}

// finish marks the call ended with a disposition.
func (c *call) finish(disposition string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.status.State == StateEnded {
		return
	}
	c.status.State, c.status.Disposition, c.status.EndedAt = StateEnded, disposition, time.Now()
}

func (c *call) snapshot() CallStatus {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	return c.status
}

// setClient names the call's client once it is known (routing, or the
// dialled client); the API may be reading the status meanwhile.
func (c *call) setClient(id, code string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.ClientID, c.clientCode = id, code
}

// setManager names the manager the call is with once it is known (the
// phone that answered, or the one that dialled).
func (c *call) setManager(id string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.ManagerID = id
}

// parties are the client and the manager of the call, as far as known.
func (c *call) parties() (clientID, managerID string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	return c.status.ClientID, c.status.ManagerID
}

// recentCalls keeps the status of ended calls for a while, so a client
// polling GET /api/v1/calls/{id} sees how its call ended.
type recentCalls struct {
	byID  map[string]CallStatus
	order []string
}

const recentCallsKept = 10000

func (r *recentCalls) add(st CallStatus) {
	if r.byID == nil {
		r.byID = map[string]CallStatus{}
	}
	if _, seen := r.byID[st.ID]; !seen {
		r.order = append(r.order, st.ID)
	}
	r.byID[st.ID] = st
	for len(r.order) > recentCallsKept {
		delete(r.byID, r.order[0])
		r.order = r.order[1:]
	}
}

func (cc *callControl) status(id string) (CallStatus, bool) {
	cc.mu.Lock()
	c, live := cc.calls[id]
	st, recent := cc.recent.byID[id]
	cc.mu.Unlock()
	if live {
		return c.snapshot(), true
	}
	return st, recent
}

// CallStatus returns a call's status while it runs and for a while after.
func (s *Server) CallStatus(id string) (CallStatus, bool) {
	if s.calls == nil {
		return CallStatus{}, false
	}
	return s.calls.status(id)
}
