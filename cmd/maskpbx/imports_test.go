package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/console"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// A report bigger than a NATS message is saved in parts and read back
// whole; a later save replaces it; an unknown import is ErrNoImport.
func TestImportReportsParts(t *testing.T) {
	ctx := context.Background()
	_, js, err := bus.Connect(ctx, testenv.NATS(t), "imports-test", bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := openImportReports(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (3*importPart)/16+100) // four parts
	for _, report := range [][]byte{[]byte(`{"first":true}`), big, []byte(`{"last":true}`)} {
		if err := r.Save(ctx, "job-1", report); err != nil {
			t.Fatalf("save %d bytes: %v", len(report), err)
		}
		got, err := r.Load(ctx, "job-1")
		if err != nil || !bytes.Equal(got, report) {
			t.Fatalf("load after saving %d bytes: %d bytes, %v", len(report), len(got), err)
		}
	}
	if _, err := r.Load(ctx, "job-2"); !errors.Is(err, console.ErrNoImport) {
		t.Fatalf("unknown import: %v, want ErrNoImport", err)
	}
}

// TestImportReportSharedAcrossNodes: an admin imports a CSV file through
// node A's console; node B, sharing NATS and Postgres, shows its progress
// and its report (rows rejected and clients created) at the same address.
func TestImportReportSharedAcrossNodes(t *testing.T) {
	users := bus.NewUsers()
	natsSrv, err := bus.StartEmbedded(t.TempDir(), "127.0.0.1", testenv.FreePort(t, "127.0.0.1"), users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(natsSrv.Shutdown)
	cfgA := systemConfig(t)
	node := func(name string) *system {
		cfg := systemConfig(t)
		cfg.NodeID, cfg.DatabaseURL = name, cfgA.DatabaseURL
		cfg.NATSURL, cfg.NATS = natsSrv.URL(), natsClient{User: bus.UserPBX, Password: users.PBX}
		return startSystemFrom(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	}
	a, b := node("node-a"), node("node-b")
	olga := a.person("olga", "Olga Admin", storage.RoleAdmin)
	a.setWebPassword(olga.ID, "olga-console-pw")
	a.manager("bob")

	csv := "name,phone,manager\n" +
		"Orion Group,+7 903 777-88-99,bob\n" +
		"Bad Number Ltd,12345,bob\n" +
		"Polar Foods,+7 925 888-66-11,bob\n"
	jobURL := consoleImport(t, signedIn(t, a.api, "olga", "olga-console-pw"), a.api, csv)

	onB := signedIn(t, b.api, "olga", "olga-console-pw")
	var progress struct {
		Total, Done, Imported, Failed int
		Finished                      bool
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		resp, err := onB.Get(b.api + jobURL + "/progress")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&progress) == nil && progress.Finished
	}, "node B showing node A's import finished")
	if progress.Total != 3 || progress.Imported != 2 || progress.Failed != 1 {
		t.Fatalf("node B's progress of A's import: %+v", progress)
	}
	page := get(t, onB, b.api+jobURL)
	for _, want := range []string{`id="import-errors"`, "Bad Number Ltd", `id="import-created"`, "Orion Group", "Polar Foods"} {
		if !strings.Contains(page, want) {
			t.Errorf("node B's report page lacks %q", want)
		}
	}
	assertNoNumber(t, "node B's import report", page, []string{"+79037778899", "+79258886611"}, nil)
	if resp, err := onB.Get(b.api + "/console/imports/AAAAAAAAAAAAAAAAAAAAAA"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an unknown import on node B: %v %v", resp, err)
	}
}

// signedIn is a cookie-keeping client signed in to the console at base.
func signedIn(t *testing.T, base, user, password string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	form := url.Values{"username": {user}, "password": {password}, "csrf_token": {csrfToken(t, c, base+"/console/signin")}}
	resp, err := c.PostForm(base+"/console/signin", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in of %s at %s: %d", user, base, resp.StatusCode)
	}
	return c
}

var csrfTokenRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// csrfToken is the CSRF token of the form on the page at pageURL.
func csrfToken(t *testing.T, c *http.Client, pageURL string) string {
	t.Helper()
	m := csrfTokenRE.FindStringSubmatch(get(t, c, pageURL))
	if m == nil {
		t.Fatalf("%s has no CSRF token", pageURL)
	}
	return m[1]
}

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return string(body)
}

// consoleImport posts csv to the console's import form and returns the
// job page's path it is sent to.
func consoleImport(t *testing.T, c *http.Client, base, csv string) string {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("csrf_token", csrfToken(t, c, base+"/console/clients/import"))
	fw, _ := mw.CreateFormFile("file", "clients.csv")
	_, _ = io.WriteString(fw, csv)
	_ = mw.Close()
	resp, err := c.Post(base+"/console/clients/import", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/imports/") {
		t.Fatalf("import: %d %q", resp.StatusCode, loc)
	}
	return fmt.Sprint(loc)
}
