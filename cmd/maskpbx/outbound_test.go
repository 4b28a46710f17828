package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// trunkUAS starts the SIPp trunk that receives calls out to clients.
func trunkUAS(t *testing.T, mode string, hangup bool, rtpPort int) *testenv.SIPp {
	hang := "no"
	if hangup {
		hang = "yes"
	}
	return testenv.StartSIPp(t, "trunk "+mode, testenv.SIPpOptions{
		Scenario: "trunk_uas.xml", LocalIP: trunkIP, Port: 5060,
		Keys: map[string]string{"rtp_ip": trunkIP, "rtp_port": fmt.Sprint(rtpPort)},
		Sets: map[string]string{"mode": mode, "hangup": hang},
		Args: []string{"-d", "1500"},
	})
}

// annaHangsUp starts anna's phone: it answers, talks holdMS and hangs up.
func annaHangsUp(t *testing.T, s *system, rtpPort, holdMS int) *testenv.SIPp {
	return testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: annaIP, Port: 5070, Remote: s.sipAddr,
		Keys: map[string]string{"rtp_ip": annaIP, "rtp_port": fmt.Sprint(rtpPort)},
		Sets: map[string]string{"hangup": "yes", "rings": "1"}, Args: []string{"-d", fmt.Sprint(holdMS)},
	})
}

// answeredClickToCall is a click-to-call of anna's whose phone and trunk
// both answer (the trunk on rtpPort, her phone on rtpPort+2, hanging up
// after holdMS).
type answeredClickToCall struct {
	tr, ph             *testenv.SIPp
	trunkRTP, phoneRTP *testenv.RTPEndpoint
	started            callResp
}

func startAnsweredClickToCall(t *testing.T, s *system, token, clientID string, rtpPort, holdMS int) answeredClickToCall {
	t.Helper()
	c := answeredClickToCall{
		trunkRTP: testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", trunkIP, rtpPort)),
		phoneRTP: testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", annaIP, rtpPort+2)),
		tr:       trunkUAS(t, "answer", false, rtpPort),
		ph:       annaHangsUp(t, s, rtpPort+2, holdMS),
	}
	if st := s.call("POST", "/api/v1/calls", token, map[string]string{"client_id": clientID}, &c.started); st != 202 {
		t.Fatalf("POST /calls: %d", st)
	}
	return c
}

type callResp struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	Disposition string `json:"disposition"`
	Direction   string `json:"direction"`
	HangupSide  string `json:"hangup_side"`
}

// watchCall polls a call's state until it ends and returns every state seen.
func (s *system) watchCall(id, token string) ([]string, callResp) {
	s.t.Helper()
	seen, last, err := s.pollCall(id, token)
	if err != nil {
		s.t.Fatal(err)
	}
	return seen, last
}

// pollCall is watchCall without failing the test, for use off the test's
// goroutine.
func (s *system) pollCall(id, token string) ([]string, callResp, error) {
	var seen []string
	var last callResp
	var reqErr error
	ended := testenv.WaitFor(30*time.Second, func() bool {
		var c callResp
		req, _ := http.NewRequest("GET", s.api+"/api/v1/calls/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			reqErr = err
			return true
		}
		err = json.NewDecoder(resp.Body).Decode(&c)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			return false
		}
		if len(seen) == 0 || seen[len(seen)-1] != c.State {
			seen = append(seen, c.State)
		}
		last = c
		return c.State == "ended"
	})
	switch {
	case reqErr != nil:
		return seen, last, reqErr
	case !ended:
		return seen, last, fmt.Errorf("call %s did not end; states %v", id, seen)
	}
	return seen, last, nil
}

func (s *system) audited(action, object string) bool {
	log, _ := s.run.Store.AuditLog(context.Background(), 100)
	for _, e := range log {
		if e.Action == action && e.Object == object {
			return true
		}
	}
	return false
}

