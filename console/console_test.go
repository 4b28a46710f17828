package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/ha1"
	"github.com/maskpbx/maskpbx/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestPasswords(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash format %q", h)
	}
	if h2, _ := HashPassword("correct horse battery"); h2 == h {
		t.Error("two hashes of one password are equal: no salt")
	}
	for pw, want := range map[string]bool{"correct horse battery": true, "correct horse batter": false, "": false,
		strings.Repeat("x", 300): false} {
		if ok, err := VerifyPassword(h, pw); ok != want || err != nil {
			t.Errorf("verify %q: %v %v, want %v", pw, ok, err, want)
		}
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("imported-password"), bcrypt.MinCost)
	if ok, err := VerifyPassword(string(bc), "imported-password"); !ok || err != nil {
		t.Errorf("bcrypt hash: %v %v", ok, err)
	}
	if ok, _ := VerifyPassword(string(bc), "other"); ok {
		t.Error("bcrypt hash accepts a wrong password")
	}
	for _, bad := range []string{"", "plain", "$argon2id$v=18$m=1,t=1,p=1$AA$AA", "$argon2id$v=19$m=0,t=1,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA", "$argon2i$v=19$m=16,t=1,p=1$AAAA$AAAA",
		strings.Replace(h, "$argon2id$v=19$m=19456", "$argon2id$v=19$m=x", 1)} {
		if ok, err := VerifyPassword(bad, "correct horse battery"); ok || err == nil {
			t.Errorf("malformed hash %q: %v %v, want an error", bad, ok, err)
		}
	}
	for _, pw := range []string{"short", strings.Repeat("y", 257)} {
		if _, err := HashPassword(pw); err == nil {
			t.Errorf("password of %d characters accepted", len(pw))
		}
	}
}

