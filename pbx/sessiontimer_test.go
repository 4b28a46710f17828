package pbx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// Session timers in seconds: Min-SE is lowered to 2 s (CallConfig's test
// field) so a test sees several refreshes of a 3 s session, as a 120 s
// call with Session-Expires: 90 would in real time.

const testMinSE = 2 * time.Second

// refreshingTrunk is the trunk's UAC for calls in that also answers the
// PBX's in-dialog refreshes: UPDATE and re-INVITE with refreshStatus.
type refreshingTrunk struct {
	dc            *sipgo.DialogClientCache
	updates       atomic.Int32
	reinvites     atomic.Int32
	refreshStatus atomic.Int32
	lastSE        atomic.Value // the Session-Expires of the last refresh
}

func newRefreshingTrunk(t *testing.T) *refreshingTrunk {
	t.Helper()
	tr := &refreshingTrunk{}
	tr.refreshStatus.Store(200)
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname(trunkHost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(trunkHost), sipgo.WithClientConnectionAddr(trunkHost+":0"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	refresh := func(count *atomic.Int32) sipgo.RequestHandler {
		return func(req *sip.Request, tx sip.ServerTransaction) {
			count.Add(1)
			if h := req.GetHeader("Session-Expires"); h != nil {
				tr.lastSE.Store(h.Value())
			}
			code := int(tr.refreshStatus.Load())
			var body []byte
			if code == 200 && req.Method == sip.INVITE {
				body = []byte(fmt.Sprintf("v=0\r\no=trunk 1 2 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", trunkHost, trunkHost))
			}
			res := sip.NewResponseFromRequest(req, code, "", body)
			if len(body) > 0 {
				res.AppendHeader(contentTypeSDP())
			}
			_ = tx.Respond(res)
		}
	}
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
	srv.OnUpdate(refresh(&tr.updates))
	srv.OnInvite(refresh(&tr.reinvites))
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(ok)
	srv.OnOptions(ok)
	tr.dc = sipgo.NewDialogClientCache(client, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "trunk", Host: trunkHost}})
	return tr
}

// timerHeaders are a trunk INVITE's session-timer headers.
func timerHeaders(se string, allowUpdate bool) []sip.Header {
	allow := "INVITE, ACK, BYE, CANCEL, OPTIONS"
	if allowUpdate {
		allow += ", UPDATE"
	}
	return []sip.Header{sip.NewHeader("Session-Expires", se), sip.NewHeader("Supported", "timer"), sip.NewHeader("Allow", allow)}
}

// A call in whose INVITE asks for a 3 s session with us as the refresher:
// our 200 states the terms (Session-Expires with refresher=uas, Require:
// timer), we refresh with UPDATE (the trunk allows it) every half interval,
// and the call stays up on both legs through several refreshes.
func TestInboundSessionRefreshKeepsCallUp(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.minSessionExpires = testMinSE })
	tr := newRefreshingTrunk(t)
	call := env.callTo(t, tr.dc, company, "+79161117777", timerHeaders("3;refresher=uas", true)...)
	call.answered(t)
	res := call.dlg.InviteResponse
	if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "3;refresher=uas" {
		t.Errorf("200 Session-Expires %v, want 3;refresher=uas", se)
	}
	if !hasOption(res, "timer", "Require") {
		t.Error("200 without Require: timer, though the trunk supports timers")
	}
	start := time.Now()
	testenv.Eventually(t, 15*time.Second, func() bool { return tr.updates.Load() >= 4 }, "four session refreshes")
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("four refreshes of a 3 s session in %v: refreshing too often", d)
	}
	if n := tr.reinvites.Load(); n != 0 {
		t.Errorf("%d re-INVITEs, want UPDATE only (the trunk allows it)", n)
	}
	if se, _ := tr.lastSE.Load().(string); se != "3;refresher=uac" {
		t.Errorf("our refresh's Session-Expires %q, want 3;refresher=uac", se)
	}
	if len(liveCallIDs(env.srv)) != 1 || env.phone.byes.Load() != 0 {
		t.Fatal("the call did not stay up through the refreshes")
	}
	call.bye(t)
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.byes.Load() == 1 }, "the manager to be hung up")
}

