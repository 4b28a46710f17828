package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// apiError is an error answer of the JSON API, shown to the user as is:
// the API's messages name what was wrong and never carry a number.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Message }

// apiCaller calls the JSON API in-process as one signed-in person: with his
// session cookie and CSRF token, so the API applies exactly the checks (role,
// assignment, validation, audit) it applies to his browser.
type apiCaller struct {
	h      http.Handler
	cookie string // the session cookie's value
	csrf   string
	remote string
	lang   string // the person's language: the API's messages come in it
}

// apiFor returns the API as the person behind r sees it.
func (c *Console) apiFor(r *http.Request, s *session) apiCaller {
	ck, _ := r.Cookie(sessionCookie)
	a := apiCaller{h: c.cfg.API, csrf: s.csrf, remote: r.RemoteAddr, lang: c.localeFor(r, s).lang.Code()}
	if ck != nil {
		a.cookie = ck.Value
	}
	return a
}

// do sends one request and decodes a 2xx answer into out (if not nil); any
// other answer becomes an *apiError.
func (a apiCaller) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return err
	}
	req.RemoteAddr = a.remote
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Accept-Language", a.lang)
	req.Header.Set(csrfHeader, a.csrf)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: a.cookie})
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	a.h.ServeHTTP(rec, req)
	if rec.status >= 200 && rec.status < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("console: %s %s: decoding the answer: %w", method, path, err)
		}
		return nil
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Error.Message == "" {
		return &apiError{Status: rec.status, Code: "unknown", Message: http.StatusText(rec.status)}
	}
	return &apiError{Status: rec.status, Code: e.Error.Code, Message: e.Error.Message}
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
