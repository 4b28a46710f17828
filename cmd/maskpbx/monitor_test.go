package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// Live listen, whisper and barge end to end: a SIPp trunk calls, anna's
// SIPp phone answers, each side sends its tone from an RTP peer of the
// test; the supervisor sue asks the API to listen in, her SIPp phone
// rings and answers, and her RTP peer hears (and speaks) what the tone
// detector checks on every leg.

const (
	sueIP       = "127.0.0.27"
	sueTone     = 2000.0 // Hz, what the supervisor says
	noticeTone  = 1400.0 // Hz, the --monitor-notice beep
	monitorBase = 42100  // RTP ports of this file's peers
)

// hearingPeer is a party's RTP endpoint that keeps every payload it
// receives (PCMU) and can send a tone.
type hearingPeer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
}

func newHearingPeer(t *testing.T, addr string) *hearingPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("rtp peer %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	p := &hearingPeer{conn: c}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n > 12 && buf[0]>>6 == 2 && buf[1]&0x7f == 0 {
				p.mu.Lock()
				p.got = append(p.got, append([]byte(nil), buf[12:n]...))
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// heard is how many packets arrived so far.
func (p *hearingPeer) heard() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

// since decodes what arrived from packet from on.
func (p *hearingPeer) since(from int) []int16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s []int16
	for _, pl := range p.got[min(from, len(p.got)):] {
		for _, c := range pl {
			s = append(s, audio.ULawToLinear[c])
		}
	}
	return s
}

// send sends 20 ms PCMU packets of a tone to dst in real time until stop.
func (p *hearingPeer) send(dst netip.AddrPort, freq float64, stop <-chan struct{}) {
	ssrc := uint32(time.Now().UnixNano())
	to := net.UDPAddrFromAddrPort(dst)
	start := time.Now()
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(k) * 20 * time.Millisecond))): // pacing: a packet every 20 ms
		}
		b := make([]byte, 12+160)
		b[0] = 0x80
		binary.BigEndian.PutUint16(b[2:], uint16(k))
		binary.BigEndian.PutUint32(b[4:], uint32(k*160))
		binary.BigEndian.PutUint32(b[8:], ssrc)
		audio.Tone(b[12:], audio.LinearToULaw, freq, k*160)
		_, _ = p.conn.WriteToUDP(b, to)
	}
}

// hears waits until what p received after packet from holds freq at more
// than share of its power, and returns the share.
func hears(t *testing.T, p *hearingPeer, who string, freq float64, from int, share float64) float64 {
	t.Helper()
	var got float64
	if !testenv.WaitFor(5*time.Second, func() bool {
		s := p.since(from)
		got = audio.ToneShare(s, freq)
		return len(s) >= 8000 && got > share
	}) {
		t.Fatalf("%s: %v Hz is %.3f of what arrived after packet %d, want > %.2f", who, freq, got, from, share)
	}
	return got
}

// peakShare is the largest share of freq in any 100 ms of the first
// second of s: where a short beep is, it stands out.
func peakShare(s []int16, freq float64) float64 {
	peak := 0.0
	for at := 0; at+800 <= min(len(s), 8000); at += 160 {
		peak = max(peak, audio.ToneShare(s[at:at+800], freq))
	}
	return peak
}

// monitorAudit is the reason of the newest audit row of action on call.
func (s *system) monitorAudit(action, callID string) (storage.AuditEntry, bool) {
	log, _ := s.run.Store.AuditLog(context.Background(), 200)
	for _, e := range log {
		if e.Action == action && e.Object == "call:"+callID {
			return e, true
		}
	}
	return storage.AuditEntry{}, false
}

