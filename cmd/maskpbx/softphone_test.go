package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// Real softphones against serve with its default flags: the phones on the
// market, not SIPp, are the proof that a manager can work.

// flagDefault is the default of one of serve's flags, as a user who sets
// nothing gets it.
func flagDefault(name string) string {
	return newFlagSet("serve", &Config{}).Lookup(name).DefValue
}

// defaultPhoneFlags keeps serve's defaults for everything a phone sees.
func defaultPhoneFlags(c *Config) {
	c.DigestAlgorithms = flagDefault("digest-algorithms")
}

// heardTone is the share of freq in the PCMU payloads an RTP endpoint got.
func heardTone(e *testenv.RTPEndpoint, freq float64) float64 {
	var s []int16
	for _, p := range e.Payloads() {
		for _, b := range p {
			s = append(s, audio.ULawToLinear[b])
		}
	}
	return audio.ToneShare(s, freq)
}

// sendTone sends the client's tone from the trunk's endpoint to the PBX port
// the trunk's SIPp logged.
func sendTone(t *testing.T, tr *testenv.SIPp, rtp *testenv.RTPEndpoint, packets int) {
	t.Helper()
	port, err := tr.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := rtp.Send(addrPort(t, pbxIP, strings.Fields(port)[0]), packets, clientTone); err != nil {
		t.Fatal(err)
	}
}

// assertTwoWayAudio checks each side heard the other's tone.
func assertTwoWayAudio(t *testing.T, ph *testenv.Baresip, trunkRTP *testenv.RTPEndpoint) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() bool { return heardTone(trunkRTP, managerTone) > 0.5 },
		"the client hears the manager's %v Hz (share %.2f of %d packets)", managerTone, heardTone(trunkRTP, managerTone), trunkRTP.Received())
	testenv.Eventually(t, 5*time.Second, func() bool { return audio.ToneShare(ph.Heard(), clientTone) > 0.5 },
		"the manager's phone hears the client's %v Hz (share %.2f)", clientTone, audio.ToneShare(ph.Heard(), clientTone))
}

func annaBaresip(t *testing.T, s *system, o testenv.BaresipOptions) *testenv.Baresip {
	t.Helper()
	o.Username, o.Password, o.Domain = "anna", "anna-secret", domain
	if o.Proxy == "" {
		o.Proxy = s.sipAddr
	}
	o.LocalIP, o.Tone = annaIP, managerTone
	ph := testenv.StartBaresip(t, o)
	ph.WaitRegistered()
	return ph
}

