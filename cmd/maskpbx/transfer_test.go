package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// referPhone starts a SIPp phone that answers the next call, talks for
// talkMS and transfers it blind to username (phone_refer.xml); if the
// transfer is refused or fails it stays afterMS in the call and hangs up.
func referPhone(t *testing.T, s *system, name, ip string, port, rtpPort int, to string, talkMS, afterMS int) *testenv.SIPp {
	return testenv.StartSIPp(t, name, testenv.SIPpOptions{
		Scenario: "phone_refer.xml", LocalIP: ip, Port: port, Remote: s.sipAddr,
		Keys: map[string]string{"rtp_ip": ip, "rtp_port": fmt.Sprint(rtpPort), "refer_to": to, "sip_domain": domain},
		Sets: map[string]string{"after": fmt.Sprint(afterMS)},
		Args: []string{"-d", fmt.Sprint(talkMS)},
	})
}

// tonePackets counts the PCMU payloads an endpoint got that are mostly a
// freq Hz tone.
func tonePackets(e *testenv.RTPEndpoint, freq float64) int {
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

// mediaPort is the PBX's RTP port a SIPp party logged.
func mediaPort(t *testing.T, p *testenv.SIPp) string {
	t.Helper()
	v, err := p.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(v)[0]
}

// clientCDRs waits until the client has n ended CDRs and returns them,
// oldest first.
func clientCDRs(t *testing.T, s *system, clientID string, n int) []storage.CDR {
	t.Helper()
	var cdrs []storage.CDR
	testenv.Eventually(t, 15*time.Second, func() bool {
		all, err := s.run.Store.CDRs(context.Background(), storage.CDRFilter{ClientID: clientID})
		if err != nil || len(all) < n {
			return false
		}
		for _, c := range all {
			if c.EndedAt == nil {
				return false
			}
		}
		cdrs = all
		return true
	}, "%d ended CDRs of the client", n)
	slices.SortFunc(cdrs, func(a, b storage.CDR) int { return a.OfferedAt.Compare(*b.OfferedAt) })
	return cdrs
}

// softphoneAnswers has the softphone answer the trunk's call and checks
// that audio crosses both ways (packets of the client's tone).
func softphoneAnswers(t *testing.T, ph *testenv.Baresip, tr *testenv.SIPp, trunkRTP *testenv.RTPEndpoint, packets int) {
	t.Helper()
	ph.WaitEvent("CALL_INCOMING", 10*time.Second)
	ph.Answer()
	ph.WaitEvent("CALL_ESTABLISHED", 5*time.Second)
	sendTone(t, tr, trunkRTP, packets)
	assertTwoWayAudio(t, ph, trunkRTP)
}

// annaBobAcme are two managers of a system and a client of the first.
func annaBobAcme(s *system) (anna, bob apiManager, acme apiClient) {
	anna, bob = s.manager("anna"), s.manager("bob")
	return anna, bob, s.client("Acme Trading", acmeNumber, anna.ID)
}

// auditRows are the audit rows with action, newest first.
func auditRows(t *testing.T, s *system, action string) []storage.AuditEntry {
	t.Helper()
	rows, err := s.run.Store.AuditLog(context.Background(), 500)
	if err != nil {
		t.Fatal(err)
	}
	var out []storage.AuditEntry
	for _, r := range rows {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

// The manager's phone transfers a connected client blind to a colleague:
// the client hears ringback, then talks to the colleague (tones both ways),
// the transferor's leg ends; nothing the colleague's phone receives names
// the client's number; one CDR and one recording per manager's part,
// linked; the transfer audited.
func TestBlindTransferFromPhone(t *testing.T) {
	s, _ := startRecordedSystem(t)
	anna, bob, acme := annaBobAcme(s)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)

	capture := testenv.StartCapture(t, "host "+bobIP)
	trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41200")
	bobRTP := testenv.NewRTPEndpoint(t, bobIP+":41204")
	an := referPhone(t, s, "anna", annaIP, 5070, 41202, "bob", 1000, 1000)
	bo := phone(t, s, "bob", bobIP, 5071, 41204, false, 10)
	tr := trunkCall(t, s, "89161234567", 41200, true, 6000)

	if v, err := an.LogValue("REFER_ANSWER", 10*time.Second); err != nil || v != "202" {
		t.Fatalf("REFER answered %q (%v), want 202", v, err)
	}
	if v, err := bo.LogValue("SHOWN_FROM", 10*time.Second); err != nil ||
		!strings.Contains(v, "Acme Trading #"+acme.Code) || !strings.Contains(v, "sip:"+acme.Code+"@"+domain) {
		t.Fatalf("the colleague's phone was shown %q (%v), want the client's name and code", v, err)
	}
	tPort, bPort := mediaPort(t, tr), mediaPort(t, bo)
	// The colleague answers after ten rings; the client hears ringback till then.
	// The PBX hangs the transferor up once the colleague has answered.
	err := an.Result()
	log, _ := os.ReadFile(an.Log)
	if err != nil {
		t.Fatalf("the transferor's phone: %v\n%s", err, log)
	}
	for _, want := range []string{"NOTIFY_FRAG SIP/2.0 100 Trying", "NOTIFY_FRAG SIP/2.0 200 OK"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the transferor's phone was not told %q:\n%s", want, log)
		}
	}
	done := make(chan error, 1)
	go func() { done <- bobRTP.Send(addrPort(t, pbxIP, bPort), 50, 1700) }()
	if err := trunkRTP.Send(addrPort(t, pbxIP, tPort), 50, 400); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePackets(bobRTP, 400) >= 45 },
		"the colleague hears the client's tone (%d packets)", tonePackets(bobRTP, 400))
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePackets(trunkRTP, 1700) >= 45 },
		"the client hears the colleague's tone (%d packets)", tonePackets(trunkRTP, 1700))
	if n := tonePackets(trunkRTP, 425); n < 10 {
		t.Errorf("the client heard %d packets of ringback while the colleague rang", n)
	}
	tr.Wait()
	bo.Wait()

	assertNoLeak(t, bo, acmeNumber, acme.Code)
	sip := 0
	for _, p := range capture.Stop() {
		if p.Dst.Port() != 5071 {
			continue
		}
		sip++
		m := string(p.Payload)
		clean := strings.ReplaceAll(ourRandomTokens.ReplaceAllString(m, "<ours>"), acme.Code, "<code>")
		if strings.Contains(m, trunkIP) || digitRun(clean, strings.TrimPrefix(acmeNumber, "+")) != "" {
			t.Fatalf("SIP to the colleague's phone names the client:\n%s", m)
		}
	}
	if sip == 0 {
		t.Fatal("the capture saw no SIP to the colleague's phone")
	}

	cdrs := clientCDRs(t, s, acme.ID, 2)
	first, second := cdrs[0], cdrs[1]
	if first.ManagerID != anna.ID || first.Disposition != "answered" || first.HangupSide != "manager" || first.TransferredFrom != "" {
		t.Errorf("the transferor's part: %+v", first)
	}
	if second.ManagerID != bob.ID || second.Disposition != "answered" || second.HangupSide != "client" ||
		second.TransferredFrom != first.CallID || second.AnsweredAt == nil {
		t.Errorf("the colleague's part: %+v (first %s)", second, first.CallID)
	}
	var v callView
	if st := s.call("GET", "/api/v1/calls/"+second.CallID, adminTok, nil, &v); st != 200 || v.TransferredFrom != first.CallID {
		t.Errorf("GET the colleague's part: %d %+v", st, v)
	}
	for _, c := range cdrs {
		testenv.Eventually(t, 15*time.Second, func() bool {
			recs, err := s.run.Store.Recordings(context.Background(), storage.RecordingFilter{CallID: c.CallID})
			return err == nil && len(recs) == 1 && recs[0].ClientID == acme.ID && recs[0].ManagerID == c.ManagerID
		}, "one recording of part %s with its manager", c.CallID)
	}
	rows := auditRows(t, s, "call.transfer")
	if len(rows) != 1 || rows[0].Object != "call:"+first.CallID || rows[0].Actor != "manager:"+anna.ID ||
		rows[0].Reason != "blind manager:"+anna.ID+" -> manager:"+bob.ID {
		t.Errorf("audit of the transfer: %+v", rows)
	}
}

