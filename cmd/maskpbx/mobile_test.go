package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// Managers' corporate mobiles, with the trunk (SIPp) as the mobile's
// network: its INVITE to the mobile reaches trunk_uas.xml on the trunk's
// address, and the mobile's media is a test RTP endpoint there.

const annaMobile = "+79035550101"

func (s *system) setMobile(managerID, number, policy string, afterS int) {
	s.t.Helper()
	body := map[string]any{"number": number, "policy": policy}
	if afterS > 0 {
		body["after_s"] = afterS
	}
	if st := s.call("PUT", "/api/v1/managers/"+managerID+"/mobile", adminTok, body, nil); st != 200 {
		s.t.Fatalf("set mobile: %d", st)
	}
}

// mobileNetwork starts the trunk's SIPp UAS (trunk_uas.xml) as the
// mobile's network and waits until it holds the trunk's address: a SIPp
// started without -p (the trunk calling in) takes 5060 if it is free.
func mobileNetwork(t *testing.T, mode string, hangup bool, rtpPort int) *testenv.SIPp {
	t.Helper()
	p := trunkUAS(t, mode, hangup, rtpPort)
	addr := &net.UDPAddr{IP: net.ParseIP(trunkIP), Port: 5060}
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, err := net.ListenUDP("udp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the trunk's SIPp listening")
	return p
}

// assertMobileLegClean fails if a message the trunk received for a mobile
// leg names the client: any 4-digit run of his number, his code or name.
func assertMobileLegClean(t *testing.T, network *testenv.SIPp, client apiClient, number string) {
	t.Helper()
	digits := strings.TrimPrefix(number, "+")
	for _, m := range received(t, network, "the mobile's network") {
		clean := ourRandomTokens.ReplaceAllString(m, "<ours>")
		if strings.Contains(m, client.Code) || strings.Contains(m, client.Name) {
			t.Fatalf("the mobile's leg carries the client's code or name:\n%s", m)
		}
		if run := digitRun(clean, digits); run != "" {
			t.Fatalf("the mobile's leg carries digit run %q of the client's number:\n%s", run, m)
		}
	}
}

// pbxMediaAddr reads the PBX's RTP port a SIPp scenario logged.
func pbxMediaAddr(t *testing.T, p *testenv.SIPp, within time.Duration) netip.AddrPort {
	t.Helper()
	v, err := p.LogValue("PBX_RTP", within)
	if err != nil {
		t.Fatal(err)
	}
	return addrPort(t, pbxIP, strings.Fields(v)[0])
}

// bothWays sends a tone each way and checks that most of it arrives.
func bothWays(t *testing.T, a, b *testenv.RTPEndpoint, toA, toB netip.AddrPort) {
	t.Helper()
	a0, b0 := a.Received(), b.Received()
	done := make(chan error, 1)
	go func() { done <- a.Send(toA, 50, 400) }()
	if err := b.Send(toB, 50, 1000); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, func() bool { return a.Received()-a0 >= 48 && b.Received()-b0 >= 48 },
		"audio both ways (got %d and %d of 50)", a.Received()-a0, b.Received()-b0)
}

// acceptOnMobile checks what the mobile leg got: caller as the caller ID
// (the company number, or the pair's alias), the whisper (and the client nothing of it), then presses 1 with
// press and returns the PBX's media address of the mobile's leg.
func acceptOnMobile(t *testing.T, network *testenv.SIPp, caller string, mobRTP, clientRTP *testenv.RTPEndpoint, press func(netip.AddrPort) error) netip.AddrPort {
	t.Helper()
	if d, err := network.LogValue("DIALLED", 20*time.Second); err != nil || !strings.HasPrefix(d, annaMobile+" ") {
		t.Fatalf("the trunk was asked for %q (%v), want the mobile %s", d, err, annaMobile)
	}
	if c, _ := network.LogValue("CALLER", time.Second); !strings.HasPrefix(c, caller+" ") {
		t.Errorf("the mobile was shown caller %q, want %s", c, caller)
	}
	toMobile := pbxMediaAddr(t, network, time.Second)
	testenv.Eventually(t, 5*time.Second, func() bool { return mobRTP.Received() > 25 }, "the whisper reaching the mobile")
	if n := clientRTP.Received(); n != 0 {
		t.Errorf("the client heard %d packets of the whisper", n)
	}
	if err := press(toMobile); err != nil {
		t.Fatal(err)
	}
	return toMobile
}

