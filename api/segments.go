package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maskpbx/maskpbx/storage"
)

// Segments with rules and rotations (issue 13, items 1 and 2).

// maxSegmentName is the longest segment name, in characters.
const maxSegmentName = 100

// ErrOutsideHours means a manager tried to start a call to a client of a
// segment outside its working hours.
var ErrOutsideHours = errors.New("api: outside the segment's working hours")

// segmentErrors are the errors of segments and rotations as the API
// answers them.
var segmentErrors = []struct {
	err      error
	status   int
	code, id string
}{
	{storage.ErrSegmentNotPermitted, http.StatusConflict, "segment_not_permitted", "segments.err_not_permitted"},
	{storage.ErrSegmentInUse, http.StatusConflict, "segment_in_use", "segments.err_in_use"},
	{storage.ErrDuplicateSegment, http.StatusConflict, "duplicate_segment", "segments.err_duplicate"},
	{storage.ErrSegmentHolders, http.StatusConflict, "segment_holders", "segments.err_holders"},
	{storage.ErrNotSupervisor, http.StatusUnprocessableEntity, "not_a_supervisor", "segments.err_not_supervisor"},
	{storage.ErrUnknownSegment, http.StatusUnprocessableEntity, "unknown_segment", "segments.err_unknown"},
	{ErrOutsideHours, http.StatusConflict, "outside_hours", "segments.err_outside_hours"},
}

// segmentAPIError maps the errors of segments and rotations (asAPIError
// asks it first); nil for any other error.
func segmentAPIError(err error) *Error {
	for _, e := range segmentErrors {
		if errors.Is(err, e.err) {
			return newError(e.status, e.code, e.id)
		}
	}
	return nil
}

// HoursView is a segment's working hours in the API: days of the week (0 = Sunday)
// and the time of day from-to ("09:00", "18:00"; "24:00" is midnight at
// the end of the day) in the company's time zone. No days: no limit.
type HoursView struct {
	Days []int  `json:"days"`
	From string `json:"from"`
	To   string `json:"to"`
}

// SegmentRules is a segment's name and rules as the API takes them (POST,
// PUT) and shows them (in SegmentView).
type SegmentRules struct {
	Name                 string     `json:"name"`
	Restricted           bool       `json:"restricted"`
	AllowedManagerIDs    []string   `json:"allowed_manager_ids"`
	SupervisorID         *string    `json:"supervisor_id"`
	OverflowToSupervisor bool       `json:"overflow_to_supervisor"`
	AlertMissed          bool       `json:"alert_missed"`
	Hours                *HoursView `json:"hours"`
}

