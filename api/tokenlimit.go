package api

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Refused bearer tokens are counted per source address: past
// tokenFailLimit within tokenFailWindow, the source's bearer requests are
// answered 429 for tokenBlockFor without any token being looked up. Tokens
// are 32 random bytes, so guessing is hopeless anyway; this keeps a
// scanner from spending the database's time.
const (
	tokenFailLimit  = 20
	tokenFailWindow = time.Minute
	tokenBlockFor   = 5 * time.Minute
	// tokenSourcesMax bounds the table; when full, expired entries go (a
	// sweep at most once a window) and a source that finds it still full
	// is not tracked: an attacker rotating addresses is not stopped by
	// per-source counting anyway, and must not make each request pay a
	// sweep of the whole table.
	tokenSourcesMax = 65536
)

var errTooManyTokenFailures = newError(http.StatusTooManyRequests, "too_many_auth_failures", "api.too_many_auth_failures")

type tokenFailures struct {
	mu        sync.Mutex
	now       func() time.Time
	bySource  map[string]*tokenSource
	lastSweep time.Time
}

type tokenSource struct {
	count        int
	windowStart  time.Time
	blockedUntil time.Time
}

func newTokenFailures(now func() time.Time) *tokenFailures {
	return &tokenFailures{now: now, bySource: map[string]*tokenSource{}}
}

func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// blocked reports whether the source may not present a token now.
func (f *tokenFailures) blocked(source string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.bySource[source]
	return ok && f.now().Before(s.blockedUntil)
}

// fail counts a refused token from source.
func (f *tokenFailures) fail(source string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	s, ok := f.bySource[source]
	if !ok {
		if len(f.bySource) >= tokenSourcesMax && now.Sub(f.lastSweep) >= tokenFailWindow {
			f.sweep(now)
			f.lastSweep = now
		}
		if len(f.bySource) >= tokenSourcesMax {
			return
		}
		s = &tokenSource{windowStart: now}
		f.bySource[source] = s
	}
	if now.Sub(s.windowStart) > tokenFailWindow {
		s.count, s.windowStart = 0, now
	}
	s.count++
	if s.count >= tokenFailLimit {
		s.blockedUntil = now.Add(tokenBlockFor)
		s.count, s.windowStart = 0, now
	}
}

func (f *tokenFailures) sweep(now time.Time) {
	for k, s := range f.bySource {
		if now.Sub(s.windowStart) > tokenFailWindow && !now.Before(s.blockedUntil) {
			delete(f.bySource, k)
		}
	}
}

// retryAfter is the Retry-After of errTooManyTokenFailures, in seconds.
var retryAfter = strconv.Itoa(int(tokenBlockFor / time.Second))
