package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// world is a real database with managers and clients to raise alerts on.
type world struct {
	t     *testing.T
	store *storage.Store
	dbURL string
	keys  *masking.Keyring
	code  int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	url := testenv.Database(t)
	if _, err := storage.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	enc, _ := masking.GenerateKey()
	idx, _ := masking.GenerateKey()
	keys, err := masking.NewKeyring(enc, idx)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, store: s, dbURL: url, keys: keys}
}

func (w *world) manager(name string) storage.Manager {
	w.t.Helper()
	m, err := w.store.CreateManager(context.Background(), storage.NewManager{Name: name, SIPUsername: name,
		HA1MD5: "x", HA1SHA256: "y", Role: storage.RoleManager, TokenHash: []byte("hash-" + name)}, "test")
	if err != nil {
		w.t.Fatal(err)
	}
	return m
}

func (w *world) client(name, segment, managerID string) storage.Client {
	w.t.Helper()
	sealed, err := w.keys.Seal(fmt.Sprintf("+7495%07d", len(name)*1000+w.code))
	if err != nil {
		w.t.Fatal(err)
	}
	c, err := w.store.CreateClient(context.Background(), storage.NewClient{Name: name, Segment: segment,
		Phones: []masking.SealedPhone{sealed}, ManagerID: managerID,
		NewCode: func() (string, error) { w.code++; return fmt.Sprintf("%08d", 20000000+w.code), nil }}, "test")
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// sql runs a statement on the database directly (segments have no
// writer in storage on this branch).
func (w *world) sql(q string, args ...any) {
	w.t.Helper()
	conn, err := pgx.Connect(context.Background(), w.dbURL)
	if err != nil {
		w.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), q, args...); err != nil {
		w.t.Fatal(err)
	}
}

// callAt writes the CDR of a call offered at at, ended as disposition.
func (w *world) callAt(clientID, managerID, direction, disposition string, at time.Time) string {
	w.t.Helper()
	id := uuid.NewString()
	evs := []storage.CallEvent{
		{EventID: uuid.NewString(), Kind: storage.CallOffered, At: at, CallID: id, Direction: direction, ClientID: clientID, ManagerID: managerID},
	}
	if disposition == "answered" {
		evs = append(evs, storage.CallEvent{EventID: uuid.NewString(), Kind: storage.CallAnswered, At: at.Add(5 * time.Second), CallID: id})
	}
	evs = append(evs, storage.CallEvent{EventID: uuid.NewString(), Kind: storage.CallEnded, At: at.Add(time.Minute), CallID: id,
		Disposition: disposition, HangupSide: "client"})
	for _, e := range evs {
		if _, err := w.store.ApplyCallEvent(context.Background(), e); err != nil {
			w.t.Fatal(err)
		}
	}
	return id
}

func (w *world) evaluator(now func() time.Time, mods ...func(*alerts.Config)) *alerts.Evaluator {
	cfg := alerts.Config{Store: w.store, Keys: w.keys, Now: now}
	for _, m := range mods {
		m(&cfg)
	}
	return alerts.New(cfg)
}

func (w *world) alerts(rule string) []storage.Alert {
	w.t.Helper()
	list, err := w.store.Alerts(context.Background(), storage.AlertFilter{Rule: rule})
	if err != nil {
		w.t.Fatal(err)
	}
	return list
}