func TestMonitorLiveCall(t *testing.T) {
	s, cfg := startRecordedSystem(t, "--monitor-notice")
	anna := s.manager("anna")
	var sue apiManager
	if st := s.call("POST", "/api/v1/managers", adminTok, map[string]string{"name": "Sue", "sip_username": "sue",
		"sip_password": "sue-secret", "role": "supervisor"}, &sue); st != 201 {
		t.Fatalf("create supervisor: %d", st)
	}
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	monitor := func(token, callID, mode string) (int, map[string]string) {
		var out map[string]string
		return s.call("POST", "/api/v1/calls/"+callID+"/monitor", token, map[string]string{"mode": mode}, &out), out
	}

	// The call: the client's side sends 400 Hz, anna's 1000 Hz, until the client hangs up.
	mc := startMonitoredCall(t, s, acme.ID, monitorBase, 15000)
	client, manager, supervisor, callID, tr, ph := mc.client, mc.manager, mc.supervisor, mc.callID, mc.trunk, mc.phone

	t.Run("refusals", func(t *testing.T) {
		if st, _ := monitor(anna.APIToken, callID, "listen"); st != 403 {
			t.Fatalf("a manager listening in: %d, want 403", st)
		}
		if st, _ := monitor(sue.APIToken, callID, "listen"); st != 409 {
			t.Fatalf("sue without a registered phone: %d, want 409", st)
		}
		if st, _ := monitor(sue.APIToken, "6f1c1a52-8d3c-4c4e-9f7e-2a1f4f0d9b11", "listen"); st != 404 {
			t.Fatalf("an unknown call: %d, want 404", st)
		}
	})

	s.register("sue", sueIP, 5070)
	suePhone := testenv.StartSIPp(t, "sue's phone", testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: sueIP, Port: 5070, Remote: s.sipAddr,
		Keys: map[string]string{"rtp_ip": sueIP, "rtp_port": fmt.Sprint(monitorBase + 4)},
		Sets: map[string]string{"hangup": "no", "rings": "1"},
	})
	if st, out := monitor(sue.APIToken, callID, "listen"); st != 202 || out["state"] != "ringing" || out["mode"] != "listen" {
		t.Fatalf("listen: %d %v", st, out)
	}
	shown, err := suePhone.LogValue("SHOWN_FROM", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(shown, "#"+acme.Code) {
		t.Errorf("sue's phone showed %q", shown)
	}
	sp, err := suePhone.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	toSueSide := addrPort(t, pbxIP, strings.Fields(sp)[0])
	// Sue talks all along: nobody may hear her while she only listens.
	mc.supervisorTalks(toSueSide)

	t.Run("listen: sue hears both, nobody hears her", func(t *testing.T) {
		testenv.Eventually(t, 10*time.Second, func() bool { return supervisor.heard() > 10 }, "sue's phone to get audio")
		from := supervisor.heard()
		c, m := hears(t, supervisor, "sue", clientTone, from, 0.2), hears(t, supervisor, "sue", managerTone, from, 0.2)
		t.Logf("sue hears the client's tone at %.2f and the manager's at %.2f of the power", c, m)
		if _, ok := s.monitorAudit("call.monitor", callID); !ok {
			t.Fatal("no call.monitor audit row when sue answered")
		}
		mFrom, cFrom := manager.heard(), client.heard()
		testenv.Eventually(t, 5*time.Second, func() bool { return manager.heard() > mFrom+60 && client.heard() > cFrom+60 }, "a second of audio on both legs")
		for _, leg := range []struct {
			who  string
			p    *hearingPeer
			from int
		}{{"the manager", manager, mFrom}, {"the client", client, cFrom}} {
			if sh := audio.ToneShare(leg.p.since(leg.from), sueTone); sh > 0.01 {
				t.Errorf("%s hears sue while she only listens: %.3f", leg.who, sh)
			}
			if sh := audio.ToneShare(leg.p.since(leg.from), noticeTone); sh > 0.01 {
				t.Errorf("%s hears a notice while sue only listens: %.3f", leg.who, sh)
			}
		}
	})

	t.Run("whisper reaches the manager only", func(t *testing.T) {
		mFrom, cFrom := manager.heard(), client.heard()
		if st, out := monitor(sue.APIToken, callID, "whisper"); st != 202 || out["state"] != "active" {
			t.Fatalf("whisper: %d %v", st, out)
		}
		sh := hears(t, manager, "the manager", sueTone, mFrom, 0.1)
		t.Logf("the manager hears sue at %.2f of the power", sh)
		hears(t, manager, "the manager", clientTone, mFrom, 0.1)
		testenv.Eventually(t, 5*time.Second, func() bool { return client.heard() > cFrom+60 }, "a second of audio at the client")
		if sh := audio.ToneShare(client.since(cFrom), sueTone); sh > 0.01 {
			t.Errorf("the client hears the whisper: %.3f", sh)
		}
		if e, ok := s.monitorAudit("call.monitor_mode", callID); !ok || e.Reason != "mode=whisper" {
			t.Errorf("mode change audit: %+v %v", e, ok)
		}
	})

	t.Run("barge reaches both, with the notice", func(t *testing.T) {
		mFrom, cFrom := manager.heard(), client.heard()
		if st, out := monitor(sue.APIToken, callID, "barge"); st != 202 || out["state"] != "active" {
			t.Fatalf("barge: %d %v", st, out)
		}
		for _, leg := range []struct {
			who   string
			p     *hearingPeer
			from  int
			other float64
		}{{"the manager", manager, mFrom, clientTone}, {"the client", client, cFrom, managerTone}} {
			testenv.Eventually(t, 5*time.Second, func() bool { return leg.p.heard() > leg.from+30 }, "audio after the barge")
			beep := peakShare(leg.p.since(leg.from), noticeTone)
			sh := hears(t, leg.p, leg.who, sueTone, leg.from, 0.1)
			hears(t, leg.p, leg.who, leg.other, leg.from, 0.1)
			t.Logf("%s hears the notice at %.2f, then sue at %.2f", leg.who, beep, sh)
			if beep < 0.1 {
				t.Errorf("%s heard no notice when the barge started: %.3f", leg.who, beep)
			}
		}
	})

	// The client hangs up at 15 s: sue's leg ends with the call.
	tr.Wait()
	ph.Wait()
	suePhone.Wait()
	assertNoLeak(t, suePhone, acmeNumber, acme.Code)
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, ok := s.monitorAudit("call.monitor_end", callID)
		return ok
	}, "the end of the monitor audited")
	end, _ := s.monitorAudit("call.monitor_end", callID)
	start, _ := s.monitorAudit("call.monitor", callID)
	t.Logf("audit: %s %s %q; %s %s %q", start.Actor, start.Action, start.Reason, end.Actor, end.Action, end.Reason)
	if start.Actor != "supervisor:"+sue.ID || start.Reason != "mode=listen" || end.Actor != start.Actor ||
		!strings.HasPrefix(end.Reason, "mode=barge duration_s=") {
		t.Errorf("audit rows %+v, %+v", start, end)
	}
	if st, _ := monitor(sue.APIToken, callID, "listen"); st != 404 {
		t.Errorf("an ended call: %d, want 404", st)
	}

	t.Run("the recording has the parties only", func(t *testing.T) {
		rec := recordingOf(t, s.run.Store, callID, 20*time.Second)
		p, _ := loadWAV(t, filepath.Join(cfg.DataDir, "recordings", rec.BlobKey))
		checkChannels(t, p)
		for name, ch := range map[string][]int16{"left": p.Left, "right": p.Right} {
			if sh, beep := audio.ToneShare(ch, sueTone), audio.ToneShare(ch, noticeTone); sh > 0.001 || beep > 0.001 {
				t.Errorf("the %s channel holds sue (%.4f) or the notice (%.4f)", name, sh, beep)
			}
		}
	})
}