func TestCSRFAndRedirects(t *testing.T) {
	a, b := csrfFor("token-a"), csrfFor("token-b")
	if a == b || a != csrfFor("token-a") || len(a) < 40 {
		t.Errorf("CSRF tokens %q %q", a, b)
	}
	if validCSRF(a, "") || validCSRF(a, b) || !validCSRF(a, a) {
		t.Error("validCSRF")
	}
	for next, want := range map[string]string{
		"/console/clients?q=a": "/console/clients?q=a", "": "/console/", "/api/v1/clients": "/console/",
		"//evil.example/console/": "/console/", "https://evil.example/": "/console/", "/console/\\evil": "/console/",
		"/console/signin?x": "/console/", "/console/x\r\nSet-Cookie: a": "/console/",
	} {
		if got := localNext(next); got != want {
			t.Errorf("localNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestChart(t *testing.T) {
	for v, want := range map[int]int{0: 4, 3: 4, 5: 8, 9: 20, 20: 20, 21: 40, 79: 80, 81: 200, 1234: 2000} {
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", v, got, want)
		}
	}
	days := []time.Time{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	ch := newBarChart(testLocale, "c", "T", "D", days, []chartSeries{{Name: "a", Class: "s0", Values: []int{2, 0}},
		{Name: "b", Class: "s1", Values: []int{2, 1}}})
	if len(ch.Bars) != 3 || ch.Empty {
		t.Fatalf("bars %+v", ch.Bars)
	}
	// The two segments of day one stack up to the 4 of the scale: the
	// whole plot height.
	plotH := float64(chartH - padTop - padB)
	if h := ch.Bars[0].H + ch.Bars[1].H; h < plotH-0.2 || h > plotH+0.2 {
		t.Errorf("day one stacks to %v, want %v", h, plotH)
	}
	if ch.Bars[1].Y+ch.Bars[1].H > ch.Bars[0].Y+0.2 {
		t.Error("the second segment is not on top of the first")
	}
	if ch.Legend[1].Total != 3 || len(ch.Table.Rows) != 2 || ch.Table.Rows[0].Values[1] != 2 {
		t.Errorf("legend %+v table %+v", ch.Legend, ch.Table)
	}
	if empty := newBarChart(testLocale, "e", "", "", days, nil); !empty.Empty || len(empty.Bars) != 0 {
		t.Error("an empty chart has bars")
	}
}

func TestParseImport(t *testing.T) {
	rows, err := parseImport([]byte("\ufeffName;Phone;Manager;Segment;Partners\n" +
		"Acme;+7 916 000-00-01|+7 916 000-00-02;anna;vip;bob|carl\n" +
		"\n" +
		"\"Bolt; Ltd\";8 916 000-00-03;bob;;\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Line != 2 || rows[1].Line != 4 || rows[1].Name != "Bolt; Ltd" ||
		len(rows[0].Phones) != 2 || len(rows[0].Partners) != 2 || rows[0].Segment != "vip" || rows[0].Manager != "anna" {
		t.Fatalf("rows %+v", rows)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"empty":          {"", "empty"},
		"header only":    {"name,phone,manager\n", "no clients"},
		"missing column": {"name,segment\nA,vip\n", "missing: phones, manager"},
		"not UTF-8":      {"name,phone,manager\n\xff\xfe,1,a\n", "UTF-8"},
		"bad quote":      {"name,phone,manager\n\"A,1,a\n", "Line 2"},
	} {
		if _, err := parseImport([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	var big strings.Builder
	big.WriteString("name,phone,manager\n")
	for i := 0; i <= maxImportRows; i++ {
		fmt.Fprintf(&big, "c%d,1,a\n", i)
	}
	if _, err := parseImport([]byte(big.String())); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("too many rows: %v", err)
	}
}

// env is the console and the API over one real database, served as
// `maskpbx serve` mounts them.
type env struct {
	t     *testing.T
	url   string
	store *storage.Store
}

const bootstrapToken = "bootstrap-admin-token"

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dbURL := testenv.Database(t)
	if _, err := storage.Migrate(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(ctx, dbURL, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	enc, _ := masking.GenerateKey()
	idx, _ := masking.GenerateKey()
	keys, err := masking.NewKeyring(enc, idx)
	if err != nil {
		t.Fatal(err)
	}
	sessions := NewSessions(st, bootstrapToken, false, nil)
	apiSrv := api.New(api.Config{Store: st, Keys: keys, Numbers: masking.NewNormalizer("RU"), SIPDomain: "pbx.test",
		AdminToken: bootstrapToken, Sessions: sessions})
	web, err := New(Config{Store: st, Sessions: sessions, API: apiSrv, SIPDomain: "pbx.test", TimeZone: "Europe/Moscow"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", apiSrv)
	mux.Handle("/", web)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &env{t: t, url: hs.URL, store: st}
}

func (e *env) person(user, role, password string) storage.Manager {
	e.t.Helper()
	m, err := e.store.CreateManager(context.Background(), storage.NewManager{Name: "P " + user, SIPUsername: user,
		HA1MD5: "x", HA1SHA256: "y", Role: role}, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	if password != "" {
		h, err := HashPassword(password)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.store.SetWebPassword(context.Background(), m.ID, h, nil, "test"); err != nil {
			e.t.Fatal(err)
		}
	}
	return m
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) get(path string) (int, string, http.Header) {
	b.e.t.Helper()
	resp, err := b.c.Get(b.e.url + path)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindSubmatch(raw); m != nil {
		b.csrf = string(m[1])
	}
	return resp.StatusCode, string(raw), resp.Header
}

func (b *browser) post(path string, form url.Values) (int, string, http.Header) {
	b.e.t.Helper()
	resp, err := b.c.PostForm(b.e.url+path, form)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), resp.Header
}

func (b *browser) signIn(user, password string) int {
	b.e.t.Helper()
	b.get("/console/signin")
	st, _, _ := b.post("/console/signin", url.Values{"csrf_token": {b.csrf}, "username": {user}, "password": {password}})
	b.get("/console/clients") // picks up the session's CSRF token
	return st
}

func (b *browser) api(method, path string, body any, csrf bool) (int, []byte) {
	b.e.t.Helper()
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, b.e.url+path, bytes.NewReader(j))
	if csrf {
		req.Header.Set("X-CSRF-Token", b.csrf)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func TestSessionsAndCSRF(t *testing.T) {
	e := newEnv(t)
	e.person("olga", storage.RoleAdmin, "olga-password")
	anna := e.person("anna", storage.RoleManager, "anna-password")
	bob := e.person("bob", storage.RoleManager, "")

	if st, _, h := e.browser().get("/console/clients"); st != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/console/signin") {
		t.Errorf("a page without a session: %d %s", st, h.Get("Location"))
	}
	if st := e.browser().signIn("bob", "anything-at-all"); st != http.StatusUnauthorized {
		t.Errorf("a person without a web password signs in: %d", st)
	}

	ab := e.browser()
	if st := ab.signIn("anna", "anna-password"); st != http.StatusSeeOther {
		t.Fatalf("anna signs in: %d", st)
	}
	if st, body, _ := ab.get("/console/clients"); st != 200 || !strings.Contains(body, "My clients") {
		t.Fatalf("anna's clients page: %d", st)
	}
	for _, path := range []string{"/console/overview", "/console/calls", "/console/managers", "/console/audit",
		"/console/clients/import", "/console/clients/export.csv"} {
		if st, _, _ := ab.get(path); st != http.StatusForbidden {
			t.Errorf("a manager opens %s: %d, want 403", path, st)
		}
	}
	// State changes need the token: in the form for pages, in a header for the API.
	if st, _, _ := ab.post("/console/managers/"+anna.ID+"/web-password", url.Values{"web_password": {"new-password-1"}}); st != http.StatusForbidden {
		t.Errorf("form POST without a token: %d, want 403", st)
	}
	if st, _ := ab.api("POST", "/api/v1/calls", map[string]string{"client_id": anna.ID}, false); st != http.StatusForbidden {
		t.Errorf("API POST without a CSRF header: %d, want 403", st)
	}
	if st, _ := ab.api("POST", "/api/v1/calls", map[string]string{"client_id": anna.ID}, true); st == http.StatusForbidden || st == http.StatusUnauthorized {
		t.Errorf("API POST with the CSRF header: %d", st)
	}
	if st, _ := ab.api("GET", "/api/v1/clients", nil, false); st != 200 {
		t.Errorf("API GET with the session: %d", st)
	}

	// The admin sets passwords and dismisses; anna's session ends at once.
	ob := e.browser()
	if st := ob.signIn("olga", "olga-password"); st != http.StatusSeeOther {
		t.Fatalf("olga signs in: %d", st)
	}
	if st, _, h := ob.post("/console/managers/"+bob.ID+"/web-password", url.Values{"csrf_token": {ob.csrf}, "web_password": {"short"}}); st != http.StatusSeeOther || h.Get("Location") != "/console/managers" {
		t.Errorf("a too short password: %d", st)
	}
	if _, body, _ := ob.get("/console/managers"); !strings.Contains(body, "at least 10 characters") {
		t.Error("the short password's error is not shown")
	}
	if st, _, _ := ob.post("/console/managers/"+bob.ID+"/web-password", url.Values{"csrf_token": {ob.csrf}, "web_password": {"bob-password-1"}}); st != http.StatusSeeOther {
		t.Errorf("set bob's password: %d", st)
	}
	if st := e.browser().signIn("bob", "bob-password-1"); st != http.StatusSeeOther {
		t.Errorf("bob signs in with his new password: %d", st)
	}
	if st, _, _ := ob.post("/console/managers/"+anna.ID+"/sip-password", url.Values{"csrf_token": {ob.csrf}, "sip_password": {"new-sip-pw"}}); st != http.StatusSeeOther {
		t.Errorf("set anna's SIP password: %d", st)
	}
	if m, _ := e.store.Manager(context.Background(), anna.ID); m.HA1MD5 != ha1.MD5("anna", "pbx.test", "new-sip-pw") {
		t.Error("the SIP digest was not replaced")
	}
	if st, _, _ := ob.post("/console/managers/"+anna.ID+"/dismiss", url.Values{"csrf_token": {ob.csrf}, "successor_id": {bob.ID}}); st != http.StatusSeeOther {
		t.Fatalf("dismiss anna: %d", st)
	}
	if _, body, _ := ob.get("/console/managers"); !strings.Contains(body, "is dismissed") {
		t.Error("the dismissal is not confirmed")
	}
	if st, _ := ab.api("GET", "/api/v1/clients", nil, false); st != http.StatusUnauthorized {
		t.Errorf("anna's session on the API after dismissal: %d, want 401", st)
	}
	if st, _, h := ab.get("/console/clients"); st != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "ended=1") {
		t.Errorf("anna's session on a page after dismissal: %d %s", st, h.Get("Location"))
	}
	if !auditedAction(t, e.store, "manager.dismiss", "manager:"+anna.ID) {
		t.Error("the dismissal is not audited")
	}
}

func auditedAction(t *testing.T, s *storage.Store, action, object string) bool {
	t.Helper()
	log, err := s.AuditLog(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range log {
		if e.Action == action && e.Object == object {
			return true
		}
	}
	return false
}

func TestImportAndPages(t *testing.T) {
	e := newEnv(t)
	e.person("olga", storage.RoleAdmin, "olga-password")
	anna := e.person("anna", storage.RoleManager, "")
	ob := e.browser()
	if st := ob.signIn("olga", "olga-password"); st != http.StatusSeeOther {
		t.Fatalf("sign in: %d", st)
	}
	upload := func(content string) (int, string, http.Header) {
		var body bytes.Buffer
		w := multipart.NewWriter(&body)
		_ = w.WriteField("csrf_token", ob.csrf)
		f, _ := w.CreateFormFile("file", "clients.csv")
		_, _ = f.Write([]byte(content))
		_ = w.Close()
		req, _ := http.NewRequest("POST", e.url+"/console/clients/import", &body)
		req.Header.Set("Content-Type", w.FormDataContentType())
		resp, err := ob.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw), resp.Header
	}
	if st, body, _ := upload("name,segment\nA,b\n"); st != 400 || !strings.Contains(body, "missing: phones, manager") {
		t.Errorf("a bad header: %d", st)
	}
	st, _, h := upload("name,phone,manager,segment\nAcme,+7 916 100-20-30,anna,Key Accounts\nBad,123,anna,\nNobody,+7 916 100-20-31,zed,\n")
	if st != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/console/imports/") {
		t.Fatalf("upload: %d %s", st, h.Get("Location"))
	}
	job := h.Get("Location")
	var p importProgress
	if !testenv.WaitFor(10*time.Second, func() bool {
		_, raw, _ := ob.get(job + "/progress")
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			t.Fatalf("progress: %v: %s", err, raw)
		}
		return p.Finished
	}) {
		t.Fatalf("the import did not finish: %+v", p)
	}
	if p.Total != 3 || p.Imported != 1 || p.Failed != 2 {
		t.Errorf("progress %+v", p)
	}
	_, page, _ := ob.get(job)
	for _, want := range []string{"not a valid number", `No active manager &#34;zed&#34;`, "Acme"} {
		if !strings.Contains(page, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(page, "916") || strings.Contains(page, "100-20") {
		t.Error("the report shows a number of the file")
	}
	clients, _ := e.store.Clients(context.Background(), anna.ID)
	if len(clients) != 1 || clients[0].Name != "Acme" {
		t.Fatalf("imported %+v", clients)
	}

	// Every page renders for an admin, and none shows the number.
	for _, path := range []string{"/console/overview", "/console/calls", "/console/calls?direction=inbound&from=2026-01-01&to=2026-12-31",
		"/console/clients", "/console/clients?q=ac", "/console/clients/" + clients[0].ID, "/console/clients/new",
		"/console/managers", "/console/audit", "/console/clients/import", "/console/no-such-page"} {
		st, body, _ := ob.get(path)
		want := 200
		if path == "/console/no-such-page" {
			want = 404
		}
		if st != want {
			t.Errorf("%s: %d, want %d", path, st, want)
		}
		if strings.Contains(body, "9161002030") || strings.Contains(body, "916 100-20-30") {
			t.Errorf("%s shows the client's number", path)
		}
	}
	if _, body, _ := ob.get("/console/clients/export.csv"); !strings.Contains(body, "Acme") || strings.Contains(body, "9161002030") {
		t.Errorf("export:\n%s", body)
	}
	// The reveal shows the number to the admin, once, with a reason.
	st, body, h := ob.post("/console/clients/"+clients[0].ID+"/reveal", url.Values{"csrf_token": {ob.csrf}, "reason": {"court order 5"}})
	if st != 200 || !strings.Contains(body, "79161002030") {
		_, flash, _ := ob.get(h.Get("Location"))
		t.Errorf("the reveal does not show the number: %d %s\n%s\n%s", st, h.Get("Location"), body, flash)
	}
	// The form offers the segments there are: the import's made one.
	if _, body, _ := ob.get("/console/clients/new"); !strings.Contains(body, `<option value="Key Accounts">`) ||
		strings.Contains(body, `<option value="wholesale">`) {
		t.Error("the new-client form does not offer the segments there are")
	}
	// A new client from the form: the number typed in is not echoed back on error.
	st, body, _ = ob.post("/console/clients", url.Values{"csrf_token": {ob.csrf}, "name": {"Form Client"},
		"phones": {"+7 916 100-20-30"}, "manager_id": {anna.ID}})
	if st != http.StatusConflict || strings.Contains(body, "100-20-30") || !strings.Contains(body, "already belongs") {
		t.Errorf("a duplicate number in the form: %d", st)
	}
}

func TestBootstrapSession(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/console/signin?token=1")
	st, _, _ := b.post("/console/signin", url.Values{"csrf_token": {b.csrf}, "mode": {"token"}, "token": {bootstrapToken}})
	if st != http.StatusSeeOther {
		t.Fatalf("bootstrap sign-in: %d", st)
	}
	if st, body, _ := b.get("/console/managers"); st != 200 || !strings.Contains(body, "Add a person") {
		t.Fatalf("the bootstrap admin's managers page: %d", st)
	}
	// It creates the first admin with a console password.
	st, body, _ := b.post("/console/managers", url.Values{"csrf_token": {b.csrf}, "name": {"First Admin"},
		"sip_username": {"first"}, "sip_password": {"sip-pass-1"}, "role": {"admin"}, "web_password": {"first-admin-pw"}})
	if st != http.StatusCreated || !strings.Contains(body, "mpx_") {
		t.Fatalf("create the first admin: %d", st)
	}
	if st := e.browser().signIn("first", "first-admin-pw"); st != http.StatusSeeOther {
		t.Errorf("the first admin signs in: %d", st)
	}
	// A session of another token (MASKPBX_ADMIN_TOKEN changed) is over.
	other := NewSessions(e.store, "another-token", false, nil)
	req := httptest.NewRequest("GET", "/console/clients", nil)
	for _, c := range b.c.Jar.Cookies(mustURL(e.url)) {
		req.AddCookie(c)
	}
	if _, _, err := other.SessionPrincipal(req); err != api.ErrSessionEnded {
		t.Errorf("a bootstrap session after the token changed: %v, want ErrSessionEnded", err)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestRecordingPlayers: a supervisor's client page has a player for each
// recorded call, labelled by channel, streaming from the recordings API;
// a manager's has none, and a call without a recording shows no player.
func TestRecordingPlayers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.person("sveta", storage.RoleSupervisor, "sveta-password")
	anna := e.person("anna", storage.RoleManager, "anna-password")
	enc, _ := masking.GenerateKey()
	cl, err := e.store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: anna.ID,
		Phones:  []masking.SealedPhone{{Ciphertext: enc, EncKeyID: "k", BlindIndex: enc[:16], IndexKeyID: "i"}},
		NewCode: func() (string, error) { return "12345678", nil }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).UTC()
	calls := []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"}
	for i, id := range calls {
		for j, kind := range []string{storage.CallOffered, storage.CallAnswered, storage.CallEnded} {
			ev := storage.CallEvent{EventID: fmt.Sprintf("%d-%d", i, j), Kind: kind, At: at.Add(time.Duration(i*10+j) * time.Minute),
				CallID: id, Direction: "inbound", ClientID: cl.ID, ManagerID: anna.ID}
			if kind == storage.CallEnded {
				ev.Disposition, ev.HangupSide = "answered", "client"
			}
			if _, err := e.store.ApplyCallEvent(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	rec := "10000000-0000-4000-8000-000000000001"
	if err := e.store.SaveRecording(ctx, storage.Recording{ID: rec, CallID: calls[0], ClientID: cl.ID, ManagerID: anna.ID,
		Direction: "inbound", Source: storage.SourceMaskPBX, Node: "n1", BlobKey: "k1.wav", Codec: "PCMU",
		Status: storage.RecordingComplete, StartedAt: at, Duration: 65 * time.Second, SizeBytes: 1000}); err != nil {
		t.Fatal(err)
	}

	sb := e.browser()
	sb.signIn("sveta", "sveta-password")
	_, page, _ := sb.get("/console/clients/" + cl.ID)
	if n := strings.Count(page, "<audio"); n != 1 {
		t.Fatalf("the supervisor's client page has %d players, want 1 (one recorded call of two)", n)
	}
	for _, want := range []string{`src="/api/v1/recordings/` + rec + `/audio"`, `preload="none"`, "<b>L</b> Client", "<b>R</b> Manager",
		"Recording · 1:05"} {
		if !strings.Contains(page, want) {
			t.Errorf("the player lacks %q", want)
		}
	}
	_, calls2, _ := sb.get("/console/calls")
	if strings.Count(calls2, "<audio") != 1 {
		t.Error("the calls list has no player for the recorded call")
	}

	ab := e.browser()
	ab.signIn("anna", "anna-password")
	if _, page, _ := ab.get("/console/clients/" + cl.ID); strings.Contains(page, "<audio") || strings.Contains(page, rec) {
		t.Error("a manager's client page offers the recording")
	}
}