func TestClickToCall(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) { c.CallsPerMinute = 5 })
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	bolt := s.client("Bolt", "+74957654321", bob.ID)
	s.register("anna", annaIP, 5070)

	t.Run("manager first, then the client; audio both ways; nothing leaks", func(t *testing.T) {
		c := startAnsweredClickToCall(t, s, anna.APIToken, acme.ID, 41400, 2500)
		tr, ph, started := c.tr, c.ph, c.started
		if started.ID == "" || started.State != "calling_manager" {
			t.Fatalf("202 body %+v", started)
		}
		type watched struct {
			states []string
			final  callResp
			err    error
		}
		watch := make(chan watched, 1)
		go func() { st, f, err := s.pollCall(started.ID, anna.APIToken); watch <- watched{st, f, err} }()
		talk(t, tr, ph, c.trunkRTP, c.phoneRTP, annaIP)
		w := <-watch
		if w.err != nil {
			t.Fatal(w.err)
		}
		states, final := w.states, w.final
		ph.Wait()
		tr.Wait()
		want := []string{"calling_manager", "calling_client", "connected", "ended"}
		if strings.Join(states, ",") != strings.Join(want, ",") && strings.Join(states, ",") != strings.Join(want[1:], ",") {
			t.Errorf("states %v, want %v", states, want)
		}
		if final.Disposition != "answered" || final.Direction != "outbound" {
			t.Errorf("final %+v", final)
		}
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, acmeNumber+" ") {
			t.Errorf("the trunk was asked for %q, want %s", d, acmeNumber)
		}
		if c, _ := tr.LogValue("CALLER", time.Second); !strings.HasPrefix(c, company+" ") {
			t.Errorf("the trunk saw caller %q, want the company number", c)
		}
		if shown, _ := ph.LogValue("SHOWN_FROM", time.Second); !strings.Contains(shown, "Calling Acme Trading #"+acme.Code) {
			t.Errorf("the phone was shown %q", shown)
		}
		assertNoLeak(t, ph, acmeNumber, acme.Code)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.HangupSide != "manager" || cdr.ManagerID != anna.ID {
			t.Errorf("CDR %+v", cdr)
		}
		if !s.audited("call.click_to_call", "client:"+acme.ID) {
			t.Error("no audit row for the click-to-call")
		}
	})

	t.Run("a Russian manager's phone shows the Russian wording and the whole code", func(t *testing.T) {
		if err := s.run.Store.SetSettings(context.Background(), anna.ID, storage.PersonSettings{Language: "ru"}, "test"); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.run.Store.SetSettings(context.Background(), anna.ID, storage.PersonSettings{}, "test") }()
		long := s.client("Торговый дом «Северное сияние» — оптовые поставки промышленного оборудования", "+74957654329", anna.ID)
		c := startAnsweredClickToCall(t, s, anna.APIToken, long.ID, 41450, 1500)
		talk(t, c.tr, c.ph, c.trunkRTP, c.phoneRTP, annaIP)
		c.ph.Wait()
		c.tr.Wait()
		shown, _ := c.ph.LogValue("SHOWN_FROM", time.Second)
		if !strings.Contains(shown, `"Вызов: Торговый дом «Северное сияние»`) || !strings.Contains(shown, "… #"+long.Code+`"`) {
			t.Errorf("the Russian manager's phone was shown %q, want the Russian wording, the name cut and the whole code #%s", shown, long.Code)
		}
		assertNoLeak(t, c.ph, "+74957654329", long.Code)
	})

	t.Run("refused click-to-calls ring nothing", func(t *testing.T) {
		tr := trunkUAS(t, "answer", false, 41410)
		for _, tc := range []struct {
			name, token, client string
			want                int
		}{
			{"another manager's client", anna.APIToken, bolt.ID, 403},
			{"unknown client", anna.APIToken, "7d1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11", 404},
			{"malformed client id", anna.APIToken, "acme", 404},
			{"no registered phone", bob.APIToken, bolt.ID, 409},
			{"bootstrap admin has no phone", adminTok, acme.ID, 403},
		} {
			if st := s.call("POST", "/api/v1/calls", tc.token, map[string]string{"client_id": tc.client}, nil); st != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, st, tc.want)
			}
		}
		// Nothing is to happen, and an absence cannot be polled for: give a
		// wrongly sent INVITE 300 ms to reach the trunk.
		time.Sleep(300 * time.Millisecond)
		tr.Kill()
		if got := tr.Received(); len(got) != 0 {
			t.Fatalf("the trunk received %d messages", len(got))
		}
	})

	t.Run("client busy: disposition busy and the manager leg is hung up", func(t *testing.T) {
		tr := trunkUAS(t, "busy", false, 41420)
		ph := phone(t, s, "anna", annaIP, 5070, 41422, false, 1) // waits for the PBX's BYE
		var c callResp
		s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, &c)
		tr.Wait()
		ph.Wait()
		if _, final := s.watchCall(c.ID, anna.APIToken); final.Disposition != "busy" {
			t.Errorf("disposition %q, want busy", final.Disposition)
		}
	})

	t.Run("the manager hangs up while the client rings: the trunk gets CANCEL", func(t *testing.T) {
		tr := trunkUAS(t, "ring", false, 41430)
		ph := annaHangsUp(t, s, 41432, 1000)
		var c callResp
		s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, &c)
		ph.Wait()
		tr.Wait() // it received CANCEL
		if _, final := s.watchCall(c.ID, anna.APIToken); final.Disposition != "cancelled" {
			t.Errorf("disposition %q, want cancelled", final.Disposition)
		}
	})

	t.Run("one call at a time, and a rate limit per minute", func(t *testing.T) {
		tr := trunkUAS(t, "ring", false, 41440)
		ph := annaHangsUp(t, s, 41442, 1500)
		var c callResp
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, &c); st != 202 {
			t.Fatalf("first call: %d", st)
		}
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, nil); st != 429 {
			t.Errorf("a second call while the first runs: %d, want 429", st)
		}
		ph.Wait()
		tr.Wait()
		s.watchCall(c.ID, anna.APIToken)
		// This test's system allows 5 starts a minute; 5 have been made.
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, nil); st != 429 {
			t.Errorf("a call over the per-minute limit: %d, want 429", st)
		}
		if !s.audited("call.limited", "client:"+acme.ID) {
			t.Error("no audit row for the refused call")
		}
	})
}

