package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

const acmeNumber = "+79161234567"

// phone starts a SIPp phone that answers the next call.
func phone(t *testing.T, s *system, name, ip string, port, rtpPort int, hangup bool, rings int) *testenv.SIPp {
	hang := "no"
	if hangup {
		hang = "yes"
	}
	return testenv.StartSIPp(t, name, testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: ip, Port: port, Remote: s.sipAddr,
		Keys: map[string]string{"rtp_ip": ip, "rtp_port": fmt.Sprint(rtpPort)},
		Sets: map[string]string{"hangup": hang, "rings": fmt.Sprint(rings)},
		Args: []string{"-d", "2500"},
	})
}

func trunkCall(t *testing.T, s *system, caller string, rtpPort int, hangup bool, holdMS int) *testenv.SIPp {
	hang := "no"
	if hangup {
		hang = "yes"
	}
	return testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_call.xml", LocalIP: trunkIP, Remote: s.sipAddr,
		Keys: map[string]string{"company": "74950000000", "caller": caller, "rtp_ip": trunkIP, "rtp_port": fmt.Sprint(rtpPort)},
		Sets: map[string]string{"hangup": hang},
		Args: []string{"-d", fmt.Sprint(holdMS)},
	})
}

// talk sends a tone each way through the relay and checks both arrive.
func talk(t *testing.T, trunk, ph *testenv.SIPp, trunkRTP, phoneRTP *testenv.RTPEndpoint, phoneIP string) {
	t.Helper()
	tPort, err := trunk.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pPort, err := ph.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tPort, pPort = strings.Fields(tPort)[0], strings.Fields(pPort)[0]
	done := make(chan error, 1)
	go func() { done <- phoneRTP.Send(addrPort(t, pbxIP, pPort), 50, 1000) }()
	if err := trunkRTP.Send(addrPort(t, pbxIP, tPort), 50, 400); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// RTCP from the client's side names him; what reaches the phone must not.
	tp := addrPort(t, pbxIP, tPort)
	if err := trunkRTP.SendRTCP(netip.AddrPortFrom(tp.Addr(), tp.Port()+1), "caller-79161234567@"+trunkIP, acmeNumber); err != nil {
		t.Fatal(err)
	}
	var rtcp [][]byte
	if !testenv.WaitFor(5*time.Second, func() bool { rtcp = phoneRTP.RTCP(); return len(rtcp) > 0 }) {
		t.Error("no RTCP reached the manager's phone")
	}
	for _, pkt := range rtcp {
		if bytes.Contains(pkt, []byte("9161234567")) || bytes.Contains(pkt, []byte(trunkIP)) {
			t.Errorf("RTCP at the manager's phone names the client: %q", pkt)
		}
	}
	if got := phoneRTP.Received(); got < 48 {
		t.Errorf("the manager's phone got %d of 50 RTP packets from the client", got)
	}
	if got := trunkRTP.Received(); got < 48 {
		t.Errorf("the client got %d of 50 RTP packets from the manager", got)
	}
}

// acmeCallsAnna brings a call from Acme (his number spelt 8916...) to
// anna's phone on annaIP:5070, which answers; tones cross both ways (RTP
// on rtpBase for the trunk, rtpBase+2 for the phone) and the caller hangs
// up after 2.5 s. The phone must have been shown Acme's name and code and
// nothing of his number. It returns the trunk's SIPp.
func acmeCallsAnna(t *testing.T, s *system, acme apiClient, rtpBase int) *testenv.SIPp {
	t.Helper()
	trunkRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", trunkIP, rtpBase))
	phoneRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", annaIP, rtpBase+2))
	ph := phone(t, s, "anna", annaIP, 5070, rtpBase+2, false, 1)
	tr := trunkCall(t, s, "89161234567", rtpBase, true, 2500)
	talk(t, tr, ph, trunkRTP, phoneRTP, annaIP)
	tr.Wait()
	ph.Wait()
	shown, _ := ph.LogValue("SHOWN_FROM", time.Second)
	if !strings.Contains(shown, "Acme Trading #"+acme.Code) || !strings.Contains(shown, "sip:"+acme.Code+"@"+domain) {
		t.Errorf("the phone was shown %q, want the client's name and code", shown)
	}
	assertNoLeak(t, ph, acmeNumber, acme.Code)
	return tr
}

