package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// nodeBIP is the second node's address; node A is on pbxIP.
const nodeBIP = "127.0.0.28"

// betaNumber is the second client's number.
const betaNumber = "+79035552211"

// mediaAddr is the PBX's RTP address a SIPp party was given, on ip.
func mediaAddr(t *testing.T, p *testenv.SIPp, ip string) netip.AddrPort {
	t.Helper()
	v, err := p.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return addrPort(t, ip, strings.Fields(v)[0])
}

// heard fails unless the RTP e received carries freq.
func heard(t *testing.T, who string, e *testenv.RTPEndpoint, freq float64) {
	t.Helper()
	var share float64
	if !testenv.WaitFor(5*time.Second, func() bool {
		share = toneShare(decodeULaw(e.Payloads()), freq)
		return share > 0.5
	}) {
		t.Fatalf("%s got %d RTP packets; %v Hz is %.2f of their sound, want > 0.5", who, e.Received(), freq, share)
	}
	t.Logf("%s heard %v Hz (%.2f of the power)", who, freq, share)
}

// sendSIP sends raw from a socket of its own on ip and returns the status
// line of the first response ("" if none came).
func sendSIP(t *testing.T, ip, to, raw string) string {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw = strings.ReplaceAll(raw, "LOCAL", conn.LocalAddr().String())
	dst, _ := net.ResolveUDPAddr("udp", to)
	if _, err := conn.WriteToUDP([]byte(raw), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return ""
		}
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		if !strings.HasPrefix(line, "SIP/2.0 100") {
			return line
		}
	}
}

// sipBetween is the SIP messages of a capture between two addresses (either
// way), failing the test if there is none: a leak check over nothing proves
// nothing.
func sipBetween(t *testing.T, pkts []testenv.CapturedPacket, a, b, hop string) []string {
	t.Helper()
	var msgs []string
	for _, p := range pkts {
		src, dst := p.Src.Addr().String(), p.Dst.Addr().String()
		if p.Proto == "udp" && (src == a && dst == b || src == b && dst == a) && bytes.Contains(p.Payload, []byte("SIP/2.0")) {
			msgs = append(msgs, string(p.Payload))
		}
	}
	if len(msgs) == 0 {
		t.Fatalf("no SIP captured on the %s hop", hop)
	}
	return msgs
}

// assertHopClean fails if a message carries the caller's number, a 4-digit
// run of it or the trunk's address.
func assertHopClean(t *testing.T, msgs []string, hop, callerE164, clientCode string) {
	t.Helper()
	digits := strings.TrimPrefix(callerE164, "+")
	for _, m := range msgs {
		clean := strings.ReplaceAll(ourRandomTokens.ReplaceAllString(nodeCredential.ReplaceAllString(m, "<ours>"), "<ours>"), clientCode, "<code>")
		if strings.Contains(m, trunkIP) || strings.Contains(m, digits[1:]) || digitRun(clean, digits) != "" {
			t.Fatalf("the %s hop carries the caller's number or the trunk:\n%s", hop, m)
		}
	}
	t.Logf("%s hop: %d SIP messages, none with the client's number or the trunk", hop, len(msgs))
}

// nodeCredential is the node credential's header: a timestamp and a MAC,
// random to a reader.
var nodeCredential = regexp.MustCompile(`(?i)X-Maskpbx-Node: [^\r\n]*`)

