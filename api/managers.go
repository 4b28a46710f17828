package api

import (
	"net/http"
	"regexp"
	"strings"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/ha1"
	"github.com/maskpbx/maskpbx/storage"
)

var sipUsernameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

const minSIPPassword = 8

type managerView struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	SIPUsername string `json:"sip_username"`
	Team        string `json:"team"`
	Role        string `json:"role"`
	Status      string `json:"status"`
	Registered  *bool  `json:"registered,omitempty"`
	APIToken    string `json:"api_token,omitempty"`
}

func viewManager(m storage.Manager) managerView {
	return managerView{ID: m.ID, Name: m.Name, SIPUsername: m.SIPUsername, Team: m.Team, Role: m.Role, Status: m.Status}
}

type createManagerRequest struct {
	Name        string `json:"name"`
	SIPUsername string `json:"sip_username"`
	SIPPassword string `json:"sip_password"`
	Team        string `json:"team"`
	Role        string `json:"role"`
}

func (s *Server) createManager(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req createManagerRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	req.Name = strings.TrimSpace(req.Name)
	switch {
	case req.Name == "":
		return badRequest("api.name_required")
	case !sipUsernameRE.MatchString(req.SIPUsername):
		return badRequest("api.bad_sip_username")
	case masking.ValidClientCode(req.SIPUsername):
		// A username that looks like a client code would be ambiguous when dialled.
		return badRequest("api.sip_username_digits")
	case len(req.SIPPassword) < minSIPPassword:
		return badRequest("api.sip_password_short")
	}
	if req.Role == "" {
		req.Role = storage.RoleManager
	}
	if !hasRole(req.Role, []string{storage.RoleManager, storage.RoleSupervisor, storage.RoleAdmin}) {
		return badRequest("api.bad_role")
	}
	token, err := NewToken()
	if err != nil {
		return err
	}
	m, err := s.Store.CreateManager(r.Context(), storage.NewManager{
		Name:        req.Name,
		SIPUsername: req.SIPUsername,
		HA1MD5:      ha1.MD5(req.SIPUsername, s.SIPDomain, req.SIPPassword),
		HA1SHA256:   ha1.SHA256(req.SIPUsername, s.SIPDomain, req.SIPPassword),
		Team:        strings.TrimSpace(req.Team),
		Role:        req.Role,
		TokenHash:   HashToken(token),
	}, p.Actor())
	if err != nil {
		return err
	}
	s.managerChanged(m.ID, m.Status)
	v := viewManager(m)
	v.APIToken = token
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *Server) listManagers(w http.ResponseWriter, r *http.Request, _ Principal) error {
	ms, err := s.Store.Managers(r.Context())
	if err != nil {
		return err
	}
	out := make([]managerView, 0, len(ms))
	for _, m := range ms {
		v := viewManager(m)
		registered := false
		if m.Status == storage.StatusActive && s.Registrations != nil {
			registered, err = s.Registrations.Registered(r.Context(), m.ID)
			if err != nil {
				return err
			}
		}
		v.Registered = &registered
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type dismissRequest struct {
	SuccessorID string `json:"successor_id"`
}

func (s *Server) dismissManager(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req dismissRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.SuccessorID == "" {
		return badRequest("api.successor_required")
	}
	id := r.PathValue("id")
	d, err := s.Store.DismissManager(r.Context(), id, req.SuccessorID, p.Actor())
	if err != nil {
		return err
	}
	// Every node's routing cache cuts him off at once, and reads his
	// clients' new assignment.
	s.managerChanged(id, storage.StatusDismissed)
	// The database already refuses his tokens and SIP credentials; now drop
	// his live registrations so nothing rings him any more.
	if s.Registrations != nil {
		if err := s.Registrations.RemoveManager(r.Context(), id); err != nil {
			s.logger.Error("api: dismissal: removing registrations failed", zap.String("manager_id", id), zap.Error(err))
			return err
		}
	}
	s.logger.Info("manager dismissed", zap.String("manager_id", id), zap.String("successor_id", req.SuccessorID),
		zap.Int("moved_clients", d.MovedClients))
	writeJSON(w, http.StatusOK, map[string]any{
		"id": id, "status": storage.StatusDismissed, "successor_id": req.SuccessorID, "moved_clients": d.MovedClients,
	})
	return nil
}
