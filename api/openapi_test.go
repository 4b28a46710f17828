package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/maskpbx/maskpbx/api"
)

var (
	docOnce   sync.Once
	docRouter routers.Router
	docErr    error
)

// conformsToOpenAPI checks an answer of the API against openapi.json: its
// status is documented and its body matches the schema, whose objects
// allow no field the document does not name. Every request the tests of
// this package make goes through it, so a field renamed in a handler, or a
// document describing a field the API never sends as required, fails them.
func conformsToOpenAPI(t *testing.T, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	docOnce.Do(func() {
		var doc *openapi3.T
		if doc, docErr = openapi3.NewLoader().LoadFromData(api.OpenAPI()); docErr != nil {
			return
		}
		// The document's server is "/", relative to wherever the API
		// runs; the router would match it against the test server's
		// host, so routes are found by path alone.
		doc.Servers = nil
		docRouter, docErr = legacy.NewRouter(doc)
	})
	if docErr != nil {
		t.Fatalf("openapi.json: %v", docErr)
	}
	route, params, err := docRouter.FindRoute(req)
	if err != nil {
		// Not a documented route: only the catch-all's 404 may answer.
		if status != http.StatusNotFound {
			t.Errorf("%s %s is not in openapi.json but answered %d", req.Method, req.URL.Path, status)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{ExcludeRequestBody: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status:  status,
		Header:  header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s answered %d, which openapi.json does not describe: %v\n%s", req.Method, req.URL.Path, status, err, body)
	}
}