func TestMobileRing(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) { c.RingTimeout = 8 * time.Second; c.MediaTimeout = 30 * time.Second })
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID, bob.ID)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)
	s.setMobile(anna.ID, annaMobile, "after", 3)

	accepted := func(t *testing.T, port int, press func(mob *testenv.RTPEndpoint) func(netip.AddrPort) error) {
		clientRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", trunkIP, port))
		mobRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", trunkIP, port+2))
		annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
		network := mobileNetwork(t, "answer", false, port+2)
		start := time.Now()
		tr := trunkCalls(t, s, acmeNumber, company, port, "yes", 3000)
		toMobile := acceptOnMobile(t, network, company, mobRTP, clientRTP, press(mobRTP))
		if d := time.Since(start); d < 3*time.Second {
			t.Errorf("the mobile rang %v after the call came in, before its 3 s", d)
		}
		annaPh.Wait() // her phone got CANCEL once the mobile took the call
		toClient := pbxMediaAddr(t, tr, 5*time.Second)
		bothWays(t, clientRTP, mobRTP, toClient, toMobile)
		tr.Wait()
		network.Wait() // the client hung up: the PBX's BYE ended the mobile's leg
		assertMobileLegClean(t, network, acme, acmeNumber)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.ManagerID != anna.ID || cdr.Via != "mobile" || cdr.Mobile != "accepted" {
			t.Errorf("CDR %+v, want answered by anna via mobile, accepted", cdr)
		}
	}

	t.Run("policy after 3s: the mobile rings from the company number, whisper, RFC 4733 1, audio both ways", func(t *testing.T) {
		accepted(t, 42000, func(mob *testenv.RTPEndpoint) func(netip.AddrPort) error {
			return func(to netip.AddrPort) error { return mob.SendDTMF(to, '1', 101) }
		})
	})

	t.Run("the same with the 1 pressed in-band", func(t *testing.T) {
		accepted(t, 42010, func(mob *testenv.RTPEndpoint) func(netip.AddrPort) error {
			return func(to netip.AddrPort) error { return mob.SendDTMFTone(to, '1') }
		})
	})

	t.Run("a mobile that answers and presses nothing is dropped after 10 s; the partner rings", func(t *testing.T) {
		clientRTP := testenv.NewRTPEndpoint(t, trunkIP+":42020")
		mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42022")
		annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
		network := mobileNetwork(t, "answer", false, 42022)
		bobPh := testenv.StartSIPp(t, "bob", testenv.SIPpOptions{
			Scenario: "phone_answer.xml", LocalIP: bobIP, Port: 5071, Remote: s.sipAddr, Timeout: 60 * time.Second,
			Keys: map[string]string{"rtp_ip": bobIP, "rtp_port": "42024"},
			Sets: map[string]string{"hangup": "yes", "rings": "1"}, Args: []string{"-d", "1000"},
		})
		tr := trunkCalls(t, s, acmeNumber, company, 42020, "no", 0)
		// Answered, the whisper played, and nothing pressed.
		acceptOnMobile(t, network, company, mobRTP, clientRTP, func(netip.AddrPort) error { return nil })
		answered := time.Now()
		network.Wait() // the PBX hung the silent mobile up
		if d := time.Since(answered); d < 10*time.Second {
			t.Errorf("the silent mobile was dropped %v after it answered, before 10 s", d)
		}
		annaPh.Wait()
		bobPh.Wait()
		tr.Wait()
		assertMobileLegClean(t, network, acme, acmeNumber)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.ManagerID != bob.ID || cdr.Via != "" || cdr.Mobile != "timed_out" {
			t.Errorf("CDR %+v, want answered by bob, the mobile timed out", cdr)
		}
	})
}