type callView struct {
	ID              string `json:"id"`
	State           string `json:"state"`
	ManagerID       string `json:"manager_id"`
	TransferredFrom string `json:"transferred_from"`
}

// A transfer only goes to an active colleague allowed for the client's
// segment; otherwise the REFER gets 403, the call goes on with the
// transferor, and the refusal is audited.
func TestTransferRefused(t *testing.T) {
	s, cfg := startRecordedSystem(t)
	anna := s.manager("anna")
	bob := s.manager("bob")
	carl := s.manager("carl")
	if st := s.call("POST", "/api/v1/managers/"+carl.ID+"/dismiss", adminTok, map[string]string{"successor_id": bob.ID}, nil); st != 200 {
		t.Fatalf("dismiss carl: %d", st)
	}
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	refused := func(t *testing.T, to string, rtpBase int) {
		t.Helper()
		an := referPhone(t, s, "anna", annaIP, 5070, rtpBase+2, to, 500, 1500)
		tr := trunkCall(t, s, acmeNumber, rtpBase, false, 0)
		if v, err := an.LogValue("REFER_ANSWER", 10*time.Second); err != nil || v != "403" {
			t.Fatalf("REFER to %s answered %q (%v), want 403", to, v, err)
		}
		an.Wait()
		tr.Wait()
	}
	t.Run("dismissed colleague", func(t *testing.T) {
		refused(t, "carl", 41300)
		cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if cdr.ManagerID != anna.ID || cdr.HangupSide != "manager" || cdr.TransferredFrom != "" {
			t.Errorf("the call did not stay with the transferor: %+v", cdr)
		}
		rows := auditRows(t, s, "call.transfer_refused")
		if len(rows) != 1 || !strings.Contains(rows[0].Reason, "manager:"+carl.ID) || !strings.Contains(rows[0].Reason, "dismissed") {
			t.Errorf("audit of the refusal: %+v", rows)
		}
	})
	t.Run("colleague not allowed for a restricted segment", func(t *testing.T) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var segID string
		if err := conn.QueryRow(ctx, `INSERT INTO segments (name, restricted) VALUES ('VIP', true) RETURNING id`).Scan(&segID); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO segment_managers (segment_id, manager_id) VALUES ($1, $2)`, segID, anna.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `UPDATE clients SET segment = 'VIP' WHERE id = $1`, acme.ID); err != nil {
			t.Fatal(err)
		}
		refused(t, "bob", 41310)
		rows := auditRows(t, s, "call.transfer_refused")
		if len(rows) != 2 || !strings.Contains(rows[0].Reason, "manager:"+bob.ID) || !strings.Contains(rows[0].Reason, "segment") {
			t.Errorf("audit of the refusal: %+v", rows)
		}
	})
	t.Run("a target that is no colleague", func(t *testing.T) {
		refused(t, "79161234567", 41320)
	})
	if rows := auditRows(t, s, "call.transfer"); len(rows) != 0 {
		t.Errorf("a refused transfer was audited as done: %+v", rows)
	}
}

// A real softphone transfers blind: baresip's transfer command sends the
// REFER; the client ends up talking to the colleague and the softphone's
// call closes.
func TestBaresipBlindTransfer(t *testing.T) {
	testenv.Require(t, "baresip")
	s := startSystemConfig(t, defaultPhoneFlags)
	anna, bob, acme := annaBobAcme(s)
	s.register("bob", bobIP, 5071)
	ph := annaBaresip(t, s, testenv.BaresipOptions{})
	trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41900")
	bobRTP := testenv.NewRTPEndpoint(t, bobIP+":41904")
	bo := phone(t, s, "bob", bobIP, 5071, 41904, false, 3)
	tr := trunkCall(t, s, acmeNumber, 41900, true, 8000)
	softphoneAnswers(t, ph, tr, trunkRTP, 50)

	ph.Command("transfer", "sip:bob@"+domain)
	if v, err := bo.LogValue("SHOWN_FROM", 10*time.Second); err != nil || !strings.Contains(v, "#"+acme.Code) {
		t.Fatalf("the colleague's phone was shown %q (%v)", v, err)
	}
	ph.WaitEvent("CALL_CLOSED", 10*time.Second)
	bPort := mediaPort(t, bo)
	go func() { _ = bobRTP.Send(addrPort(t, pbxIP, bPort), 50, 1700) }()
	sendTone(t, tr, trunkRTP, 50)
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePackets(bobRTP, clientTone) >= 45 },
		"the colleague hears the client (%d packets)", tonePackets(bobRTP, clientTone))
	testenv.Eventually(t, 5*time.Second, func() bool { return tonePackets(trunkRTP, 1700) >= 45 },
		"the client hears the colleague (%d packets)", tonePackets(trunkRTP, 1700))
	tr.Wait()
	bo.Wait()
	cdrs := clientCDRs(t, s, acme.ID, 2)
	if cdrs[0].ManagerID != anna.ID || cdrs[1].ManagerID != bob.ID || cdrs[1].TransferredFrom != cdrs[0].CallID {
		t.Errorf("parts: %+v / %+v", cdrs[0], cdrs[1])
	}
	assertNoLeak(t, bo, acmeNumber, acme.Code)
}

// The console's transfer: POST /api/v1/calls/{id}/transfer with the
// manager's token on his live call; the colleague's phone rings and takes
// the client, the manager's phone is hung up; the parts are linked.
func TestTransferFromAPI(t *testing.T) {
	s := startSystem(t, 3*time.Second)
	anna, bob, acme := annaBobAcme(s)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)
	an := phone(t, s, "anna", annaIP, 5070, 41502, false, 1)
	bo := phone(t, s, "bob", bobIP, 5071, 41504, false, 2)
	tr := trunkCall(t, s, acmeNumber, 41500, true, 5000)
	var live string
	testenv.Eventually(t, 10*time.Second, func() bool {
		cdrs, err := s.run.Store.CDRs(context.Background(), storage.CDRFilter{ClientID: acme.ID})
		if err == nil && len(cdrs) == 1 && cdrs[0].AnsweredAt != nil && cdrs[0].EndedAt == nil {
			live = cdrs[0].CallID
		}
		return live != ""
	}, "the call connected")
	if st := s.call("POST", "/api/v1/calls/"+live+"/transfer", bob.APIToken, map[string]string{"to_manager_id": anna.ID}, nil); st != 404 {
		t.Errorf("a manager not on the call transfers it: %d", st)
	}
	var out struct{ State string }
	if st := s.call("POST", "/api/v1/calls/"+live+"/transfer", anna.APIToken, map[string]string{"to_manager_id": bob.ID}, &out); st != 202 || out.State != "transferring" {
		t.Fatalf("transfer: %d %+v", st, out)
	}
	if v, err := bo.LogValue("SHOWN_FROM", 10*time.Second); err != nil || !strings.Contains(v, "#"+acme.Code) {
		t.Fatalf("the colleague's phone was shown %q (%v)", v, err)
	}
	an.Wait() // hung up by the PBX once bob answered
	tr.Wait()
	bo.Wait()
	cdrs := clientCDRs(t, s, acme.ID, 2)
	if cdrs[0].ManagerID != anna.ID || cdrs[1].ManagerID != bob.ID || cdrs[1].TransferredFrom != cdrs[0].CallID || cdrs[1].HangupSide != "client" {
		t.Errorf("parts: %+v / %+v", cdrs[0], cdrs[1])
	}
	if rows := auditRows(t, s, "call.transfer"); len(rows) != 1 || rows[0].Actor != "manager:"+anna.ID {
		t.Errorf("audit: %+v", rows)
	}
}
