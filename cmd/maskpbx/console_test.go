package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/maskpbx/maskpbx/console"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// The web console's end-to-end tests: a real serve (Postgres, NATS, PBX),
// SIPp phones and trunk, and Debian's Chromium driving the pages. Each test
// function starts one browser; each person in it gets a browser context of
// his own (separate cookies), and every response his browser receives is
// captured at the network layer for the no-leak checks.

// browser is one headless Chromium for a test.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := testenv.Require(t, "chromium", "chromium-browser", "google-chrome")
	profile, err := os.MkdirTemp("", "maskpbx-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		// This machine's network is closed: without these, Chromium's own
		// background connections are refused many at a time.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		_ = os.RemoveAll(profile)
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// response is one HTTP response a person's browser received.
type response struct {
	URL     string
	Status  int64
	Headers string
	Body    []byte
}

// person is one signed-in (or signing-in) person: a tab in a browser
// context of its own, whose every response is recorded. Its helpers fail
// the test it is bound to (see in).
type person struct {
	t    *testing.T
	name string
	ctx  context.Context
	rec  *responseLog
}

// responseLog is every response one person's browser received.
type responseLog struct {
	mu        sync.Mutex
	responses []response
}

// in is the same person, failing subtest t.
func (p *person) in(t *testing.T) *person {
	q := *p
	q.t = t
	return &q
}

// person opens a browser context for someone. Every response reaches the
// page only after the test has read it (Fetch interception at the
// response stage), so nothing the browser gets escapes the checks.
func (b *browser) person(name string) *person {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	p := &person{t: b.t, name: name, ctx: ctx, rec: &responseLog{}}
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "*", RequestStage: fetch.RequestStageResponse}}}); err != nil {
		b.t.Fatalf("%s: enabling response capture: %v", name, err)
	}
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			r := response{URL: ev.Request.URL, Status: ev.ResponseStatusCode}
			var hdr strings.Builder
			for _, h := range ev.ResponseHeaders {
				fmt.Fprintf(&hdr, "%s: %s\n", h.Name, h.Value)
			}
			r.Headers = hdr.String()
			if ev.ResponseStatusCode < 300 || ev.ResponseStatusCode >= 400 {
				if body, err := chromedp.Call(ctx, fetch.GetResponseBody, fetch.GetResponseBodyParams{RequestID: ev.RequestID}); err == nil {
					r.Body = body.Body
				}
			}
			p.rec.mu.Lock()
			p.rec.responses = append(p.rec.responses, r)
			p.rec.mu.Unlock()
			_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	return p
}

// do runs browser steps with a deadline.
func (p *person) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %s: %v (at %s)", p.name, what, err, p.location())
	}
}

func run[T any](p *person, what string, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
	return v
}