// TestCluster is issue 14's "done when": a three-server NATS cluster (the
// nats-server module, on loopback), one Postgres and two serve nodes, A a
// process of its own (so it can be killed -9), B in this process.
func TestCluster(t *testing.T) {
	natsServers, users, natsURL := testenv.NATSCluster(t)
	pg := testenv.OwnPostgres(t)
	t.Setenv("MASKPBX_NATS_PASSWORD", users.PBX)
	t.Setenv("MASKPBX_ADMIN_TOKEN", adminTok)
	// The nodes of one company share its keys (a client made through B is
	// found by A's blind index).
	shareKeys(t)

	cfgA := systemConfig(t)
	cfgA.NodeID, cfgA.DatabaseURL = "node-a", pg.URL
	httpA := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	nodeA := startChildProcess(t, "TestServeProcess", "MASKPBX_SERVE_PROCESS", httpA,
		"--data-dir", cfgA.DataDir, "--database-url", cfgA.DatabaseURL, "--nats-url", natsURL,
		"--nats-user", bus.UserPBX, "--nats-replicas", "3", "--sip-listen", cfgA.SIPListen, "--sip-tls-listen", "off",
		"--sip-domain", cfgA.SIPDomain, "--rtp-ports", cfgA.RTPPorts, "--http-listen", httpA, "--trunk", cfgA.Trunk,
		"--company-number", cfgA.CompanyNumber, "--region", cfgA.Region, "--digest-algorithms", cfgA.DigestAlgorithms,
		"--ring-timeout", "5s", "--node", cfgA.NodeID, "--recordings-url", "jetstream:RECORDINGS", "--recordings-replicas", "3",
		"--log-format", "console")
	// B starts once A has made the streams and buckets: nats-server 2.15
	// hangs two nodes that create the R3 CALLS stream at the same moment.
	nodeUp(t, httpA)

	cfgB := systemConfig(t)
	_, sipPort, _ := net.SplitHostPort(cfgB.SIPListen)
	cfgB.SIPListen = net.JoinHostPort(nodeBIP, sipPort) // its RTP ports are on nodeBIP too
	cfgB.NodeID, cfgB.DatabaseURL, cfgB.RingTimeout = "node-b", pg.URL, 5*time.Second
	cfgB.NATSURL, cfgB.NATS = natsURL, natsClient{User: bus.UserPBX, Password: users.PBX, Replicas: 3}
	cfgB.Recordings = recordingsFlags{URL: "jetstream:RECORDINGS", Replicas: 3}
	b := startSystemFrom(t, cfgB, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	store := b.run.Store
	a := &system{t: t, run: running{Store: store}, sipAddr: cfgA.SIPListen, api: "http://" + httpA}
	ctx := context.Background()

	anna, bob := b.manager("anna"), b.manager("bob")
	acme := b.client("Acme Trading", acmeNumber, anna.ID)
	beta := b.client("Beta Ltd", betaNumber, bob.ID)
	a.register("anna", annaIP, 5070) // anna's phone uses node A
	b.register("bob", bobIP, 5071)   // bob's, node B

	// 1. A trunk call taken by B for anna, whose phone registered via A: B
	// sends it to A, A rings the phone on its own flow; tones go both ways;
	// no hop after the trunk carries the client's number.
	capture := testenv.StartCapture(t, "udp and (host "+pbxIP+" or host "+nodeBIP+")")
	annaRTP := testenv.NewRTPEndpoint(t, annaIP+":41702")
	trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41700")
	ph := phone(t, a, "anna", annaIP, 5070, 41702, false, 1)
	tr := trunkCall(t, b, acmeNumber, 41700, true, 3000)
	toB, toA := mediaAddr(t, tr, nodeBIP), mediaAddr(t, ph, pbxIP)
	sent := make(chan error, 1)
	go func() { sent <- annaRTP.Send(toA, 100, managerTone) }()
	if err := trunkRTP.Send(toB, 100, clientTone); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	heard(t, "anna's phone (via B and A)", annaRTP, clientTone)
	heard(t, "the trunk (via A and B)", trunkRTP, managerTone)
	tr.Wait()
	ph.Wait()
	pkts := capture.Stop()
	seen := map[string]bool{}
	cdr := newCDR(t, store, storage.CDRFilter{ClientID: acme.ID}, seen, 15*time.Second)
	if cdrNode(t, pg.URL, cdr.CallID) != "node-b" || cdr.ManagerID != anna.ID || cdr.Disposition != "answered" {
		t.Fatalf("CDR %+v: want answered by anna on node-b", cdr)
	}
	assertNoLeak(t, ph, acmeNumber, acme.Code)
	assertHopClean(t, sipBetween(t, pkts, nodeBIP, pbxIP, "B→A"), "B→A", acmeNumber, acme.Code)
	assertHopClean(t, sipBetween(t, pkts, pbxIP, annaIP, "A→phone"), "A→phone", acmeNumber, acme.Code)

	// Node-to-node SIP is authenticated: the INVITE B sent, sent again by a
	// stranger (a replay), or with a Call-ID of his own, gets 403.
	var invite string
	for _, p := range pkts {
		if p.Src.Addr().String() == nodeBIP && p.Dst.Addr().String() == pbxIP && bytes.HasPrefix(p.Payload, []byte("INVITE ")) {
			invite = string(p.Payload)
			break
		}
	}
	if !strings.Contains(invite, "X-Maskpbx-Node: node-b;") {
		t.Fatalf("B's INVITE to A carries no node credential:\n%s", invite)
	}
	via := regexp.MustCompile(`(?m)^Via: [^\r\n]*`)
	replay := via.ReplaceAllString(invite, "Via: SIP/2.0/UDP LOCAL;branch=z9hG4bK-replay-1;rport")
	if got := sendSIP(t, strangerIP, cfgA.SIPListen, replay); !strings.HasPrefix(got, "SIP/2.0 403") {
		t.Fatalf("a replayed node INVITE got %q, want 403", got)
	}
	forged := regexp.MustCompile(`(?m)^Call-ID: [^\r\n]*`).ReplaceAllString(replay, "Call-ID: forged-1@"+strangerIP)
	if got := sendSIP(t, strangerIP, cfgA.SIPListen, strings.Replace(forged, "replay-1", "forged-1", 1)); !strings.HasPrefix(got, "SIP/2.0 403") {
		t.Fatalf("a forged node INVITE got %q, want 403", got)
	}

	// Click-to-call through B for anna: her phone, registered via A, rings
	// through A first, showing the client's name and code only.
	ctcPh := annaHangsUp(t, a, 41762, 1500)
	ctcTr := trunkUAS(t, "answer", false, 41760)
	if st := b.call("POST", "/api/v1/calls", anna.APIToken, map[string]string{"client_id": acme.ID}, nil); st != 202 {
		t.Fatalf("click-to-call through B: %d", st)
	}
	ctcPh.Wait()
	ctcTr.Wait()
	if shown, _ := ctcPh.LogValue("SHOWN_FROM", time.Second); !strings.Contains(shown, "Acme Trading #"+acme.Code) {
		t.Errorf("anna's phone was shown %q", shown)
	}
	assertNoLeak(t, ctcPh, acmeNumber, acme.Code)
	if ctc := newCDR(t, store, storage.CDRFilter{ClientID: acme.ID}, seen, 15*time.Second); ctc.Direction != "outbound" ||
		ctc.Disposition != "answered" || cdrNode(t, pg.URL, ctc.CallID) != "node-b" {
		t.Fatalf("click-to-call CDR %+v: want outbound, answered, on node-b", ctc)
	}

	// 2. A recording made on A is played with Range through B's API.
	ph = phone(t, a, "anna", annaIP, 5070, 41712, false, 1)
	tr = trunkCall(t, a, acmeNumber, 41710, true, 2000)
	tr.Wait()
	ph.Wait()
	onA := newCDR(t, store, storage.CDRFilter{ClientID: acme.ID}, seen, 15*time.Second)
	if cdrNode(t, pg.URL, onA.CallID) != "node-a" {
		t.Fatalf("the second call's CDR %+v: want node-a", onA)
	}
	b.cdrRecording(onA.CallID, storage.RecordingComplete)
	rec := recordingOf(t, store, onA.CallID, 20*time.Second)
	whole := getAudio(t, a.api+"/api/v1/recordings/"+rec.ID+"/audio", "", 200)
	part := getAudio(t, b.api+"/api/v1/recordings/"+rec.ID+"/audio", "bytes=44-1043", 206)
	if rec.Node != "node-a" || len(whole) != int(rec.SizeBytes) || !bytes.Equal(part, whole[44:1044]) {
		t.Fatalf("recording %+v: B's range of %d bytes is not bytes 44-1043 of A's %d", rec, len(part), len(whole))
	}

	// 3. New callers alternate between the managers whichever node takes
	// them (one shared round-robin turn).
	annaPh := phone(t, a, "anna", annaIP, 5070, 41722, false, 1)
	bobPh := phone(t, b, "bob", bobIP, 5071, 41724, false, 1)
	var managers []string
	for i, node := range []*system{a, b} {
		caller := fmt.Sprintf("+7916888000%d", i)
		trunkCall(t, node, caller, 41720, true, 500).Wait()
		managers = append(managers, newCDR(t, store, storage.CDRFilter{}, seen, 15*time.Second).ManagerID)
	}
	annaPh.Wait()
	bobPh.Wait()
	if managers[0] == managers[1] || managers[0] == "" {
		t.Fatalf("two new callers, on node A then B, went to managers %v: want one each", managers)
	}

	// 4. Calls up on both nodes; one NATS server goes, then node A (kill
	// -9): B's call goes on and ends with its recording; A's is closed
	// node_lost by B within 30 s with a playable partial recording; no
	// event and no CDR is lost.
	annaPh = phone(t, a, "anna", annaIP, 5070, 41732, false, 1)
	trA := trunkCall(t, a, acmeNumber, 41730, false, 60000)
	bobPh = phone(t, b, "bob", bobIP, 5071, 41742, false, 1)
	trB := trunkCall(t, b, betaNumber, 41740, true, 20000)
	bobRTP, betaRTP := testenv.NewRTPEndpoint(t, bobIP+":41742"), testenv.NewRTPEndpoint(t, trunkIP+":41740")
	toBob, toBeta := mediaAddr(t, bobPh, nodeBIP), mediaAddr(t, trB, nodeBIP)
	go func() { _ = bobRTP.Send(toBob, 800, managerTone) }()
	go func() { _ = betaRTP.Send(toBeta, 800, clientTone) }()
	callA := answeredCall(t, store, acme.ID)
	callB := answeredCall(t, store, beta.ID)
	if na, nb := cdrNode(t, pg.URL, callA.CallID), cdrNode(t, pg.URL, callB.CallID); na != "node-a" || nb != "node-b" {
		t.Fatalf("calls on %q and %q, want node-a and node-b", na, nb)
	}
	natsServers[0].Shutdown()
	t.Log("nats-1 shut down")
	testenv.Eventually(t, 20*time.Second, func() bool {
		recs, err := store.Recordings(ctx, storage.RecordingFilter{CallID: callA.CallID})
		return err == nil && len(recs) == 1 && time.Since(recs[0].StartedAt) > 9*time.Second
	}, "node A's call recorded for 9 s")
	nodeA.kill()
	killed := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool {
		c, err := store.CDR(ctx, callA.CallID)
		return err == nil && c.EndedAt != nil
	}, "node B closing node A's call")
	t.Logf("node A's call closed %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	if c, _ := store.CDR(ctx, callA.CallID); c.HangupSide != events.HangupNodeLost || c.Disposition != events.DispositionAnswered {
		t.Fatalf("node A's CDR %+v: want answered, node_lost", c)
	}
	partial := recordingOf(t, store, callA.CallID, 30*time.Second)
	raw := getAudio(t, b.api+"/api/v1/recordings/"+partial.ID+"/audio", "", 200)
	if p, err := recorder.DecodeWAV(raw); partial.Status != storage.RecordingPartial || err != nil || p.Duration() <= 0 {
		t.Fatalf("node A's recording %+v through B: %v", partial, err)
	}
	t.Logf("node A's partial recording: %v", partial.Duration)
	trB.Wait()
	bobPh.Wait()
	trA.Kill()
	annaPh.Kill()
	if c := b.cdrRecording(callB.CallID, storage.RecordingComplete); c.HangupSide != "client" || c.Disposition != "answered" {
		t.Fatalf("node B's CDR %+v: want answered, ended by the client", c)
	}
	full := recordingOf(t, store, callB.CallID, 20*time.Second)
	p, err := recorder.DecodeWAV(getAudio(t, b.api+"/api/v1/recordings/"+full.ID+"/audio", "", 200))
	if err != nil {
		t.Fatal(err)
	}
	checkChannels(t, p)
	// Every call of this test has its CDR, ended, and each answered one its
	// offered, answered and ended events in the (replicated) stream.
	all, err := store.CDRs(ctx, storage.CDRFilter{})
	if err != nil || len(all) != 7 {
		t.Fatalf("%d CDRs (%v), want 7", len(all), err)
	}
	for _, c := range all {
		if c.EndedAt == nil || c.OfferedAt == nil || c.AnsweredAt == nil {
			t.Fatalf("CDR %+v is missing an event", c)
		}
	}

	// 5. Postgres stopped: anna's phone registers again (via B, A is
	// dead); a known client's call rings her and connects; its CDR comes
	// once Postgres is back.
	b.register("anna", annaIP, 5070)
	pg.Stop()
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, h := b.health()
		return code == 200 && h["database"] == "down"
	}, "node B seeing Postgres down")
	annaPh = phone(t, b, "anna", annaIP, 5070, 41752, false, 1)
	trunkCall(t, b, acmeNumber, 41750, true, 1000).Wait()
	annaPh.Wait()
	pg.Start()
	seen[callA.CallID] = true
	// The CDR writer's retries back off up to 15 s.
	c := newCDR(t, store, storage.CDRFilter{ClientID: acme.ID}, seen, 60*time.Second)
	if cdrNode(t, pg.URL, c.CallID) != "node-b" || c.ManagerID != anna.ID || c.Disposition != "answered" {
		t.Fatalf("the call during the outage: CDR %+v, want answered by anna on node-b", c)
	}
}

