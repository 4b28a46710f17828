package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Dialer is what the API needs of the PBX for click-to-call.
type Dialer interface {
	// Originate rings the manager's phones, then calls the client.
	Originate(ctx context.Context, call OriginateCall) error
	// CallStatus is a call's live status (and for a while after its end).
	CallStatus(id string) (CallStatus, bool)
	// TransferCall hands a connected call's client to a colleague (a blind
	// transfer); actor is who asked, as audit rows name him.
	TransferCall(ctx context.Context, callID, toManagerID, actor string) error
}

// OriginateCall is a click-to-call request as the PBX takes it: the client
// by id only; the PBX opens his number itself, at dial time.
type OriginateCall struct {
	CallID, ManagerID, ClientID string
	// Via is "mobile" to ring the manager's corporate mobile first (with
	// the press-1 whisper) instead of his phones.
	Via string
}

// CallStatus is a call's state as the API shows it.
type CallStatus struct {
	State, Disposition, Direction, ClientID, ManagerID string
	StartedAt, AnsweredAt, EndedAt                     time.Time
	// Via is "mobile" when the manager's side is his corporate mobile;
	// Mobile how that mobile ended the whisper (accepted, declined, timed_out).
	Via, Mobile string
	// TransferredFrom is the call id of the part before this one, when a
	// transfer to a colleague began this part.
	TransferredFrom string
}

// Dialer errors, mapped to HTTP statuses by asAPIError.
var (
	// ErrNotRegistered means the manager has no registered phone.
	ErrNotRegistered = errors.New("api: manager has no registered phone")
	// ErrTooManyCalls means a per-manager limit refused the call.
	ErrTooManyCalls = errors.New("api: too many calls")
	// ErrNoTrunk means calls out are not configured.
	ErrNoTrunk = errors.New("api: no trunk")
	// ErrNoPhone means the client has no number to call.
	ErrNoPhone = errors.New("api: client has no phone")
	// ErrNotAssigned means the client is not the manager's to call.
	ErrNotAssigned = errors.New("api: client not assigned to the manager")
	// ErrShuttingDown means the node is stopping and starts no new call.
	ErrShuttingDown = errors.New("api: node shutting down")
	// ErrNoMobile means a call via the mobile for a manager without one.
	ErrNoMobile = errors.New("api: manager has no mobile")
	// ErrCallNotConnected means the call is not a connected call on this node.
	ErrCallNotConnected = errors.New("api: call not connected")
	// ErrTransferRefused means the colleague may not take the client.
	ErrTransferRefused = errors.New("api: transfer refused")
	// ErrTransferBusy means a transfer of the call is already under way.
	ErrTransferBusy = errors.New("api: transfer under way")
)

var (
	errNoPhone      = newError(http.StatusConflict, "client_has_no_phone", "api.no_phone")
	errNotReg       = newError(http.StatusConflict, "no_registered_phone", "api.not_registered")
	errTooMany      = newError(http.StatusTooManyRequests, "too_many_calls", "api.too_many_calls")
	errNoTrunk      = newError(http.StatusServiceUnavailable, "no_trunk", "api.no_trunk")
	errNotAssigned  = newError(http.StatusForbidden, "forbidden", "api.not_assigned")
	errShuttingDown = newError(http.StatusServiceUnavailable, "shutting_down", "api.shutting_down")
	errNoDialerHere = newError(http.StatusServiceUnavailable, "no_pbx", "api.no_pbx")
	errNoMobile     = newError(http.StatusConflict, "no_mobile", "api.no_mobile")

	errCallNotConnected = newError(http.StatusConflict, "call_not_connected", "api.call_not_connected")
	errTransferRefused  = newError(http.StatusForbidden, "transfer_refused", "api.transfer_refused")
	errTransferBusy     = newError(http.StatusConflict, "transfer_busy", "api.transfer_busy")
)