func eval[T any](p *person, js string) T {
	p.t.Helper()
	return run(p, "evaluate "+js, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// waitFor polls a JavaScript condition until it holds, across page loads
// (an evaluation that a navigation interrupts is simply tried again).
func (p *person) waitFor(what, js string, timeout time.Duration) {
	p.t.Helper()
	var last error
	if !testenv.WaitFor(timeout, func() bool {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		last = err
		return err == nil && ok
	}) {
		p.t.Fatalf("%s: waiting until %s: timed out (last error %v) at %s", p.name, what, last, p.location())
	}
}

func (p *person) location() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

func (p *person) html() string {
	return eval[string](p, `document.documentElement.outerHTML`)
}

func (p *person) text(sel string) string {
	p.t.Helper()
	return run(p, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func (p *person) captured() []response {
	p.rec.mu.Lock()
	defer p.rec.mu.Unlock()
	return slices.Clone(p.rec.responses)
}

// signIn fills the sign-in form and waits for the console.
func (p *person) signIn(base, username, password string) {
	p.t.Helper()
	p.do("sign in",
		chromedp.Navigate(base+"/console/signin"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), username),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.CSS("header.topbar")),
	)
}

func (p *person) open(base, path string) {
	p.t.Helper()
	p.do("open "+path, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("main")))
}

var screenshotDir = filepath.Join(testenv.Root(), "test-output", "screenshots")

// screenshot keeps the page as a PNG under test-output/screenshots, at the
// window's size and, with phone set, at a phone's.
func (p *person) screenshot(name string, phone bool) {
	p.t.Helper()
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	write := func(file string) {
		buf := run(p, "screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(screenshotDir, file), buf, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	write(name + ".png")
	if phone {
		p.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Sleep(200*time.Millisecond))
		write(name + "-phone.png")
		if _, err := chromedp.Call(p.ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{}); err != nil {
			p.t.Fatal(err)
		}
		if _, err := chromedp.Call(p.ctx, emulation.SetTouchEmulationEnabled, emulation.SetTouchEmulationEnabledParams{}); err != nil {
			p.t.Fatal(err)
		}
	}
}

// setWebPassword gives a person a console password, as an admin would.
func (s *system) setWebPassword(managerID, password string) {
	s.t.Helper()
	hash, err := console.HashPassword(password)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.run.Store.SetWebPassword(context.Background(), managerID, hash, nil, "test"); err != nil {
		s.t.Fatal(err)
	}
}

// person creates someone of a role through the API.
func (s *system) person(user, name, role string) apiManager {
	s.t.Helper()
	return s.personInTeam(user, name, role, "sales")
}

func (s *system) personInTeam(user, name, role, team string) apiManager {
	s.t.Helper()
	var m apiManager
	if st := s.call("POST", "/api/v1/managers", adminTok, map[string]string{
		"name": name, "sip_username": user, "sip_password": user + "-secret", "team": team, "role": role}, &m); st != 201 {
		s.t.Fatalf("create %s %s: %d", role, user, st)
	}
	return m
}

func (s *system) clientIn(name, phone, segment, managerID string, partners ...string) apiClient {
	s.t.Helper()
	var c apiClient
	if partners == nil {
		partners = []string{}
	}
	if st := s.call("POST", "/api/v1/clients", adminTok, map[string]any{"name": name, "phones": []string{phone},
		"segment": segment, "manager_id": managerID, "partner_ids": partners}, &c); st != 201 {
		s.t.Fatalf("create client %s: %d", name, st)
	}
	return c
}

// Client numbers of the browser tests (with acmeNumber), chosen so that
// their 4-digit runs don't look like years, ports or times of day.
const (
	boltNumber  = "+74957654321"
	orionNumber = "+79037778899"
	severNumber = "+79258886611"
	// leakRunLen is the shortest run of a number's digits that counts as
	// a leak.
	leakRunLen = 4
)

// ourTokens are values in pages and API answers that the console or the
// API draws at random or from the clock, never from a number: ids, times,
// durations, lengths, CSRF and session tokens. A digit run inside them is
// chance, not a leak, so they are cut out before runs are looked for. Whole
// numbers are looked for before anything is cut out.
var ourTokens = regexp.MustCompile(`(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|` +
	`\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})|"duration_ms":\s*\d+|content-length: *\d+|` +
	`[A-Za-z0-9_-]{40,}`)

// numberForms are the ways a number could be written out.
func numberForms(e164 string) []string {
	d := strings.TrimPrefix(e164, "+")
	nat := d[1:] // without the country code 7
	return []string{d, nat, "+" + d, nat[:3] + " " + nat[3:6] + "-" + nat[6:8] + "-" + nat[8:],
		nat[:3] + "-" + nat[3:6] + "-" + nat[6:], "(" + nat[:3] + ") " + nat[3:6]}
}

// assertNoNumber fails if a text carries any of the numbers, whole in any
// usual form or as a run of leakRunLen digits, apart from known codes.
func assertNoNumber(t *testing.T, where, text string, numbers []string, codes []string) {
	t.Helper()
	for _, n := range numbers {
		for _, f := range numberForms(n) {
			if strings.Contains(text, f) {
				t.Fatalf("%s contains the client number %q:\n%s", where, f, excerpt(text, f))
			}
		}
	}
	clean := ourTokens.ReplaceAllString(text, "<ours>")
	for _, c := range codes {
		clean = strings.ReplaceAll(clean, c, "<code>")
	}
	for _, n := range numbers {
		d := strings.TrimPrefix(n, "+")
		for i := 0; i+leakRunLen <= len(d); i++ {
			if run := d[i : i+leakRunLen]; strings.Contains(clean, run) {
				t.Fatalf("%s contains digit run %q of a client number:\n%s", where, run, excerpt(clean, run))
			}
		}
	}
}

func excerpt(text, at string) string {
	i := strings.Index(text, at)
	lo, hi := max(0, i-200), min(len(text), i+len(at)+200)
	return "…" + text[lo:hi] + "…"
}

// assertNothingLeaked checks the current page's HTML, every response the
// person's browser received and the browser's storage.
func (p *person) assertNothingLeaked(numbers, codes []string) {
	p.t.Helper()
	assertNoNumber(p.t, p.name+"'s page HTML at "+p.location(), p.html(), numbers, codes)
	rs := p.captured()
	if len(rs) == 0 {
		p.t.Fatalf("%s's browser recorded no responses: the capture is broken", p.name)
	}
	for _, r := range rs {
		assertNoNumber(p.t, fmt.Sprintf("%s's response %d from %s (headers)", p.name, r.Status, r.URL), r.Headers, numbers, codes)
		assertNoNumber(p.t, fmt.Sprintf("%s's response %d from %s (body)", p.name, r.Status, r.URL), string(r.Body), numbers, codes)
	}
	storage := eval[string](p, `JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])`)
	assertNoNumber(p.t, p.name+"'s web storage", storage, numbers, codes)
	all, err := chromedp.Call(p.ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		p.t.Fatalf("cookies: %v", err)
	}
	for _, c := range all.Cookies {
		assertNoNumber(p.t, p.name+"'s cookie "+c.Name, c.Name+"="+c.Value, numbers, codes)
	}
}

// cookieClient is a plain HTTP client that carries a person's browser
// cookies, for requests a page would never make (a forged form post).
func (p *person) cookieClient(base string) *http.Client {
	p.t.Helper()
	all, err := chromedp.Call(p.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		p.t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(base + "/")
	var cs []*http.Cookie
	for _, c := range all.Cookies {
		cs = append(cs, &http.Cookie{Name: c.Name, Value: c.Value, Path: c.Path})
	}
	jar.SetCookies(u, cs)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// ----------------------------------------------------------------------------

// TestConsoleManagerClickToCall: a manager signs in, sees only his clients,
// searches, presses Call; his SIPp phone rings first, then the SIPp trunk
// is asked for the client's number; the page follows the call live; and
// nothing the browser received holds a digit run of a client's number.
func TestConsoleManagerClickToCall(t *testing.T) {
	s := startSystemConfig(t, nil)
	b := newBrowser(t)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	orion := s.clientIn("Orion Group", orionNumber, "retail", anna.ID)
	sever := s.clientIn("Severstal Trading", severNumber, "wholesale", bob.ID, anna.ID) // anna is a partner
	bolt := s.clientIn("Bolt Logistics", boltNumber, "", bob.ID)
	numbers := []string{acmeNumber, orionNumber, severNumber, boltNumber}
	// The search below echoes the start of Acme's code: ours, random, not
	// from a number (it may share a digit run with one by chance).
	codes := []string{acme.Code, orion.Code, sever.Code, bolt.Code, acme.Code[:5]}
	s.setWebPassword(anna.ID, "anna-console-pw")
	s.register("anna", annaIP, 5070)

	p := b.person("anna")
	p.signIn(s.api, "anna", "anna-console-pw")
	if loc := p.location(); !strings.HasSuffix(loc, "/console/clients") {
		t.Fatalf("a manager lands on %s, want his clients", loc)
	}
	rows := eval[[]string](p, `Array.from(document.querySelectorAll('#clients tbody tr')).map(r => r.dataset.client)`)
	sort.Strings(rows)
	want := []string{acme.ID, orion.ID, sever.ID}
	sort.Strings(want)
	if strings.Join(rows, ",") != strings.Join(want, ",") {
		t.Fatalf("anna sees clients %v, want exactly her own and her partner client %v", rows, want)
	}
	if html := p.html(); strings.Contains(html, "Bolt Logistics") || strings.Contains(html, bolt.Code) {
		t.Fatal("anna's list shows another manager's client")
	}
	if got := p.text(`tr[data-client="` + sever.ID + `"]`); !strings.Contains(got, "Partner") {
		t.Errorf("the partner client's row does not say so: %q", got)
	}
	p.screenshot("manager-clients", true)

	t.Run("search by name and by code", func(t *testing.T) {
		p := p.in(t)
		p.do("search", chromedp.SetValue(chromedp.ID("q"), "orion"), chromedp.Submit(chromedp.ID("q")),
			chromedp.WaitVisible(chromedp.CSS(`a[href="/console/clients"].btn`)))
		rows := eval[[]string](p, `Array.from(document.querySelectorAll('#clients tbody tr')).map(r => r.dataset.client)`)
		if len(rows) != 1 || rows[0] != orion.ID {
			t.Errorf("searching 'orion' shows %v", rows)
		}
		p.open(s.api, "/console/clients?q="+acme.Code[:5])
		rows = eval[[]string](p, `Array.from(document.querySelectorAll('#clients tbody tr')).map(r => r.dataset.client)`)
		if !slices.Contains(rows, acme.ID) {
			t.Errorf("searching the start of Acme's code shows %v", rows)
		}
		// Another manager's client is not found, by name or by code, nor by his page.
		p.open(s.api, "/console/clients?q="+bolt.Code)
		if n := eval[int](p, `document.querySelectorAll('#clients tbody tr').length`); n != 0 {
			t.Errorf("searching another manager's client code finds %d rows", n)
		}
		resp := run(p, "open bolt", chromedp.NavigateResponse(s.api+"/console/clients/"+bolt.ID))
		if resp.Status != http.StatusNotFound {
			t.Errorf("another manager's client page: %d, want 404", resp.Status)
		}
	})

	t.Run("Call: manager first, then the client; state shown live", func(t *testing.T) {
		p := p.in(t)
		tr := trunkUAS(t, "answer", false, 41600)
		ph := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
			Scenario: "phone_answer.xml", LocalIP: annaIP, Port: 5070, Remote: s.sipAddr,
			Keys: map[string]string{"rtp_ip": annaIP, "rtp_port": "41602"},
			Sets: map[string]string{"hangup": "yes", "rings": "8"}, Args: []string{"-d", "3000"},
		})
		p.open(s.api, "/console/clients/"+acme.ID)
		// Record every state the page shows, as the person sees it.
		eval[bool](p, `(() => {
			window.__states = [];
			const out = document.getElementById('status-`+acme.ID+`');
			const note = () => { const s = (out.dataset.state || '') + '|' + out.textContent;
				if (window.__states[window.__states.length - 1] !== s) window.__states.push(s); };
			new MutationObserver(note).observe(out, {childList: true, characterData: true, subtree: true, attributes: true});
			return true; })()`)
		p.do("press Call", chromedp.Click(chromedp.CSS(`form[data-call-client="`+acme.ID+`"] button`)))
		p.waitFor("the call is connected", `window.__states.some(s => s.startsWith('connected|'))`, 20*time.Second)
		p.screenshot("manager-call-connected", false)
		p.waitFor("the call has ended", `window.__states.some(s => s.startsWith('ended|'))`, 30*time.Second)
		ph.Wait()
		tr.Wait()
		states := eval[[]string](p, `window.__states`)
		t.Logf("states shown: %q", states)
		var order []string
		for _, st := range states {
			name, _, _ := strings.Cut(st, "|")
			if len(order) == 0 || order[len(order)-1] != name {
				order = append(order, name)
			}
		}
		// "Calling the client" lasts the trunk's 300 ms of ringing and may
		// fall between two polls; the rest must all show, in order.
		seq := strings.Join(order, ",")
		if seq != "calling_manager,calling_client,connected,ended" && seq != "calling_manager,connected,ended" {
			t.Errorf("the page showed states %v", states)
		}
		if !strings.Contains(states[0], "Calling you") && !strings.Contains(states[0], "Starting") {
			t.Errorf("the first state shown is %q", states[0])
		}
		final := states[len(states)-1]
		if !strings.Contains(final, "Ended · answered") {
			t.Errorf("the final state shown is %q", final)
		}
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, acmeNumber+" ") {
			t.Errorf("the trunk was asked for %q, want the client's number", d)
		}
		if shown, _ := ph.LogValue("SHOWN_FROM", time.Second); !strings.Contains(shown, "Calling Acme Trading #"+acme.Code) {
			t.Errorf("anna's phone was shown %q", shown)
		}
		assertNoLeak(t, ph, acmeNumber, acme.Code)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.ManagerID != anna.ID {
			t.Errorf("CDR %+v", cdr)
		}
		if !s.audited("call.click_to_call", "client:"+acme.ID) {
			t.Error("no audit row for the click-to-call")
		}
		// The client page now lists the call, and the list its outcome.
		p.open(s.api, "/console/clients/"+acme.ID)
		if got := p.text("#calls tbody"); !strings.Contains(got, "Answered") || !strings.Contains(got, "M anna") {
			t.Errorf("the call history shows %q", got)
		}
		p.open(s.api, "/console/clients")
		if got := p.text(`tr[data-client="` + acme.ID + `"]`); !strings.Contains(got, "Answered") {
			t.Errorf("the last call in the list shows %q", got)
		}
		if n := eval[int](p, `document.querySelectorAll('audio').length`); n != 0 {
			t.Errorf("a manager's pages have %d audio players", n)
		}
	})

	t.Run("Call from the list: columns stay put, Last call refreshes without a reload", func(t *testing.T) {
		p := p.in(t)
		tr := trunkUAS(t, "answer", false, 42020)
		ph := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
			Scenario: "phone_answer.xml", LocalIP: annaIP, Port: 5070, Remote: s.sipAddr,
			Keys: map[string]string{"rtp_ip": annaIP, "rtp_port": "42022"},
			Sets: map[string]string{"hangup": "yes", "rings": "2"}, Args: []string{"-d", "1500"},
		})
		p.open(s.api, "/console/clients")
		row := `tr[data-client="` + orion.ID + `"]`
		if got := p.text(row + ` td[data-label="Last call"]`); !strings.Contains(got, "No calls yet") {
			t.Fatalf("orion's last call before: %q", got)
		}
		// Where each column starts, at every state the page shows; and a
		// marker a reload would lose.
		eval[bool](p, `(() => {
			window.__noReload = true;
			const cols = () => Array.from(document.querySelectorAll('#clients thead th')).map(th => Math.round(th.getBoundingClientRect().left)).join(',');
			window.__cols = [cols()];
			const out = document.getElementById('status-`+orion.ID+`');
			new MutationObserver(() => window.__cols.push((out.dataset.state || '') + ':' + cols()))
				.observe(out, {childList: true, characterData: true, subtree: true, attributes: true});
			return true; })()`)
		p.do("press Call in the list", chromedp.Click(chromedp.CSS(`form[data-call-client="`+orion.ID+`"] button`)))
		p.waitFor("the call is connected", `window.__cols.some(c => c.startsWith('connected:'))`, 20*time.Second)
		p.screenshot("manager-list-call-connected", false)
		p.waitFor("the call has ended", `window.__cols.some(c => c.startsWith('ended:'))`, 30*time.Second)
		ph.Wait()
		tr.Wait()
		cols := eval[[]string](p, `window.__cols`)
		for _, c := range cols[1:] {
			if _, at, _ := strings.Cut(c, ":"); at != cols[0] {
				t.Errorf("the columns moved when the call status showed: %q, before %q", c, cols[0])
			}
		}
		p.waitFor("the Last call cell shows the call", `document.querySelector('`+row+` td[data-label="Last call"]').textContent.includes('Answered')`, 20*time.Second)
		if !eval[bool](p, `window.__noReload === true`) {
			t.Error("the page reloaded")
		}
	})

	t.Run("nothing the browser received holds a client number", func(t *testing.T) {
		p := p.in(t)
		sawCallStatus, sawPage := false, false
		for _, r := range p.captured() {
			sawCallStatus = sawCallStatus || strings.Contains(r.URL, "/api/v1/calls/")
			sawPage = sawPage || strings.HasSuffix(r.URL, "/console/clients")
		}
		if !sawCallStatus || !sawPage {
			t.Fatalf("the capture missed responses (call status %v, clients page %v)", sawCallStatus, sawPage)
		}
		p.assertNothingLeaked(numbers, codes)
		t.Logf("checked %d responses", len(p.captured()))
	})
}

