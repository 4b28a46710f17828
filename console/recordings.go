package console

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"
)

// recordingView is a recording as the players need it, read from the
// recordings API (GET /api/v1/recordings?client_id=): unknown fields are
// ignored, so the console follows the API as it grows.
type recordingView struct {
	ID         string     `json:"id"`
	CallID     string     `json:"call_id"`
	ClientID   string     `json:"client_id"`
	ManagerID  string     `json:"manager_id"`
	Status     string     `json:"status"`
	StartedAt  *time.Time `json:"started_at"`
	DurationMS int64      `json:"duration_ms"`
	// AudioAvailable is the API's word on whether the audio can be played.
	AudioAvailable *bool `json:"audio_available"`
}

// Duration is the recording's length.
func (r recordingView) Duration() time.Duration {
	return time.Duration(r.DurationMS) * time.Millisecond
}

// Playable is whether its audio can be fetched (not still being written,
// not lost or deleted by retention).
func (r recordingView) Playable() bool {
	if r.AudioAvailable != nil {
		return *r.AudioAvailable
	}
	return r.Status == "" || r.Status == "complete" || r.Status == "partial"
}

// NoteID is the message that says why a recording can't be played.
func (r recordingView) NoteID() string {
	switch r.Status {
	case "recording":
		return "recording.in_progress"
	case "missing":
		return "recording.lost"
	}
	return "recording.deleted"
}

// AudioURL is where the player streams it from (Range requests; audited).
func (r recordingView) AudioURL() string {
	return "/api/v1/recordings/" + url.PathEscape(r.ID) + "/audio"
}

// recordingsState is a client's recordings, or why there are none to show.
type recordingsState struct {
	List        []*recordingView
	byCall      map[string]*recordingView
	Unavailable string // set when the list could not be had
}

// recordingsFor lists a client's recordings through the API as the person
// asking. A node without the recordings API shows no players.
func (c *Console) recordingsFor(r *http.Request, s *session, clientID string) recordingsState {
	st := recordingsState{byCall: map[string]*recordingView{}}
	var list []*recordingView
	err := c.apiFor(r, s).do(r.Context(), http.MethodGet, "/api/v1/recordings?client_id="+url.QueryEscape(clientID), nil, &list)
	var ae *apiError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		return st // no recordings API on this node (yet)
	case err != nil:
		c.logger.Warn("console: listing recordings failed", zap.String("client_id", clientID), zap.Error(err))
		st.Unavailable = c.localeFor(r, s).t("recording.unavailable")
		return st
	}
	for _, rec := range list {
		if rec == nil || rec.ID == "" {
			continue
		}
		st.List = append(st.List, rec)
		if rec.CallID != "" {
			if _, seen := st.byCall[rec.CallID]; !seen {
				st.byCall[rec.CallID] = rec
			}
		}
	}
	return st
}
