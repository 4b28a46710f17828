package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// baresipIP is the softphones' address. baresip 1.0 binds only its SIP
// listener to its configured address: its TCP/TLS connections and RTP leave
// from the address the kernel picks, 127.0.0.1 on loopback. Given any other
// address, its SDP would name one IP and its packets come from another,
// which the PBX's media latching rightly refuses.
const baresipIP = "127.0.0.1"

func annaBaresip(t *testing.T, s *system, o testenv.BaresipOptions) *testenv.Baresip {
	t.Helper()
	o.Username, o.Password, o.Domain = "anna", "anna-secret", domain
	if o.Proxy == "" {
		o.Proxy = s.sipAddr
	}
	o.LocalIP, o.Tone = baresipIP, managerTone
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
		managerHangsUp(t, s, ph, "+74957654321", 41810)
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
// self-signed listener serve generates and insists on SRTP. A capture shows
// no SIP in clear and no decodable tone on the phone's leg (while the
// trunk's leg, plain RTP, carries it), and the recording is still right.
func TestBaresipTLSAndSRTP(t *testing.T) {
	testenv.Require(t, "baresip")
	var dataDir string
	s := startSystemConfig(t, func(c *Config) {
		defaultPhoneFlags(c)
		c.SIPTLSListen = pbxIP + ":0"
		dataDir = c.DataDir
	})
	tlsAddr := s.run.SIP.TLSAddr()
	if tlsAddr == "" {
		t.Fatal("no TLS listener")
	}
	if _, err := os.Stat(filepath.Join(dataDir, selfSignedCert)); err != nil {
		t.Fatalf("no self-signed certificate in the data dir: %v", err)
	}
	anna := s.manager("anna")
	// The phone's leg is what the PBX exchanges with anyone but the trunk.
	capture := testenv.StartCapture(t, "host "+pbxIP)
	ph := annaBaresip(t, s, testenv.BaresipOptions{Proxy: tlsAddr, Transport: "tls", SRTP: true})
	regs, err := s.run.Regs.Contacts(context.Background(), anna.ID)
	if err != nil || len(regs) != 1 || regs[0].Transport != "TLS" {
		t.Fatalf("anna's registrations %+v (%v), want one over TLS", regs, err)
	}

	// One phone through both calls, so no subtests (it fails its own test).
	{ // inbound call
		acme := s.client("Acme Trading", acmeNumber, anna.ID)
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41840")
		tr := trunkCall(t, s, acmeNumber, 41840, false, 0)
		softphoneAnswers(t, ph, tr, trunkRTP, 75)
		ph.Hold()
		ph.Resume()
		before := trunkRTP.Received()
		testenv.Eventually(t, 5*time.Second, func() bool { return trunkRTP.Received() > before+25 },
			"after resume the manager's audio flows again")
		ph.Hangup()
		ph.WaitEvent("CALL_CLOSED", 5*time.Second)
		tr.Wait()
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.Disposition != "answered" || cdr.HangupSide != "manager" {
			t.Errorf("CDR %+v", cdr)
		}
		cdr = s.cdrRecording(cdr.CallID, storage.RecordingComplete)
		rec := recordingOf(t, s.run.Store, cdr.CallID, 20*time.Second)
		p, _ := loadWAV(t, filepath.Join(dataDir, "recordings", rec.BlobKey))
		// The phone's tone restarts its phase at hold and resume, so it is
		// checked in 200 ms windows rather than over one long stretch.
		if got := toneWindows(p.Right, managerTone, clientTone); got < 0.8 {
			t.Errorf("the manager's channel holds his tone in %.0f%% of its windows", 100*got)
		}
		if got := toneWindows(p.Left, clientTone, managerTone); got < 0.8 {
			t.Errorf("the client's channel holds his tone in %.0f%% of its windows", 100*got)
		}
	}

	{ // desk dialling by code: the phone offers SRTP
		dome := s.client("Dome", "+74953334455", anna.ID)
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41850")
		tr := trunkUAS(t, "answer", false, 41850)
		ph.Dial("sip:" + dome.Code + "@" + domain)
		ph.WaitEvent("CALL_ESTABLISHED", 10*time.Second)
		sendTone(t, tr, trunkRTP, 50)
		assertTwoWayAudio(t, ph, trunkRTP)
		ph.Hangup()
		ph.WaitEvent("CALL_CLOSED", 5*time.Second)
		tr.Wait()
	}

	var phoneLeg, trunkLeg [][]byte
	for _, pkt := range capture.Stop() {
		trunkSide := pkt.Src.Addr().String() == trunkIP || pkt.Dst.Addr().String() == trunkIP
		// (baresip's own RTCP BYE at hang-up goes out unencrypted, naming
		// anna: that is the phone's doing, and not SIP.)
		if !trunkSide && bytes.Contains(pkt.Payload, []byte("SIP/2.0")) {
			t.Errorf("SIP in clear between the phone and the PBX (%s %s -> %s)", pkt.Proto, pkt.Src, pkt.Dst)
		}
		if pkt.Proto != "udp" || len(pkt.Payload) < 12+160 || pkt.Payload[0]>>6 != 2 {
			continue
		}
		if trunkSide {
			trunkLeg = append(trunkLeg, pkt.Payload[12:12+160])
		} else {
			phoneLeg = append(phoneLeg, pkt.Payload[12:12+160])
		}
	}
	share := func(payloads [][]byte, freq float64) float64 {
		var s []int16
		for _, p := range payloads {
			for _, b := range p {
				s = append(s, audio.ULawToLinear[b])
			}
		}
		return audio.ToneShare(s, freq)
	}
	t.Logf("captured %d RTP packets on the phone's leg, %d on the trunk's", len(phoneLeg), len(trunkLeg))
	if len(phoneLeg) < 100 || len(trunkLeg) < 100 {
		t.Fatalf("the capture saw %d and %d media packets", len(phoneLeg), len(trunkLeg))
	}
	for _, f := range []float64{clientTone, managerTone} {
		if sh := share(phoneLeg, f); sh > 0.05 {
			t.Errorf("the %v Hz tone is decodable as PCMU on the phone's leg (share %.2f): not SRTP", f, sh)
		}
	}
	if sh := share(trunkLeg, managerTone); sh < 0.3 {
		t.Errorf("the trunk's plain leg should carry the manager's tone; share %.2f (is the capture right?)", sh)
	}
}

// A phone on TLS that does not do SRTP refuses the PBX's SRTP offer; it is
// rung again with plain RTP and the call connects.
func TestBaresipTLSWithoutSRTP(t *testing.T) {
	testenv.Require(t, "baresip")
	s := startSystemConfig(t, func(c *Config) {
		defaultPhoneFlags(c)
		c.SIPTLSListen = pbxIP + ":0"
	})
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	ph := annaBaresip(t, s, testenv.BaresipOptions{Proxy: s.run.SIP.TLSAddr(), Transport: "tls"})
	managerHangsUp(t, s, ph, acmeNumber, 41860)
	if cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID}); cdr.Disposition != "answered" {
		t.Errorf("CDR %+v", cdr)
	}
}

