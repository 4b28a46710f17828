package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const adminToken = "admin-secret-token"

type env struct {
	t     *testing.T
	url   string
	dbURL string
	store *storage.Store
	srv   *api.Server
}

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
	srv := api.New(api.Config{Store: st, Keys: keys, Numbers: masking.NewNormalizer("RU"),
		SIPDomain: "pbx.test", AdminToken: adminToken})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &env{t: t, url: hs.URL, dbURL: dbURL, store: st, srv: srv}
}

// call does one request and returns the status and raw body.
func (e *env) call(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	conformsToOpenAPI(e.t, req, resp.StatusCode, resp.Header, raw)
	return resp.StatusCode, raw
}

func (e *env) must(status int, method, path, token string, body any, out any) []byte {
	e.t.Helper()
	got, raw := e.call(method, path, token, body)
	if got != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return raw
}

type manager struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	APIToken string `json:"api_token"`
}

type client struct {
	ID         string   `json:"id"`
	Code       string   `json:"code"`
	ManagerID  string   `json:"manager_id"`
	PartnerIDs []string `json:"partner_ids"`
}

func (e *env) manager(user, role string) manager {
	var m manager
	e.must(201, "POST", "/api/v1/managers", adminToken, map[string]any{
		"name": "M " + user, "sip_username": user, "sip_password": "secret-" + user, "role": role}, &m)
	if m.APIToken == "" || m.Status != "active" {
		e.t.Fatalf("manager create returned %+v", m)
	}
	return m
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// assertNoNumber fails if body holds any 4-digit run of the number's national
// digits. Ids and client codes are random values of our own, not derived
// from the number, so they are taken out before looking.
func assertNoNumber(t *testing.T, what string, body []byte, e164 string, codes ...string) {
	t.Helper()
	s := uuidRE.ReplaceAllString(string(body), "<id>")
	for _, c := range codes {
		s = strings.ReplaceAll(s, c, "<code>")
	}
	digits := strings.TrimPrefix(e164, "+7")
	for i := 0; i+4 <= len(digits); i++ {
		if run := digits[i : i+4]; strings.Contains(s, run) {
			t.Fatalf("%s leaks digit run %q of the client's number: %s", what, run, s)
		}
	}
}

func TestClientNumbersStayHidden(t *testing.T) {
	e := newEnv(t)
	anna := e.manager("anna", "manager")
	bob := e.manager("bob", "manager")
	sup := e.manager("sue", "supervisor")

	const number = "+79161234567"
	var c1, c2 client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{
		"name": "Acme", "phones": []string{"8 916 123-45-67", "+7 (916) 123 45 67"}, "segment": "vip",
		"manager_id": anna.ID}, &c1)
	e.must(201, "POST", "/api/v1/clients", sup.APIToken, map[string]any{
		"name": "Bolt", "phones": []string{"+7 495 765-43-21"}, "manager_id": bob.ID, "partner_ids": []string{anna.ID}}, &c2)
	if !masking.ValidClientCode(c1.Code) || c1.Code == c2.Code {
		t.Fatalf("bad client codes %q %q", c1.Code, c2.Code)
	}

	t.Run("the database holds no plaintext number", func(t *testing.T) {
		conn, err := pgx.Connect(context.Background(), e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		for _, table := range []string{"clients", "client_phones", "assignments", "audit_log", "managers"} {
			rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT t::text FROM %s t", table))
			if err != nil {
				t.Fatal(err)
			}
			texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			dump := strings.Join(texts, "\n")
			for _, needle := range []string{"9161234567", "916 123", "4957654321"} {
				if strings.Contains(dump, needle) {
					t.Fatalf("table %s holds %q in plain text", table, needle)
				}
			}
		}
		var raw []byte
		if err := conn.QueryRow(context.Background(), `SELECT ciphertext FROM client_phones WHERE client_id = $1`, c1.ID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("9161234567")) || bytes.Contains(raw, []byte("1234567")) {
			t.Fatal("ciphertext carries the number")
		}
		var n int
		_ = conn.QueryRow(context.Background(), `SELECT count(*) FROM client_phones WHERE client_id = $1`, c1.ID).Scan(&n)
		if n != 1 {
			t.Fatalf("two spellings of one number stored %d rows, want 1", n)
		}
	})

	t.Run("any spelling finds the client through the blind index", func(t *testing.T) {
		for _, spelling := range []string{number, "8 916 123-45-67", "+7 (916) 123 45 67", "89161234567", "79161234567"} {
			req := httptest.NewRequest("GET", "/", nil)
			got, err := e.srv.ClientByNumber(req, spelling)
			if err != nil || got.ID != c1.ID {
				t.Fatalf("%q: %+v %v", spelling, got, err)
			}
		}
	})

	t.Run("a manager sees only his clients and no numbers", func(t *testing.T) {
		var mine []client
		raw := e.must(200, "GET", "/api/v1/clients", bob.APIToken, nil, &mine)
		if len(mine) != 1 || mine[0].ID != c2.ID {
			t.Fatalf("bob sees %+v", mine)
		}
		assertNoNumber(t, "bob's list", raw, "+74957654321", c1.Code, c2.Code)
		raw = e.must(200, "GET", "/api/v1/clients", anna.APIToken, nil, &mine)
		if len(mine) != 2 { // primary of c1, partner of c2
			t.Fatalf("anna sees %d clients", len(mine))
		}
		assertNoNumber(t, "anna's list", raw, number, c1.Code, c2.Code)
		assertNoNumber(t, "anna's list", raw, "+74957654321", c1.Code, c2.Code)
		raw = e.must(200, "GET", "/api/v1/clients/"+c1.ID, anna.APIToken, nil, nil)
		assertNoNumber(t, "client get", raw, number, c1.Code, c2.Code)
		e.must(404, "GET", "/api/v1/clients/"+c1.ID, bob.APIToken, nil, nil)
		raw = e.must(200, "GET", "/api/v1/clients", sup.APIToken, nil, &mine)
		if len(mine) != 2 {
			t.Fatalf("supervisor sees %d clients", len(mine))
		}
		assertNoNumber(t, "supervisor's list", raw, number, c1.Code, c2.Code)
	})

	t.Run("reveal is admin-only and audited", func(t *testing.T) {
		for _, tok := range []string{anna.APIToken, sup.APIToken} {
			status, raw := e.call("POST", "/api/v1/clients/"+c1.ID+"/reveal", tok, map[string]string{"reason": "curious"})
			if status != 403 {
				t.Fatalf("reveal by non-admin: %d", status)
			}
			assertNoNumber(t, "403 body", raw, number)
		}
		e.must(400, "POST", "/api/v1/clients/"+c1.ID+"/reveal", adminToken, map[string]string{"reason": ""}, nil)
		// An invisible, 3-byte or NUL reason is a 400, never a 500.
		for _, bad := range []string{"abc", "\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b",
			"court\u0000order 17", "court order \u202e71", "court order\u2028 17"} {
			e.must(400, "POST", "/api/v1/clients/"+c1.ID+"/reveal", adminToken, json.RawMessage(`{"reason":"`+bad+`"}`), nil)
		}
		var got struct{ Phones []string }
		e.must(200, "POST", "/api/v1/clients/"+c1.ID+"/reveal", adminToken, map[string]string{"reason": "court order 17"}, &got)
		if len(got.Phones) != 1 || got.Phones[0] != number {
			t.Fatalf("reveal returned %v", got.Phones)
		}
		log, _ := e.store.AuditLog(context.Background(), 1)
		if len(log) != 1 || log[0].Action != "client.reveal" || log[0].Reason != "court order 17" ||
			log[0].Object != "client:"+c1.ID || log[0].Actor != "admin:bootstrap" {
			t.Fatalf("no audit row for the reveal: %+v", log)
		}
		if n, err := e.store.VerifyAudit(context.Background()); err != nil || n < 5 {
			t.Fatalf("audit chain: %d %v", n, err)
		}
	})

	t.Run("reassign", func(t *testing.T) {
		var got client
		e.must(403, "PUT", "/api/v1/clients/"+c1.ID+"/assignment", anna.APIToken, map[string]any{"manager_id": bob.ID}, nil)
		e.must(200, "PUT", "/api/v1/clients/"+c1.ID+"/assignment", sup.APIToken,
			map[string]any{"manager_id": bob.ID, "partner_ids": []string{anna.ID}}, &got)
		if got.ManagerID != bob.ID || len(got.PartnerIDs) != 1 || got.PartnerIDs[0] != anna.ID {
			t.Fatalf("reassign: %+v", got)
		}
	})
}

func TestBadInputWritesNothing(t *testing.T) {
	e := newEnv(t)
	anna := e.manager("anna", "manager")
	var c client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "Acme", "phones": []string{"+79161234567"}, "manager_id": anna.ID}, &c)

	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"malformed json", "POST", "/api/v1/clients", adminToken, `{"name": "x",`, 400, "bad_request"},
		{"wrong field type", "POST", "/api/v1/clients", adminToken, `{"name": "x", "phones": "+79160000000", "manager_id": "` + anna.ID + `"}`, 400, "bad_request"},
		{"unknown field", "POST", "/api/v1/clients", adminToken, `{"name": "x", "phone": ["+79160000000"], "manager_id": "` + anna.ID + `"}`, 400, "bad_request"},
		{"number does not parse", "POST", "/api/v1/clients", adminToken, map[string]any{"name": "x", "phones": []string{"call me maybe"}, "manager_id": anna.ID}, 422, "bad_phone"},
		{"duplicate phone", "POST", "/api/v1/clients", adminToken, map[string]any{"name": "x", "phones": []string{"+79160000001", "8 (916) 123-45-67"}, "manager_id": anna.ID}, 409, "duplicate_phone"},
		{"unknown manager", "POST", "/api/v1/clients", adminToken, map[string]any{"name": "x", "phones": []string{"+79160000002"}, "manager_id": "7d1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11"}, 422, "unknown_manager"},
		{"malformed manager id", "POST", "/api/v1/clients", adminToken, map[string]any{"name": "x", "phones": []string{"+79160000002"}, "manager_id": "anna"}, 422, "unknown_manager"},
		{"no token", "GET", "/api/v1/clients", "", nil, 401, "unauthorized"},
		{"bad token", "GET", "/api/v1/clients", "nope", nil, 401, "unauthorized"},
		{"manager creates client", "POST", "/api/v1/clients", anna.APIToken, map[string]any{"name": "x", "phones": []string{"+79160000003"}, "manager_id": anna.ID}, 403, "forbidden"},
		{"manager lists managers", "GET", "/api/v1/managers", anna.APIToken, nil, 403, "forbidden"},
		{"short sip password", "POST", "/api/v1/managers", adminToken, map[string]any{"name": "x", "sip_username": "x1", "sip_password": "short"}, 400, "bad_request"},
		{"duplicate sip username", "POST", "/api/v1/managers", adminToken, map[string]any{"name": "x", "sip_username": "anna", "sip_password": "long-enough"}, 409, "duplicate_sip_username"},
		{"unknown client", "GET", "/api/v1/clients/7d1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11", adminToken, nil, 404, "not_found"},
		{"malformed client id", "GET", "/api/v1/clients/../../etc", adminToken, nil, 404, "not_found"},
		{"dismiss without successor", "POST", "/api/v1/managers/" + anna.ID + "/dismiss", adminToken, map[string]any{}, 400, "bad_request"},
		{"dismiss to unknown successor", "POST", "/api/v1/managers/" + anna.ID + "/dismiss", adminToken, map[string]any{"successor_id": "7d1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11"}, 422, "unknown_manager"},
		{"unknown path", "GET", "/api/v1/nothing", adminToken, nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, raw := e.call(tc.method, tc.path, tc.token, tc.body)
			var body struct {
				Error struct{ Code, Message string }
			}
			if status != tc.status || json.Unmarshal(raw, &body) != nil || body.Error.Code != tc.code || body.Error.Message == "" {
				t.Fatalf("got %d %s, want %d with code %s", status, raw, tc.status, tc.code)
			}
			assertNoNumber(t, "error body", raw, "+79161234567")
		})
	}
	clients, _ := e.store.Clients(context.Background(), "")
	managers, _ := e.store.Managers(context.Background())
	if len(clients) != 1 || len(managers) != 1 {
		t.Fatalf("bad input wrote rows: %d clients, %d managers", len(clients), len(managers))
	}
	if m, _ := e.store.Manager(context.Background(), anna.ID); m.Status != "active" {
		t.Fatal("a refused dismissal changed the manager")
	}
}

func TestDismissCutsOffAtOnce(t *testing.T) {
	e := newEnv(t)
	anna := e.manager("anna", "manager")
	bob := e.manager("bob", "manager")
	var c client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "Acme", "phones": []string{"+79161234567"}, "manager_id": anna.ID}, &c)
	e.must(200, "GET", "/api/v1/clients", anna.APIToken, nil, nil)
	e.must(200, "POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminToken, map[string]any{"successor_id": bob.ID}, nil)
	e.must(401, "GET", "/api/v1/clients", anna.APIToken, nil, nil)
	var mine []client
	e.must(200, "GET", "/api/v1/clients", bob.APIToken, nil, &mine)
	if len(mine) != 1 || mine[0].ID != c.ID || mine[0].ManagerID != bob.ID {
		t.Fatalf("clients not handed over: %+v", mine)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t)
	e.must(200, "GET", "/healthz", "", nil, nil)
	e.call("GET", "/api/v1/clients", "", nil)
	raw := e.must(200, "GET", "/metrics", "", nil, nil)
	if !strings.Contains(string(raw), `maskpbx_api_requests_total{route="GET /api/v1/clients",status="401"} 1`) {
		t.Fatalf("metrics lack the request counter:\n%s", raw)
	}
}