// SegmentView is a segment as the API shows it (the console reads it too).
type SegmentView struct {
	ID string `json:"id"`
	SegmentRules
	Clients   int       `json:"clients"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d/time.Minute)%60)
}

func viewSegment(sg storage.Segment, clients int) SegmentView {
	v := SegmentView{ID: sg.ID, SegmentRules: SegmentRules{Name: sg.Name, Restricted: sg.Restricted,
		AllowedManagerIDs: sg.AllowedManagers, OverflowToSupervisor: sg.OverflowToSupervisor, AlertMissed: sg.AlertMissed,
		Hours: &HoursView{Days: sg.Hours.Days, From: clock(sg.Hours.From), To: clock(sg.Hours.To)}},
		Clients: clients, CreatedAt: sg.CreatedAt, UpdatedAt: sg.UpdatedAt}
	v.AllowedManagerIDs = nonNilIDs(v.AllowedManagerIDs)
	if v.Hours.Days == nil {
		v.Hours.Days = []int{}
	}
	if sg.SupervisorID != "" {
		v.SupervisorID = &sg.SupervisorID
	}
	return v
}

// segmentName checks a segment's name as a client or a segment gives it.
func segmentName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if utf8.RuneCountInString(name) > maxSegmentName {
		return "", badRequest("segments.err_name_too_long", "Max", maxSegmentName)
	}
	return name, nil
}

// parseClock reads "HH:MM" (00:00 to 24:00).
func parseClock(s string) (time.Duration, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	d := time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute
	return d, err1 == nil && err2 == nil && hh >= 0 && mm >= 0 && mm < 60 && d <= 24*time.Hour
}

// decodeSegment reads a segment request into the name and rules storage
// writes.
func decodeSegment(r *http.Request) (storage.Segment, error) {
	var req SegmentRules
	if err := decode(r, &req); err != nil {
		return storage.Segment{}, err
	}
	name, err := segmentName(req.Name)
	if err != nil {
		return storage.Segment{}, err
	}
	if name == "" {
		return storage.Segment{}, badRequest("api.name_required")
	}
	sg := storage.Segment{Name: name, Restricted: req.Restricted, AllowedManagers: req.AllowedManagerIDs,
		OverflowToSupervisor: req.OverflowToSupervisor, AlertMissed: req.AlertMissed}
	if req.SupervisorID != nil {
		sg.SupervisorID = *req.SupervisorID
	}
	if sg.OverflowToSupervisor && sg.SupervisorID == "" {
		return sg, badRequest("segments.err_overflow_needs_supervisor")
	}
	if req.Hours != nil && len(req.Hours.Days) > 0 {
		from, ok1 := parseClock(req.Hours.From)
		to, ok2 := parseClock(req.Hours.To)
		sg.Hours = storage.WorkingHours{Days: req.Hours.Days, From: from, To: to}
		if !ok1 || !ok2 || !sg.Hours.Valid() {
			return sg, badRequest("segments.err_bad_hours")
		}
	}
	return sg, nil
}

func (s *Server) listSegments(w http.ResponseWriter, r *http.Request, _ Principal) error {
	segs, err := s.Store.Segments(r.Context())
	if err != nil {
		return err
	}
	counts, err := s.Store.SegmentClientCounts(r.Context())
	if err != nil {
		return err
	}
	out := make([]SegmentView, 0, len(segs))
	for _, sg := range segs {
		out = append(out, viewSegment(sg, counts[sg.Name]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createSegment(w http.ResponseWriter, r *http.Request, p Principal) error {
	rules, err := decodeSegment(r)
	if err != nil {
		return err
	}
	sg, err := s.Store.CreateSegment(r.Context(), rules, p.Actor())
	if err != nil {
		return err
	}
	s.segmentChanged(sg.ID)
	writeJSON(w, http.StatusCreated, viewSegment(sg, 0))
	return nil
}

func (s *Server) updateSegment(w http.ResponseWriter, r *http.Request, p Principal) error {
	rules, err := decodeSegment(r)
	if err != nil {
		return err
	}
	sg, err := s.Store.UpdateSegment(r.Context(), r.PathValue("id"), rules, p.Actor())
	if err != nil {
		return err
	}
	s.segmentChanged(sg.ID)
	counts, err := s.Store.SegmentClientCounts(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewSegment(sg, counts[sg.Name]))
	return nil
}

func (s *Server) deleteSegment(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := s.Store.DeleteSegment(r.Context(), r.PathValue("id"), p.Actor()); err != nil {
		return err
	}
	s.segmentChanged(r.PathValue("id"))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) segmentChanged(id string) {
	if s.Changes != nil {
		s.Changes.SegmentChanged(id)
	}
}

type rotationRequest struct {
	ManagerIDs []string `json:"manager_ids"`
	Segment    string   `json:"segment"`
	Team       string   `json:"team"`
	DryRun     bool     `json:"dry_run"`
}

// MoveView is one client's move in a rotation.
type MoveView struct {
	ClientID string `json:"client_id"`
	From     string `json:"from"`
	To       string `json:"to"`
}

// RotationView is a rotation planned or carried out, as the API shows it.
type RotationView struct {
	ID         string     `json:"id,omitempty"`
	DryRun     bool       `json:"dry_run"`
	Actor      string     `json:"actor,omitempty"`
	Segment    string     `json:"segment"`
	Team       string     `json:"team"`
	ManagerIDs []string   `json:"manager_ids"`
	Moves      []MoveView `json:"moves"`
	Skipped    []string   `json:"skipped"`
	CreatedAt  time.Time  `json:"created_at"`
}

func viewRotation(rot storage.Rotation) RotationView {
	v := RotationView{ID: rot.ID, Actor: rot.Actor, Segment: rot.Segment, Team: rot.Team,
		ManagerIDs: rot.ManagerIDs, Moves: make([]MoveView, 0, len(rot.Moves)), Skipped: rot.Skipped, CreatedAt: rot.CreatedAt}
	for _, m := range rot.Moves {
		v.Moves = append(v.Moves, MoveView(m))
	}
	v.ManagerIDs, v.Skipped = nonNilIDs(v.ManagerIDs), nonNilIDs(v.Skipped)
	return v
}

// plan checks which clients and managers a rotation names.
func (req rotationRequest) plan() (storage.RotationPlan, error) {
	plan := storage.RotationPlan{ManagerIDs: req.ManagerIDs, Segment: strings.TrimSpace(req.Segment),
		Team: strings.TrimSpace(req.Team), DryRun: req.DryRun}
	if len(plan.ManagerIDs) == 0 && plan.Segment == "" && plan.Team == "" {
		return plan, badRequest("rotation.err_scope_required")
	}
	for _, id := range plan.ManagerIDs {
		if !uuidParam.MatchString(id) {
			return plan, badRequest("api.must_be_uuid", "Name", "manager_ids")
		}
	}
	return plan, nil
}

func (s *Server) rotate(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req rotationRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	plan, err := req.plan()
	if err != nil {
		return err
	}
	rot, err := s.Store.Rotate(r.Context(), plan, p.Actor())
	// Moves carried out before an error stand: routing must follow them.
	for _, m := range rot.Moves {
		if !req.DryRun {
			s.clientChanged(m.ClientID)
		}
	}
	if err != nil {
		return err
	}
	v := viewRotation(rot)
	v.DryRun = req.DryRun
	writeJSON(w, http.StatusOK, v)
	return nil
}

// queryLimit reads the request's ?limit= (1-1000), def if it has none.
func queryLimit(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, badRequest("api.bad_limit")
	}
	return n, nil
}

func (s *Server) listRotations(w http.ResponseWriter, r *http.Request, _ Principal) error {
	limit, err := queryLimit(r, 50)
	if err != nil {
		return err
	}
	rots, err := s.Store.Rotations(r.Context(), limit)
	if err != nil {
		return err
	}
	out := make([]RotationView, 0, len(rots))
	for _, rot := range rots {
		out = append(out, viewRotation(rot))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// maxEveryDays is the longest period of a repeating rotation.
const maxEveryDays = 365

type scheduleRequest struct {
	ManagerIDs []string `json:"manager_ids"`
	Segment    string   `json:"segment"`
	Team       string   `json:"team"`
	EveryDays  int      `json:"every_days"`
	// FirstRunAt is when the first run is due; default every_days from now.
	FirstRunAt *time.Time `json:"first_run_at"`
}

// ScheduleView is a repeating rotation as the API shows it.
type ScheduleView struct {
	ID             string    `json:"id"`
	ManagerIDs     []string  `json:"manager_ids"`
	Segment        string    `json:"segment"`
	Team           string    `json:"team"`
	EveryDays      int       `json:"every_days"`
	NextRunAt      time.Time `json:"next_run_at"`
	CreatedBy      string    `json:"created_by"`
	CreatedAt      time.Time `json:"created_at"`
	LastRotationID string    `json:"last_rotation_id,omitempty"`
}

func viewSchedule(sch storage.RotationSchedule) ScheduleView {
	return ScheduleView{ID: sch.ID, ManagerIDs: nonNilIDs(sch.Plan.ManagerIDs), Segment: sch.Plan.Segment, Team: sch.Plan.Team,
		EveryDays: sch.EveryDays, NextRunAt: sch.NextRunAt, CreatedBy: sch.CreatedBy, CreatedAt: sch.CreatedAt,
		LastRotationID: sch.LastRotationID}
}

func nonNilIDs(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request, _ Principal) error {
	all, err := s.Store.RotationSchedules(r.Context())
	if err != nil {
		return err
	}
	out := make([]ScheduleView, 0, len(all))
	for _, sch := range all {
		out = append(out, viewSchedule(sch))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createSchedule(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req scheduleRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	plan, err := rotationRequest{ManagerIDs: req.ManagerIDs, Segment: req.Segment, Team: req.Team}.plan()
	if err != nil {
		return err
	}
	if req.EveryDays < 1 || req.EveryDays > maxEveryDays {
		return badRequest("rotation.err_every_days", "Max", maxEveryDays)
	}
	first := time.Now().AddDate(0, 0, req.EveryDays)
	if req.FirstRunAt != nil {
		first = *req.FirstRunAt
	}
	sch, err := s.Store.CreateRotationSchedule(r.Context(), storage.RotationSchedule{Plan: plan, EveryDays: req.EveryDays,
		NextRunAt: first}, p.Actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewSchedule(sch))
	return nil
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := s.Store.DeleteRotationSchedule(r.Context(), r.PathValue("id"), p.Actor()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
