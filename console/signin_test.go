package console

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// from is a browser whose connections come from the loopback address ip, so
// the server sees it as another client.
func (e *env) from(ip string) *browser {
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &browser{e: e, c: &http.Client{Jar: jar,
		Transport:     &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// guessInParallel makes n browsers from ip fetch the sign-in form, then
// posts all their guesses at once, and counts the answers by status.
func (e *env) guessInParallel(ip string, n int, guess func(i int) url.Values) map[int]int {
	e.t.Helper()
	browsers := make([]*browser, n)
	for i := range browsers {
		browsers[i] = e.from(ip)
		browsers[i].get("/console/signin")
	}
	start := make(chan struct{})
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	for i, b := range browsers {
		form := guess(i)
		form.Set("csrf_token", b.csrf)
		wg.Go(func() {
			<-start
			resp, err := b.c.PostForm(e.url+"/console/signin", form)
			if err != nil {
				e.t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			got[resp.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return got
}

// TestSigninRace: 40 guesses at one account posted at the same moment from
// one address. Each attempt is counted before its password is tested, so
// only the first 5 are tested; the rest, and then the right password from
// that address, wait (429 with Retry-After). The account's owner, from the
// address he signed in from before, is not locked out.
func TestSigninRace(t *testing.T) {
	e := newEnv(t)
	e.person("anna", storage.RoleManager, "anna-console-pw")
	owner := e.from("127.0.0.1")
	if st := owner.signIn("anna", "anna-console-pw"); st != http.StatusSeeOther {
		t.Fatalf("anna's own sign-in: %d", st)
	}

	got := e.guessInParallel("127.0.0.9", 40, func(i int) url.Values {
		return url.Values{"username": {"anna"}, "password": {"guess-" + strings.Repeat("x", i)}}
	})
	if got[http.StatusUnauthorized] > signinLimits.PerUser || got[http.StatusSeeOther] != 0 ||
		got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != 40 {
		t.Fatalf("40 parallel guesses: %v; want at most %d tested (401), the rest 429", got, signinLimits.PerUser)
	}
	attacker := e.from("127.0.0.9")
	attacker.get("/console/signin")
	st, _, h := attacker.post("/console/signin", url.Values{"csrf_token": {attacker.csrf}, "username": {"anna"},
		"password": {"anna-console-pw"}})
	if st != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("the right password from the guessing address: %d (Retry-After %q), want 429 with Retry-After",
			st, h.Get("Retry-After"))
	}

	again := e.from("127.0.0.1")
	if st := again.signIn("anna", "anna-console-pw"); st != http.StatusSeeOther {
		t.Fatalf("anna from her known address after a stranger's guesses: %d, want 303", st)
	}
	u, _, err := e.store.SigninFailures(context.Background(), "anna", "127.0.0.9", time.Now().Add(-time.Hour))
	if err != nil || u < got[http.StatusUnauthorized] {
		t.Fatalf("anna's sign-in wiped the stranger's failures: %d %v", u, err)
	}
}

// TestSigninRacePerSource: guesses at many accounts at once from one
// address stop at the per-address limit.
func TestSigninRacePerSource(t *testing.T) {
	e := newEnv(t)
	got := e.guessInParallel("127.0.0.10", 30, func(i int) url.Values {
		return url.Values{"username": {"user" + strings.Repeat("z", i)}, "password": {"guess-pw"}}
	})
	if got[http.StatusUnauthorized] > signinLimits.PerSource || got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != 30 {
		t.Fatalf("30 parallel guesses at 30 accounts: %v; want at most %d tested, the rest 429", got, signinLimits.PerSource)
	}
}
