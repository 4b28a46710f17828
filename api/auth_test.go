package api_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/masking"
)

// Every 401 tells the client how to authenticate (RFC 7235, RFC 6750): the
// Bearer scheme with the API's realm, and invalid_token when a token was
// sent and refused. Other errors carry no challenge.
func TestUnauthorizedCarriesBearerChallenge(t *testing.T) {
	e := newEnv(t)
	anna := e.manager("anna", "manager")
	bob := e.manager("bob", "manager")
	e.must(200, "POST", "/api/v1/managers/"+bob.ID+"/dismiss", adminToken, map[string]any{"successor_id": anna.ID}, nil)

	const missing = `Bearer realm="maskpbx"`
	const refused = `Bearer realm="maskpbx", error="invalid_token"`
	for _, tc := range []struct {
		name, authorization string
		status              int
		challenge           string
	}{
		{"no Authorization header", "", 401, missing},
		{"another scheme", "Basic YWRtaW46YWRtaW4=", 401, missing},
		{"empty bearer token", "Bearer ", 401, missing},
		{"unknown token", "Bearer nope", 401, refused},
		{"a dismissed manager's token", "Bearer " + bob.APIToken, 401, refused},
		{"a valid token of the wrong role", "Bearer " + anna.APIToken, 403, ""},
		{"a valid token", "Bearer " + adminToken, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.url+"/api/v1/managers", nil)
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Fatalf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
		})
	}
}

// endedSessions is a console whose every session has ended.
type endedSessions struct{}

func (endedSessions) SessionPrincipal(*http.Request) (api.Principal, bool, error) {
	return api.Principal{}, false, api.ErrSessionEnded
}

// A request whose console session ended is a 401 like any other: it gets
// the challenge too.
func TestEndedSessionCarriesBearerChallenge(t *testing.T) {
	e := newEnv(t)
	enc, _ := masking.GenerateKey()
	idx, _ := masking.GenerateKey()
	keys, _ := masking.NewKeyring(enc, idx)
	srv := api.New(api.Config{Store: e.store, Keys: keys, Numbers: masking.NewNormalizer("RU"),
		SIPDomain: "pbx.test", Sessions: endedSessions{}})
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/clients", nil))
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer realm="maskpbx"` {
		t.Fatalf("got %d with WWW-Authenticate %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}

// A source that keeps presenting refused tokens is answered 429 with
// Retry-After, its tokens no longer looked at (even a good one), while
// other sources are served as before.
func TestRefusedTokensRateLimited(t *testing.T) {
	e := newEnv(t)
	enc, _ := masking.GenerateKey()
	idx, _ := masking.GenerateKey()
	keys, _ := masking.NewKeyring(enc, idx)
	srv := api.New(api.Config{Store: e.store, Keys: keys, Numbers: masking.NewNormalizer("RU"),
		SIPDomain: "pbx.test", AdminToken: adminToken})
	get := func(source, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/api/v1/managers", nil)
		req.RemoteAddr = source + ":40000"
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	for i := range 19 {
		if rec := get("192.0.2.66", "guess-"+strconv.Itoa(i)); rec.Code != 401 {
			t.Fatalf("guess %d: %d, want 401", i, rec.Code)
		}
	}
	if rec := get("192.0.2.66", "guess-19"); rec.Code != 401 {
		t.Fatalf("the 20th guess: %d, want 401", rec.Code)
	}
	rec := get("192.0.2.66", adminToken)
	if rec.Code != 429 || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "too_many_auth_failures") {
		t.Fatalf("after 20 refused tokens: %d %q %s, want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if rec := get("192.0.2.67", adminToken); rec.Code != 200 {
		t.Fatalf("another source: %d, want 200", rec.Code)
	}
}
