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

// linphoneIP is the loopback address of the manager's real softphone.
const linphoneIP = "127.0.0.26"

// The tones each side sends: the client's through the trunk, the manager's
// from the softphone's microphone file.
const (
	trunkTone = 1000.0
	micTone   = 440.0
)

// startLinphoneAnna starts linphone as anna's desk softphone, sending a
// micTone microphone, and waits for it to register.
func startLinphoneAnna(t *testing.T, s *system) *testenv.Linphone {
	t.Helper()
	mic := filepath.Join(t.TempDir(), "mic.wav")
	testenv.WriteToneWAV(t, mic, micTone, 30*time.Second)
	ph := testenv.StartLinphone(t, testenv.PhoneOptions{
		Username: "anna", Password: "anna-secret", Domain: domain,
		Registrar: s.sipAddr, LocalIP: linphoneIP, PlayWAV: mic,
	})
	ph.WaitRegistered(t, 15*time.Second)
	return ph
}

// toneShare is the largest share of freq in any half second of s: the
// recordings hold silence before and after the tone.
func toneShare(s []int16, freq float64) float64 {
	const window = 4000
	best := 0.0
	for i := 0; i+window <= len(s); i += window / 4 {
		best = max(best, audio.ToneShare(s[i:i+window], freq))
	}
	return best
}

func decodeULaw(payloads [][]byte) []int16 {
	var s []int16
	for _, p := range payloads {
		for _, b := range p {
			s = append(s, audio.ULawToLinear[b])
		}
	}
	return s
}

// phoneHears waits until the phone's recording carries freq after sample
// from, and returns how long the recording is then.
func phoneHears(t *testing.T, ph *testenv.Linphone, freq float64, from int) int {
	t.Helper()
	var share float64
	var n int
	if !testenv.WaitFor(10*time.Second, func() bool {
		s := ph.Heard(t)
		n = len(s)
		s = s[min(from, len(s)):]
		share = toneShare(s, freq)
		return share > 0.5
	}) {
		t.Fatalf("the phone's recording %s (%d samples): %v Hz is at most %.2f of its sound, want > 0.5", ph.RecordPath(), n, freq, share)
	}
	t.Logf("the phone heard %v Hz (%.2f of the power)", freq, share)
	return n
}

// trunkHears waits until the trunk's RTP after packet from carries freq
// (the phone's microphone), and returns how many packets it has then.
func trunkHears(t *testing.T, rtp *testenv.RTPEndpoint, freq float64, from int) int {
	t.Helper()
	var share float64
	var n int
	if !testenv.WaitFor(10*time.Second, func() bool {
		p := rtp.Payloads()
		n = len(p)
		share = toneShare(decodeULaw(p[min(from, len(p)):]), freq)
		return share > 0.5
	}) {
		t.Fatalf("the trunk got %d RTP packets; %v Hz is %.2f of their sound after packet %d, want > 0.5", rtp.Received(), freq, share, from)
	}
	t.Logf("the trunk heard %v Hz (%.2f of the power) in %d packets", freq, share, n)
	return n
}

// assertPhoneLogClean fails if anything the phone logged (every SIP message
// it sent and received, its media addresses) names the client's number or
// the trunk.
func assertPhoneLogClean(t *testing.T, ph *testenv.Linphone) {
	t.Helper()
	raw, err := os.ReadFile(ph.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("INVITE sip:")) {
		t.Fatalf("the phone's log %s holds no SIP messages to check", ph.Log)
	}
	for _, leak := range []string{strings.TrimPrefix(acmeNumber, "+")[1:], trunkIP} {
		if i := bytes.Index(raw, []byte(leak)); i >= 0 {
			t.Fatalf("the phone's log names %q: ...%s...", leak, raw[max(0, i-300):min(len(raw), i+100)])
		}
	}
}

// pbxPort is the PBX's RTP address that a SIPp trunk logged.
func pbxPort(t *testing.T, tr *testenv.SIPp) string {
	t.Helper()
	p, err := tr.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(p)[0]
}

