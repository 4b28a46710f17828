package storage_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func tokenHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func audited(t *testing.T, s *storage.Store, action, object string) bool {
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

func TestWebAccounts(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")

	if _, err := s.WebAccountByUsername(ctx, "anna"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("no web password yet: %v, want ErrNotFound", err)
	}
	if err := s.SetWebPassword(ctx, anna.ID, "$argon2id$hash-1", nil, "admin:x"); err != nil {
		t.Fatal(err)
	}
	acc, err := s.WebAccountByUsername(ctx, "anna")
	if err != nil || acc.PasswordHash != "$argon2id$hash-1" || acc.Manager.ID != anna.ID || acc.Manager.Status != storage.StatusActive {
		t.Fatalf("account %+v, %v", acc, err)
	}
	if err := s.SetWebPassword(ctx, anna.ID, "$argon2id$hash-2", nil, "admin:x"); err != nil {
		t.Fatal(err)
	}
	if acc, _ := s.WebAccountByUsername(ctx, "anna"); acc.PasswordHash != "$argon2id$hash-2" {
		t.Fatalf("the second password did not replace the first: %q", acc.PasswordHash)
	}
	ids, err := s.WebAccountIDs(ctx)
	if err != nil || !ids[anna.ID] || ids[bob.ID] {
		t.Fatalf("web account ids %v, %v", ids, err)
	}
	if !audited(t, s, "manager.web_password", "manager:"+anna.ID) {
		t.Error("setting a web password is not audited")
	}
	for _, bad := range []string{"", "not-a-uuid", "7d1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11"} {
		if err := s.SetWebPassword(ctx, bad, "$argon2id$h", nil, "admin:x"); !errors.Is(err, storage.ErrUnknownManager) {
			t.Errorf("web password for %q: %v, want ErrUnknownManager", bad, err)
		}
	}
	if err := s.SetWebPassword(ctx, anna.ID, "", nil, "admin:x"); err == nil {
		t.Error("an empty hash was stored")
	}

	if err := s.SetSIPPassword(ctx, bob.ID, "md5-new", "sha-new", "admin:x"); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Manager(ctx, bob.ID); m.HA1MD5 != "md5-new" || m.HA1SHA256 != "sha-new" {
		t.Fatalf("SIP digests after the change: %+v", m)
	}
	if !audited(t, s, "manager.sip_password", "manager:"+bob.ID) {
		t.Error("changing a SIP password is not audited")
	}

	if _, err := s.DismissManager(ctx, anna.ID, bob.ID, "admin:x"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWebPassword(ctx, anna.ID, "$argon2id$hash-3", nil, "admin:x"); !errors.Is(err, storage.ErrUnknownManager) {
		t.Errorf("web password for a dismissed manager: %v, want ErrUnknownManager", err)
	}
	if err := s.SetSIPPassword(ctx, anna.ID, "a", "b", "admin:x"); !errors.Is(err, storage.ErrUnknownManager) {
		t.Errorf("SIP password for a dismissed manager: %v, want ErrUnknownManager", err)
	}
	// The account stays readable (so sign-in can tell "dismissed" apart).
	if acc, err := s.WebAccountByUsername(ctx, "anna"); err != nil || acc.Manager.Status != storage.StatusDismissed {
		t.Errorf("a dismissed manager's account: %+v, %v", acc, err)
	}
}

func TestWebSessions(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	hour := time.Now().Add(time.Hour)
	open := func(token, managerID string, bootstrap []byte, expires time.Time) error {
		return s.CreateWebSession(ctx, storage.NewWebSession{TokenHash: tokenHash(token), ManagerID: managerID,
			BootstrapHash: bootstrap, ExpiresAt: expires, Source: "127.0.0.1"}, "test")
	}
	if err := open("anna-1", anna.ID, nil, hour); err != nil {
		t.Fatal(err)
	}
	ws, err := s.WebSession(ctx, tokenHash("anna-1"), time.Hour)
	if err != nil || ws.ManagerID != anna.ID || ws.Role != storage.RoleManager || ws.Name != "anna" || ws.BootstrapHash != nil {
		t.Fatalf("session %+v, %v", ws, err)
	}
	if !audited(t, s, "web.signin", "manager:"+anna.ID) {
		t.Error("the sign-in is not audited")
	}
	if _, err := s.WebSession(ctx, tokenHash("nobody"), time.Hour); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("unknown token: %v", err)
	}

	// Expired and idle sessions are over.
	if err := open("anna-old", anna.ID, nil, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WebSession(ctx, tokenHash("anna-old"), time.Hour); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("expired session: %v", err)
	}
	time.Sleep(20 * time.Millisecond) // the idle limit passing is what is tested: wait out its 10 ms
	if _, err := s.WebSession(ctx, tokenHash("anna-1"), 10*time.Millisecond); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("idle session: %v", err)
	}

	// Sign-out ends one session; a new password ends the others but one.
	if err := open("anna-2", anna.ID, nil, hour); err != nil {
		t.Fatal(err)
	}
	if err := open("anna-3", anna.ID, nil, hour); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeWebSession(ctx, tokenHash("anna-1"), "manager:"+anna.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeWebSession(ctx, tokenHash("anna-1"), "manager:"+anna.ID); err != nil {
		t.Errorf("signing out twice: %v", err)
	}
	if _, err := s.WebSession(ctx, tokenHash("anna-1"), time.Hour); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("signed-out session: %v", err)
	}
	if !audited(t, s, "web.signout", "manager:"+anna.ID) {
		t.Error("the sign-out is not audited")
	}
	if err := s.SetWebPassword(ctx, anna.ID, "$argon2id$h", tokenHash("anna-2"), "manager:"+anna.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WebSession(ctx, tokenHash("anna-2"), time.Hour); err != nil {
		t.Errorf("the session that changed the password ended: %v", err)
	}
	if _, err := s.WebSession(ctx, tokenHash("anna-3"), time.Hour); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("another session survived a new password: %v", err)
	}

	// A bootstrap admin session has no manager.
	if err := open("boot", "", tokenHash("admin-token"), hour); err != nil {
		t.Fatal(err)
	}
	ws, err = s.WebSession(ctx, tokenHash("boot"), time.Hour)
	if err != nil || ws.ManagerID != "" || ws.Role != storage.RoleAdmin || string(ws.BootstrapHash) != string(tokenHash("admin-token")) {
		t.Fatalf("bootstrap session %+v, %v", ws, err)
	}
	if err := open("both", anna.ID, tokenHash("admin-token"), hour); err == nil {
		t.Error("a session with two owners was opened")
	}
	if err := open("none", "", nil, hour); err == nil {
		t.Error("a session with no owner was opened")
	}

	// Dismissal ends a manager's sessions at once, and he gets no new one.
	if err := open("bob-1", bob.ID, nil, hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DismissManager(ctx, bob.ID, anna.ID, "admin:x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WebSession(ctx, tokenHash("bob-1"), time.Hour); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a dismissed manager's session: %v", err)
	}
	if err := open("bob-2", bob.ID, nil, hour); !errors.Is(err, storage.ErrUnknownManager) {
		t.Errorf("a session for a dismissed manager: %v, want ErrUnknownManager", err)
	}
	if n, err := s.RevokeWebSessions(ctx, bob.ID); err != nil || n != 1 {
		t.Errorf("revoking bob's sessions: %d, %v", n, err)
	}
	if n, err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain after %d rows: %v", n, err)
	}
}