func TestBaresipPhone(t *testing.T) {
	testenv.Require(t, "baresip")
	s := startSystemConfig(t, defaultPhoneFlags)
	anna := s.manager("anna")

	t.Run("inbound call: two-way audio, hold and resume, the client hangs up", func(t *testing.T) {
		acme := s.client("Acme Trading", acmeNumber, anna.ID)
		ph := annaBaresip(t, s, testenv.BaresipOptions{})
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41800")
		tr := trunkCall(t, s, acmeNumber, 41800, true, 9000)
		in := ph.WaitEvent("CALL_INCOMING", 10*time.Second)
		if !strings.Contains(in.PeerName+in.PeerURI, acme.Code) || strings.Contains(in.PeerName+in.PeerURI, "9161234567") {
			t.Errorf("the phone shows %q <%s>, want the client's code and no number", in.PeerName, in.PeerURI)
		}
		ph.Answer()
		ph.WaitEvent("CALL_ESTABLISHED", 5*time.Second)
		sendTone(t, tr, trunkRTP, 75)
		assertTwoWayAudio(t, ph, trunkRTP)

		ph.Hold()
		before := trunkRTP.Received()
		ph.Resume()
		testenv.Eventually(t, 5*time.Second, func() bool { return trunkRTP.Received() > before+25 },
			"after resume the manager's audio flows again (%d packets, %d before)", trunkRTP.Received(), before)
		ph.WaitEvent("CALL_CLOSED", 15*time.Second)
		tr.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.HangupSide != "client" || cdr.ManagerID != anna.ID {
			t.Errorf("CDR %+v", cdr)
		}
	})

	t.Run("inbound call: the manager hangs up", func(t *testing.T) {
		bolt := s.client("Bolt", "+74957654321", anna.ID)
		ph := annaBaresip(t, s, testenv.BaresipOptions{})
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41810")
		tr := trunkCall(t, s, "+74957654321", 41810, false, 0)
		ph.WaitEvent("CALL_INCOMING", 10*time.Second)
		ph.Answer()
		ph.WaitEvent("CALL_ESTABLISHED", 5*time.Second)
		sendTone(t, tr, trunkRTP, 50)
		assertTwoWayAudio(t, ph, trunkRTP)
		ph.Hangup()
		ph.WaitEvent("CALL_CLOSED", 5*time.Second)
		tr.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: bolt.ID})
		if cdr.Disposition != "answered" || cdr.HangupSide != "manager" {
			t.Errorf("CDR %+v", cdr)
		}
	})

	t.Run("click-to-call: the phone rings first, then the client", func(t *testing.T) {
		cobalt := s.client("Cobalt", "+74951112233", anna.ID)
		ph := annaBaresip(t, s, testenv.BaresipOptions{})
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41820")
		tr := trunkUAS(t, "answer", false, 41820)
		var started callResp
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": cobalt.ID}, &started); st != 202 {
			t.Fatalf("POST /calls: %d", st)
		}
		in := ph.WaitEvent("CALL_INCOMING", 10*time.Second)
		if strings.Contains(in.PeerName+in.PeerURI, "4951112233") {
			t.Errorf("the phone shows %q <%s>: the client's number", in.PeerName, in.PeerURI)
		}
		ph.Answer()
		ph.WaitEvent("CALL_ESTABLISHED", 5*time.Second)
		sendTone(t, tr, trunkRTP, 50)
		assertTwoWayAudio(t, ph, trunkRTP)
		ph.Hangup()
		ph.WaitEvent("CALL_CLOSED", 5*time.Second)
		tr.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: cobalt.ID})
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.HangupSide != "manager" {
			t.Errorf("CDR %+v", cdr)
		}
	})

	t.Run("desk dialling by client code: 407, then connected", func(t *testing.T) {
		dome := s.client("Dome", "+74953334455", anna.ID)
		ph := annaBaresip(t, s, testenv.BaresipOptions{})
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41830")
		tr := trunkUAS(t, "answer", false, 41830)
		ph.Dial("sip:" + dome.Code + "@" + domain)
		ph.WaitEvent("CALL_ESTABLISHED", 10*time.Second)
		sendTone(t, tr, trunkRTP, 50)
		assertTwoWayAudio(t, ph, trunkRTP)
		ph.Hangup()
		ph.WaitEvent("CALL_CLOSED", 5*time.Second)
		tr.Wait()
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, "+74953334455 ") {
			t.Errorf("the trunk was asked for %q", d)
		}
		cdr := s.cdr(storage.CDRFilter{ClientID: dome.ID})
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.HangupSide != "manager" {
			t.Errorf("CDR %+v", cdr)
		}
	})
}

// A manager outside the office: baresip registers over TLS to the
// self-signed listener serve generates, and its calls come over TLS.
func TestBaresipTLS(t *testing.T) {
	testenv.Require(t, "baresip")
	s := startSystemConfig(t, func(c *Config) {
		defaultPhoneFlags(c)
		c.SIPTLSListen = pbxIP + ":0"
	})
	tlsAddr := s.run.SIP.TLSAddr()
	if tlsAddr == "" {
		t.Fatal("no TLS listener")
	}
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	ph := annaBaresip(t, s, testenv.BaresipOptions{Proxy: tlsAddr, Transport: "tls"})
	regs, err := s.run.Regs.Contacts(context.Background(), anna.ID)
	if err != nil || len(regs) != 1 || regs[0].Transport != "TLS" {
		t.Fatalf("anna's registrations %+v (%v), want one over TLS", regs, err)
	}

	trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41840")
	tr := trunkCall(t, s, acmeNumber, 41840, false, 0)
	ph.WaitEvent("CALL_INCOMING", 10*time.Second)
	ph.Answer()
	ph.WaitEvent("CALL_ESTABLISHED", 5*time.Second)
	sendTone(t, tr, trunkRTP, 50)
	assertTwoWayAudio(t, ph, trunkRTP)
	ph.Hangup()
	ph.WaitEvent("CALL_CLOSED", 5*time.Second)
	tr.Wait()
	cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if cdr.Disposition != "answered" || cdr.HangupSide != "manager" {
		t.Errorf("CDR %+v", cdr)
	}
}
