package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/maskpbx/maskpbx/storage"
)

// Monitors is what the API needs of the PBX for live listen, whisper and
// barge: POST /api/v1/calls/{id}/monitor.
type Monitors interface {
	// Monitor rings the supervisor's phones and joins the one that answers
	// to the call's media; for a supervisor already on the call it changes
	// the mode. It returns "ringing" or "active".
	Monitor(ctx context.Context, m MonitorCall) (state string, err error)
}

// MonitorCall is a supervisor's request to listen in.
type MonitorCall struct {
	CallID, SupervisorID string
	// Actor names him in the audit rows the PBX writes.
	Actor string
	Mode  string // listen, whisper or barge
}

// Monitors errors, mapped to HTTP statuses by asAPIError.
var (
	// ErrCallNotLive means no connected call with that id runs on this node.
	ErrCallNotLive = errors.New("api: no live call with that id")
	// ErrMonitored means another supervisor is on the call.
	ErrMonitored = errors.New("api: the call is monitored by someone else")
	// ErrBadMonitorMode means a mode other than listen, whisper or barge.
	ErrBadMonitorMode = errors.New("api: bad monitor mode")
)

var (
	errCallNotLive  = newError(http.StatusNotFound, "not_found", "monitor.not_live")
	errMonitored    = newError(http.StatusConflict, "call_monitored", "monitor.busy")
	errBadMode      = badRequest("monitor.bad_mode")
	errNoMonitorReg = newError(http.StatusConflict, "no_registered_phone", "monitor.not_registered")
)

// monitorAPIError maps the Monitors errors; nil for any other.
func monitorAPIError(err error) *Error {
	switch {
	case errors.Is(err, ErrCallNotLive):
		return errCallNotLive
	case errors.Is(err, ErrMonitored):
		return errMonitored
	case errors.Is(err, ErrBadMonitorMode):
		return errBadMode
	case errors.Is(err, ErrNotRegistered):
		return errNoMonitorReg
	}
	return nil
}

type monitorRequest struct {
	Mode string `json:"mode"`
}

type monitorView struct {
	CallID string `json:"call_id"`
	Mode   string `json:"mode"`
	State  string `json:"state"`
}

// monitorCall is POST /api/v1/calls/{id}/monitor {mode}: a supervisor's
// (or admin's) phone rings and then hears the call; whisper and barge let
// him speak. Audited here (the request) and by the PBX (start, mode
// changes, end with the duration).
func (s *Server) monitorCall(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req monitorRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	switch req.Mode {
	case "listen", "whisper", "barge":
	default:
		return errBadMode
	}
	if s.Monitors == nil {
		return errNoDialerHere
	}
	id := r.PathValue("id")
	if !uuidParam.MatchString(id) {
		return errCallNotLive
	}
	if p.ManagerID == "" {
		// The bootstrap token is nobody's: no phone to ring.
		return errNoMonitorReg
	}
	state, err := s.Monitors.Monitor(r.Context(), MonitorCall{CallID: id, SupervisorID: p.ManagerID, Actor: p.Actor(), Mode: req.Mode})
	if e := monitorAPIError(err); e != nil {
		return e
	}
	if err != nil {
		return err
	}
	if err := s.Store.Audit(r.Context(), storage.AuditEntry{Actor: p.Actor(), Action: "call.monitor_request",
		Object: "call:" + id, Reason: "mode=" + req.Mode}); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, monitorView{CallID: id, Mode: req.Mode, State: state})
	return nil
}