func TestSigninFailures(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	since := time.Now().Add(-time.Minute)
	for i, f := range []storage.SigninFailure{
		{Username: "Anna", Source: "10.0.0.1", Reason: "bad_password"},
		{Username: "anna", Source: "10.0.0.2", Reason: "bad_password"},
		{Username: "zed", Source: "10.0.0.1", Reason: "unknown_user", Locked: true},
	} {
		if err := s.RecordSigninFailure(ctx, f); err != nil {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	byUser, bySource, err := s.SigninFailures(ctx, "ANNA", "10.0.0.1", since)
	if err != nil || byUser != 2 || bySource != 2 {
		t.Fatalf("failures: user %d, source %d, %v; want 2 and 2", byUser, bySource, err)
	}
	if u, _, _ := s.SigninFailures(ctx, "anna", "x", time.Now().Add(time.Minute)); u != 0 {
		t.Errorf("failures after the window: %d", u)
	}
	if !audited(t, s, "web.signin_failed", "web_account:anna") || !audited(t, s, "web.signin_locked", "web_account:zed") {
		t.Error("failures are not audited")
	}
	if err := s.ClearSigninFailures(ctx, "Anna"); err != nil {
		t.Fatal(err)
	}
	if u, src, _ := s.SigninFailures(ctx, "anna", "10.0.0.1", since); u != 0 || src != 1 {
		t.Errorf("after clearing anna: user %d, source %d; want 0 and 1", u, src)
	}
	long := fmt.Sprintf("%070d", 1) + "ж"
	if err := s.RecordSigninFailure(ctx, storage.SigninFailure{Username: long, Source: "10.0.0.3"}); err != nil {
		t.Errorf("a long username: %v", err)
	}
}

func TestConsoleQueries(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	mk := func(name string, idx string, primary string, partners ...string) storage.Client {
		c, err := s.CreateClient(ctx, storage.NewClient{Name: name, Phones: []masking.SealedPhone{phone(idx)},
			ManagerID: primary, PartnerIDs: partners, NewCode: nextCode}, "test")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	acme := mk("Acme 100% Trading", "q1", anna.ID)
	bolt := mk("Bolt_Logistics", "q2", bob.ID, anna.ID)
	cargo := mk("Cargo", "q3", bob.ID)

	day := time.Date(2026, 3, 10, 22, 30, 0, 0, time.UTC) // 01:30 on 11 March in Moscow
	n := 0
	call := func(at time.Time, client, mgr, dir, disp string) string {
		n++
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
		for i, kind := range []string{storage.CallOffered, storage.CallEnded} {
			e := storage.CallEvent{EventID: fmt.Sprintf("%s-%d", id, i), Kind: kind, At: at.Add(time.Duration(i) * time.Minute),
				CallID: id, Direction: dir, ClientID: client, ManagerID: mgr}
			if kind == storage.CallEnded {
				e.Disposition = disp
			}
			if _, err := s.ApplyCallEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	call(day, acme.ID, anna.ID, "inbound", "answered")
	last := call(day.Add(time.Hour), acme.ID, anna.ID, "outbound", "busy")
	call(day.Add(-24*time.Hour), bolt.ID, bob.ID, "inbound", "answered")
	call(day.Add(2*time.Hour), cargo.ID, "", "inbound", "missed")

	t.Run("client summaries", func(t *testing.T) {
		mine, err := s.ClientSummaries(ctx, anna.ID, "", 0)
		if err != nil || len(mine) != 2 || mine[0].ID != acme.ID || mine[1].ID != bolt.ID {
			t.Fatalf("anna's clients %+v, %v", mine, err)
		}
		if mine[0].Partner || !mine[1].Partner {
			t.Errorf("partner flags %v %v", mine[0].Partner, mine[1].Partner)
		}
		if lc := mine[0].LastCall; lc == nil || lc.CallID != last || lc.Disposition != "busy" || lc.Direction != "outbound" {
			t.Errorf("acme's last call %+v", lc)
		}
		all, _ := s.ClientSummaries(ctx, "", "", 0)
		if len(all) != 3 {
			t.Errorf("all clients: %d", len(all))
		}
		for q, want := range map[string]int{"acme": 1, "100%": 1, "%": 1, "_": 1, "o": 2, acme.Code[:3]: 3, acme.Code: 1, "zzz": 0} {
			got, err := s.ClientSummaries(ctx, "", q, 0)
			if err != nil || len(got) != want {
				t.Errorf("search %q: %d clients, %v; want %d", q, len(got), err, want)
			}
		}
		if got, _ := s.ClientSummaries(ctx, "not-a-uuid", "", 0); len(got) != 0 {
			t.Errorf("a malformed manager id sees %d clients", len(got))
		}
	})

	t.Run("call search", func(t *testing.T) {
		for name, tc := range map[string]struct {
			f    storage.CallSearch
			want int
		}{
			"all":                {storage.CallSearch{}, 4},
			"by manager":         {storage.CallSearch{ManagerID: anna.ID}, 2},
			"by client":          {storage.CallSearch{ClientID: bolt.ID}, 1},
			"by direction":       {storage.CallSearch{Direction: "outbound"}, 1},
			"by disposition":     {storage.CallSearch{Disposition: "missed"}, 1},
			"from":               {storage.CallSearch{From: day}, 3},
			"to":                 {storage.CallSearch{To: day}, 1},
			"range":              {storage.CallSearch{From: day, To: day.Add(90 * time.Minute)}, 2},
			"page":               {storage.CallSearch{Limit: 3, Offset: 3}, 1},
			"unknown direction":  {storage.CallSearch{Direction: "sideways"}, 0},
			"unknown outcome":    {storage.CallSearch{Disposition: "great"}, 0},
			"malformed manager":  {storage.CallSearch{ManagerID: "x"}, 0},
			"manager and result": {storage.CallSearch{ManagerID: anna.ID, Disposition: "answered"}, 1},
		} {
			got, err := s.SearchCalls(ctx, tc.f)
			if err != nil || len(got) != tc.want {
				t.Errorf("%s: %d calls, %v; want %d", name, len(got), err, tc.want)
			}
		}
		got, _ := s.SearchCalls(ctx, storage.CallSearch{})
		if got[0].ClientID != cargo.ID {
			t.Errorf("newest first: the first is %s", got[0].ClientID)
		}
	})

	t.Run("calls per day", func(t *testing.T) {
		from := time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)
		utc, err := s.CallsPerDay(ctx, from, from.AddDate(0, 0, 5), "UTC")
		if err != nil {
			t.Fatal(err)
		}
		// 9 Mar: bolt/bob; 10 Mar: two acme/anna; 11 Mar: the missed one (00:30 UTC).
		want := []string{"2026-03-09 " + bob.ID + " 1 1 0", "2026-03-10 " + anna.ID + " 2 1 0", "2026-03-11  1 0 1"}
		if got := dailyStrings(utc); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("UTC days %v, want %v", got, want)
		}
		msk, err := s.CallsPerDay(ctx, from, from.AddDate(0, 0, 5), "Europe/Moscow")
		if err != nil {
			t.Fatal(err)
		}
		// In Moscow (UTC+3) the acme calls fall on 11 March.
		want = []string{"2026-03-10 " + bob.ID + " 1 1 0", "2026-03-11  1 0 1", "2026-03-11 " + anna.ID + " 2 1 0"}
		if got := dailyStrings(msk); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Moscow days %v, want %v", got, want)
		}
		if _, err := s.CallsPerDay(ctx, from, from, "Mars/Olympus"); err == nil {
			t.Error("an unknown time zone was accepted")
		}
	})
}

func dailyStrings(ds []storage.DailyCalls) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s %s %d %d %d", d.Day.Format(time.DateOnly), d.ManagerID, d.Calls, d.Answered, d.Missed))
	}
	return out
}