// newCDR waits for the newest CDR of filter to be one not seen before and
// finished (and answered, if it was), and marks it seen.
func newCDR(t *testing.T, store *storage.Store, filter storage.CDRFilter, seen map[string]bool, within time.Duration) storage.CDR {
	t.Helper()
	var cdr storage.CDR
	if !testenv.WaitFor(within, func() bool {
		cdrs, err := store.CDRs(context.Background(), filter)
		if err != nil || len(cdrs) == 0 || cdrs[0].EndedAt == nil || seen[cdrs[0].CallID] ||
			cdrs[0].Disposition == "answered" && cdrs[0].AnsweredAt == nil {
			return false
		}
		cdr = cdrs[0]
		return true
	}) {
		cdrs, err := store.CDRs(context.Background(), filter)
		for _, c := range cdrs {
			t.Logf("CDR %+v", c)
		}
		t.Fatalf("no new finished CDR (%v)", err)
	}
	seen[cdr.CallID] = true
	return cdr
}

// cdrNode is the node a CDR names (the cdrs.node column).
func cdrNode(t *testing.T, dbURL, callID string) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var node *string
	if err := conn.QueryRow(context.Background(), "SELECT node FROM cdrs WHERE call_id = $1", callID).Scan(&node); err != nil {
		t.Fatalf("CDR %s: %v", callID, err)
	}
	if node == nil {
		return ""
	}
	return *node
}