type callView struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	Direction   string     `json:"direction,omitempty"`
	Disposition string     `json:"disposition,omitempty"`
	ClientID    string     `json:"client_id,omitempty"`
	ManagerID   string     `json:"manager_id,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	AnsweredAt  *time.Time `json:"answered_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	DurationMS  *int64     `json:"duration_ms,omitempty"`
	HangupSide  string     `json:"hangup_side,omitempty"`
	Recording   string     `json:"recording,omitempty"`
	Via         string     `json:"via,omitempty"`
	Mobile      string     `json:"mobile,omitempty"`
	// TransferredFrom: the call id of the part before this one (a transfer).
	TransferredFrom string `json:"transferred_from,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

type startCallRequest struct {
	ClientID string `json:"client_id"`
	Via      string `json:"via"`
}

// startCall is click-to-call: POST /api/v1/calls {client_id}.
func (s *Server) startCall(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req startCallRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ClientID == "" {
		return badRequest("api.client_id_required")
	}
	if req.Via != "" && req.Via != "phone" && req.Via != "mobile" {
		return badRequest("api.bad_via")
	}
	if req.Via == "phone" {
		req.Via = ""
	}
	if s.Dialer == nil {
		return errNoDialerHere
	}
	if p.ManagerID == "" {
		return errForbidden
	}
	c, err := s.Store.Client(r.Context(), req.ClientID)
	if err != nil {
		return err
	}
	if !(masking.Assignment{Primary: c.ManagerID, Partners: c.PartnerIDs}).MayReach(p.ManagerID) {
		return errNotAssigned
	}
	id := uuid.NewString()
	err = s.Dialer.Originate(r.Context(), OriginateCall{CallID: id, ManagerID: p.ManagerID, ClientID: c.ID, Via: req.Via})
	if errors.Is(err, ErrTooManyCalls) {
		if aerr := s.Store.Audit(r.Context(), storage.AuditEntry{Actor: p.Actor(), Action: "call.limited",
			Object: "client:" + c.ID}); aerr != nil {
			return aerr
		}
	}
	if err != nil {
		return err
	}
	if err := s.Store.Audit(r.Context(), storage.AuditEntry{Actor: p.Actor(), Action: "call.click_to_call",
		Object: "client:" + c.ID, Reason: "call:" + id}); err != nil {
		return err
	}
	st, _ := s.Dialer.CallStatus(id)
	writeJSON(w, http.StatusAccepted, callView{ID: id, State: st.State, Direction: "outbound", ClientID: c.ID, ManagerID: p.ManagerID})
	return nil
}

// getCall shows a call: live from the PBX while it runs, else its CDR.
func (s *Server) getCall(w http.ResponseWriter, r *http.Request, p Principal) error {
	id := r.PathValue("id")
	var v callView
	if s.Dialer != nil {
		if st, ok := s.Dialer.CallStatus(id); ok {
			v = callView{ID: id, State: st.State, Direction: st.Direction, Disposition: st.Disposition,
				ClientID: st.ClientID, ManagerID: st.ManagerID, StartedAt: timePtr(st.StartedAt),
				AnsweredAt: timePtr(st.AnsweredAt), EndedAt: timePtr(st.EndedAt), Via: st.Via, Mobile: st.Mobile,
				TransferredFrom: st.TransferredFrom}
		}
	}
	if v.ID == "" || v.State == "ended" {
		cdr, err := s.Store.CDR(r.Context(), id)
		switch {
		case err == nil:
			v = viewCDR(cdr)
		case !errors.Is(err, storage.ErrNotFound) || v.ID == "":
			return err
		}
	}
	if p.Role == storage.RoleManager && v.ManagerID != p.ManagerID {
		return errNotFound
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func viewCDR(c storage.CDR) callView {
	v := callView{ID: c.CallID, Direction: c.Direction, Disposition: c.Disposition, ClientID: c.ClientID,
		ManagerID: c.ManagerID, StartedAt: c.OfferedAt, AnsweredAt: c.AnsweredAt, EndedAt: c.EndedAt,
		HangupSide: c.HangupSide, Recording: c.Recording, Via: c.Via, Mobile: c.Mobile, TransferredFrom: c.TransferredFrom}
	switch {
	case c.EndedAt != nil:
		v.State = "ended"
	case c.AnsweredAt != nil:
		v.State = "connected"
	default:
		v.State = "ringing"
	}
	if c.AnsweredAt != nil && c.EndedAt != nil {
		ms := c.Duration.Milliseconds()
		v.DurationMS = &ms
	}
	return v
}

// listCalls lists CDRs, newest first; a manager sees his own calls only.
func (s *Server) listCalls(w http.ResponseWriter, r *http.Request, p Principal) error {
	f := storage.CDRFilter{ClientID: r.URL.Query().Get("client_id"), ManagerID: r.URL.Query().Get("manager_id"), Limit: 200}
	if p.Role == storage.RoleManager {
		if f.ManagerID != "" && f.ManagerID != p.ManagerID {
			return errForbidden
		}
		f.ManagerID = p.ManagerID
	}
	cdrs, err := s.Store.CDRs(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]callView, 0, len(cdrs))
	for _, c := range cdrs {
		out = append(out, viewCDR(c))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