// TestConsoleAdmin: an admin's views; a forged POST without the CSRF token
// is refused; a dismissed manager's open session is rejected at his next
// click; a CSV import with bad rows imports the rest and reports them.
func TestConsoleAdmin(t *testing.T) {
	s := startSystemConfig(t, nil)
	b := newBrowser(t)
	olga := s.person("olga", "Olga Admin", storage.RoleAdmin)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	s.clientIn("Bolt Logistics", boltNumber, "", bob.ID)
	s.setWebPassword(olga.ID, "olga-console-pw")
	s.setWebPassword(anna.ID, "anna-console-pw")

	manager := b.person("anna")
	manager.signIn(s.api, "anna", "anna-console-pw")
	admin := b.person("olga")
	admin.signIn(s.api, "olga", "olga-console-pw")
	if loc := admin.location(); !strings.HasSuffix(loc, "/console/overview") {
		t.Fatalf("an admin lands on %s", loc)
	}
	admin.screenshot("admin-overview", false)
	admin.open(s.api, "/console/managers")
	admin.screenshot("admin-managers", true)

	t.Run("a POST without the CSRF token is refused", func(t *testing.T) {
		manager := manager.in(t)
		manager.open(s.api, "/console/clients")
		token := eval[string](manager, `document.querySelector('meta[name="csrf-token"]').content`)
		status := func(js string) int { return eval[int](manager, js) }
		body := `JSON.stringify({client_id: '` + acme.ID + `'})`
		if st := status(`fetch('/api/v1/calls', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: ` + body + `}).then(r => r.status)`); st != 403 {
			t.Errorf("API POST with the session cookie and no CSRF header: %d, want 403", st)
		}
		if st := status(`fetch('/api/v1/calls', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'}, body: ` + body + `}).then(r => r.status)`); st != 403 {
			t.Errorf("API POST with a wrong CSRF header: %d, want 403", st)
		}
		if st := status(`fetch('/console/clients/` + acme.ID + `/call', {method: 'POST', body: new URLSearchParams()}).then(r => r.status)`); st != 403 {
			t.Errorf("console form POST without its token: %d, want 403", st)
		}
		if st := status(`fetch('/console/signout', {method: 'POST', body: new URLSearchParams({csrf_token: 'forged'})}).then(r => r.status)`); st != 403 {
			t.Errorf("sign-out with a forged token: %d, want 403", st)
		}
		// The right token passes the check (and meets the next one: anna
		// has no registered phone).
		if st := status(`fetch('/api/v1/calls', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': '` + token + `'}, body: ` + body + `}).then(r => r.status)`); st != 409 {
			t.Errorf("API POST with the CSRF header: %d, want 409 (no registered phone)", st)
		}
		// A cross-site form post carries the cookie but can't know the token.
		c := manager.cookieClient(s.api)
		for _, tc := range []struct {
			path, ctype, body, origin string
		}{
			{"/console/clients/" + acme.ID + "/call", "application/x-www-form-urlencoded", "", ""},
			{"/console/clients/" + acme.ID + "/call", "application/x-www-form-urlencoded", "csrf_token=" + token, "http://evil.example"},
			{"/api/v1/calls", "application/json", `{"client_id":"` + acme.ID + `"}`, ""},
		} {
			req, _ := http.NewRequest("POST", s.api+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
				req.Header.Set("Sec-Fetch-Site", "cross-site")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Errorf("forged POST %s (origin %q): %d, want 403", tc.path, tc.origin, resp.StatusCode)
			}
		}
		// The sign-in form has its own token: a forged sign-in is refused too.
		resp, err := http.PostForm(s.api+"/console/signin", url.Values{"username": {"anna"}, "password": {"anna-console-pw"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("sign-in without its CSRF token: %d, want 403", resp.StatusCode)
		}
	})

	t.Run("reveal needs a reason and is audited", func(t *testing.T) {
		admin := admin.in(t)
		admin.open(s.api, "/console/clients/"+acme.ID)
		admin.do("reveal without a reason", chromedp.SetAttributeValue(chromedp.ID("reason"), "minlength", "0"),
			chromedp.RemoveAttribute(chromedp.ID("reason"), "required"),
			chromedp.Click(chromedp.CSS("#reveal-form button")), chromedp.WaitVisible(chromedp.CSS(".flash.error")))
		if got := admin.text(".flash.error"); !strings.Contains(got, "reason") {
			t.Errorf("reveal without a reason says %q", got)
		}
		admin.do("reveal", chromedp.SendKeys(chromedp.ID("reason"), "data access request 17"),
			chromedp.Click(chromedp.CSS("#reveal-form button")), chromedp.WaitVisible(chromedp.CSS(".reveal-result")))
		if got := admin.text(".reveal-result"); !strings.Contains(got, acmeNumber) {
			t.Errorf("the reveal shows %q", got)
		}
		if !s.audited("client.reveal", "client:"+acme.ID) {
			t.Error("no audit row for the reveal")
		}
	})

	t.Run("a dismissed manager's open session is rejected at his next click", func(t *testing.T) {
		manager, admin := manager.in(t), admin.in(t)
		manager.open(s.api, "/console/clients")
		admin.open(s.api, "/console/managers")
		row := `tr[data-manager="` + anna.ID + `"]`
		admin.do("dismiss anna",
			chromedp.Click(chromedp.CSS(row+" details summary")),
			chromedp.SetValue(chromedp.ID("succ-"+anna.ID), bob.ID))
		admin.screenshot("admin-dismiss", false)
		admin.do("confirm the dismissal",
			chromedp.Click(chromedp.CSS(row+" .dismiss-form button")),
			chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
		if got := admin.text(".flash.ok"); !strings.Contains(got, "dismissed") || !strings.Contains(got, "1 client moved to M bob") {
			t.Errorf("the dismissal says %q", got)
		}
		// Her page is still open; her next click is the Call button.
		manager.do("press Call after the dismissal", chromedp.Click(chromedp.CSS(`form[data-call-client="`+acme.ID+`"] button`)))
		manager.waitFor("the page goes to sign-in", `location.pathname === '/console/signin'`, 10*time.Second)
		if got := manager.text("main"); !strings.Contains(got, "Your session has ended") {
			t.Errorf("the sign-in page says %q", got)
		}
		// Her old cookie opens nothing any more, pages or API.
		c := manager.cookieClient(s.api)
		resp, err := c.Get(s.api + "/console/clients")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/signin") {
			t.Errorf("a page after the dismissal: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		// And her password no longer signs her in.
		manager.do("sign in again", chromedp.SendKeys(chromedp.ID("username"), "anna"),
			chromedp.SendKeys(chromedp.ID("password"), "anna-console-pw"),
			chromedp.Click(chromedp.ID("signin-submit")), chromedp.WaitVisible(chromedp.ID("signin-error")))
		if got := manager.text("#signin-error"); !strings.Contains(got, "Wrong username or password") {
			t.Errorf("a dismissed manager signing in is told %q", got)
		}
	})

	t.Run("CSV import: bad rows reported, the rest imported", func(t *testing.T) {
		admin := admin.in(t)
		csv := "name,phone,segment,manager,partners\n" +
			"Orion Group,+7 903 777-88-99,vip,bob,\n" + // line 2: good
			"Bad Number Ltd,12345,retail,bob,\n" + // line 3: not a number
			",+7 903 111-22-44,retail,bob,\n" + // line 4: no name
			"Ghost Client,+7 903 111-22-55,,nobody,\n" + // line 5: unknown manager
			"Acme Copy,+7 916 123-45-67,,bob,\n" + // line 6: Acme's number
			"Polar Foods,8 (925) 888-66-11;+7 903 111-22-67,wholesale,bob,\n" + // line 7: good, two phones
			"Nord Bakery,+7 903 111-22-77,retail,BOB,olga\n" // line 8: good, case-insensitive manager, a partner
		file := filepath.Join(t.TempDir(), "clients.csv")
		if err := os.WriteFile(file, []byte(csv), 0o644); err != nil {
			t.Fatal(err)
		}
		admin.open(s.api, "/console/clients/import")
		admin.screenshot("admin-import", false)
		admin.do("upload", chromedp.SetUploadFiles(chromedp.ID("file"), []string{file}),
			chromedp.Click(chromedp.CSS("#import-form button")),
			chromedp.WaitVisible(chromedp.ID("import-errors")))
		if got := admin.text("#import-counts"); !strings.Contains(got, "7 of 7 rows") || !strings.Contains(got, "3 imported") ||
			!strings.Contains(got, "4 rejected") {
			t.Errorf("the import's counts say %q", got)
		}
		type rowErr struct{ Line, Why string }
		rejected := eval[[]rowErr](admin, `Array.from(document.querySelectorAll('#import-errors tbody tr')).map(r =>
			({Line: r.cells[1].textContent.trim(), Why: r.cells[2].textContent.trim()}))`)
		wantWhy := map[string]string{"3": "not a valid number", "4": "The name is empty", "5": `No active manager "nobody"`,
			"6": "already belongs to another client"}
		if len(rejected) != len(wantWhy) {
			t.Errorf("rejected rows %+v, want lines 3-6", rejected)
		}
		for _, r := range rejected {
			if w, ok := wantWhy[r.Line]; !ok || !strings.Contains(r.Why, w) {
				t.Errorf("line %s rejected because %q, want %q", r.Line, r.Why, w)
			}
		}
		admin.screenshot("admin-import-report", true)
		var clients []apiClient
		s.call("GET", "/api/v1/clients", adminTok, nil, &clients)
		names := map[string]bool{}
		for _, c := range clients {
			names[c.Name] = true
		}
		for _, n := range []string{"Orion Group", "Polar Foods", "Nord Bakery"} {
			if !names[n] {
				t.Errorf("%s was not imported", n)
			}
		}
		for _, n := range []string{"Bad Number Ltd", "Ghost Client", "Acme Copy"} {
			if names[n] {
				t.Errorf("the bad row %s was imported", n)
			}
		}
		// The report echoes no number of the file.
		codes := eval[[]string](admin, `Array.from(document.querySelectorAll('#import-created code')).map(c => c.textContent)`)
		assertNoNumber(t, "the import report", admin.html(), []string{"+79037778899", "+79258886611", "+79031112267",
			"+79031112277"}, codes)
	})

	t.Run("export without numbers, audit log verified", func(t *testing.T) {
		admin := admin.in(t)
		c := admin.cookieClient(s.api)
		resp, err := c.Get(s.api + "/console/clients/export.csv")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(raw), "Acme Trading") || !strings.Contains(string(raw), "Nord Bakery") {
			t.Fatalf("export: %d\n%s", resp.StatusCode, raw)
		}
		var all []apiClient
		s.call("GET", "/api/v1/clients", adminTok, nil, &all)
		var codes []string
		for _, c := range all {
			codes = append(codes, c.Code)
		}
		assertNoNumber(t, "the client export", string(raw), []string{acmeNumber, boltNumber, "+79037778899"}, codes)
		if !s.audited("client.export", "clients") {
			t.Error("no audit row for the export")
		}
		admin.open(s.api, "/console/audit")
		if got := admin.text("#chain-status"); !strings.Contains(got, "Chain verified") {
			t.Errorf("the audit page says %q", got)
		}
		if got := admin.text("#audit"); !strings.Contains(got, "client.reveal") || !strings.Contains(got, "manager.dismiss") ||
			!strings.Contains(got, "web.signin_failed") {
			t.Errorf("the audit log lacks the test's actions:\n%s", got)
		}
		admin.screenshot("admin-audit", false)
		admin.open(s.api, "/console/clients")
		admin.screenshot("admin-clients", false)
	})
}

// TestConsoleSupervisor: the calls list and its filters, the chart, the
// team's registration status, reassignment, and the recording player.
func TestConsoleSupervisor(t *testing.T) {
	s := startSystemConfig(t, nil)
	b := newBrowser(t)
	sveta := s.person("sveta", "Svetlana Orlova", storage.RoleSupervisor)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	bolt := s.clientIn("Bolt Logistics", boltNumber, "retail", bob.ID)
	orion := s.clientIn("Orion Group", orionNumber, "", anna.ID) // for the recorded call
	s.setWebPassword(sveta.ID, "sveta-console-pw")
	s.register("anna", annaIP, 5070)

	// Call history over the last days, written the way the CDR writer
	// writes it: anna answers 2 a day, bob 1, and every other day one call
	// nobody answered.
	ctx := context.Background()
	now := time.Now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	event := func(call, kind string, at time.Time, dir, client, mgr, disp string) {
		e := storage.CallEvent{EventID: call + kind, Kind: kind, At: at, CallID: call, Direction: dir, ClientID: client,
			ManagerID: mgr, Disposition: disp}
		if kind == storage.CallEnded {
			e.HangupSide = "client"
		}
		if _, err := s.run.Store.ApplyCallEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	call := func(day int, dir, client, mgr, disp string) {
		n++
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
		// Mid-morning of the day, so that every call of a day stays on it.
		at := today.AddDate(0, 0, -day).Add(10*time.Hour + time.Duration(n)*time.Minute)
		event(id, storage.CallOffered, at, dir, client, mgr, "")
		if disp == "answered" {
			event(id, storage.CallAnswered, at.Add(5*time.Second), dir, client, mgr, "")
		}
		event(id, storage.CallEnded, at.Add(95*time.Second), dir, client, mgr, disp)
	}
	for day := 0; day < 6; day++ {
		call(day, "inbound", acme.ID, anna.ID, "answered")
		call(day, "outbound", acme.ID, anna.ID, "answered")
		call(day, "inbound", bolt.ID, bob.ID, "answered")
		if day%2 == 0 {
			call(day, "inbound", bolt.ID, "", "missed")
		}
	}

	p := b.person("sveta")
	p.signIn(s.api, "sveta", "sveta-console-pw")
	if loc := p.location(); !strings.HasSuffix(loc, "/console/overview") {
		t.Fatalf("a supervisor lands on %s", loc)
	}

	t.Run("overview: chart of calls per manager per day, missed calls", func(t *testing.T) {
		p := p.in(t)
		bars := eval[int](p, `document.querySelectorAll('#calls-chart rect.bar').length`)
		missed := eval[int](p, `document.querySelectorAll('#missed-chart rect.bar').length`)
		// 6 days × (anna, bob) + 3 days of unanswered calls.
		if bars != 15 || missed != 3 {
			t.Errorf("the charts have %d and %d bars, want 15 and 3", bars, missed)
		}
		legend := strings.Join(strings.Fields(p.text(".legend")), " ")
		if !strings.Contains(legend, "M anna 12") || !strings.Contains(legend, "M bob 6") {
			t.Errorf("the legend says %q", legend)
		}
		if got := eval[string](p, `document.querySelector('#calls-chart title').textContent`); got != "Calls per manager per day" {
			t.Errorf("the chart's accessible title is %q", got)
		}
		p.screenshot("supervisor-overview", true)
	})

	t.Run("calls list with filters", func(t *testing.T) {
		p := p.in(t)
		count := func() int { return eval[int](p, `document.querySelectorAll('#calls tbody tr').length`) }
		p.open(s.api, "/console/calls")
		if c := count(); c != 21 {
			t.Errorf("the unfiltered list has %d calls, want 21", c)
		}
		p.do("filter by manager and outcome",
			chromedp.SetValue(chromedp.ID("f-manager"), anna.ID),
			chromedp.SetValue(chromedp.ID("f-disp"), "answered"),
			chromedp.Click(chromedp.CSS(".filters button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS(`.filters a[href="/console/calls"]`)))
		if c := count(); c != 12 {
			t.Errorf("anna's answered calls: %d, want 12", c)
		}
		p.open(s.api, "/console/calls?direction=outbound")
		if c := count(); c != 6 {
			t.Errorf("outbound calls: %d, want 6", c)
		}
		p.open(s.api, "/console/calls?disposition=missed&client="+bolt.ID)
		if c := count(); c != 3 {
			t.Errorf("bolt's missed calls: %d, want 3", c)
		}
		day := today.AddDate(0, 0, -2).Format(time.DateOnly)
		p.open(s.api, "/console/calls?from="+day+"&to="+day)
		if c := count(); c != 4 {
			t.Errorf("calls on %s: %d, want 4", day, c)
		}
		p.open(s.api, "/console/calls?from=yesterday")
		if got := p.text(".flash.error"); !strings.Contains(got, "start date") {
			t.Errorf("a bad date says %q", got)
		}
		p.open(s.api, "/console/calls")
		p.screenshot("supervisor-calls", true)
	})

	t.Run("team with registration status", func(t *testing.T) {
		p := p.in(t)
		p.open(s.api, "/console/managers")
		if got := p.text(`tr[data-manager="` + anna.ID + `"]`); !strings.Contains(got, "Registered") {
			t.Errorf("anna's row says %q", got)
		}
		if got := p.text(`tr[data-manager="` + bob.ID + `"]`); !strings.Contains(got, "Not registered") {
			t.Errorf("bob's row says %q", got)
		}
		if n := eval[int](p, `document.querySelectorAll('details.manage').length`); n != 0 {
			t.Errorf("a supervisor sees %d admin action menus", n)
		}
		p.screenshot("supervisor-team", false)
	})

	t.Run("reassign a client's primary and partners", func(t *testing.T) {
		p := p.in(t)
		p.open(s.api, "/console/clients/"+acme.ID)
		// Partners offered: the managers but the primary; never the
		// supervisor, an admin, or the primary herself.
		offered := func() []string {
			return eval[[]string](p, `Array.from(document.querySelectorAll('#assign-form input[name="partner_ids"]'))
				.filter(i => i.checkVisibility() && !i.disabled).map(i => i.value)`)
		}
		if got := offered(); len(got) != 1 || got[0] != bob.ID {
			t.Errorf("with anna primary the partners offered are %v, want bob %s only (not anna %s nor sveta %s)", got, bob.ID, anna.ID, sveta.ID)
		}
		eval[bool](p, `(() => { const s = document.getElementById('primary'); s.value = '`+bob.ID+`';
			s.dispatchEvent(new Event('change')); return true; })()`)
		if got := offered(); len(got) != 1 || got[0] != anna.ID {
			t.Errorf("with bob chosen as primary the partners offered are %v, want anna %s only", got, anna.ID)
		}
		p.do("reassign",
			chromedp.Click(chromedp.CSS(`#assign-form input[value="`+anna.ID+`"]`)),
			chromedp.Click(chromedp.CSS("#assign-form button")),
			chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
		var c struct {
			ManagerID  string   `json:"manager_id"`
			PartnerIDs []string `json:"partner_ids"`
		}
		s.call("GET", "/api/v1/clients/"+acme.ID, adminTok, nil, &c)
		if c.ManagerID != bob.ID || len(c.PartnerIDs) != 1 || c.PartnerIDs[0] != anna.ID {
			t.Errorf("after the reassignment: %+v", c)
		}
		if !s.audited("client.reassign", "client:"+acme.ID) {
			t.Error("no audit row for the reassignment")
		}
		p.screenshot("supervisor-client", false)
	})

	t.Run("play a recording and seek", func(t *testing.T) {
		p := p.in(t)
		// A real answered call: the trunk calls the company number from
		// Orion's number, anna's phone answers, both send audio.
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41700")
		phoneRTP := testenv.NewRTPEndpoint(t, annaIP+":41702")
		ph := phone(t, s, "anna", annaIP, 5070, 41702, false, 1)
		tr := trunkCall(t, s, orionNumber, 41700, true, 3000)
		talk(t, tr, ph, trunkRTP, phoneRTP, annaIP)
		tr.Wait()
		ph.Wait()
		if cdr := s.cdr(storage.CDRFilter{ClientID: orion.ID}); cdr.Recording == "" {
			t.Errorf("the call's CDR carries no recording state: %+v", cdr)
		}
		var recs []struct {
			ID         string `json:"id"`
			Status     string `json:"status"`
			DurationMS int64  `json:"duration_ms"`
		}
		if !testenv.WaitFor(20*time.Second, func() bool {
			recs = nil
			st := s.call("GET", "/api/v1/recordings?client_id="+orion.ID, adminTok, nil, &recs)
			return st == http.StatusOK && len(recs) > 0 && recs[0].Status != "recording"
		}) {
			t.Fatalf("no finished recording of the call appeared: %+v", recs)
		}
		p.open(s.api, "/console/clients/"+orion.ID)
		audio := `document.querySelector('audio[data-recording="` + recs[0].ID + `"]')`
		if !eval[bool](p, audio+` !== null`) {
			t.Fatalf("the client page has no player for recording %s:\n%s", recs[0].ID, p.text("#calls"))
		}
		if got := p.text(".player .channels"); !strings.Contains(got, "Client") || !strings.Contains(got, "Manager") {
			t.Errorf("the player's channels are labelled %q", got)
		}
		// Before anything is played the player shows the recording's length,
		// and no audio has been fetched (each fetch is audited).
		player := `document.querySelector('[data-player]:has(audio[data-recording="` + recs[0].ID + `"])')`
		secs := (recs[0].DurationMS + 500) / 1000
		wantTime := fmt.Sprintf("0:00 / %d:%02d", secs/60, secs%60)
		if got := eval[string](p, player+`.querySelector('[data-time]').textContent`); got != wantTime || secs == 0 {
			t.Errorf("the player shows %q before play, want %q", got, wantTime)
		}
		if !eval[bool](p, player+`.querySelector('[data-controls]').checkVisibility()`) {
			t.Error("the player's controls are not shown")
		}
		for _, r := range p.captured() {
			if strings.Contains(r.URL, "/api/v1/recordings/"+recs[0].ID+"/audio") {
				t.Errorf("audio fetched before play: %s %d", r.URL, r.Status)
			}
		}
		eval[bool](p, `(() => { `+audio+`.muted = true; return true; })()`)
		p.do("press Play", chromedp.Click(chromedp.CSS(`[data-player]:has(audio[data-recording="`+recs[0].ID+`"]) [data-play]`)))
		p.waitFor("the recording plays", audio+`.currentTime > 0.2`, 10*time.Second)
		if got := eval[string](p, player+`.querySelector('[data-play]').getAttribute('aria-label')`); got != "Pause" {
			t.Errorf("the play button, playing, is labelled %q", got)
		}
		p.screenshot("supervisor-recording", false)
		eval[bool](p, `(() => { const a = `+audio+`; a.pause(); a.currentTime = Math.min(2.0, a.duration - 0.2); return true; })()`)
		p.waitFor("the seek lands", `(() => { const a = `+audio+`; return !a.seeking && a.currentTime >= Math.min(1.9, a.duration - 0.3); })()`, 10*time.Second)
		ranged := false
		for _, r := range p.captured() {
			if strings.Contains(r.URL, "/api/v1/recordings/"+recs[0].ID+"/audio") && r.Status == http.StatusPartialContent &&
				strings.Contains(strings.ToLower(r.Headers), "content-range: bytes") {
				ranged = true
			}
		}
		if !ranged {
			t.Error("the player fetched no byte range of the audio (206 with Content-Range)")
		}
		if !s.audited("recording.audio", "recording:"+recs[0].ID) {
			t.Error("listening was not audited")
		}
	})
}

// TestConsoleSignin: sign-in over plain HTTP (no browser): cookie flags,
// the rate limit on failures and its audit rows, the bootstrap token, and
// sign-out ending the session for the API too.
func TestConsoleSignin(t *testing.T) {
	s := startSystemConfig(t, nil)
	anna := s.manager("anna")
	s.setWebPassword(anna.ID, "anna-console-pw")

	newClient := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	tokenRE := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	signin := func(c *http.Client, form url.Values) *http.Response {
		t.Helper()
		resp, err := c.Get(s.api + "/console/signin")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := tokenRE.FindSubmatch(page)
		if m == nil {
			t.Fatalf("the sign-in page has no CSRF token:\n%s", page)
		}
		form.Set("csrf_token", string(m[1]))
		resp, err = c.PostForm(s.api+"/console/signin", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	c := newClient()
	resp := signin(c, url.Values{"username": {"anna"}, "password": {"anna-console-pw"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "mpx_session" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/, not Secure over plain HTTP", session)
	}
	// The session works for the API (GET needs no CSRF header) and shows
	// only anna's view.
	r, _ := c.Get(s.api + "/api/v1/clients")
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("API with the session cookie: %d", r.StatusCode)
	}
	r, _ = c.Get(s.api + "/api/v1/managers")
	r.Body.Close()
	if r.StatusCode != 403 {
		t.Errorf("a manager's session listing managers: %d, want 403", r.StatusCode)
	}
	// Sign-out ends it for pages and API alike.
	page, _ := c.Get(s.api + "/console/clients")
	raw, _ := io.ReadAll(page.Body)
	page.Body.Close()
	m := tokenRE.FindSubmatch(raw)
	if m == nil {
		t.Fatal("no CSRF token on the clients page")
	}
	r, _ = c.PostForm(s.api+"/console/signout", url.Values{"csrf_token": {string(m[1])}})
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-out: %d", r.StatusCode)
	}
	req, _ := http.NewRequest("GET", s.api+"/api/v1/clients", nil)
	req.AddCookie(session)
	r, _ = http.DefaultClient.Do(req)
	r.Body.Close()
	if r.StatusCode != 401 {
		t.Errorf("API with a signed-out session: %d, want 401", r.StatusCode)
	}

	// Failures are limited per username: after 5 from an address anna has
	// never signed in from, even the right password from there waits, and
	// the failures are audited. From her own address she is not locked out.
	stranger := func() *http.Client {
		c := newClient()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 77)}}
		c.Transport = &http.Transport{DialContext: d.DialContext}
		return c
	}
	for i := 0; i < 5; i++ {
		if resp := signin(stranger(), url.Values{"username": {"anna"}, "password": {"guess-" + fmt.Sprint(i)}}); resp.StatusCode != 401 {
			t.Fatalf("wrong password %d: %d, want 401", i, resp.StatusCode)
		}
	}
	if resp := signin(stranger(), url.Values{"username": {"anna"}, "password": {"anna-console-pw"}}); resp.StatusCode != 429 ||
		resp.Header.Get("Retry-After") == "" {
		t.Errorf("the right password after 5 failures: %d, want 429 with Retry-After", resp.StatusCode)
	}
	if !s.audited("web.signin_failed", "web_account:anna") || !s.audited("web.signin_locked", "web_account:anna") {
		t.Error("failed sign-ins are not audited")
	}
	if resp := signin(newClient(), url.Values{"username": {"anna"}, "password": {"anna-console-pw"}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("anna from her own address after a stranger's guesses: %d, want 303", resp.StatusCode)
	}
	// An unknown username fails the same way.
	if resp := signin(newClient(), url.Values{"username": {"nobody"}, "password": {"whatever-pw"}}); resp.StatusCode != 401 {
		t.Errorf("unknown user: %d, want 401", resp.StatusCode)
	}

	// The bootstrap admin token opens an admin session; a wrong one doesn't.
	if resp := signin(newClient(), url.Values{"mode": {"token"}, "token": {"not-the-token"}}); resp.StatusCode != 401 {
		t.Errorf("wrong bootstrap token: %d, want 401", resp.StatusCode)
	}
	ac := newClient()
	if resp := signin(ac, url.Values{"mode": {"token"}, "token": {adminTok}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bootstrap token sign-in: %d", resp.StatusCode)
	}
	r, _ = ac.Get(s.api + "/console/audit")
	raw, _ = io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(raw), "Chain verified") {
		t.Errorf("the bootstrap admin's audit page: %d", r.StatusCode)
	}
}