// A trunk without UPDATE gets re-INVITEs with our SDP (same media), ACKed.
func TestInboundSessionRefreshByReInvite(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.minSessionExpires = testMinSE })
	tr := newRefreshingTrunk(t)
	call := env.callTo(t, tr.dc, company, "+79161117778", timerHeaders("2;refresher=uas", false)...)
	call.answered(t)
	testenv.Eventually(t, 15*time.Second, func() bool { return tr.reinvites.Load() >= 3 }, "three re-INVITE refreshes")
	if n := tr.updates.Load(); n != 0 {
		t.Errorf("%d UPDATEs to a trunk that does not allow them", n)
	}
	if len(liveCallIDs(env.srv)) != 1 {
		t.Fatal("the call did not stay up")
	}
	call.bye(t)
}

// A refresh the trunk answers 481 (it lost the dialog) ends the call: the
// manager is hung up and the CDR says the system ended an answered call.
func TestSessionRefreshFailureEndsCall(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.minSessionExpires = testMinSE })
	tr := newRefreshingTrunk(t)
	tr.refreshStatus.Store(481)
	call := env.callTo(t, tr.dc, company, "+79161117779", timerHeaders("2;refresher=uas", true)...)
	call.answered(t)
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.byes.Load() == 1 }, "the manager to be hung up after the failed refresh")
	testenv.Eventually(t, 10*time.Second, func() bool { return len(env.events.ended()) == 1 }, "the call's end")
	for _, e := range env.events.ended() {
		if e.Disposition != DispAnswered || e.HangupSide != sideSystem {
			t.Errorf("ended %s by %s, want answered by system", e.Disposition, e.HangupSide)
		}
	}
}

// The trunk is the refresher (refresher=uac) and stops refreshing: the
// call ends at the session's expiry. While it refreshes (UPDATE with
// Session-Expires), each 200 restates the terms and the call stays up.
func TestPeerRefresherStopsRefreshing(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.minSessionExpires = testMinSE })
	tr := newRefreshingTrunk(t)
	call := env.callTo(t, tr.dc, company, "+79161117780", timerHeaders("3;refresher=uac", true)...)
	call.answered(t)
	if se := call.dlg.InviteResponse.GetHeader("Session-Expires"); se == nil || se.Value() != "3;refresher=uac" {
		t.Errorf("200 Session-Expires %v, want 3;refresher=uac", se)
	}
	d := trunkDialog(t, call)
	// The trunk's own refresh clock: three refreshes a second apart carry
	// the call past the 2 s expiry of the first.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range 3 {
		<-tick.C
		res, err := d.do(sip.UPDATE, nil, sip.NewHeader("Session-Expires", "3;refresher=uac"), sip.NewHeader("Supported", "timer"))
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("UPDATE refresh: %v %v", res, err)
		}
		if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "3;refresher=uac" || !hasOption(res, "timer", "Require") {
			t.Fatalf("200 to the refresh: Session-Expires %v, Require %v", se, res.GetHeader("Require"))
		}
	}
	if len(liveCallIDs(env.srv)) != 1 {
		t.Fatal("the call ended though the trunk refreshed it")
	}
	if n := tr.updates.Load() + tr.reinvites.Load(); n != 0 {
		t.Errorf("we sent %d refreshes, the trunk is the refresher", n)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.byes.Load() == 1 }, "the call to end at the expiry")
}

// trunkDialog is the trunk's side of an answered call in, for requests of
// its own inside the dialog.
func trunkDialog(t *testing.T, call *trunkCall) *trunkDialogReq {
	return &trunkDialogReq{client: newUAC(t, trunkHost), call: call}
}

type trunkDialogReq struct {
	client *sipgo.Client
	call   *trunkCall
	seq    atomic.Uint32
}

func (d *trunkDialogReq) do(method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	inv, res := d.call.dlg.InviteRequest, d.call.dlg.InviteResponse
	req := sip.NewRequest(method, res.Contact().Address)
	from, to := inv.From().Value(), res.To().Value()
	req.AppendHeader(sip.NewHeader("From", from))
	req.AppendHeader(sip.NewHeader("To", to))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 100 + d.seq.Add(1), MethodName: method})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if len(body) > 0 {
		req.AppendHeader(contentTypeSDP())
	}
	req.SetBody(body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.client.Do(ctx, req)
}

