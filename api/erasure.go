package api

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// AudioErasure deletes the recording audio of erased clients that this node
// holds (recorder.Erasure); a failure is logged there and retried by its
// own runs.
type AudioErasure interface {
	EraseAudio(ctx context.Context) (int, error)
}

// reasonRequest is a body that only gives a reason (erasure).
type reasonRequest struct {
	Reason string `json:"reason"`
}

// erasureView is what DELETE /api/v1/clients/{id} answers: the
// pseudonymised client and what became of his data.
type erasureView struct {
	clientView
	PhonesDeleted int `json:"phones_deleted"`
	// Recordings' audio: deleted, still to be deleted (retried by the
	// recorder node that holds it), kept under legal hold.
	AudioDeleted int `json:"audio_deleted"`
	AudioPending int `json:"audio_pending"`
	AudioHeld    int `json:"audio_held"`
}

// eraseClient erases a client (a data subject's right to erasure): the rows
// in one transaction (storage.EraseClient), then his recordings' audio.
func (s *Server) eraseClient(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	reason, err := auditReason(req.Reason)
	if err != nil {
		return err
	}
	e, err := s.Store.EraseClient(r.Context(), r.PathValue("id"), p.Actor(), reason)
	if err != nil {
		return err
	}
	// His numbers are gone: every node's routing cache drops them at once.
	s.clientChanged(e.Client.ID)
	if s.AudioErasure != nil {
		// Logged and retried by the erasure itself; the answer says what
		// is still pending.
		_, _ = s.AudioErasure.EraseAudio(r.Context())
	}
	audio, err := s.Store.ClientAudioState(r.Context(), e.Client.ID)
	if err != nil {
		return err
	}
	if audio.Pending > 0 {
		s.logger.Warn("erased client's audio not all deleted yet", zap.String("client_id", e.Client.ID),
			zap.Int("pending", audio.Pending))
	}
	writeJSON(w, http.StatusOK, erasureView{clientView: viewClient(e.Client), PhonesDeleted: e.PhonesDeleted,
		AudioDeleted: audio.Deleted, AudioPending: audio.Pending, AudioHeld: audio.Held})
	return nil
}

type legalHoldRequest struct {
	Hold   *bool  `json:"hold"`
	Reason string `json:"reason"`
}

func (s *Server) setLegalHold(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req legalHoldRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Hold == nil {
		return badRequest("api.hold_required")
	}
	reason, err := auditReason(req.Reason)
	if err != nil {
		return err
	}
	c, err := s.Store.SetLegalHold(r.Context(), r.PathValue("id"), *req.Hold, p.Actor(), reason)
	if err != nil {
		return err
	}
	if !*req.Hold && c.ErasedAt != nil && s.AudioErasure != nil {
		_, _ = s.AudioErasure.EraseAudio(r.Context())
	}
	writeJSON(w, http.StatusOK, viewClient(c))
	return nil
}

type exportRequest struct {
	Reason string `json:"reason"`
	// Format is "json" (default) or "zip"; Audio adds the recordings' WAV
	// files to a ZIP.
	Format string `json:"format"`
	Audio  bool   `json:"audio"`
}

type assignmentView struct {
	ManagerID  string     `json:"manager_id"`
	Kind       string     `json:"kind"`
	ValidFrom  time.Time  `json:"valid_from"`
	ValidUntil *time.Time `json:"valid_until"`
}

// clientExportView is everything held about one client.
type clientExportView struct {
	ExportedAt  time.Time            `json:"exported_at"`
	Client      clientView           `json:"client"`
	CreatedAt   time.Time            `json:"created_at"`
	Phones      []string             `json:"phones"`
	Assignments []assignmentView     `json:"assignments"`
	Calls       []callView           `json:"calls"`
	Recordings  []recordingView      `json:"recordings"`
	Audit       []storage.AuditEntry `json:"audit"`
	// AudioFiles names the WAVs of a ZIP export (a recording on another
	// recorder node is not among them).
	AudioFiles []string `json:"audio_files,omitempty"`
}

// exportClient answers a data-subject request: everything held about one
// client, his numbers included (to an admin, with a reason, audited), as
// JSON or as a ZIP of that JSON and, if asked, his recordings' audio.
func (s *Server) exportClient(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req exportRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	reason, err := auditReason(req.Reason)
	if err != nil {
		return err
	}
	switch {
	case req.Format == "":
		req.Format = "json"
	case req.Format != "json" && req.Format != "zip":
		return badRequest("api.bad_export_format")
	}
	if req.Audio && req.Format != "zip" {
		return badRequest("api.audio_needs_zip")
	}
	if req.Audio && s.Recordings == nil {
		return errAudioUnservable
	}
	ex, err := s.Store.ExportClient(r.Context(), r.PathValue("id"), p.Actor(), reason, req.Audio)
	if err != nil {
		return err
	}
	view := clientExportView{ExportedAt: time.Now().UTC(), Client: viewClient(ex.Client), CreatedAt: ex.Client.CreatedAt,
		Phones: []string{}, Assignments: []assignmentView{}, Calls: []callView{}, Recordings: []recordingView{}, Audit: ex.Audit}
	for _, sp := range ex.Phones {
		n, err := s.Keys.OpenPhone(sp)
		if err != nil {
			return err
		}
		view.Phones = append(view.Phones, n)
	}
	for _, a := range ex.Assignments {
		view.Assignments = append(view.Assignments, assignmentView(a))
	}
	for _, c := range ex.Calls {
		view.Calls = append(view.Calls, viewCDR(c))
	}
	for _, rec := range ex.Recordings {
		view.Recordings = append(view.Recordings, viewRecording(rec))
	}
	name := "client-" + ex.Client.ID
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.`+req.Format+`"`)
	if req.Format == "json" {
		writeJSON(w, http.StatusOK, view)
		return nil
	}
	return s.writeExportZip(w, name, view, ex.Recordings, req.Audio)
}

// writeExportZip writes the export as a ZIP: with audio, recordings/<id>.wav
// for each recording whose audio this node holds, then <name>.json, whose
// audio_files lists the WAVs that made it in.
func (s *Server) writeExportZip(w http.ResponseWriter, name string, view clientExportView, recs []storage.Recording, audio bool) error {
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	z := zip.NewWriter(w)
	view.AudioFiles = []string{}
	for _, rec := range recs {
		if !audio || !viewRecording(rec).AudioAvailable {
			continue
		}
		file := "recordings/" + rec.ID + ".wav"
		err := s.zipAudio(z, file, rec)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // on another recorder node, or gone since
		case err != nil:
			// Too late for an error status: the ZIP stays unfinished, so
			// it does not open.
			s.logger.Error("api: export audio", zap.String("recording_id", rec.ID), zap.Error(err))
			return nil
		}
		view.AudioFiles = append(view.AudioFiles, file)
	}
	f, err := z.Create(name + ".json")
	if err != nil {
		return nil
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(view); err != nil {
		return nil
	}
	if err := z.Close(); err != nil {
		s.logger.Error("api: export zip", zap.Error(err))
	}
	return nil
}

func (s *Server) zipAudio(z *zip.Writer, file string, rec storage.Recording) error {
	a, err := s.Recordings.OpenAudio(rec.BlobKey)
	if err != nil {
		return err
	}
	defer a.Close()
	f, err := z.CreateHeader(&zip.FileHeader{Name: file, Method: zip.Store, Modified: rec.StartedAt})
	if err != nil {
		return err
	}
	_, err = io.Copy(f, a)
	return err
}