func TestInboundCall(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID, bob.ID)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)

	t.Run("client hangs up; the manager's phone sees no number", func(t *testing.T) {
		tr := acmeCallsAnna(t, s, acme, 41000)
		for _, m := range tr.Received() {
			if strings.Contains(m, annaIP) || strings.Contains(strings.ToLower(m), "anna") {
				t.Fatalf("the client's side learned the manager's identity:\n%s", m)
			}
		}
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.HangupSide != "client" || cdr.ManagerID != anna.ID || cdr.AnsweredAt == nil {
			t.Errorf("CDR %+v", cdr)
		}
	})

	t.Run("manager hangs up", func(t *testing.T) {
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41010")
		phoneRTP := testenv.NewRTPEndpoint(t, annaIP+":41012")
		ph := phone(t, s, "anna", annaIP, 5070, 41012, true, 1)
		tr := trunkCall(t, s, acmeNumber, 41010, false, 0)
		talk(t, tr, ph, trunkRTP, phoneRTP, annaIP)
		tr.Wait()
		ph.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.HangupSide != "manager" {
			t.Errorf("CDR %+v", cdr)
		}
	})
}

func rejectingPhone(t *testing.T, s *system, name, ip string, port int, mode string) *testenv.SIPp {
	return testenv.StartSIPp(t, name, testenv.SIPpOptions{
		Scenario: "phone_reject.xml", LocalIP: ip, Port: port, Remote: s.sipAddr,
		Sets: map[string]string{"mode": mode},
	})
}

