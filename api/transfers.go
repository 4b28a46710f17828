package api

import (
	"net/http"

	"github.com/maskpbx/maskpbx/storage"
)

type transferCallRequest struct {
	ToManagerID string `json:"to_manager_id"`
}

type transferCallView struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	ToManagerID string `json:"to_manager_id"`
}

// transferCall hands a connected call's client to a colleague (a blind
// transfer from the console): POST /api/v1/calls/{id}/transfer
// {to_manager_id}. A manager transfers only a call he is on; supervisors
// and admins any call on this node. 202 once the colleague is being rung;
// the call's parts (GET /api/v1/calls?client_id=) show how it went.
func (s *Server) transferCall(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req transferCallRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ToManagerID == "" {
		return badRequest("api.to_manager_required")
	}
	if s.Dialer == nil {
		return errNoDialerHere
	}
	id := r.PathValue("id")
	st, ok := s.Dialer.CallStatus(id)
	if !ok || p.Role == storage.RoleManager && st.ManagerID != p.ManagerID {
		return errNotFound
	}
	if err := s.Dialer.TransferCall(r.Context(), id, req.ToManagerID, p.Actor()); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, transferCallView{ID: id, State: "transferring", ToManagerID: req.ToManagerID})
	return nil
}
