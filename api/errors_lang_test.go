package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/masking"
)

// An error keeps its stable code in every language; its message follows
// the caller's Accept-Language, else the company's language, and the
// answer says which (Content-Language).
func TestErrorMessagesLocalised(t *testing.T) {
	e := newEnv(t)
	ask := func(url, method, path, token, lang, body string) (int, string, string, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if lang != "" {
			req.Header.Set("Accept-Language", lang)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct {
			Error struct{ Code, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp.StatusCode, b.Error.Code, b.Error.Message, resp.Header.Get("Content-Language")
	}
	for _, tc := range []struct {
		method, path, token, lang, body string
		status                          int
		code, message, contentLang      string
	}{
		{"GET", "/api/v1/clients", "", "ru-RU,ru;q=0.9", "", 401, "unauthorized", "токен API отсутствует, неверен или отозван", "ru"},
		{"GET", "/api/v1/clients", "", "ro-MD", "", 401, "unauthorized", "token API lipsă, invalid sau revocat", "ro"},
		{"GET", "/api/v1/clients", "", "de-DE", "", 401, "unauthorized", "missing, invalid or revoked API token", "en"},
		{"POST", "/api/v1/clients", adminToken, "pl", "{", 400, "bad_request", "treść żądania nie jest poprawnym JSON", "pl"},
		{"POST", "/api/v1/clients", adminToken, "ru", `{"name":"A","phones":["+74950000001"],"manager_id":"x","bogus":1}`, 400, "bad_request", `неизвестное поле "bogus"`, "ru"},
		{"POST", "/api/v1/clients", adminToken, "", `{"name":1}`, 400, "bad_request", `field "name" must be a string`, "en"},
		{"GET", "/api/v1/recordings?limit=0", adminToken, "ro", "", 400, "bad_request", "limit trebuie să fie un număr între 1 și 1000", "ro"},
		{"GET", "/api/v1/nothing-here", adminToken, "pl", "", 404, "not_found", "nie ma takiego obiektu", "pl"},
	} {
		st, code, msg, cl := ask(e.url, tc.method, tc.path, tc.token, tc.lang, tc.body)
		if st != tc.status || code != tc.code || msg != tc.message || cl != tc.contentLang {
			t.Errorf("%s %s (%s): %d %s %q [%s], want %d %s %q [%s]", tc.method, tc.path, tc.lang, st, code, msg, cl,
				tc.status, tc.code, tc.message, tc.contentLang)
		}
	}

	// A company whose language is Romanian answers in Romanian when the
	// caller names no language maskpbx speaks.
	enc, _ := masking.GenerateKey()
	idx, _ := masking.GenerateKey()
	keys, _ := masking.NewKeyring(enc, idx)
	ro := httptest.NewServer(api.New(api.Config{Store: e.store, Keys: keys, Numbers: masking.NewNormalizer("RU"),
		SIPDomain: "pbx.test", AdminToken: adminToken, DefaultLanguage: "ro"}))
	t.Cleanup(ro.Close)
	for _, lang := range []string{"", "de"} {
		if st, code, msg, _ := ask(ro.URL, "GET", "/api/v1/clients", "", lang, ""); st != 401 || code != "unauthorized" || msg != "token API lipsă, invalid sau revocat" {
			t.Errorf("a Romanian company, Accept-Language %q: %d %s %q", lang, st, code, msg)
		}
	}
}