// rejected sends an INVITE that must be refused and returns the status.
func rejected(t *testing.T, s *system, from, company, cline, mline string) string {
	t.Helper()
	p := testenv.StartSIPp(t, "rejected", testenv.SIPpOptions{
		Scenario: "trunk_rejected.xml", LocalIP: from, Remote: s.sipAddr, Timeout: 10 * time.Second,
		Keys: map[string]string{"company": company, "caller": "79161234567", "cline": cline, "mline": mline},
	})
	p.Wait()
	st, err := p.LogValue("STATUS", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sentCount(p *testenv.SIPp, startLine string) int {
	raw, _ := os.ReadFile(p.Messages)
	n := 0
	for _, block := range strings.Split(string(raw), "-----------------------------------------------") {
		if strings.Contains(block, "message sent") && strings.Contains(block, startLine) {
			n++
		}
	}
	return n
}

func TestInboundRingPlan(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID, bob.ID)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)

	t.Run("a phone that repeats 180 still connects", func(t *testing.T) {
		ph := phone(t, s, "anna", annaIP, 5070, 41102, false, 12)
		tr := trunkCall(t, s, acmeNumber, 41100, true, 1000)
		tr.Wait()
		ph.Wait()
		if n := sentCount(ph, "SIP/2.0 180 Ringing"); n < 12 {
			t.Fatalf("the phone sent %d 180s, want 12 (more than sipgo's WaitAnswer reads)", n)
		}
	})

	t.Run("primary does not answer: the partner rings after the ring timeout", func(t *testing.T) {
		annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
		bobPh := phone(t, s, "bob", bobIP, 5071, 41112, false, 1)
		start := time.Now()
		tr := trunkCall(t, s, acmeNumber, 41110, true, 1000)
		annaPh.Wait() // it got CANCEL when its ring step ran out
		bobPh.Wait()
		tr.Wait()
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("the partner answered after %v, before the primary's ring timeout", d)
		}
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.ManagerID != bob.ID || cdr.Disposition != "answered" {
			t.Errorf("CDR %+v, want answered by bob", cdr)
		}
	})

	t.Run("busy primary goes straight to the partner", func(t *testing.T) {
		annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "busy")
		bobPh := phone(t, s, "bob", bobIP, 5071, 41122, false, 1)
		tr := trunkCall(t, s, acmeNumber, 41120, true, 500)
		annaPh.Wait()
		bobPh.Wait()
		tr.Wait()
	})

	t.Run("the caller hangs up while ringing: CANCEL and a missed CDR", func(t *testing.T) {
		annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
		tr := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
			Scenario: "trunk_cancel.xml", LocalIP: trunkIP, Remote: s.sipAddr,
			Keys: map[string]string{"company": "74950000000", "caller": acmeNumber, "rtp_ip": trunkIP, "rtp_port": "41130"},
			Args: []string{"-d", "800"},
		})
		tr.Wait()
		annaPh.Wait() // it received the CANCEL
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "missed" || cdr.AnsweredAt != nil || cdr.HangupSide != "client" {
			t.Errorf("CDR %+v, want missed", cdr)
		}
	})

	t.Run("an unknown caller becomes a client of one manager and sticks to him", func(t *testing.T) {
		const stranger = "+79037778899"
		var owner string
		for round := 0; round < 2; round++ {
			phones := map[string]*testenv.SIPp{
				anna.ID: phone(t, s, "anna", annaIP, 5070, 41142, false, 1),
				bob.ID:  phone(t, s, "bob", bobIP, 5071, 41144, false, 1),
			}
			tr := trunkCall(t, s, stranger, 41140, true, 500)
			tr.Wait()
			var clients []apiClient
			s.call("GET", "/api/v1/clients", adminTok, nil, &clients)
			found := false
			for _, c := range clients {
				if c.Name == "New client" {
					found = true
					if owner == "" {
						owner = c.ManagerID
					}
					if c.ManagerID != owner {
						t.Fatalf("the new client moved from %s to %s", owner, c.ManagerID)
					}
				}
			}
			if !found {
				t.Fatal("no client was created for the unknown caller")
			}
			phones[owner].Wait()
			for id, p := range phones {
				if id != owner {
					p.Kill()
					if len(p.Received()) != 0 {
						t.Fatalf("round %d: the other manager's phone rang", round)
					}
				}
			}
		}
	})

	t.Run("refused INVITEs", func(t *testing.T) {
		goodC, goodM := "c=IN IP4 "+trunkIP, "m=audio 41150 RTP/AVP 0"
		for _, tc := range []struct {
			name, from, company, cline, mline, want string
		}{
			{"source not on the trunk list", strangerIP, "74950000000", goodC, goodM, "403"},
			{"another number", trunkIP, "74951111111", goodC, goodM, "403"},
			{"malformed SDP", trunkIP, "74950000000", "c=IN IP4 nonsense", "m=audio notaport RTP/AVP 0", "488"},
			{"no supported codec", trunkIP, "74950000000", goodC, "m=audio 41150 RTP/AVP 18", "488"},
		} {
			if got := rejected(t, s, tc.from, tc.company, tc.cline, tc.mline); got != tc.want {
				t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
			}
		}
		if n := s.run.Ports.InUse(); n != 0 {
			t.Errorf("%d RTP ports still allocated after the calls", n)
		}
		if n := s.run.SIP.ActiveCalls(); n != 0 {
			t.Errorf("%d calls still active", n)
		}
	})
}