// trunkCalls is the trunk bringing in a call from caller to called (the
// company number, an alias) through trunk_call.xml; with hangup no it
// waits for the PBX's BYE, else hangs up holdMS after the answer.
func trunkCalls(t *testing.T, s *system, caller, called string, rtpPort int, hangup string, holdMS int) *testenv.SIPp {
	return testenv.StartSIPp(t, "trunk call", testenv.SIPpOptions{
		Scenario: "trunk_call.xml", LocalIP: trunkIP, Remote: s.sipAddr, Timeout: 60 * time.Second,
		Keys: map[string]string{"company": strings.TrimPrefix(called, "+"), "caller": caller, "rtp_ip": trunkIP, "rtp_port": fmt.Sprint(rtpPort)},
		Sets: map[string]string{"hangup": hangup}, Args: []string{"-d", fmt.Sprint(holdMS)},
	})
}

// mobileCallsIn is anna's mobile calling the company number.
func mobileCallsIn(t *testing.T, s *system, rtpPort int, hangup string, holdMS int) *testenv.SIPp {
	return trunkCalls(t, s, annaMobile, company, rtpPort, hangup, holdMS)
}

// typeCodes sends each code and a hash as RFC 4733 events.
func typeCodes(t *testing.T, mob *testenv.RTPEndpoint, to netip.AddrPort, codes ...string) {
	t.Helper()
	for _, code := range codes {
		for _, d := range code + "#" {
			if err := mob.SendDTMF(to, d, 101); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (s *system) auditCount(action, object, reasonPrefix string) int {
	log, _ := s.run.Store.AuditLog(context.Background(), 200)
	n := 0
	for _, e := range log {
		if e.Action == action && e.Object == object && strings.HasPrefix(e.Reason, reasonPrefix) {
			n++
		}
	}
	return n
}

func TestMobileDialsClient(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) { c.MediaTimeout = 30 * time.Second })
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	bolt := s.client("Bolt", "+74957654321", bob.ID)
	s.setMobile(anna.ID, annaMobile, "off", 0) // never rung, still known when it calls

	t.Run("the mobile types the client code and is connected through the trunk", func(t *testing.T) {
		mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42100")
		clientRTP := testenv.NewRTPEndpoint(t, trunkIP+":42102")
		network := mobileNetwork(t, "answer", false, 42102)
		mob := mobileCallsIn(t, s, 42100, "yes", 9000)
		toMobile := pbxMediaAddr(t, mob, 10*time.Second)
		typeCodes(t, mobRTP, toMobile, acme.Code)
		if d, err := network.LogValue("DIALLED", 15*time.Second); err != nil || !strings.HasPrefix(d, acmeNumber+" ") {
			t.Fatalf("the trunk was asked for %q (%v), want the client", d, err)
		}
		if c, _ := network.LogValue("CALLER", time.Second); !strings.HasPrefix(c, company+" ") {
			t.Errorf("the client was shown %q, want the company number", c)
		}
		bothWays(t, mobRTP, clientRTP, toMobile, pbxMediaAddr(t, network, time.Second))
		mob.Wait()
		network.Wait()
		for _, m := range mob.Received() {
			if strings.Contains(m, "9161234567") || strings.Contains(m, "Acme") {
				t.Fatalf("the mobile was sent the client's number or name:\n%s", m)
			}
		}
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.ManagerID != anna.ID || cdr.Direction != "outbound" || cdr.Via != "mobile" {
			t.Errorf("CDR %+v", cdr)
		}
		if !s.audited("call.mobile_dial", "client:"+acme.ID) {
			t.Error("no call.mobile_dial audit row for the call")
		}
	})

	t.Run("another manager's client, an unknown code: three wrong codes and goodbye; nothing reaches a client", func(t *testing.T) {
		mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42110")
		network := mobileNetwork(t, "answer", false, 42112)
		before := s.auditCount("call.mobile_dial", "manager:"+anna.ID, "refused")
		mob := mobileCallsIn(t, s, 42110, "no", 0)
		toMobile := pbxMediaAddr(t, mob, 10*time.Second)
		typeCodes(t, mobRTP, toMobile, bolt.Code, "99999999", "12")
		mob.Wait() // the PBX said goodbye and hung up
		if n := s.auditCount("call.mobile_dial", "manager:"+anna.ID, "refused") - before; n != 3 {
			t.Errorf("%d refused attempts audited, want 3", n)
		}
		if s.audited("call.mobile_dial", "client:"+bolt.ID) {
			t.Error("bob's client was dialled from anna's mobile")
		}
		network.Kill()
		if got := network.Received(); len(got) != 0 {
			t.Fatalf("the trunk was asked to call a client: %d messages", len(got))
		}
	})

	t.Run("a dismissed manager's mobile reaches none of his clients", func(t *testing.T) {
		if st := s.call("POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminTok, map[string]string{"successor_id": bob.ID}, nil); st != 200 {
			t.Fatalf("dismiss: %d", st)
		}
		mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42120")
		network := mobileNetwork(t, "answer", false, 42122)
		p := testenv.StartSIPp(t, "dismissed mobile", testenv.SIPpOptions{
			Scenario: "trunk_rejected.xml", LocalIP: trunkIP, Remote: s.sipAddr, Timeout: 15 * time.Second,
			Keys: map[string]string{"company": "74950000000", "caller": annaMobile, "cline": "c=IN IP4 " + trunkIP, "mline": "m=audio 42120 RTP/AVP 0 101"},
		})
		p.Wait()
		st, _ := p.LogValue("STATUS", time.Second)
		if strings.HasPrefix(st, "200") {
			t.Fatalf("a dismissed manager's mobile was answered: %s", st)
		}
		if s.auditCount("call.mobile_dial", "manager:"+anna.ID, "refused: dismissed") != 1 {
			t.Error("the dismissed manager's call was not audited")
		}
		_ = mobRTP
		network.Kill()
		if got := network.Received(); len(got) != 0 {
			t.Fatalf("the trunk was asked to call someone: %d messages", len(got))
		}
	})
}

func TestMobileRecording(t *testing.T) {
	s, cfg := startRecordedSystem(t)
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.setMobile(anna.ID, annaMobile, "only", 0) // no phone registered: the mobile is all she has

	clientRTP := testenv.NewRTPEndpoint(t, trunkIP+":42200")
	mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42202")
	network := mobileNetwork(t, "answer", false, 42202)
	tr := trunkCalls(t, s, acmeNumber, company, 42200, "yes", 3000)
	var pressed time.Time
	toMobile := acceptOnMobile(t, network, company, mobRTP, clientRTP, func(to netip.AddrPort) error {
		pressed = time.Now()
		return mobRTP.SendDTMF(to, '1', 101)
	})
	toClient := pbxMediaAddr(t, tr, 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- clientRTP.Send(toClient, 100, clientTone) }()
	if err := mobRTP.Send(toMobile, 100, managerTone); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	tr.Wait()
	network.Wait()

	cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	cdr = s.cdrRecording(cdr.CallID, storage.RecordingComplete)
	rec := recordingOf(t, s.run.Store, cdr.CallID, 20*time.Second)
	if cdr.Via != "mobile" || cdr.Mobile != "accepted" || rec.ManagerID != anna.ID {
		t.Fatalf("CDR %+v, recording %+v", cdr, rec)
	}
	// The whisper played before the bridge: the call was answered only
	// once the mobile pressed 1, and the recording lasts as long as the
	// connected call, no more.
	if !cdr.AnsweredAt.After(pressed) {
		t.Errorf("the client's call was answered at %v, before the mobile pressed 1 at %v", cdr.AnsweredAt, pressed)
	}
	t.Logf("connected %v, recorded %v", cdr.Duration, rec.Duration)
	if !within(rec.Duration, cdr.Duration, 150*time.Millisecond) {
		t.Errorf("recording lasts %v, the call was connected %v: it did not start at the bridge", rec.Duration, cdr.Duration)
	}
	p, _ := loadWAV(t, cfg.DataDir+"/recordings/"+rec.BlobKey)
	checkChannels(t, p)
}

func TestClickToCallViaMobile(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)

	t.Run("refused without a mobile or with a bad via", func(t *testing.T) {
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID, "via": "mobile"}, nil); st != 409 {
			t.Errorf("via mobile without a mobile: %d, want 409", st)
		}
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID, "via": "pigeon"}, nil); st != 400 {
			t.Errorf("via pigeon: %d, want 400", st)
		}
		s.setMobile(bob.ID, "+79035550202", "together", 0)
		if st := s.call("POST", "/api/v1/calls", bob.APIToken, map[string]string{"client_id": acme.ID, "via": "mobile"}, nil); st != 403 {
			t.Errorf("bob via mobile to anna's client: %d, want 403", st)
		}
	})

	t.Run("the mobile rings first, from the company number, with nothing of the client", func(t *testing.T) {
		s.setMobile(anna.ID, annaMobile, "off", 0) // the policy is for calls in; via mobile rings it anyway
		network := mobileNetwork(t, "ring", false, 42302)
		var c callResp
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID, "via": "mobile"}, &c); st != 202 {
			t.Fatalf("POST /calls via mobile: %d", st)
		}
		if d, err := network.LogValue("DIALLED", 10*time.Second); err != nil || !strings.HasPrefix(d, annaMobile+" ") {
			t.Fatalf("the trunk was asked for %q (%v), want anna's mobile first", d, err)
		}
		if cl, _ := network.LogValue("CALLER", time.Second); !strings.HasPrefix(cl, company+" ") {
			t.Errorf("the mobile was shown %q, want the company number", cl)
		}
		network.Wait() // not answered: CANCEL after the ring timeout
		assertMobileLegClean(t, network, acme, acmeNumber)
		if _, final := s.watchCall(c.ID, anna.APIToken); final.Disposition != "no_answer" {
			t.Errorf("final %+v, want no_answer", final)
		}
		if !s.audited("call.click_to_call", "client:"+acme.ID) {
			t.Error("no audit row for the click-to-call")
		}
	})
}

