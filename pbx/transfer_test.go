package pbx

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// transferEnv is a PBX with two more managers, anna and bob, whose phones
// are SIPp on phoneHost, and a client of anna's.
type transferEnv struct {
	*callEnv
	anna, bob storage.Manager
	client    storage.Client
	annaPort  int
	bobPort   int
}

func startTransferEnv(t *testing.T) *transferEnv {
	t.Helper()
	env := startCallEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	te := &transferEnv{callEnv: env, annaPort: freeUDPPort(t, phoneHost), bobPort: freeUDPPort(t, phoneHost)}
	for _, p := range []struct {
		m    *storage.Manager
		user string
		port int
	}{{&te.anna, "anna", te.annaPort}, {&te.bob, "bob", te.bobPort}} {
		m, err := env.store.CreateManager(ctx, storage.NewManager{Name: p.user, SIPUsername: p.user,
			HA1MD5: "x", HA1SHA256: "x", Team: "sales", Role: storage.RoleManager}, "test")
		if err != nil {
			t.Fatal(err)
		}
		*p.m = m
		addr := fmt.Sprintf("%s:%d", phoneHost, p.port)
		if err := env.regs.Put(ctx, Registration{ManagerID: m.ID, Username: p.user, Contact: "<sip:" + p.user + "@" + addr + ">",
			Source: addr, Transport: "UDP", ExpiresAt: time.Now().Add(time.Hour), CallID: "reg-" + p.user, CSeq: 1}); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	te.client, err = env.store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: te.anna.ID,
		Phones:  []masking.SealedPhone{sealPhone(t, env.keys, "+79161234567")},
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return te
}

// sippPort is the PBX's RTP port a SIPp party logged.
func sippPort(t *testing.T, p *testenv.SIPp) string {
	t.Helper()
	v, err := p.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(v)[0]
}

// tonePayloads counts the PCMU payloads e got that are mostly freq Hz.
func tonePayloads(e *testenv.RTPEndpoint, freq float64) int {
	n := 0
	for _, p := range e.Payloads() {
		s := make([]int16, len(p))
		for i, b := range p {
			s[i] = audio.ULawToLinear[b]
		}
		if len(s) >= 160 && audio.ToneShare(s, freq) > 0.5 {
			n++
		}
	}
	return n
}

// A blind transfer with SIPp phones, under -race: anna's phone REFERs the
// client to bob; the client hears ringback, then tones cross client<->bob
// through the same client port; each part ends with its own ended event,
// the second naming the first in transferred_from.
func TestBlindTransferSIPp(t *testing.T) {
	te := startTransferEnv(t)
	trunkRTP := testenv.NewRTPEndpoint(t, trunkHost+":43100")
	bobRTP := testenv.NewRTPEndpoint(t, phoneHost+":43104")
	anna := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
		Scenario: "phone_refer.xml", LocalIP: phoneHost, Port: te.annaPort, Remote: te.addr,
		Keys: map[string]string{"rtp_ip": phoneHost, "rtp_port": "43102", "refer_to": "bob", "sip_domain": testDomain},
		Sets: map[string]string{"after": "1000"}, Args: []string{"-d", "500"},
	})
	bob := testenv.StartSIPp(t, "bob", testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: phoneHost, Port: te.bobPort, Remote: te.addr,
		Keys: map[string]string{"rtp_ip": phoneHost, "rtp_port": "43104"},
		Sets: map[string]string{"hangup": "no", "rings": "10"},
	})
	trunk := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_call.xml", LocalIP: trunkHost, Remote: te.addr,
		Keys: map[string]string{"company": strings.TrimPrefix(company, "+"), "caller": "79161234567",
			"rtp_ip": trunkHost, "rtp_port": "43100"},
		Sets: map[string]string{"hangup": "yes"}, Args: []string{"-d", "5000"},
	})
	if v, err := anna.LogValue("REFER_ANSWER", 10*time.Second); err != nil || v != "202" {
		t.Fatalf("REFER answered %q (%v)", v, err)
	}
	if v, err := bob.LogValue("SHOWN_FROM", 10*time.Second); err != nil || !strings.Contains(v, "Acme #"+te.client.Code) ||
		strings.Contains(v, "9161234567") {
		t.Fatalf("bob's phone was shown %q (%v)", v, err)
	}
	tPort, bPort := sippPort(t, trunk), sippPort(t, bob)
	if err := anna.Result(); err != nil {
		log, _ := os.ReadFile(anna.Log)
		t.Fatalf("anna's phone: %v\n%s", err, log)
	}
	done := make(chan error, 1)
	go func() { done <- bobRTP.Send(netipAddrPort(t, pbxHost, bPort), 50, 1700) }()
	if err := trunkRTP.Send(netipAddrPort(t, pbxHost, tPort), 50, 400); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePayloads(bobRTP, 400) >= 45 },
		"bob hears the client (%d packets)", tonePayloads(bobRTP, 400))
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePayloads(trunkRTP, 1700) >= 45 },
		"the client hears bob (%d packets)", tonePayloads(trunkRTP, 1700))
	if n := tonePayloads(trunkRTP, 425); n < 10 {
		t.Errorf("the client heard %d packets of ringback", n)
	}
	trunk.Wait()
	bob.Wait()

	var first, second events.Event
	testenv.Eventually(t, 10*time.Second, func() bool {
		ended := te.events.ended()
		if len(ended) != 2 {
			return false
		}
		for _, e := range ended {
			if e.TransferredFrom == "" {
				first = e
			} else {
				second = e
			}
		}
		return first.CallID != "" && second.CallID != ""
	}, "two ended parts")
	if first.ManagerID != te.anna.ID || first.HangupSide != "manager" || first.Disposition != "answered" {
		t.Errorf("anna's part: %+v", first)
	}
	if second.ManagerID != te.bob.ID || second.HangupSide != "client" || second.Disposition != "answered" ||
		second.TransferredFrom != first.CallID || second.ClientID != te.client.ID {
		t.Errorf("bob's part: %+v", second)
	}
	rows, err := te.store.AuditLog(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		found = found || r.Action == "call.transfer" && r.Object == "call:"+first.CallID
	}
	if !found {
		t.Error("the transfer was not audited")
	}
}