func TestInboundHoldAndMediaTimeout(t *testing.T) {
	s := startSystemWith(t, 2*time.Second, 2*time.Second)
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	t.Run("hold, resume and INFO are answered on the trunk leg only", func(t *testing.T) {
		ph := phone(t, s, "anna", annaIP, 5070, 41302, false, 1)
		tr := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
			Scenario: "trunk_hold.xml", LocalIP: trunkIP, Remote: s.sipAddr,
			Keys: map[string]string{"company": "74950000000", "caller": acmeNumber, "rtp_ip": trunkIP, "rtp_port": "41300"},
		})
		tr.Wait()
		ph.Wait()
		if v, _ := tr.LogValue("HOLD_ANSWER", time.Second); v != "a=recvonly" {
			t.Errorf("answer to hold: %q, want a=recvonly", v)
		}
		invites := 0
		for _, m := range ph.Received() {
			if strings.HasPrefix(m, "INVITE ") {
				invites++
			}
			if strings.HasPrefix(m, "INFO ") {
				t.Error("the client's INFO crossed to the manager's phone")
			}
		}
		if invites != 1 {
			t.Errorf("the phone received %d INVITEs, want 1 (hold stays on the trunk leg)", invites)
		}
	})

	t.Run("no RTP for --media-timeout ends both legs", func(t *testing.T) {
		ph := phone(t, s, "anna", annaIP, 5070, 41312, false, 1)
		tr := trunkCall(t, s, acmeNumber, 41310, false, 0)
		tr.Wait() // got the PBX's BYE
		ph.Wait() // got the PBX's BYE
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.HangupSide != "system" || cdr.Disposition != "answered" {
			t.Errorf("CDR %+v, want ended by the system", cdr)
		}
		if n := s.run.Ports.InUse(); n != 0 {
			t.Errorf("%d RTP ports still allocated", n)
		}
	})
}

// A stranger who finds the PBX's port for the manager's phone sprays RTP at
// it while the phone is silent (before its first packet): he is refused and
// counted, gets none of the client's audio, and the call's audio flows both
// ways once the phone talks.
func TestInboundStrangerCannotTakeOverPhoneLeg(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41350")
	phoneRTP := testenv.NewRTPEndpoint(t, annaIP+":41352")
	stranger := testenv.NewRTPEndpoint(t, strangerIP+":41354")
	ph := phone(t, s, "anna", annaIP, 5070, 41352, false, 1)
	tr := trunkCall(t, s, acmeNumber, 41350, true, 5000)
	tPort, err := tr.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pPort, err := ph.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	trunkSide, phoneSide := addrPort(t, pbxIP, strings.Fields(tPort)[0]), addrPort(t, pbxIP, strings.Fields(pPort)[0])

	sprayed := make(chan error, 1)
	go func() { sprayed <- stranger.Send(phoneSide, 30, 700) }()
	if err := trunkRTP.Send(trunkSide, 50, 400); err != nil {
		t.Fatal(err)
	}
	if err := <-sprayed; err != nil {
		t.Fatal(err)
	}
	if err := phoneRTP.Send(phoneSide, 25, 1000); err != nil {
		t.Fatal(err)
	}
	tr.Wait()
	ph.Wait()
	if got := stranger.Received(); got != 0 {
		t.Errorf("the stranger got %d RTP packets of the call", got)
	}
	if got := phoneRTP.Received(); got < 48 {
		t.Errorf("the manager's phone got %d of 50 RTP packets from the client", got)
	}
	if got := trunkRTP.Received(); got < 23 {
		t.Errorf("the client got %d of 25 RTP packets from the manager", got)
	}
	resp, err := http.Get(s.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), "maskpbx_rtp_refused_packets_total 30") {
		t.Errorf("/metrics does not count the stranger's 30 packets:\n%s", grep(string(raw), "rtp"))
	}
}

func TestKeepAliveEndsCallWhosePhoneVanished(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) { c.KeepAlive = time.Second; c.MediaTimeout = time.Minute })
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	ph := phone(t, s, "anna", annaIP, 5070, 41602, false, 1)
	tr := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_call.xml", LocalIP: trunkIP, Remote: s.sipAddr,
		Keys: map[string]string{"company": "74950000000", "caller": acmeNumber, "rtp_ip": trunkIP, "rtp_port": "41600"},
		Sets: map[string]string{"hangup": "no"},
		Args: []string{"-aa"}, // answer the PBX's keep-alive OPTIONS
	})
	if _, err := ph.LogValue("PBX_RTP", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The trunk's 200 OK: the phone answered and the call is up.
	if _, err := tr.LogValue("PBX_RTP", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ph.Kill() // the phone is gone without a BYE
	start := time.Now()
	tr.Wait() // the PBX ends the client's leg
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the call outlived its vanished phone by %v", d)
	}
	cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if cdr.HangupSide != "system" || cdr.Disposition != "answered" {
		t.Errorf("CDR %+v", cdr)
	}
}