func TestAliasNumbers(t *testing.T) {
	const alias = "+74950000100"
	s := startSystemConfig(t, func(c *Config) {
		c.AliasNumbers = alias // a pool of one
		c.AliasQuarantine = 5 * time.Second
		c.MediaTimeout = 30 * time.Second
	})
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	bolt := s.client("Bolt", "+74957654321", anna.ID)
	s.setMobile(anna.ID, annaMobile, "only", 0)
	ctx := context.Background()

	t.Run("the mobile is rung from the pair's alias", func(t *testing.T) {
		clientRTP := testenv.NewRTPEndpoint(t, trunkIP+":42400")
		mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42402")
		network := mobileNetwork(t, "answer", false, 42402)
		tr := trunkCalls(t, s, acmeNumber, company, 42400, "yes", 1500)
		acceptOnMobile(t, network, alias, mobRTP, clientRTP, func(to netip.AddrPort) error { return mobRTP.SendDTMF(to, '1', 101) })
		tr.Wait()
		network.Wait()
		assertMobileLegClean(t, network, acme, acmeNumber)
		if a, err := s.run.Store.AliasByNumber(ctx, alias); err != nil || a.ManagerID != anna.ID || a.ClientID != acme.ID || a.ReleasedAt != nil {
			t.Fatalf("alias row %+v %v", a, err)
		}
	})

	t.Run("calling the alias from the mobile connects to the client, no code", func(t *testing.T) {
		mobRTP := testenv.NewRTPEndpoint(t, trunkIP+":42410")
		clientRTP := testenv.NewRTPEndpoint(t, trunkIP+":42412")
		network := mobileNetwork(t, "answer", false, 42412)
		mob := trunkCalls(t, s, annaMobile, alias, 42410, "yes", 3000)
		toMobile := pbxMediaAddr(t, mob, 10*time.Second)
		if d, err := network.LogValue("DIALLED", 10*time.Second); err != nil || !strings.HasPrefix(d, acmeNumber+" ") {
			t.Fatalf("the trunk was asked for %q (%v), want the pair's client", d, err)
		}
		bothWays(t, mobRTP, clientRTP, toMobile, pbxMediaAddr(t, network, time.Second))
		mob.Wait()
		network.Wait()
		if !s.audited("call.mobile_dial", "client:"+acme.ID) {
			t.Error("no call.mobile_dial audit row")
		}
	})

	t.Run("a stranger calling the alias calls the company", func(t *testing.T) {
		// Nobody's phone is registered and the only mobile is anna's: the
		// stranger rings her mobile like a call to the company number.
		network := mobileNetwork(t, "ring", false, 42422)
		tr := trunkCall(t, s, "+79260000001", 42420, true, 500)
		if d, err := network.LogValue("DIALLED", 10*time.Second); err != nil || !strings.HasPrefix(d, annaMobile+" ") {
			t.Fatalf("the trunk was asked for %q (%v), want anna's mobile (the company's ring plan)", d, err)
		}
		tr.Kill()
		network.Wait()
	})

	t.Run("after reassignment the alias no longer connects, and rests in quarantine", func(t *testing.T) {
		if st := s.call("PUT", "/api/v1/clients/"+acme.ID+"/assignment", adminTok, map[string]any{"manager_id": bob.ID, "partner_ids": []string{}}, nil); st != 200 {
			t.Fatalf("reassign: %d", st)
		}
		a, err := s.run.Store.AliasByNumber(ctx, alias)
		if err != nil || a.ReleasedAt == nil || a.QuarantineUntil == nil || !within(a.QuarantineUntil.Sub(*a.ReleasedAt), 5*time.Second, time.Millisecond) {
			t.Fatalf("alias row after reassignment %+v %v, want released with 5 s quarantine", a, err)
		}
		// Quarantined: another pair gets no alias until it is over.
		pool := []string{alias}
		if n, err := s.run.Store.PairAlias(ctx, anna.ID, bolt.ID, pool, 5*time.Second); !errors.Is(err, storage.ErrNoAlias) {
			t.Fatalf("a quarantined alias was given out: %q %v", n, err)
		}
		network := mobileNetwork(t, "answer", false, 42432)
		mob := trunkCalls(t, s, annaMobile, alias, 42430, "no", 0)
		mob.Wait() // "no longer in service", then the PBX hangs up
		if s.auditCount("call.mobile_dial", "manager:"+anna.ID, "refused: alias no longer in service") != 1 {
			t.Error("the call to the ended pair's alias was not audited")
		}
		network.Kill()
		if got := network.Received(); len(got) != 0 {
			t.Fatalf("the trunk was asked to call the client: %d messages", len(got))
		}
		testenv.Eventually(t, 15*time.Second, func() bool {
			n, err := s.run.Store.PairAlias(ctx, anna.ID, bolt.ID, pool, 5*time.Second)
			return err == nil && n == alias
		}, "the alias free again after its quarantine")
		if time.Now().Before(*a.QuarantineUntil) {
			t.Errorf("the alias was reused before its quarantine ended at %v", a.QuarantineUntil)
		}
	})
}
