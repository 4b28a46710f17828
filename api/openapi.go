package api

import (
	_ "embed"
	"net/http"
)

// openAPI describes this API (OpenAPI 3.0): written by hand, kept honest by
// tests that compare its operations with the routes New registers and
// check the answers of the API's tests against its schemas.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI 3 document (JSON).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openAPI)
}
