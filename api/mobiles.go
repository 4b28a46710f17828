package api

import (
	"net/http"
	"slices"

	"github.com/maskpbx/maskpbx/storage"
)

// A manager's corporate mobile (admin only). Like a client's number it is
// stored sealed and blind-indexed; no answer but an audited reveal carries
// it.

type setMobileRequest struct {
	Number string `json:"number"`
	Policy string `json:"policy"`
	AfterS int    `json:"after_s"`
}

// maxMobileAfter is the longest "after" delay, in seconds.
const maxMobileAfter = 600

type mobileView struct {
	ManagerID string `json:"manager_id"`
	Policy    string `json:"policy"`
	AfterS    int    `json:"after_s"`
}

func (s *Server) setMobile(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req setMobileRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Policy == "" {
		req.Policy = storage.MobileOff
	}
	switch {
	case req.Number == "":
		return badRequest("api.number_required")
	case !slices.Contains([]string{storage.MobileOff, storage.MobileTogether, storage.MobileAfter, storage.MobileOnly}, req.Policy):
		return badRequest("api.bad_mobile_policy")
	case req.Policy == storage.MobileAfter && (req.AfterS < 1 || req.AfterS > maxMobileAfter):
		return badRequest("api.bad_after_s")
	case req.Policy != storage.MobileAfter && req.AfterS != 0:
		return badRequest("api.after_s_without_after")
	}
	e164, err := s.Numbers.Normalize(req.Number)
	if err != nil {
		return err
	}
	sealed, err := s.Keys.Seal(e164)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := s.Store.SetMobile(r.Context(), storage.Mobile{ManagerID: id, Phone: sealed, Policy: req.Policy, AfterS: req.AfterS}, p.Actor()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, mobileView{ManagerID: id, Policy: req.Policy, AfterS: req.AfterS})
	return nil
}

func (s *Server) removeMobile(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := s.Store.RemoveMobile(r.Context(), r.PathValue("id"), p.Actor()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) revealMobile(w http.ResponseWriter, r *http.Request, p Principal) error {
	reason, err := decodeReason(r)
	if err != nil {
		return err
	}
	m, err := s.Store.RevealMobile(r.Context(), r.PathValue("id"), p.Actor(), reason)
	if err != nil {
		return err
	}
	number, err := s.Keys.OpenPhone(m.Phone)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"manager_id": m.ManagerID, "number": number, "policy": m.Policy, "after_s": m.AfterS})
	return nil
}
