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
	rec, err := a.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	if rec.status >= 200 && rec.status < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("console: %s %s: decoding the answer: %w", method, path, err)
		}
		return nil
	}
	return rec.apiError()
}

// download sends one request and streams a 2xx answer (a file: its type,
// name and body) on to w as it comes, so a large export is never held in
// memory; any other answer becomes an *apiError.
func (a apiCaller) download(ctx context.Context, w http.ResponseWriter, method, path string, body any) error {
	pass := &passThrough{w: w, recorder: recorder{header: http.Header{}, status: http.StatusOK}}
	if err := a.serve(ctx, pass, method, path, body); err != nil {
		return err
	}
	if !pass.ok() {
		return pass.apiError()
	}
	return nil
}

// passThrough is the ResponseWriter of a download: a 2xx answer goes on
// to w, anything else is kept, as by recorder, to become an error.
type passThrough struct {
	recorder
	w http.ResponseWriter
}

func (p *passThrough) ok() bool { return p.status >= 200 && p.status < 300 }

func (p *passThrough) WriteHeader(code int) {
	if p.wrote {
		return
	}
	p.recorder.WriteHeader(code)
	if p.ok() {
		for _, h := range []string{"Content-Type", "Content-Disposition"} {
			p.w.Header().Set(h, p.header.Get(h))
		}
		p.w.WriteHeader(code)
	}
}

func (p *passThrough) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	if p.ok() {
		return p.w.Write(b)
	}
	return p.recorder.Write(b)
}

// send sends one request to the API in-process and returns its answer.
func (a apiCaller) send(ctx context.Context, method, path string, body any) (*recorder, error) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	return rec, a.serve(ctx, rec, method, path, body)
}

// serve sends one request to the API in-process, answered into w.
func (a apiCaller) serve(ctx context.Context, w http.ResponseWriter, method, path string, body any) error {
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
	a.h.ServeHTTP(w, req)
	return nil
}

// apiError is the API's error answer in rec.
func (rec *recorder) apiError() *apiError {
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
