package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// clientView is a client as the API shows him: never a phone number.
type clientView struct {
	ID         string   `json:"id"`
	Code       string   `json:"code"`
	Name       string   `json:"name"`
	Segment    string   `json:"segment"`
	ManagerID  string   `json:"manager_id"`
	PartnerIDs []string `json:"partner_ids"`
	// LegalHold keeps the client's recordings' audio through erasure and
	// retention.
	LegalHold bool `json:"legal_hold"`
	// ErasedAt is set once the client was erased: his name is then a
	// pseudonym and he has no numbers.
	ErasedAt *time.Time `json:"erased_at,omitempty"`
}

func viewClient(c storage.Client) clientView {
	partners := c.PartnerIDs
	if partners == nil {
		partners = []string{}
	}
	return clientView{ID: c.ID, Code: c.Code, Name: c.Name, Segment: c.Segment, ManagerID: c.ManagerID, PartnerIDs: partners,
		LegalHold: c.LegalHold, ErasedAt: c.ErasedAt}
}

type createClientRequest struct {
	Name       string   `json:"name"`
	Phones     []string `json:"phones"`
	Segment    string   `json:"segment"`
	ManagerID  string   `json:"manager_id"`
	PartnerIDs []string `json:"partner_ids"`
}

const maxPhones = 10

func (s *Server) createClient(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req createClientRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	req.Name = strings.TrimSpace(req.Name)
	switch {
	case req.Name == "":
		return badRequest("api.name_required")
	case len(req.Phones) == 0:
		return badRequest("api.phones_required")
	case len(req.Phones) > maxPhones:
		return badRequest("api.too_many_phones")
	case req.ManagerID == "":
		return badRequest("api.manager_id_required")
	}
	segment, err := segmentName(req.Segment)
	if err != nil {
		return err
	}
	phones, err := s.sealPhones(req.Phones)
	if err != nil {
		return err
	}
	c, err := s.Store.CreateClient(r.Context(), storage.NewClient{
		Name: req.Name, Segment: segment, Phones: phones,
		ManagerID: req.ManagerID, PartnerIDs: req.PartnerIDs,
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err },
	}, p.Actor())
	if err != nil {
		return err
	}
	s.clientChanged(c.ID)
	writeJSON(w, http.StatusCreated, viewClient(c))
	return nil
}

// sealPhones normalises, de-duplicates and encrypts numbers. Every number is
// checked before anything is written.
func (s *Server) sealPhones(raw []string) ([]masking.SealedPhone, error) {
	seen := map[string]bool{}
	var out []masking.SealedPhone
	for _, r := range raw {
		e164, err := s.Numbers.Normalize(r)
		if err != nil {
			return nil, err
		}
		if seen[e164] {
			continue
		}
		seen[e164] = true
		p, err := s.Keys.Seal(e164)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ClientByNumber finds the client who owns a number written any way the
// normaliser accepts, through the blind index.
func (s *Server) ClientByNumber(r *http.Request, raw string) (storage.Client, error) {
	e164, err := s.Numbers.Normalize(raw)
	if err != nil {
		return storage.Client{}, err
	}
	return s.Store.ClientByBlindIndex(r.Context(), s.Keys.IndexKeyID(), s.Keys.BlindIndex(e164))
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request, p Principal) error {
	scope := ""
	if p.Role == storage.RoleManager {
		scope = p.ManagerID
	}
	cs, err := s.Store.Clients(r.Context(), scope)
	if err != nil {
		return err
	}
	out := make([]clientView, 0, len(cs))
	for _, c := range cs {
		out = append(out, viewClient(c))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getClient(w http.ResponseWriter, r *http.Request, p Principal) error {
	c, err := s.Store.Client(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	// Another manager's client is "not found": a manager learns nothing of
	// clients he is not assigned to, not even that they exist.
	if p.Role == storage.RoleManager && !(masking.Assignment{Primary: c.ManagerID, Partners: c.PartnerIDs}).MayReach(p.ManagerID) {
		return errNotFound
	}
	// Every card opened is audited: the alerts' access_burst rule counts them.
	if err := s.Store.Audit(r.Context(), storage.AuditEntry{Actor: p.Actor(), Action: "client.view", Object: "client:" + c.ID}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewClient(c))
	return nil
}

type assignmentRequest struct {
	ManagerID  string   `json:"manager_id"`
	PartnerIDs []string `json:"partner_ids"`
}

func (s *Server) reassign(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req assignmentRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ManagerID == "" {
		return badRequest("api.manager_id_required")
	}
	c, err := s.Store.Reassign(r.Context(), r.PathValue("id"), req.ManagerID, req.PartnerIDs, p.Actor())
	if err != nil {
		return err
	}
	s.clientChanged(c.ID)
	writeJSON(w, http.StatusOK, viewClient(c))
	return nil
}

type revealRequest struct {
	Reason string `json:"reason"`
}

// decodeReason reads a {"reason"} body and checks the reason (auditReason).
func decodeReason(r *http.Request) (string, error) {
	var req revealRequest
	if err := decode(r, &req); err != nil {
		return "", err
	}
	return auditReason(req.Reason)
}

func (s *Server) reveal(w http.ResponseWriter, r *http.Request, p Principal) error {
	reason, err := decodeReason(r)
	if err != nil {
		return err
	}
	sealed, err := s.Store.RevealPhones(r.Context(), r.PathValue("id"), p.Actor(), reason)
	if err != nil {
		return err
	}
	phones := make([]string, 0, len(sealed))
	for _, sp := range sealed {
		n, err := s.Keys.OpenPhone(sp)
		if err != nil {
			return err
		}
		phones = append(phones, n)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "phones": phones})
	return nil
}
