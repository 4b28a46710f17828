package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// A method a path does not take is 405 with Allow naming the ones it does
// (RFC 9110), with the API's JSON error body, on every route; a path no
// route serves stays 404.
func TestMethodNotAllowed(t *testing.T) {
	srv := New(Config{})
	served := map[string][]string{} // path with ids filled in -> its methods
	for _, route := range srv.routes {
		method, path, _ := strings.Cut(route, " ")
		path = strings.ReplaceAll(path, "{id}", "6f1c2b9e-0d3a-4c55-9a41-2f7d8e6b1a00")
		served[path] = append(served[path], method)
	}
	if len(served) < 12 {
		t.Fatalf("only %d paths: %v", len(served), served)
	}
	for path, methods := range served {
		want := []string{}
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			if slices.Contains(methods, m) || (m == "HEAD" && slices.Contains(methods, "GET")) {
				want = append(want, m)
			}
		}
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if slices.Contains(want, m) {
				continue
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest(m, path, strings.NewReader("{}")))
			var body errorBody
			err := json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != http.StatusMethodNotAllowed || err != nil || body.Error.Code != "method_not_allowed" ||
				rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: %d %s %q, want 405 with a JSON error", m, path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
				continue
			}
			if got := rec.Header().Get("Allow"); got != strings.Join(want, ", ") {
				t.Errorf("%s %s: Allow %q, want %q", m, path, got, strings.Join(want, ", "))
			}
		}
	}
	for _, path := range []string{"/api/v1/nothing", "/api/v1/clients/6f1c2b9e-0d3a-4c55-9a41-2f7d8e6b1a00/nothing", "/api/v2/clients"} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest("DELETE", path, nil))
		if rec.Code != http.StatusNotFound || rec.Header().Get("Allow") != "" || !strings.Contains(rec.Body.String(), `"not_found"`) {
			t.Errorf("DELETE %s: %d Allow %q %s, want a JSON 404", path, rec.Code, rec.Header().Get("Allow"), rec.Body.String())
		}
	}
}