// A Session-Expires below our Min-SE is refused 422 with Min-SE, before
// anything rings.
func TestSessionIntervalTooSmall(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.minSessionExpires = testMinSE })
	call := env.callTo(t, newTrunk(t), company, "+79161117781", timerHeaders("1", true)...)
	select {
	case err := <-call.err:
		var e *sipgo.ErrDialogResponse
		if !errors.As(err, &e) || e.Res.StatusCode != 422 {
			t.Fatalf("INVITE with Session-Expires: 1: %v, want 422", err)
		}
		if h := e.Res.GetHeader("Min-SE"); h == nil || h.Value() != "2" {
			t.Errorf("422 Min-SE %v, want 2", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	if n := env.phone.invites.Load(); n != 0 {
		t.Errorf("the phone rang %d times", n)
	}
}

// On click-to-call, a trunk that answers our INVITE with Session-Expires
// and refresher=uac makes us the refresher of that leg: we refresh it
// (re-INVITE: its 200 names no UPDATE), and the provider's own UPDATE gets
// 200 with the terms; the call stays up.
func TestClickToCallSessionTimer(t *testing.T) {
	const number = "+79161117782"
	var refreshes atomic.Int32
	var answered = make(chan answeredInvite, 1)
	trunkAddr := fmt.Sprintf("%s:%d", trunkHost, freeUDPPort(t, trunkHost))
	serveSIP(t, trunkAddr, func(req *sip.Request, tx sip.ServerTransaction) {
		if tag, _ := req.To().Params.Get("tag"); tag != "" {
			refreshes.Add(1)
		}
		body := fmt.Appendf(nil, "v=0\r\no=trunk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", trunkHost, trunkHost)
		res := sip.NewResponseFromRequest(req, 200, "OK", body)
		if tag, _ := req.To().Params.Get("tag"); tag == "" {
			res.To().Params.Add("tag", sip.GenerateTagN(8))
		}
		host, port, _ := net.SplitHostPort(trunkAddr)
		var p int
		fmt.Sscan(port, &p)
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: p}})
		res.AppendHeader(contentTypeSDP())
		res.AppendHeader(sip.NewHeader("Session-Expires", "2;refresher=uac"))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
		if tx.Respond(res) == nil {
			select {
			case answered <- answeredInvite{req, res}:
			default:
			}
		}
	}, nil)
	env := originateTimed(t, trunkAddr, number, "c-timer", nil)
	var leg answeredInvite
	select {
	case leg = <-answered:
	case <-time.After(15 * time.Second):
		t.Fatal("the trunk was not called")
	}
	if !supportsTimer(leg.invite) {
		t.Error("our INVITE to the trunk does not say Supported: timer")
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return refreshes.Load() >= 3 }, "three refreshes of the trunk leg")
	d := newUASDialog(t, trunkHost, leg)
	res, err := d.do(sip.UPDATE, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the provider's UPDATE: %v %v, want 200", res, err)
	}
	if _, err := media.ParseOffer(res.Body()); err != nil {
		t.Errorf("200 to UPDATE without usable SDP: %v", err)
	}
	if st, _ := env.srv.CallStatus("c-timer"); st.State != StateConnected {
		t.Fatalf("call %+v, want connected", st)
	}
	env.srv.calls.endAll(10 * time.Second)
}

