package main

import (
	"fmt"
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
	time.Sleep(100 * time.Millisecond)
	if got := phoneRTP.Received(); got < 48 {
		t.Errorf("the manager's phone got %d of 50 RTP packets from the client", got)
	}
	if got := trunkRTP.Received(); got < 48 {
		t.Errorf("the client got %d of 50 RTP packets from the manager", got)
	}
}

func TestInboundCall(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID, bob.ID)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)

	t.Run("client hangs up; the manager's phone sees no number", func(t *testing.T) {
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41000")
		phoneRTP := testenv.NewRTPEndpoint(t, annaIP+":41002")
		ph := phone(t, s, "anna", annaIP, 5070, 41002, false, 1)
		tr := trunkCall(t, s, "89161234567", 41000, true, 2500)
		talk(t, tr, ph, trunkRTP, phoneRTP, annaIP)
		tr.Wait()
		ph.Wait()
		shown, _ := ph.LogValue("SHOWN_FROM", time.Second)
		if !strings.Contains(shown, "Acme Trading #"+acme.Code) || !strings.Contains(shown, "sip:"+acme.Code+"@"+domain) {
			t.Errorf("the phone was shown %q, want the client's name and code", shown)
		}
		assertNoLeak(t, ph, acmeNumber, acme.Code)
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