// TestLinphonePhone proves the PBX with a real softphone (linphone) as the
// manager's phone: it registers, a client's call rings it, it answers, audio
// flows both ways, it holds and resumes, and it hangs up; a click-to-call
// rings it first; it dials a client code.
func TestLinphonePhone(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) {
		c.RingTimeout = 15 * time.Second // a phone on a loaded machine still answers in time
		defaultPhoneFlags(c)             // serve's defaults, as a user who sets nothing gets them
		c.MediaTimeout = time.Minute     // the trunk's RTP comes in bursts, with silence between
	})
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	ph := startLinphoneAnna(t, s)

	t.Run("a client's call: answer, two-way audio, hold, resume, the phone hangs up", func(t *testing.T) {
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41900")
		tr := trunkCall(t, s, acmeNumber, 41900, false, 0) // waits for the PBX's BYE
		shown := ph.WaitIncoming(t, 15*time.Second)
		if !strings.Contains(shown, "Acme Trading #"+acme.Code) || strings.Contains(shown, "9161234567") || strings.Contains(shown, trunkIP) {
			t.Errorf("the phone shows the caller as %q, want the client's name and code only", shown)
		}
		ph.Answer(t)
		ph.WaitEstablished(t, 10*time.Second)
		toPBX := addrPort(t, pbxIP, pbxPort(t, tr))
		if err := trunkRTP.Send(toPBX, 100, trunkTone); err != nil {
			t.Fatal(err)
		}
		heard := phoneHears(t, ph, trunkTone, 0)
		trunkHears(t, trunkRTP, micTone, 0)

		ph.Hold(t)
		ph.WaitHeld(t, 10*time.Second)
		if n := s.run.SIP.ActiveCalls(); n != 1 {
			t.Fatalf("%d calls active while the phone holds, want 1", n)
		}
		if log, _ := os.ReadFile(ph.Log); !bytes.Contains(log, []byte("a=recvonly")) {
			t.Error("the PBX did not answer the phone's hold with a=recvonly")
		}
		ph.Resume(t)
		ph.WaitEstablished(t, 10*time.Second)
		got := len(trunkRTP.Payloads()) // linphone plays its microphone file as hold music: count from here
		if err := trunkRTP.Send(toPBX, 100, trunkTone); err != nil {
			t.Fatal(err)
		}
		phoneHears(t, ph, trunkTone, heard) // both ways after the hold
		trunkHears(t, trunkRTP, micTone, got)

		ph.Hangup(t)
		if reason := ph.WaitClosed(t, 10*time.Second); reason != "No error" {
			t.Errorf("the call ended with reason %q", reason)
		}
		tr.Wait() // it got the PBX's BYE
		cdr := nthCDR(t, s, acme.ID, 1)
		if cdr.Direction != "inbound" || cdr.Disposition != "answered" || cdr.HangupSide != "manager" || cdr.ManagerID != anna.ID || cdr.AnsweredAt == nil {
			t.Errorf("CDR %+v", cdr)
		}
	})

	t.Run("click-to-call rings the phone first, then the client", func(t *testing.T) {
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41910")
		tr := trunkUAS(t, "answer", false, 41910)
		var started callResp
		if st := s.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, &started); st != 202 {
			t.Fatalf("POST /calls: %d", st)
		}
		shown := ph.WaitIncoming(t, 15*time.Second)
		if !strings.Contains(shown, "Acme Trading #"+acme.Code) {
			t.Errorf("the phone shows %q, want the client's name and code", shown)
		}
		ph.Answer(t)
		ph.WaitEstablished(t, 10*time.Second)
		trunkHears(t, trunkRTP, micTone, 0)
		before := len(ph.Heard(t)) // the recording goes on from the last call
		if err := trunkRTP.Send(addrPort(t, pbxIP, pbxPort(t, tr)), 100, trunkTone); err != nil {
			t.Fatal(err)
		}
		phoneHears(t, ph, trunkTone, before)
		ph.Hangup(t)
		if reason := ph.WaitClosed(t, 10*time.Second); reason != "No error" {
			t.Errorf("the call ended with reason %q", reason)
		}
		tr.Wait()
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, acmeNumber+" ") {
			t.Errorf("the trunk was asked for %q, want %s", d, acmeNumber)
		}
		if _, final, err := s.pollCall(started.ID, anna.APIToken); err != nil {
			t.Fatal(err)
		} else if final.Disposition != "answered" || final.Direction != "outbound" {
			t.Errorf("final %+v", final)
		}
		cdr := nthCDR(t, s, acme.ID, 2)
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.HangupSide != "manager" || cdr.ManagerID != anna.ID {
			t.Errorf("CDR %+v", cdr)
		}
	})

	t.Run("the phone dials a client code", func(t *testing.T) {
		trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41920")
		tr := trunkUAS(t, "answer", false, 41920)
		ph.Dial(t, fmt.Sprintf("sip:%s@%s", acme.Code, domain))
		ph.WaitEstablished(t, 15*time.Second)
		trunkHears(t, trunkRTP, micTone, 0)
		before := len(ph.Heard(t))
		if err := trunkRTP.Send(addrPort(t, pbxIP, pbxPort(t, tr)), 100, trunkTone); err != nil {
			t.Fatal(err)
		}
		phoneHears(t, ph, trunkTone, before)
		ph.Hangup(t)
		if reason := ph.WaitClosed(t, 10*time.Second); reason != "No error" {
			t.Errorf("the call ended with reason %q", reason)
		}
		tr.Wait()
		if d, _ := tr.LogValue("DIALLED", time.Second); !strings.HasPrefix(d, acmeNumber+" ") {
			t.Errorf("the trunk was asked for %q, want %s", d, acmeNumber)
		}
		cdr := nthCDR(t, s, acme.ID, 3)
		if cdr.Direction != "outbound" || cdr.Disposition != "answered" || cdr.HangupSide != "manager" || cdr.ManagerID != anna.ID {
			t.Errorf("CDR %+v", cdr)
		}
	})

	assertPhoneLogClean(t, ph)
}

// nthCDR waits for the n-th call of a client to have its CDR finished and
// returns it (the calls before it are finished already).
func nthCDR(t *testing.T, s *system, clientID string, n int) storage.CDR {
	t.Helper()
	var cdr storage.CDR
	testenv.Eventually(t, 15*time.Second, func() bool {
		cdrs, err := s.run.Store.CDRs(context.Background(), storage.CDRFilter{ClientID: clientID})
		if err != nil || len(cdrs) < n || cdrs[0].EndedAt == nil {
			return false
		}
		cdr = cdrs[0]
		return true
	}, "CDR %d of client %s", n, clientID)
	return cdr
}