func netipAddrPort(t *testing.T, ip, port string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(ip + ":" + port)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// A REFER to anyone who may not take the client is refused (403) and the
// client stays with the transferor; a colleague who can't be reached (no
// phone registered) fails after the 202: the transferor is told (NOTIFY
// 480) and talks to the client again through a re-bridged relay.
func TestTransferRefusedOrFailedSIPp(t *testing.T) {
	te := startTransferEnv(t)
	ctx := context.Background()
	for _, user := range []string{"carl", "oleg"} {
		if _, err := te.store.CreateManager(ctx, storage.NewManager{Name: user, SIPUsername: user,
			HA1MD5: "x", HA1SHA256: "x", Team: "sales", Role: storage.RoleManager}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	carl, err := te.store.ManagerBySIPUsername(ctx, "carl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := te.store.DismissManager(ctx, carl.ID, te.bob.ID, "test"); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name, to, answer, frag string
	}{
		{"dismissed colleague", "carl", "403", ""},
		{"not a colleague", "79161234567", "403", ""},
		{"the call's own manager", "anna", "403", ""},
		{"colleague unreachable", "oleg", "202", "480"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := 43200 + 10*i
			trunkRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", trunkHost, base))
			annaRTP := testenv.NewRTPEndpoint(t, fmt.Sprintf("%s:%d", phoneHost, base+2))
			anna := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
				Scenario: "phone_refer.xml", LocalIP: phoneHost, Port: te.annaPort, Remote: te.addr,
				Keys: map[string]string{"rtp_ip": phoneHost, "rtp_port": fmt.Sprint(base + 2), "refer_to": tc.to, "sip_domain": testDomain},
				Sets: map[string]string{"after": "3000"}, Args: []string{"-d", "300"},
			})
			trunk := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
				Scenario: "trunk_call.xml", LocalIP: trunkHost, Remote: te.addr,
				Keys: map[string]string{"company": strings.TrimPrefix(company, "+"), "caller": "79161234567",
					"rtp_ip": trunkHost, "rtp_port": fmt.Sprint(base)},
				Sets: map[string]string{"hangup": "no"},
			})
			if v, err := anna.LogValue("REFER_ANSWER", 10*time.Second); err != nil || v != tc.answer {
				t.Fatalf("REFER answered %q (%v), want %s", v, err, tc.answer)
			}
			if tc.frag != "" {
				if v, err := anna.LogValue("NOTIFY_FRAG SIP/2.0 "+tc.frag, 10*time.Second); err != nil || v != "Temporarily Unavailable" {
					t.Fatalf("the transferor was told %q (%v), want %s", v, err, tc.frag)
				}
			}
			// The client talks to the transferor again (or still).
			if err := trunkRTP.Send(netipAddrPort(t, pbxHost, sippPort(t, trunk)), 50, 400); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 5*time.Second, func() bool { return tonePayloads(annaRTP, 400) >= 45 },
				"anna hears the client again (%d packets)", tonePayloads(annaRTP, 400))
			anna.Wait()
			trunk.Wait()
		})
	}
	for _, e := range te.events.ended() {
		if e.TransferredFrom == "" && (e.ManagerID != te.anna.ID || e.HangupSide != "manager") {
			t.Errorf("a call did not stay with the transferor: %+v", e)
		}
	}
	rows, err := te.store.AuditLog(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, r := range rows {
		switch r.Action {
		case "call.transfer_refused":
			refused++
		case "call.transfer":
			t.Errorf("a transfer that did not happen was audited: %+v", r)
		}
	}
	if refused != 3 {
		t.Errorf("%d refusals audited, want 3", refused)
	}
}