// managerHangsUp runs a call from the trunk as caller that the phone
// answers: tones both ways, then the phone hangs up and the trunk sees it.
func managerHangsUp(t *testing.T, s *system, ph *testenv.Baresip, caller string, rtpPort int) {
	t.Helper()
	trunkRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", trunkIP, rtpPort))
	tr := trunkCall(t, s, caller, rtpPort, false, 0)
	ph.WaitEvent("CALL_INCOMING", 10*time.Second)
	ph.Answer()
	ph.WaitEvent("CALL_ESTABLISHED", 5*time.Second)
	sendTone(t, tr, trunkRTP, 50)
	assertTwoWayAudio(t, ph, trunkRTP)
	ph.Hangup()
	ph.WaitEvent("CALL_CLOSED", 5*time.Second)
	tr.Wait()
}

// toneWindows is the share of the audible 200 ms windows of s that carry
// freq and nothing of other.
func toneWindows(s []int16, freq, other float64) float64 {
	audible, good := 0, 0
	for i := 0; i+1600 <= len(s); i += 1600 {
		w := s[i : i+1600]
		if first, _ := active(w); first < 0 {
			continue
		}
		audible++
		if audio.ToneShare(w, freq) > 0.5 && audio.ToneShare(w, other) < 0.02 {
			good++
		}
	}
	if audible == 0 {
		return 0
	}
	return float64(good) / float64(audible)
}

// Phones on TCP: each call goes on the connection its own phone opened.
// (Requests over TCP once left on whichever connection had been accepted
// last on the listener: anna's call would ring bob's phone.)
func TestBaresipTCPCallsTheRightPhone(t *testing.T) {
	testenv.Require(t, "baresip")
	s := startSystemConfig(t, defaultPhoneFlags)
	anna, bob, acme := annaBobAcme(s)
	annaPhone := annaBaresip(t, s, testenv.BaresipOptions{Transport: "tcp"})
	bobPhone := testenv.StartBaresip(t, testenv.BaresipOptions{Username: "bob", Password: "bob-secret", Domain: domain,
		Proxy: s.sipAddr, Transport: "tcp", LocalIP: baresipIP, Tone: managerTone, RTPPorts: "42100-42199"})
	bobPhone.WaitRegistered()
	if regs, err := s.run.Regs.Contacts(context.Background(), bob.ID); err != nil || len(regs) != 1 || regs[0].Transport != "TCP" {
		t.Fatalf("bob's registrations %+v (%v), want one over TCP", regs, err)
	}

	managerHangsUp(t, s, annaPhone, acmeNumber, 41870)
	if cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID}); cdr.ManagerID != anna.ID {
		t.Errorf("CDR %+v, want anna's", cdr)
	}
	for _, ev := range bobPhone.Events() {
		if strings.HasPrefix(ev.Type, "CALL_") {
			t.Errorf("bob's phone saw %s from %q: anna's call reached it", ev.Type, ev.PeerName)
		}
	}
}
