package api

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// RecordingAudio opens the audio of recordings by their blob key
// (recorder.FSBlobs is one). A missing blob wraps fs.ErrNotExist.
type RecordingAudio interface {
	OpenAudio(key string) (io.ReadSeekCloser, error)
}

// recordingView is a recording as the API shows it: ids, times, sizes and
// the DTMF digits pressed; never where its file lives.
type recordingView struct {
	ID             string              `json:"id"`
	CallID         string              `json:"call_id"`
	ClientID       string              `json:"client_id,omitempty"`
	ManagerID      string              `json:"manager_id,omitempty"`
	Direction      string              `json:"direction,omitempty"`
	Source         string              `json:"source"`
	Status         string              `json:"status"`
	StartedAt      time.Time           `json:"started_at"`
	DurationMS     int64               `json:"duration_ms"`
	SizeBytes      int64               `json:"size_bytes"`
	SHA256         string              `json:"sha256,omitempty"`
	Codec          string              `json:"codec"`
	DTMF           []storage.DTMFEvent `json:"dtmf"`
	AudioAvailable bool                `json:"audio_available"`
	AudioDeletedAt *time.Time          `json:"audio_deleted_at,omitempty"`
}

func viewRecording(r storage.Recording) recordingView {
	dtmf := r.DTMF
	if dtmf == nil {
		dtmf = []storage.DTMFEvent{}
	}
	return recordingView{
		ID: r.ID, CallID: r.CallID, ClientID: r.ClientID, ManagerID: r.ManagerID, Direction: r.Direction,
		Source: r.Source, Status: r.Status, StartedAt: r.StartedAt, DurationMS: r.Duration.Milliseconds(),
		SizeBytes: r.SizeBytes, SHA256: r.SHA256, Codec: r.Codec, DTMF: dtmf, AudioDeletedAt: r.AudioDeletedAt,
		AudioAvailable: r.AudioDeletedAt == nil && (r.Status == storage.RecordingComplete || r.Status == storage.RecordingPartial),
	}
}

var uuidParam = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var (
	errAudioGone       = newError(http.StatusGone, "audio_deleted", "api.audio_deleted")
	errAudioInProgress = newError(http.StatusConflict, "recording_in_progress", "api.recording_in_progress")
	errAudioUnservable = newError(http.StatusServiceUnavailable, "audio_unavailable", "api.audio_unavailable")
)

// recordingError maps the storage errors of recordings; the rest goes
// through asAPIError.
func recordingError(err error) error {
	switch {
	case errors.Is(err, storage.ErrAudioDeleted), errors.Is(err, fs.ErrNotExist):
		return errAudioGone
	case errors.Is(err, storage.ErrRecordingInProgress):
		return errAudioInProgress
	}
	return err
}

func (s *Server) listRecordings(w http.ResponseWriter, r *http.Request, _ Principal) error {
	q := r.URL.Query()
	f := storage.RecordingFilter{ClientID: q.Get("client_id"), ManagerID: q.Get("manager_id"), CallID: q.Get("call_id")}
	for name, v := range map[string]string{"client_id": f.ClientID, "manager_id": f.ManagerID, "call_id": f.CallID} {
		if v != "" && !uuidParam.MatchString(v) {
			return badRequest("api.must_be_uuid", "Name", name)
		}
	}
	var err error
	if f.Limit, err = queryLimit(r, 0); err != nil {
		return err
	}
	recs, err := s.Store.Recordings(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]recordingView, 0, len(recs))
	for _, rec := range recs {
		out = append(out, viewRecording(rec))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getRecording(w http.ResponseWriter, r *http.Request, _ Principal) error {
	rec, err := s.Store.Recording(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewRecording(rec))
	return nil
}

// listenRequest is the body of POST /api/v1/recordings/{id}/listen.
type listenRequest struct {
	Reason string `json:"reason"`
}

// listenRecording records why someone is about to listen to a recording:
// the reason is audited (recording.listen) from this POST, never from the
// audio link, so a cross-site link can't put words in a listener's mouth.
// It answers with the URL to stream the audio from.
func (s *Server) listenRecording(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req listenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	reason, err := auditReason(req.Reason)
	if err != nil {
		return err
	}
	rec, err := s.Store.Recording(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := s.Store.Audit(r.Context(), storage.AuditEntry{Actor: p.Actor(), Action: "recording.listen",
		Object: "recording:" + rec.ID, Reason: reason}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": rec.ID, "audio_url": "/api/v1/recordings/" + rec.ID + "/audio"})
	return nil
}

// rangeRE is what a byte range may look like before it is audited.
var rangeRE = regexp.MustCompile(`^bytes=[0-9, -]+$`)

// errReasonInLink refuses a reason in the audio link: a GET can be made by
// any page the listener visits.
var errReasonInLink = badRequest("api.reason_in_link")

// recordingAudio serves a recording's WAV, with Range requests so a player
// can seek. Every access (each range a player asks for) writes an audit
// row first: no audit row, no audio. The row records the range asked for,
// never text from the request's URL.
func (s *Server) recordingAudio(w http.ResponseWriter, r *http.Request, p Principal) error {
	if s.Recordings == nil {
		return errAudioUnservable
	}
	if r.URL.Query().Has("reason") {
		return errReasonInLink
	}
	reason := ""
	if rg := r.Header.Get("Range"); rg != "" {
		if len(rg) > 100 || !rangeRE.MatchString(rg) {
			return newError(http.StatusRequestedRangeNotSatisfiable, "bad_range", "api.bad_range")
		}
		reason = "[" + rg + "]"
	}
	rec, err := s.Store.OpenRecordingAudio(r.Context(), r.PathValue("id"), p.Actor(), reason)
	if err != nil {
		return recordingError(err)
	}
	f, err := s.Recordings.OpenAudio(rec.BlobKey)
	if err != nil {
		return recordingError(err)
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "audio/wav")
	h.Set("Cache-Control", "private, no-store")
	h.Set("Content-Disposition", `inline; filename="`+rec.ID+`.wav"`)
	if rec.SHA256 != "" {
		h.Set("ETag", `"`+rec.SHA256+`"`) // lets a player resume with If-Range
	}
	http.ServeContent(&jsonErrors{ResponseWriter: w}, r, "", rec.UpdatedAt, f)
	return nil
}

// jsonErrors makes the errors http.ServeContent writes (416 for a range
// outside the file, ...) JSON like every other API error.
type jsonErrors struct {
	http.ResponseWriter
	failed bool
}

func (j *jsonErrors) WriteHeader(code int) {
	if code < 400 {
		j.ResponseWriter.WriteHeader(code)
		return
	}
	j.failed = true
	var body errorBody
	body.Error.Code, body.Error.Message = "bad_range", "the requested range is not satisfiable"
	if code != http.StatusRequestedRangeNotSatisfiable {
		body.Error.Code, body.Error.Message = "internal", "internal error"
	}
	j.Header().Del("Content-Range")
	j.Header().Set("Content-Type", "application/json")
	j.Header().Del("X-Content-Type-Options")
	j.ResponseWriter.WriteHeader(code)
	_ = json.NewEncoder(j.ResponseWriter).Encode(body)
}

func (j *jsonErrors) Write(b []byte) (int, error) {
	if j.failed {
		return len(b), nil // ServeContent's plain-text message; ours is written
	}
	return j.ResponseWriter.Write(b)
}

// Flush passes through, for large responses.
func (j *jsonErrors) Flush() {
	if f, ok := j.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