// dial makes anna's SIPp phone dial target and returns it once done.
func dial(t *testing.T, s *system, target string, rtpPort int) *testenv.SIPp {
	p := testenv.StartSIPp(t, "anna dials", testenv.SIPpOptions{
		Scenario: "phone_dial.xml", LocalIP: annaIP, Port: 5070, Remote: s.sipAddr,
		Keys: map[string]string{"sip_user": "anna", "sip_domain": domain, "target": target,
			"rtp_ip": annaIP, "rtp_port": fmt.Sprint(rtpPort)},
		Args: []string{"-au", "anna", "-ap", "anna-secret", "-auth_uri", target + "@" + domain, "-d", "1500"},
	})
	p.Wait()
	return p
}

func TestDeskPhoneDialsClientCode(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	bolt := s.client("Bolt", "+74957654321", bob.ID)
	s.register("anna", annaIP, 5070)

	t.Run("the client code connects through the trunk", func(t *testing.T) {
		tr := trunkUAS(t, "answer", false, 41500)
		ph := dial(t, s, acme.Code, 41502)
		tr.Wait()
		if st, _ := ph.LogValue("STATUS", time.Second); st != "200" {
			t.Fatalf("desk phone got %s", st)
		}
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, acmeNumber+" ") {
			t.Errorf("the trunk was asked for %q", d)
		}
		assertNoLeak(t, ph, acmeNumber, acme.Code)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.ManagerID != anna.ID {
			t.Errorf("CDR %+v", cdr)
		}
		if !s.audited("call.dial_code", "client:"+acme.ID) {
			t.Error("no audit row for the dialled call")
		}
	})

	t.Run("any other target is 403 and the trunk hears nothing", func(t *testing.T) {
		tr := trunkUAS(t, "answer", false, 41510)
		for _, target := range []string{"89161234567", "+79161234567", bolt.Code, "99999999", "74950000000x"} {
			ph := dial(t, s, target, 41512)
			if st, _ := ph.LogValue("STATUS", time.Second); st != "403" {
				t.Errorf("dialling %q: %s, want 403", target, st)
			}
		}
		time.Sleep(300 * time.Millisecond) // an absence: as above, a wrongly sent INVITE has 300 ms
		tr.Kill()
		if got := tr.Received(); len(got) != 0 {
			t.Fatalf("the trunk received %d messages", len(got))
		}
	})
}

// Each trunk target's health is in /metrics, by rank: never its address.
func TestTrunkTargetMetric(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	resp, err := http.Get(s.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	want := `maskpbx_trunk_target_up{target="1",transport="UDP"} 1`
	if !strings.Contains(string(raw), want) {
		t.Fatalf("/metrics lacks %s", want)
	}
	if strings.Contains(string(raw), trunkIP) {
		t.Fatal("/metrics, which anyone may read, names the trunk's address")
	}
}
