package console

import (
	"net/http"
	"strings"
	"testing"
)

// A method a console page does not take is 405 with Allow, not "no such
// page"; an unknown page stays 404.
func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"POST", "/console/clients/new", "GET, HEAD"},
		{"DELETE", "/console/clients", "GET, HEAD, POST"},
		{"GET", "/console/signout", "POST"},
		{"PUT", "/console/managers/6f1c2b9e-0d3a-4c55-9a41-2f7d8e6b1a00/dismiss", "POST"},
		{"POST", "/console/static/console.css", "GET, HEAD"},
		{"GET", "/console/nothing", ""},
	} {
		req, _ := http.NewRequest(tc.method, e.url+tc.path, strings.NewReader(""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusMethodNotAllowed
		if tc.allow == "" {
			want = http.StatusNotFound
		}
		if resp.StatusCode != want || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), want, tc.allow)
		}
	}
}
