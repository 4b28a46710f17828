package console

import (
	"errors"
	"net/http"
	"net/url"
)

// monitorCall is the Listen, Whisper and Barge buttons of a live call on
// the calls page: it asks the API (as the signed-in supervisor) to ring his
// phone and join it to the call, then goes back to the calls page.
func (c *Console) monitorCall(w http.ResponseWriter, r *http.Request, s *session) error {
	id, mode := r.PathValue("id"), r.PostFormValue("mode")
	var res struct {
		State string `json:"state"`
	}
	err := c.apiFor(r, s).do(r.Context(), http.MethodPost, "/api/v1/calls/"+url.PathEscape(id)+"/monitor",
		map[string]string{"mode": mode}, &res)
	back := "/console/calls"
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return c.redirect(w, r, back, "error", ae.Message)
	}
	if err != nil {
		return err
	}
	msg := "monitor.ringing"
	if res.State == "active" {
		msg = "monitor.changed"
	}
	return c.redirect(w, r, back+"#call-"+url.PathEscape(id), "ok", c.localeFor(r, s).t(msg))
}
