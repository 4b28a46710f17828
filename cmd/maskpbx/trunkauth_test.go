package main

import (
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// The provider's account in these tests.
const (
	trunkUser     = "pbx-account"
	trunkPassword = "trunk-secret"
	trunkRealm    = "carrier.test"
)

func withTrunkAccount(c *Config) {
	c.TrunkUsername, c.TrunkPassword, c.TrunkRealm = trunkUser, trunkPassword, trunkRealm
}

// logIs fails unless the SIPp scenario logged key with value want.
func logIs(t *testing.T, p *testenv.SIPp, key, want string) {
	t.Helper()
	got, err := p.LogValue(key, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got != want && !strings.HasPrefix(got, want+" ") {
		t.Errorf("%s %q, want %q", key, got, want)
	}
}

func (s *system) healthz() map[string]string {
	s.t.Helper()
	_, body := s.health()
	return body
}

func (s *system) metrics() string {
	s.t.Helper()
	resp, err := http.Get(s.api + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

// The PBX registers at the provider with digest, refreshes before the
// expiry it was granted, takes calls in on the registration's flow although
// --trunk-allow names another address, and unregisters when it stops.
func TestTrunkRegistration(t *testing.T) {
	provider := testenv.StartSIPp(t, "provider", testenv.SIPpOptions{
		Scenario: "trunk_register.xml", LocalIP: trunkIP, Port: 5060,
		Keys: map[string]string{"user": trunkUser, "password": trunkPassword, "realm": trunkRealm,
			"caller": "79161234567", "rtp_ip": trunkIP, "rtp_port": "41800"},
	})
	s := startSystemConfig(t, func(c *Config) {
		withTrunkAccount(c)
		c.TrunkRegister = 2 * time.Second
		c.TrunkAllow = "192.0.2.1" // not the provider: only its registration lets it in
	})

	logIs(t, provider, "AUTH1", "true")
	contact, _ := provider.LogValue("CONTACT", time.Second)
	if want := "sip:" + company + "@" + pbxIP; !strings.HasPrefix(contact, want) {
		t.Errorf("registered Contact %q, want %s:<port>", contact, want)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return s.healthz()["trunk_registration"] == "registered"
	}, "/healthz shows the trunk registered")
	if m := s.metrics(); !strings.Contains(m, "maskpbx_trunk_registered 1") || !strings.Contains(m, "maskpbx_trunk_register_failures_total 0") {
		t.Errorf("/metrics:\n%s", grep(m, "maskpbx_trunk"))
	}
	logIs(t, provider, "AUTH2", "true") // the refresh, within the 2 s granted
	logIs(t, provider, "INVITE_STATUS", "480")
	cdr := s.cdr(storage.CDRFilter{})
	if cdr.Direction != "inbound" {
		t.Errorf("CDR of the call in %+v", cdr)
	}

	s.stop()
	logIs(t, provider, "UNREGISTERED", "0")
	provider.Wait()
}

// trunkAuthUAS starts a provider that challenges calls out with 407 and
// accepts the retried INVITE or not.
func trunkAuthUAS(t *testing.T, accept bool, rtpPort int) *testenv.SIPp {
	acc := "no"
	if accept {
		acc = "yes"
	}
	return testenv.StartSIPp(t, "provider", testenv.SIPpOptions{
		Scenario: "trunk_uas_auth.xml", LocalIP: trunkIP, Port: 5060,
		Keys: map[string]string{"user": trunkUser, "password": trunkPassword, "realm": trunkRealm,
			"rtp_ip": trunkIP, "rtp_port": fmt.Sprint(rtpPort)},
		Sets: map[string]string{"accept": acc},
	})
}

// proxyAuthValid checks a Proxy-Authorization the provider received as the
// provider would: RFC 2617 MD5 with qop=auth, computed here from the
// password, not by the digest library the PBX uses.
func proxyAuthValid(t *testing.T, header, password string) bool {
	t.Helper()
	params := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(strings.TrimSpace(header), "Digest "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		params[k] = strings.Trim(v, `"`)
	}
	if params["username"] != trunkUser || params["realm"] != trunkRealm || params["qop"] != "auth" {
		t.Errorf("Proxy-Authorization %q: wrong username, realm or qop", header)
		return false
	}
	h := func(s string) string { return fmt.Sprintf("%x", md5.Sum([]byte(s))) }
	ha1 := h(trunkUser + ":" + trunkRealm + ":" + password)
	ha2 := h("INVITE:" + params["uri"])
	want := h(strings.Join([]string{ha1, params["nonce"], params["nc"], params["cnonce"], "auth", ha2}, ":"))
	return params["response"] == want
}

// Calls out answer the provider's 407 with valid credentials (checked by
// the provider's own digest verification) and connect with audio; the BYE
// answers its challenge too; wrong credentials get one retry, not a loop,
// and the call ends failed by the system.
func TestTrunkDigestOnCalls(t *testing.T) {
	s := startSystemConfig(t, withTrunkAccount)
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	t.Run("challenged click-to-call connects with audio", func(t *testing.T) {
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41700")
		phoneRTP := testenv.NewRTPEndpoint(t, annaIP+":41702")
		tr := trunkAuthUAS(t, true, 41700)
		ph := annaHangsUp(t, s, 41702, 2500)
		var c callResp
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, &c); st != 202 {
			t.Fatalf("POST /calls: %d", st)
		}
		if pa, err := tr.LogValue("PROXY_AUTH", 10*time.Second); err != nil || !proxyAuthValid(t, pa, trunkPassword) {
			t.Fatalf("the retried INVITE's Proxy-Authorization %q (%v) is not valid", pa, err)
		}
		talk(t, tr, ph, trunkRTP, phoneRTP, annaIP)
		ph.Wait()
		logIs(t, tr, "BYE_AUTH", "true")
		tr.Wait()
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, acmeNumber+" ") {
			t.Errorf("the provider was asked for %q", d)
		}
		if _, final := s.watchCall(c.ID, anna.APIToken); final.Disposition != "answered" {
			t.Errorf("final %+v", final)
		}
		assertNoLeak(t, ph, acmeNumber, acme.Code)
	})

	t.Run("credentials refused: one retry, no loop, the call fails", func(t *testing.T) {
		tr := trunkAuthUAS(t, false, 41710)
		ph := phone(t, s, "anna", annaIP, 5070, 41712, false, 1) // answers, waits for our BYE
		var c callResp
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, &c); st != 202 {
			t.Fatalf("POST /calls: %d", st)
		}
		if _, err := tr.LogValue("PROXY_AUTH", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		logIs(t, tr, "LOOP", "no")
		tr.Wait()
		ph.Wait() // the manager's leg was hung up
		if _, final := s.watchCall(c.ID, anna.APIToken); final.Disposition != "failed" {
			t.Errorf("final %+v, want failed", final)
		}
		var cdr storage.CDR
		testenv.Eventually(t, 15*time.Second, func() bool {
			cdrs, _ := s.run.Store.CDRs(context.Background(), storage.CDRFilter{ClientID: acme.ID})
			for _, r := range cdrs {
				if r.CallID == c.ID && r.EndedAt != nil {
					cdr = r
					return true
				}
			}
			return false
		}, "the failed call's CDR")
		if cdr.Disposition != "failed" || cdr.HangupSide != "system" || cdr.Direction != "outbound" {
			t.Errorf("CDR %+v, want failed by the system", cdr)
		}
		if m := s.metrics(); !strings.Contains(m, "maskpbx_trunk_auth_failures_total 1") {
			t.Errorf("/metrics:\n%s", grep(m, "maskpbx_trunk"))
		}
	})
}