// A REFER with the right Call-ID and tags but from another address than the
// manager's phone is refused: knowing a dialog's tags (seen on the wire) is
// not enough to send a client to somebody else.
func TestForgedReferRefused(t *testing.T) {
	te := startTransferEnv(t)
	anna := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: phoneHost, Port: te.annaPort, Remote: te.addr,
		Keys: map[string]string{"rtp_ip": phoneHost, "rtp_port": "43302"},
		Sets: map[string]string{"hangup": "yes", "rings": "1"}, Args: []string{"-d", "2500"},
	})
	trunk := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_call.xml", LocalIP: trunkHost, Remote: te.addr,
		Keys: map[string]string{"company": strings.TrimPrefix(company, "+"), "caller": "79161234567",
			"rtp_ip": trunkHost, "rtp_port": "43300"},
		Sets: map[string]string{"hangup": "no"},
	})
	var ack string
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, m := range anna.Received() {
			if strings.HasPrefix(m, "ACK ") {
				ack = m
				return true
			}
		}
		return false
	}, "anna's phone answered")
	answer, err := sendRefer(te, "127.0.0.5", ack, "z9hG4bK-forged-refer", "<sip:bob@"+testDomain+">")
	if err != nil {
		t.Fatalf("no answer to the forged REFER: %v", err)
	}
	if !strings.HasPrefix(answer, "SIP/2.0 403") {
		t.Fatalf("the forged REFER was answered:\n%s", answer)
	}
	anna.Wait()
	trunk.Wait()
	testenv.Eventually(t, 10*time.Second, func() bool { return len(te.events.ended()) == 1 }, "the call's end")
	for _, e := range te.events.ended() {
		if e.TransferredFrom != "" || e.ManagerID != te.anna.ID || e.HangupSide != "manager" {
			t.Errorf("the forged REFER changed the call: %+v", e)
		}
	}
}

// sendRefer sends, from fromIP, a REFER in the dialog of the PBX's INVITE
// to anna's phone that ack (her phone's ACK) belongs to, with the branch
// and Refer-To given, and returns the PBX's answer.
func sendRefer(te *transferEnv, fromIP, ack, branch, referTo string) (string, error) {
	field := func(re string) string {
		if m := regexp.MustCompile(re).FindStringSubmatch(ack); m != nil {
			return m[1]
		}
		return ""
	}
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(fromIP)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(te.addr)))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	refer := "REFER sip:maskpbx@" + te.addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=" + branch + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:anna@" + testDomain + ">;tag=" + field(`(?m)^To:.*;tag=([^;\s>]+)`) + "\r\n" +
		"To: <sip:x@" + testDomain + ">;tag=" + field(`(?m)^From:.*;tag=([^;\s>]+)`) + "\r\n" +
		"Call-ID: " + field(`(?m)^Call-ID: *(\S+)`) + "\r\n" +
		"CSeq: 9 REFER\r\n" +
		"Contact: <sip:anna@" + local + ">\r\n" +
		"Refer-To: " + referTo + "\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(refer)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

// sipField is the first submatch of re in a SIP message, failing the test
// without one.
func sipField(t *testing.T, msg, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, msg)
	}
	return m[1]
}

// received waits for a message p received that starts with prefix.
func receivedMsg(t *testing.T, p *testenv.SIPp, prefix, what string) string {
	t.Helper()
	var msg string
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, m := range p.Received() {
			if strings.HasPrefix(m, prefix) {
				msg = m
				return true
			}
		}
		return false
	}, "%s", what)
	return msg
}