// TestConsoleMonitor: a supervisor presses Listen, then Whisper, on a live
// call of the calls page in Chromium; his SIPp phone rings and answers.
func TestConsoleMonitor(t *testing.T) {
	s := startSystemConfig(t, nil)
	b := newBrowser(t)
	sveta := s.person("sveta", "Svetlana Orlova", storage.RoleSupervisor)
	anna := s.manager("anna")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	s.setWebPassword(sveta.ID, "sveta-console-pw")
	s.register("anna", annaIP, 5070)
	s.register("sveta", sueIP, 5070)

	mc := startMonitoredCall(t, s, acme.ID, monitorBase+10, 16000)
	manager, supervisor, callID, tr := mc.manager, mc.supervisor, mc.callID, mc.trunk
	suePhone := testenv.StartSIPp(t, "sveta's phone", testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: sueIP, Port: 5070, Remote: s.sipAddr,
		Keys: map[string]string{"rtp_ip": sueIP, "rtp_port": fmt.Sprint(monitorBase + 14)},
		Sets: map[string]string{"hangup": "no", "rings": "1"},
	})

	p := b.person("sveta")
	p.signIn(s.api, "sveta", "sveta-console-pw")
	p.open(s.api, "/console/calls")
	row := `#call-` + callID
	if got := p.text(row); !strings.Contains(got, "Live") || !strings.Contains(got, "Acme Trading") {
		t.Fatalf("the live call's row says %q", got)
	}
	for _, mode := range []string{"listen", "whisper", "barge"} {
		if n := eval[int](p, `document.querySelectorAll('`+row+` button[name=mode][value=`+mode+`]').length`); n != 1 {
			t.Fatalf("the live call has %d %s buttons", n, mode)
		}
	}
	p.screenshot("supervisor-live-call", false)
	p.do("press Listen", chromedp.Click(chromedp.CSS(row+` button[value=listen]`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := p.text(".flash"); !strings.Contains(got, "Your phone rings") {
		t.Fatalf("after Listen the page says %q", got)
	}
	sp, err := suePhone.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	toSueSide := addrPort(t, pbxIP, strings.Fields(sp)[0])
	mc.supervisorTalks(toSueSide)
	testenv.Eventually(t, 10*time.Second, func() bool { return supervisor.heard() > 10 }, "sveta's phone to get audio")
	hears(t, supervisor, "sveta", clientTone, supervisor.heard(), 0.2)
	testenv.Eventually(t, 5*time.Second, func() bool {
		e, ok := s.monitorAudit("call.monitor", callID)
		return ok && e.Actor == "supervisor:"+sveta.ID
	}, "the listen audited")

	mFrom := manager.heard()
	p.open(s.api, "/console/calls")
	p.do("press Whisper", chromedp.Click(chromedp.CSS(row+` button[value=whisper]`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := p.text(".flash"); !strings.Contains(got, "new mode") {
		t.Fatalf("after Whisper the page says %q", got)
	}
	hears(t, manager, "anna", sueTone, mFrom, 0.1)
	p.screenshot("supervisor-whisper", false)
	p.assertNothingLeaked([]string{acmeNumber}, []string{acme.Code})

	// Dismissed, she stops listening at once: her leg is hung up while
	// the call goes on.
	if st := s.call("POST", "/api/v1/managers/"+sveta.ID+"/dismiss", adminTok, map[string]string{"successor_id": anna.ID}, nil); st != 200 {
		t.Fatalf("dismiss sveta: %d", st)
	}
	testenv.Eventually(t, 8*time.Second, func() bool {
		_, ok := s.monitorAudit("call.monitor_end", callID)
		return ok
	}, "sveta's leg to end at her dismissal")
	suePhone.Wait()
	if cdr, err := s.run.Store.CDR(context.Background(), callID); err != nil || cdr.EndedAt != nil {
		t.Fatalf("the call did not go on without her: %v %+v", err, cdr.EndedAt)
	}
	tr.Wait()
}

// monitoredCall is a trunk call from the client to anna's SIPp phone with
// RTP ports from base: the client's side sends clientTone and anna's
// managerTone until the test ends, and a hearing peer waits on base+4 for
// the supervisor's leg.
type monitoredCall struct {
	client, manager, supervisor *hearingPeer
	callID                      string
	trunk, phone                *testenv.SIPp
	stop                        chan struct{}
	sending                     *sync.WaitGroup
}

// startMonitoredCall starts a monitoredCall and returns when its CDR says
// answered.
func startMonitoredCall(t *testing.T, s *system, clientID string, base, ms int) *monitoredCall {
	t.Helper()
	mc := &monitoredCall{
		client:     newHearingPeer(t, fmt.Sprintf("%s:%d", trunkIP, base)),
		manager:    newHearingPeer(t, fmt.Sprintf("%s:%d", annaIP, base+2)),
		supervisor: newHearingPeer(t, fmt.Sprintf("%s:%d", sueIP, base+4)),
		stop:       make(chan struct{}),
		sending:    &sync.WaitGroup{},
	}
	mc.phone = phone(t, s, "anna", annaIP, 5070, base+2, false, 1)
	mc.trunk = trunkCall(t, s, acmeNumber, base, true, ms)
	toClientSide, toManagerSide := pbxPorts(t, mc.trunk, mc.phone)
	t.Cleanup(func() { close(mc.stop); mc.sending.Wait() })
	mc.sending.Go(func() { mc.client.send(toClientSide, clientTone, mc.stop) })
	mc.sending.Go(func() { mc.manager.send(toManagerSide, managerTone, mc.stop) })
	testenv.Eventually(t, 10*time.Second, func() bool {
		cdrs, err := s.run.Store.CDRs(context.Background(), storage.CDRFilter{ClientID: clientID})
		if err != nil || len(cdrs) == 0 || cdrs[0].AnsweredAt == nil {
			return false
		}
		mc.callID = cdrs[0].CallID
		return true
	}, "the call's answered CDR")
	return mc
}

// supervisorTalks makes the supervisor's peer send sueTone to the PBX port to.
func (mc *monitoredCall) supervisorTalks(to netip.AddrPort) {
	mc.sending.Go(func() { mc.supervisor.send(to, sueTone, mc.stop) })
}
