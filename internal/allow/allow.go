// Package allow finds the methods a ServeMux serves for a path, so that a
// catch-all handler can answer 405 with Allow (RFC 9110 section 15.5.6)
// instead of 404 for a method a known path does not support. It knows
// nothing of the API or the console.
package allow

import (
	"net/http"
	"strings"
)

// probed are the methods a path is asked about; HEAD comes with GET.
var probed = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete}

// Methods returns the methods mux routes r's path to a handler other than
// its catch-all pattern, in probed's order; empty when the path is unknown.
func Methods(mux *http.ServeMux, r *http.Request, catchAll string) []string {
	var out []string
	for _, m := range probed {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != catchAll {
			out = append(out, m)
		}
	}
	return out
}

// Header is the Allow header's value for methods.
func Header(methods []string) string { return strings.Join(methods, ", ") }