// A client who called every week for two months and has been silent for
// five weeks raises client_quiet once, with his calls as evidence; a
// client calling as usual, one with too few calls, and one whose manager
// calls him anyway raise nothing. Two evaluators (two nodes) raise it once.
func TestQuietClient(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	anna := w.manager("anna")
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	quiet := w.client("Quiet Ltd", "", anna.ID)
	var quietCalls []string
	for i := 0; i < 5; i++ { // weekly, the last 5 weeks ago
		quietCalls = append(quietCalls, w.callAt(quiet.ID, anna.ID, "inbound", "answered", now.AddDate(0, 0, -63+7*i)))
	}
	steady := w.client("Steady Ltd", "", anna.ID)
	for i := 0; i < 8; i++ { // weekly, the last 3 days ago
		w.callAt(steady.ID, anna.ID, "outbound", "answered", now.AddDate(0, 0, -52+7*i))
	}
	rare := w.client("Rare Ltd", "", anna.ID)
	for i := 0; i < 3; i++ { // too few to be regular
		w.callAt(rare.ID, anna.ID, "inbound", "answered", now.AddDate(0, 0, -59+7*i))
	}

	for _, ev := range []*alerts.Evaluator{w.evaluator(clock), w.evaluator(clock)} {
		if err := ev.Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := w.alerts(alerts.RuleClientQuiet)
	if len(got) != 1 {
		t.Fatalf("client_quiet alerts: %+v, want one", got)
	}
	a := got[0]
	if a.ClientID != quiet.ID || a.ManagerID != anna.ID {
		t.Fatalf("alert about client %s manager %s, want %s %s", a.ClientID, a.ManagerID, quiet.ID, anna.ID)
	}
	// The calls in the window (the first is 63 days old: outside 60d).
	if len(a.Evidence.CallIDs) != 4 || a.Evidence.CallIDs[0] != quietCalls[4] {
		t.Fatalf("evidence %+v, want the 4 calls in the window, newest first (%s)", a.Evidence.CallIDs, quietCalls[4])
	}
	if f := a.Evidence.Figures; f["median_gap_seconds"] != 7*86400 || f["silent_seconds"] != 35*86400 || f["calls"] != 4 {
		t.Fatalf("figures %+v", f)
	}

	// Once he calls again and goes quiet again, a new spell alerts anew;
	// until then, nothing more.
	if err := w.evaluator(func() time.Time { return now.Add(24 * time.Hour) }).Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(w.alerts(alerts.RuleClientQuiet)); n != 1 {
		t.Fatalf("the same quiet spell alerted %d times", n)
	}
}

// A manager whose calls with clients fell from 12 to 3 week over week
// raises manager_drop once that ISO week; one whose calls held does not.
func TestManagerDrop(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	anna, bob := w.manager("anna"), w.manager("bob")
	acme, bolt := w.client("Acme", "", anna.ID), w.client("Bolt", "", bob.ID)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 12; i++ {
		w.callAt(acme.ID, anna.ID, "outbound", "answered", now.AddDate(0, 0, -13).Add(time.Duration(i)*time.Hour))
		w.callAt(bolt.ID, bob.ID, "outbound", "answered", now.AddDate(0, 0, -13).Add(time.Duration(i)*time.Hour))
		w.callAt(bolt.ID, bob.ID, "outbound", "answered", now.AddDate(0, 0, -3).Add(time.Duration(i)*time.Hour))
	}
	for i := 0; i < 3; i++ {
		w.callAt(acme.ID, anna.ID, "outbound", "answered", now.AddDate(0, 0, -2).Add(time.Duration(i)*time.Hour))
	}
	for _, at := range []time.Time{now, now.Add(time.Hour)} {
		if err := w.evaluator(func() time.Time { return at }).Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := w.alerts(alerts.RuleManagerDrop)
	if len(got) != 1 || got[0].ManagerID != anna.ID {
		t.Fatalf("manager_drop alerts: %+v, want one about anna", got)
	}
	if f := got[0].Evidence.Figures; f["previous_week"] != 12 || f["last_week"] != 3 {
		t.Fatalf("figures %+v", f)
	}
}

// A missed inbound call of a client in a segment with alert_missed alerts
// its supervisor (from the event and from the CDR, once); an outbound call
// started outside the segment's hours raises off_hours; a missed call in a
// segment without the rule raises nothing.
func TestMissedCallAndOffHours(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	anna, sue := w.manager("anna"), w.manager("sue")
	w.sql(`INSERT INTO segments (name, supervisor_id, alert_missed, hours_days, hours_from, hours_to)
		VALUES ('VIP', $1, true, '{1,2,3,4,5}', '09:00', '18:00'), ('plain', NULL, false, '{}', '00:00', '24:00')`, sue.ID)
	vip := w.client("Vip Ltd", "VIP", anna.ID)
	plain := w.client("Plain Ltd", "plain", anna.ID)
	ev := w.evaluator(time.Now)
	if err := ev.Evaluate(ctx); err != nil { // the cursor starts now
		t.Fatal(err)
	}

	missed := w.callAt(vip.ID, anna.ID, "inbound", "no_answer", time.Now())
	w.callAt(plain.ID, anna.ID, "inbound", "no_answer", time.Now())
	// The event path, before the CDR is read.
	if err := ev.CallEnded(ctx, storage.CDR{CallID: missed, Direction: "inbound", ClientID: vip.ID, ManagerID: anna.ID,
		Disposition: "no_answer"}); err != nil {
		t.Fatal(err)
	}
	// Saturday 2026-11-28 03:00 UTC: outside Mon-Fri 09-18.
	late := w.callAt(vip.ID, anna.ID, "outbound", "answered", time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC))
	w.callAt(vip.ID, anna.ID, "outbound", "answered", time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)) // Friday 10:00
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	got := w.alerts(alerts.RuleMissedCall)
	if len(got) != 1 || got[0].ClientID != vip.ID || got[0].SupervisorID != sue.ID ||
		len(got[0].Evidence.CallIDs) != 1 || got[0].Evidence.CallIDs[0] != missed {
		t.Fatalf("missed_call alerts: %+v, want one about %s for sue", got, missed)
	}
	off := w.alerts(alerts.RuleOffHours)
	if len(off) != 1 || off[0].Evidence.CallIDs[0] != late || off[0].ManagerID != anna.ID {
		t.Fatalf("off_hours alerts: %+v, want one for call %s", off, late)
	}
}