// A provider that challenges our session refreshes (401/407 on every
// request, as many do) gets them once more with credentials, and the call
// stays up.
func TestSessionRefreshAnswersChallenge(t *testing.T) {
	const number = "+79161117783"
	var challenged, authorized atomic.Int32
	var answered = make(chan answeredInvite, 1)
	trunkAddr := fmt.Sprintf("%s:%d", trunkHost, freeUDPPort(t, trunkHost))
	host, port, _ := net.SplitHostPort(trunkAddr)
	var p int
	fmt.Sscan(port, &p)
	serveSIP(t, trunkAddr, func(req *sip.Request, tx sip.ServerTransaction) {
		refresh := false
		if tag, _ := req.To().Params.Get("tag"); tag != "" {
			refresh = true
			if h := req.GetHeader("Proxy-Authorization"); h == nil {
				challenged.Add(1)
				res := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
				res.AppendHeader(sip.NewHeader("Proxy-Authenticate",
					`Digest realm="carrier.test", nonce="n`+fmt.Sprint(challenged.Load())+`", algorithm=MD5, qop="auth"`))
				_ = tx.Respond(res)
				return
			} else if strings.Contains(h.Value(), `username="acct"`) && strings.Contains(h.Value(), `realm="carrier.test"`) {
				authorized.Add(1)
			}
		}
		body := fmt.Appendf(nil, "v=0\r\no=trunk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", trunkHost, trunkHost)
		res := sip.NewResponseFromRequest(req, 200, "OK", body)
		if !refresh {
			res.To().Params.Add("tag", sip.GenerateTagN(8))
		}
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: p}})
		res.AppendHeader(contentTypeSDP())
		res.AppendHeader(sip.NewHeader("Session-Expires", "2;refresher=uac"))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
		if tx.Respond(res) == nil && !refresh {
			answered <- answeredInvite{req, res}
		}
	}, nil)
	env := originateTimed(t, trunkAddr, number, "c-auth-timer", func(c *CallConfig) {
		c.TrunkAuth = TrunkAuth{Username: "acct", Password: "secret", Realm: "carrier.test"}
	})
	select {
	case <-answered:
	case <-time.After(15 * time.Second):
		t.Fatal("the trunk was not called")
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return authorized.Load() >= 2 },
		"two refreshes answered with credentials (%d challenged, %d authorized)", challenged.Load(), authorized.Load())
	if st, _ := env.srv.CallStatus("c-auth-timer"); st.State != StateConnected {
		t.Fatalf("call %+v, want connected", st)
	}
	env.srv.calls.endAll(10 * time.Second)
}

// A provider that refuses our refreshes for now (491 at once, every time)
// is asked again after a pause, not in a tight loop; the call ends when
// the session runs out.
func TestRefusedRefreshBacksOff(t *testing.T) {
	const number = "+79161117784"
	var refreshes atomic.Int32
	var answered = make(chan struct{}, 1)
	trunkAddr := fmt.Sprintf("%s:%d", trunkHost, freeUDPPort(t, trunkHost))
	host, port, _ := net.SplitHostPort(trunkAddr)
	var p int
	fmt.Sscan(port, &p)
	serveSIP(t, trunkAddr, func(req *sip.Request, tx sip.ServerTransaction) {
		if tag, _ := req.To().Params.Get("tag"); tag != "" {
			refreshes.Add(1)
			_ = tx.Respond(sip.NewResponseFromRequest(req, 491, "Request Pending", nil))
			return
		}
		body := fmt.Appendf(nil, "v=0\r\no=trunk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", trunkHost, trunkHost)
		res := sip.NewResponseFromRequest(req, 200, "OK", body)
		res.To().Params.Add("tag", sip.GenerateTagN(8))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: p}})
		res.AppendHeader(contentTypeSDP())
		res.AppendHeader(sip.NewHeader("Session-Expires", "8;refresher=uac"))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
		if tx.Respond(res) == nil {
			answered <- struct{}{}
		}
	}, nil)
	env := originateTimed(t, trunkAddr, number, "c-491", nil)
	select {
	case <-answered:
	case <-time.After(15 * time.Second):
		t.Fatal("the trunk was not called")
	}
	// Refreshes begin at half the 8 s session and are refused; retries
	// come every second at most (an eighth of it) until a third of it is
	// left, and then the call ends.
	testenv.Eventually(t, 15*time.Second, func() bool { st, _ := env.srv.CallStatus("c-491"); return st.State == StateEnded },
		"the call to end once its session ran out")
	if n := refreshes.Load(); n < 1 || n > 6 {
		t.Fatalf("%d refresh attempts in the session's last half; want a few, spaced out", n)
	}
}

// originateTimed starts a click-to-call (callID) to a client (number) through the
// trunk at trunkAddr, with session timers at the test's Min-SE and tune's
// changes to the configuration.
func originateTimed(t *testing.T, trunkAddr, number, callID string, tune func(*CallConfig)) *callEnv {
	t.Helper()
	env := startCallEnv(t, func(c *CallConfig) {
		c.minSessionExpires = testMinSE
		c.Trunk = trunkAddr
		if tune != nil {
			tune(c)
		}
	})
	client := env.createClient(t, "Acme", number)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := env.srv.Originate(ctx, Originate{CallID: callID, ManagerID: env.manager.ID, ClientID: client.ID}); err != nil {
		t.Fatalf("Originate: %v", err)
	}
	return env
}