// Attended transfer: anna talks to the client, calls bob from her phone
// (a consultation call to his username), and her phone sends REFER with
// Replaces naming that call: bob's leg, still talking, takes the client;
// both of anna's legs end; bob's part names anna's.
func TestAttendedTransferSIPp(t *testing.T) {
	te := startTransferEnv(t)
	te.creds.add(te.anna.ID, "anna", "anna-pass", true)
	trunkRTP := testenv.NewRTPEndpoint(t, trunkHost+":43400")
	bobRTP := testenv.NewRTPEndpoint(t, phoneHost+":43404")
	anna := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
		Scenario: "phone_held.xml", LocalIP: phoneHost, Port: te.annaPort, Remote: te.addr,
		Keys: map[string]string{"rtp_ip": phoneHost, "rtp_port": "43402"}, Sets: map[string]string{"rings": "1"},
	})
	trunk := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_call.xml", LocalIP: trunkHost, Remote: te.addr,
		Keys: map[string]string{"company": strings.TrimPrefix(company, "+"), "caller": "79161234567",
			"rtp_ip": trunkHost, "rtp_port": "43400"},
		Sets: map[string]string{"hangup": "yes"}, Args: []string{"-d", "6000"},
	})
	ack := receivedMsg(t, anna, "ACK ", "anna's phone answered the client")

	bob := testenv.StartSIPp(t, "bob", testenv.SIPpOptions{
		Scenario: "phone_answer.xml", LocalIP: phoneHost, Port: te.bobPort, Remote: te.addr,
		Keys: map[string]string{"rtp_ip": phoneHost, "rtp_port": "43404"},
		Sets: map[string]string{"hangup": "no", "rings": "1"},
	})
	consult := testenv.StartSIPp(t, "anna consults bob", testenv.SIPpOptions{
		Scenario: "phone_dial.xml", LocalIP: phoneHost, Remote: te.addr,
		Keys: map[string]string{"sip_user": "anna", "sip_domain": testDomain, "target": "bob", "rtp_ip": phoneHost, "rtp_port": "43406"},
		Args: []string{"-au", "anna", "-ap", "anna-pass", "-auth_uri", "bob@" + testDomain, "-d", "20000"},
	})
	if v, err := bob.LogValue("SHOWN_FROM", 10*time.Second); err != nil || !strings.Contains(v, "sip:anna@") {
		t.Fatalf("bob's phone was shown %q (%v), want anna", v, err)
	}
	ok := receivedMsg(t, consult, "SIP/2.0 200", "the consultation call answered")
	replaces := url.QueryEscape(sipField(t, ok, `(?m)^Call-ID: *(\S+)`) + ";to-tag=" + sipField(t, ok, `(?m)^To:.*;tag=([^;\s>]+)`) +
		";from-tag=" + sipField(t, ok, `(?m)^From:.*;tag=([^;\s>]+)`))

	// anna's phone's REFER in the client's call (from her address).
	answer, err := sendRefer(te, phoneHost, ack, "z9hG4bK-attended-refer", "<sip:bob@"+testDomain+"?Replaces="+replaces+">")
	if err != nil || !strings.HasPrefix(answer, "SIP/2.0 202") {
		t.Fatalf("the REFER with Replaces was answered %q (%v)", answer, err)
	}
	if err := anna.Result(); err != nil {
		t.Fatalf("anna's phone (client call): %v", err)
	}
	if v, err := anna.LogValue("NOTIFY_FRAG SIP/2.0 200", time.Second); err != nil || v != "OK" {
		t.Errorf("anna's phone was told %q (%v)", v, err)
	}
	receivedMsg(t, consult, "BYE ", "the PBX hangs up anna's consultation leg")

	bPort := sippPort(t, bob)
	go func() { _ = bobRTP.Send(netipAddrPort(t, pbxHost, bPort), 50, 1700) }()
	if err := trunkRTP.Send(netipAddrPort(t, pbxHost, sippPort(t, trunk)), 50, 400); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePayloads(bobRTP, 400) >= 45 },
		"bob hears the client (%d packets)", tonePayloads(bobRTP, 400))
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePayloads(trunkRTP, 1700) >= 45 },
		"the client hears bob (%d packets)", tonePayloads(trunkRTP, 1700))
	trunk.Wait()
	bob.Wait()

	var first, second events.Event
	testenv.Eventually(t, 10*time.Second, func() bool {
		ended := te.events.ended()
		for _, e := range ended {
			if e.TransferredFrom == "" {
				first = e
			} else {
				second = e
			}
		}
		return len(ended) == 2 && first.CallID != "" && second.CallID != ""
	}, "two ended parts, and no events of the consultation call")
	if first.ManagerID != te.anna.ID || second.ManagerID != te.bob.ID || second.TransferredFrom != first.CallID ||
		second.HangupSide != "client" || second.ClientID != te.client.ID {
		t.Errorf("parts: %+v / %+v", first, second)
	}
	rows, err := te.store.AuditLog(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range rows {
		if r.Action == "call.transfer" && r.Reason != "attended manager:"+te.anna.ID+" -> manager:"+te.bob.ID {
			t.Errorf("transfer audit row: %+v", r)
		}
		actions = append(actions, r.Action)
	}
	if !slices.Contains(actions, "call.transfer") || !slices.Contains(actions, "call.consult") {
		t.Errorf("audit actions %v, want call.consult and call.transfer", actions)
	}
}