// A webhook receives each alert once, signed: a receiver that answers 503
// gets it again after the back-off, and one that never answers 2xx ends as
// a dead letter after the tries. The payload has no phone number.
func TestWebhookDelivery(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	anna := w.manager("anna")

	var mu sync.Mutex
	var bodies [][]byte
	var fails atomic.Int32
	fails.Store(1)
	secret := alerts.NewSecret()
	good := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := alerts.Verify([]byte(secret), body, r.Header.Get(alerts.SignatureHeader), time.Now(), 5*time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		if fails.Add(-1) >= 0 {
			rw.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
	}))
	defer good.Close()
	var deadHits atomic.Int32
	down := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		deadHits.Add(1)
		rw.WriteHeader(http.StatusBadGateway)
	}))
	defer down.Close()
	hook := func(url, secret string) {
		sealed, keyID, err := w.keys.SealSecret([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.store.CreateWebhook(ctx, storage.Webhook{URL: url, SecretCiphertext: sealed, EncKeyID: keyID}, "admin:bootstrap"); err != nil {
			t.Fatal(err)
		}
	}
	hook(good.URL, secret)
	hook(down.URL, alerts.NewSecret())

	published := make(chan string, 4)
	ev := w.evaluator(time.Now, func(c *alerts.Config) {
		c.Webhooks = alerts.WebhookPolicy{Tries: 3, Backoff: 50 * time.Millisecond}
		c.Publish = func(subject string, data []byte) error { published <- subject; return nil }
	})
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	// Two tries of a dismissed manager's SIP credentials: one audit row (the
	// limit), one alert.
	tries := storage.NewDismissedTries(w.store, time.Hour)
	for i := 0; i < 2; i++ {
		if _, err := tries.Record(ctx, "sip.dismissed_auth", anna.ID, "sip:192.0.2.7"); err != nil {
			t.Fatal(err)
		}
	}
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	if s := <-published; s != "alerts."+alerts.RuleDismissedLogin {
		t.Fatalf("published on %q", s)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		if err := ev.Deliver(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		dead, err := w.store.DeadDeliveries(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(bodies) == 1 && len(dead) == 1
	}, "delivered to the good receiver after a 503, and a dead letter for the one that is down")

	var msg alerts.Message
	if err := json.Unmarshal(bodies[0], &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Rule != alerts.RuleDismissedLogin || msg.ManagerID != anna.ID || len(msg.Evidence.AuditSeqs) != 1 {
		t.Fatalf("payload %s", bodies[0])
	}
	if strings.Contains(string(bodies[0]), "+7495") {
		t.Fatalf("payload carries a number: %s", bodies[0])
	}
	if n := deadHits.Load(); n != 3 {
		t.Fatalf("the receiver that is down got %d tries, want 3", n)
	}
	dead, _ := w.store.DeadDeliveries(ctx, 10)
	if dead[0].LastStatus != http.StatusBadGateway || dead[0].Attempts != 3 {
		t.Fatalf("dead letter %+v", dead[0])
	}
	// A retried dead letter is tried again.
	if err := w.store.RetryDelivery(ctx, dead[0].ID, "admin:bootstrap"); err != nil {
		t.Fatal(err)
	}
	if err := ev.Deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if n := deadHits.Load(); n != 4 {
		t.Fatalf("after retry the receiver got %d tries, want 4", n)
	}
	audit, _ := w.store.AuditLog(ctx, 50)
	var triesAudited int
	for _, e := range audit {
		if e.Action == "sip.dismissed_auth" {
			triesAudited++
		}
	}
	if triesAudited != 1 {
		t.Fatalf("%d sip.dismissed_auth rows, want 1 (rate-limited)", triesAudited)
	}
}

func TestSignature(t *testing.T) {
	secret, body := []byte("whsec_x"), []byte(`{"id":"1"}`)
	at := time.Unix(1_800_000_000, 0)
	h := alerts.Sign(secret, body, at)
	if !strings.HasPrefix(h, "t=1800000000,v1=") {
		t.Fatalf("header %q", h)
	}
	for _, tc := range []struct {
		name   string
		secret []byte
		body   []byte
		header string
		now    time.Time
		want   error
	}{
		{"good", secret, body, h, at.Add(time.Minute), nil},
		{"other body", secret, []byte(`{"id":"2"}`), h, at, alerts.ErrBadSignature},
		{"other secret", []byte("whsec_y"), body, h, at, alerts.ErrBadSignature},
		{"replayed later", secret, body, h, at.Add(6 * time.Minute), alerts.ErrStaleSignature},
		{"garbage", secret, body, "t=x,v1=zz", at, alerts.ErrBadSignature},
		{"empty", secret, body, "", at, alerts.ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := alerts.Verify(tc.secret, tc.body, tc.header, tc.now, 5*time.Minute); err != tc.want {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCheckWebhookURL(t *testing.T) {
	for url, ok := range map[string]bool{
		"https://crm.example.com/hooks/maskpbx": true, "http://10.0.0.5:8080/x": true,
		"ftp://crm.example.com/": false, "javascript:alert(1)": false, "https://user:pw@crm.example.com/": false,
		"/relative": false, "https://": false, "https://x/" + strings.Repeat("a", 2000): false,
	} {
		if err := alerts.CheckWebhookURL(url); (err == nil) != ok {
			t.Errorf("CheckWebhookURL(%.40q) = %v, want ok=%v", url, err, ok)
		}
	}
}

// Audit rows of other parts raise alerts too: a dismissed manager's
// console password (web.signin_failed, reason dismissed) and a call refused
// outside the working hours (call.outside_hours); a wrong password of an
// active person raises nothing.
func TestAuditedRefusals(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	anna, bob := w.manager("anna"), w.manager("bob")
	acme := w.client("Acme", "", anna.ID)
	if err := w.store.SetWebPassword(ctx, bob.ID, "$argon2id$x", nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.DismissManager(ctx, bob.ID, anna.ID, "admin:bootstrap"); err != nil {
		t.Fatal(err)
	}
	ev := w.evaluator(time.Now)
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range []storage.SigninFailure{
		{Username: "bob", Source: "198.51.100.4", Reason: "dismissed"},
		{Username: "bob", Source: "198.51.100.4", Reason: "dismissed"},
		{Username: "anna", Source: "198.51.100.4", Reason: "bad_password"},
	} {
		if err := w.store.RecordSigninFailure(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + anna.ID, Action: "call.outside_hours",
		Object: "client:" + acme.ID, Reason: "refused"}); err != nil {
		t.Fatal(err)
	}
	if err := ev.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	dl := w.alerts(alerts.RuleDismissedLogin)
	if len(dl) != 1 || dl[0].ManagerID != bob.ID || dl[0].Actor != "web:198.51.100.4" || len(dl[0].Evidence.AuditSeqs) != 1 {
		t.Fatalf("dismissed_login alerts %+v, want one about bob", dl)
	}
	off := w.alerts(alerts.RuleOffHours)
	if len(off) != 1 || off[0].ManagerID != anna.ID || off[0].ClientID != acme.ID {
		t.Fatalf("off_hours alerts %+v", off)
	}
}
