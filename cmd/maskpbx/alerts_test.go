package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// TestAlerts runs the alerts in serve end to end: a supervisor opening
// client cards in a burst in the console, a dismissed manager's phone
// registering with his old password (SIPp), and a missed call of a client
// whose segment alerts on misses (SIPp trunk and phone), each raise an alert that is
// published on NATS (alerts.<rule>), POSTed signed to a webhook that first
// answers 503, and shown in the console, where the supervisor acknowledges
// it (audited). No page, payload or message carries a client's number.
func TestAlerts(t *testing.T) {
	var dataDir, dbURL string
	s := startSystemConfig(t, func(c *Config) {
		dataDir, dbURL = c.DataDir, c.DatabaseURL
		c.Alerts.interval = 200 * time.Millisecond
		c.Alerts.th.BurstCount = 5
		c.Alerts.hooks.Backoff = 100 * time.Millisecond
	})
	ctx := context.Background()
	b := newBrowser(t)
	sveta := s.person("sveta", "Svetlana Orlova", storage.RoleSupervisor)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	s.setWebPassword(sveta.ID, "sveta-console-pw")

	// The NATS subscriber and the webhook receiver an integrator would run.
	key, err := os.ReadFile(filepath.Join(dataDir, "keys", bus.PBXPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	nc, _, err := bus.Connect(ctx, s.run.NATSURL, "crm", bus.Auth{User: bus.UserPBX, Password: strings.TrimSpace(string(key))})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	subjects := map[string][]byte{}
	sub, err := nc.Subscribe("alerts.>", func(m *nats.Msg) { mu.Lock(); subjects[m.Subject] = m.Data; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var secret string
	received := map[string][]byte{} // rule -> body
	refused := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := alerts.Verify([]byte(secret), body, r.Header.Get(alerts.SignatureHeader), time.Now(), 5*time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
		}
		if refused == 0 { // the receiver is down at first
			refused++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var m alerts.Message
		_ = json.Unmarshal(body, &m)
		received[m.Rule] = body
	}))
	defer hook.Close()
	var created struct {
		Secret string `json:"secret"`
	}
	if st := s.call("POST", "/api/v1/webhooks", adminTok, map[string]string{"url": hook.URL + "/maskpbx"}, &created); st != 201 {
		t.Fatalf("create webhook: %d", st)
	}
	mu.Lock()
	secret = created.Secret
	mu.Unlock()

	p := b.person("sveta")
	p.signIn(s.api, "sveta", "sveta-console-pw")
	for i := 0; i < 5; i++ {
		p.open(s.api, "/console/clients/"+acme.ID)
	}

	// bob is dismissed; his phone tries his old password (refused).
	if st := s.call("POST", "/api/v1/managers/"+bob.ID+"/dismiss", adminTok, map[string]string{"successor_id": anna.ID}, nil); st != 200 {
		t.Fatalf("dismiss: %d", st)
	}
	testenv.StartSIPp(t, "bob re-register", testenv.SIPpOptions{
		Scenario: "register_wrong_password.xml", Remote: s.sipAddr, LocalIP: bobIP, Port: 5071,
		Keys: map[string]string{"sip_user": "bob", "sip_domain": domain, "reg_expires": "300"},
		Args: []string{"-au", "bob", "-ap", "bob-secret", "-auth_uri", domain},
	}).Wait()

	// Acme's segment alerts its supervisor of a missed call: he hangs up
	// while anna's phone rings.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO segments (name, alert_missed, supervisor_id) VALUES ('vip', true, $1)
		ON CONFLICT (name) DO UPDATE SET alert_missed = true, supervisor_id = $1`, sveta.ID)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.register("anna", annaIP, 5070)
	annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
	testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_cancel.xml", LocalIP: trunkIP, Remote: s.sipAddr,
		Keys: map[string]string{"company": "74950000000", "caller": acmeNumber, "rtp_ip": trunkIP, "rtp_port": "41150"},
		Args: []string{"-d", "500"},
	}).Wait()
	annaPh.Wait() // it received the CANCEL

	var list []alerts.Message
	testenv.Eventually(t, 20*time.Second, func() bool {
		s.call("GET", "/api/v1/alerts", sveta.APIToken, nil, &list)
		return len(list) == 3
	}, "three alerts (access_burst, dismissed_login, missed_call)")
	byRule := map[string]alerts.Message{}
	for _, a := range list {
		byRule[a.Rule] = a
	}
	if a := byRule[alerts.RuleAccessBurst]; a.Actor != "supervisor:"+sveta.ID || len(a.Evidence.AuditSeqs) != 5 {
		t.Fatalf("access_burst alert %+v", a)
	}
	if m := byRule[alerts.RuleMissedCall]; m.ClientID != acme.ID || m.SupervisorID != sveta.ID || len(m.Evidence.CallIDs) != 1 {
		t.Fatalf("missed_call alert %+v", m)
	}
	dl := byRule[alerts.RuleDismissedLogin]
	if dl.ManagerID != bob.ID || !strings.HasPrefix(dl.Actor, "sip:") || len(dl.Evidence.AuditSeqs) != 1 {
		t.Fatalf("dismissed_login alert %+v", dl)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) == 3 && len(subjects) == 3
	}, "the alerts on NATS and at the webhook (after its 503)")
	mu.Lock()
	for _, body := range []map[string][]byte{received, subjects} {
		for what, raw := range body {
			assertNoNumber(t, "alert "+what, string(raw), []string{acmeNumber}, []string{acme.Code})
		}
	}
	if _, ok := subjects["alerts."+alerts.RuleDismissedLogin]; !ok {
		t.Errorf("NATS subjects %v", subjects)
	}
	mu.Unlock()

	// The console: both alerts with their evidence; acknowledging one.
	p.open(s.api, "/console/alerts")
	if n := eval[int](p, `document.querySelectorAll('section.alert-card').length`); n != 3 {
		t.Fatalf("the alerts page shows %d alerts, want 3", n)
	}
	missed := "#alert-" + byRule[alerts.RuleMissedCall].ID
	if got := p.text(missed + " .evidence-calls tbody tr td:nth-child(2)"); !strings.Contains(got, "Acme Trading") {
		t.Errorf("the missed call's evidence names %q", got)
	}
	burst := "#alert-" + byRule[alerts.RuleAccessBurst].ID
	if n := eval[int](p, `document.querySelectorAll('`+burst+` .evidence-audit tbody tr').length`); n != 5 {
		t.Errorf("the burst alert shows %d audit rows, want 5", n)
	}
	if got := p.text(burst + " .evidence-audit tbody tr td:nth-child(5)"); !strings.Contains(got, "Acme Trading") {
		t.Errorf("the evidence names %q, want the client card opened", got)
	}
	if eval[bool](p, `document.getElementById('dead-h') !== null`) {
		t.Errorf("a supervisor sees the webhooks' dead letters")
	}
	p.assertNothingLeaked([]string{acmeNumber}, []string{acme.Code})
	p.do("acknowledge", chromedp.Click(chromedp.CSS(burst+" button.ack")))
	p.waitFor("the page after the ack", `document.querySelector('`+burst+`') === null && document.querySelector('main') !== null`, 10*time.Second)
	if n := eval[int](p, `document.querySelectorAll('section.alert-card').length`); n != 2 {
		t.Errorf("after the ack the open alerts page shows %d alerts, want 2", n)
	}
	acks := 0
	rows, err := s.run.Store.AuditLog(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Action == "alert.ack" && r.Actor == "supervisor:"+sveta.ID {
			acks++
		}
	}
	if acks != 1 {
		t.Fatalf("%d alert.ack rows by sveta, want 1", acks)
	}
	p.screenshot("supervisor-alerts", true)
}