// getAudio GETs url as the admin (with a Range header if rng is set) and fails
// unless the status is want.
func getAudio(t *testing.T, url, rng string, want int) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, body)
	}
	return body
}

// natsLink is a TCP proxy between a node and its NATS server that a test
// cuts and restores: the node alone is cut off.
type natsLink struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newNATSLink(t *testing.T, target string) *natsLink {
	t.Helper()
	l := &natsLink{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1")), target: target}
	l.restore(t)
	t.Cleanup(l.cut)
	return l
}

// restore listens again and forwards every connection to the target.
func (l *natsLink) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", l.target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, up)
			l.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection through it.
func (l *natsLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// shareKeys gives every node started from here the same company keys.
func shareKeys(t *testing.T) {
	for _, env := range []string{"MASKPBX_ENCRYPTION_KEY", "MASKPBX_INDEX_KEY", "MASKPBX_AUDIT_KEY"} {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		t.Setenv(env, base64.StdEncoding.EncodeToString(key))
	}
}

// TestNodeCutOffFromNATS: node A, alone cut off from NATS for longer than
// nodeDeadAfter with a call up, is taken for dead by node B, which closes
// the call (node_lost). A's call goes on; when A is back its own end of the
// call reaches the stream too, and the CDR keeps the first end.
func TestNodeCutOffFromNATS(t *testing.T) {
	users := bus.NewUsers()
	natsSrv, err := bus.StartEmbedded(t.TempDir(), "127.0.0.1", testenv.FreePort(t, "127.0.0.1"), users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(natsSrv.Shutdown)
	link := newNATSLink(t, strings.TrimPrefix(natsSrv.URL(), "nats://"))
	t.Setenv("MASKPBX_NATS_PASSWORD", users.PBX)
	t.Setenv("MASKPBX_ADMIN_TOKEN", adminTok)
	shareKeys(t)

	cfgA := systemConfig(t)
	cfgA.NodeID = "node-a"
	httpA := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	startChildProcess(t, "TestServeProcess", "MASKPBX_SERVE_PROCESS", httpA,
		"--data-dir", cfgA.DataDir, "--database-url", cfgA.DatabaseURL, "--nats-url", "nats://"+link.addr,
		"--nats-user", bus.UserPBX, "--sip-listen", cfgA.SIPListen, "--sip-tls-listen", "off",
		"--sip-domain", cfgA.SIPDomain, "--rtp-ports", cfgA.RTPPorts, "--http-listen", httpA, "--trunk", cfgA.Trunk,
		"--company-number", cfgA.CompanyNumber, "--region", cfgA.Region, "--digest-algorithms", cfgA.DigestAlgorithms,
		"--media-timeout", "60s", "--node", cfgA.NodeID, "--log-format", "console")
	nodeUp(t, httpA)
	cfgB := systemConfig(t)
	_, sipPort, _ := net.SplitHostPort(cfgB.SIPListen)
	cfgB.SIPListen = net.JoinHostPort(nodeBIP, sipPort)
	cfgB.NodeID, cfgB.DatabaseURL = "node-b", cfgA.DatabaseURL
	cfgB.NATSURL, cfgB.NATS = natsSrv.URL(), natsClient{User: bus.UserPBX, Password: users.PBX, Replicas: 1}
	b := startSystemFrom(t, cfgB, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	store := b.run.Store
	a := &system{t: t, run: running{Store: store}, sipAddr: cfgA.SIPListen, api: "http://" + httpA}
	ctx := context.Background()

	anna := b.manager("anna")
	acme := b.client("Acme Trading", acmeNumber, anna.ID)
	a.register("anna", annaIP, 5070)
	ph := phone(t, a, "anna", annaIP, 5070, 41802, false, 1)
	tr := trunkCall(t, a, acmeNumber, 41800, true, 22000)
	callID := answeredCall(t, store, acme.ID).CallID

	link.cut()
	cut := time.Now()
	var first storage.CDR
	testenv.Eventually(t, 30*time.Second, func() bool {
		first, err = store.CDR(ctx, callID)
		return err == nil && first.EndedAt != nil
	}, "node B closing the call of node A, cut off")
	t.Logf("node A's call closed by B %v after the cut", time.Since(cut).Round(100*time.Millisecond))
	if first.HangupSide != events.HangupNodeLost {
		t.Fatalf("CDR %+v: want node_lost", first)
	}
	link.restore(t)
	// A's call was never down: the client hangs up, and A sends its own end.
	tr.Wait()
	ph.Wait()
	_, js, err := bus.Connect(ctx, natsSrv.URL(), "test", users.PBXAuth())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter("calls."+callID+".ended"))
		if err != nil || info.State.Subjects["calls."+callID+".ended"] != 2 {
			return false
		}
		c, err := stream.Consumer(ctx, "cdr-writer")
		if err != nil {
			return false
		}
		ci, err := c.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	}, "node A's own end of the call in the stream and applied")
	last, err := store.CDR(ctx, callID)
	if err != nil || last.HangupSide != events.HangupNodeLost || !last.EndedAt.Equal(*first.EndedAt) || last.Disposition != first.Disposition {
		t.Fatalf("CDR after node A's own end: %+v (%v), want the first end kept: %+v", last, err, first)
	}
}

// nodeUp waits until the node's /healthz answers 200.
func nodeUp(t *testing.T, httpAddr string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "the node up")
}
