package pbx

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// parseTestRequest reads a request written as text, headers only.
func parseTestRequest(t *testing.T, ruri string, hdrs ...string) *sip.Request {
	t.Helper()
	raw := "INVITE " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.4:5060;branch=z9hG4bKtest\r\n" +
		"Call-ID: test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n" +
		strings.Join(hdrs, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, raw)
	}
	return msg.(*sip.Request)
}

func TestCallerNumber(t *testing.T) {
	const anon = `From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=1`
	for _, tc := range []struct {
		name    string
		trusted bool
		hdrs    []string
		want    string
	}{
		{"From only", true, []string{"From: <sip:+79161112233@trunk>;tag=1"}, "+79161112233"},
		{"anonymous, nothing asserted", true, []string{anon}, ""},
		{"PAI sip, national spelling", true, []string{anon, "P-Asserted-Identity: <sip:89161112233@trunk;user=phone>", "Privacy: id"}, "+79161112233"},
		{"PAI tel", true, []string{anon, "P-Asserted-Identity: <tel:+79161112233>"}, "+79161112233"},
		{"PAI without brackets, international without +", true, []string{anon, "P-Asserted-Identity: sip:79161112233@trunk"}, "+79161112233"},
		{"PAI list: first a name, then a tel", true, []string{anon, `P-Asserted-Identity: "Shop" <sip:shop@trunk>, <tel:+79161112233>`}, "+79161112233"},
		{"PAI wins over RPID and From", true, []string{"From: <sip:+79160000001@trunk>;tag=1",
			"Remote-Party-ID: <sip:+79160000002@trunk>;party=calling", "P-Asserted-Identity: <sip:+79161112233@trunk>"}, "+79161112233"},
		{"RPID calling", true, []string{anon, `Remote-Party-ID: "x" <sip:+79161112233@trunk>;party=calling;privacy=full;screen=yes`}, "+79161112233"},
		{"RPID called is not the caller", true, []string{anon, "Remote-Party-ID: <sip:+79161112233@trunk>;party=called"}, ""},
		{"unusable PAI falls back to From", true, []string{"From: <sip:+79161112233@trunk>;tag=1", "P-Asserted-Identity: <sip:anonymous@anonymous.invalid>"}, "+79161112233"},
		{"untrusted: PAI ignored", false, []string{anon, "P-Asserted-Identity: <sip:+79161112233@trunk>"}, ""},
		{"untrusted: RPID ignored", false, []string{"From: <sip:+79160000001@x>;tag=1", "Remote-Party-ID: <sip:+79161112233@trunk>"}, "+79160000001"},
		{"garbage PAI", true, []string{anon, "P-Asserted-Identity: <<<>>>, ,"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := parseTestRequest(t, "sip:+74950000000@pbx", append(tc.hdrs, "To: <sip:+74950000000@pbx>")...)
			if got := callerNumber(req, tc.trusted, masking.NewNormalizer("RU")); got != tc.want {
				t.Errorf("callerNumber = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCalledNumber(t *testing.T) {
	companies := []CompanyNumber{{Number: "+74950000000", Team: "sales"}, {Number: "+78120000000", Team: "support"}}
	for _, tc := range []struct {
		name string
		ruri string
		hdrs []string
		want string // team; "-" not ours
	}{
		{"Request-URI, national", "sip:84950000000@pbx", nil, "sales"},
		{"Request-URI, second number", "sip:+78120000000@pbx", nil, "support"},
		{"not ours", "sip:+79161112233@pbx", []string{"To: <sip:+79161112233@pbx>"}, "-"},
		{"account login, Diversion names the number", "sip:trunkuser@pbx", []string{"To: <sip:trunkuser@pbx>",
			"Diversion: <sip:+78120000000@provider>;reason=unconditional"}, "support"},
		{"Diversion chain: the oldest (last) first", "sip:trunkuser@pbx", []string{"To: <sip:trunkuser@pbx>",
			"Diversion: <sip:+74950000000@provider>;reason=unconditional", "Diversion: <sip:+78120000000@provider>;reason=no-answer"}, "support"},
		{"History-Info: the first index", "sip:trunkuser@pbx", []string{"To: <sip:trunkuser@pbx>",
			"History-Info: <sip:trunkuser@pbx>;index=1.1, <sip:+78120000000@provider>;index=1"}, "support"},
		{"To as the last resort", "sip:trunkuser@pbx", []string{"To: <sip:+74950000000@pbx>"}, "sales"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdrs := tc.hdrs
			if !strings.Contains(strings.Join(hdrs, "\n"), "To:") {
				hdrs = append(hdrs, "To: <"+tc.ruri+">")
			}
			req := parseTestRequest(t, tc.ruri, append(hdrs, "From: <sip:+79161112233@trunk>;tag=1")...)
			got, ok := calledNumber(req, masking.NewNormalizer("RU"), companies)
			switch {
			case tc.want == "-" && ok:
				t.Errorf("calledNumber = %+v, want none", got)
			case tc.want != "-" && (!ok || got.Team != tc.want):
				t.Errorf("calledNumber = %+v %v, want team %s", got, ok, tc.want)
			}
		})
	}
}

func TestIndexLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{{"1", "1.1", true}, {"1.1", "1", false}, {"1.2", "1.10", true}, {"2", "1.1", false}, {"1", "", true}, {"", "1", false}} {
		if got := indexLess(tc.a, tc.b); got != tc.want {
			t.Errorf("indexLess(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// callTo sends an INVITE from the trunk to ruriUser with extra headers;
// from is the From user.
func (e *callEnv) callTo(t *testing.T, dc *sipgo.DialogClientCache, ruriUser, from string, hdrs ...sip.Header) *trunkCall {
	t.Helper()
	host, port, _ := net.SplitHostPort(e.addr)
	var p int
	fmt.Sscan(port, &p)
	sdp := fmt.Sprintf("v=0\r\no=trunk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", trunkHost, trunkHost)
	fromHdr := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: "anonymous.invalid"}, Params: sip.NewParams()}
	fromHdr.Params.Add("tag", sip.GenerateTagN(8))
	ct := sip.ContentTypeHeader("application/sdp")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	dlg, err := dc.Invite(ctx, sip.Uri{Scheme: "sip", User: ruriUser, Host: host, Port: p}, []byte(sdp), append([]sip.Header{fromHdr, &ct}, hdrs...)...)
	if err != nil {
		t.Fatalf("INVITE: %v", err)
	}
	tc := &trunkCall{dlg: dlg, err: make(chan error, 1)}
	go func() { tc.err <- dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}) }()
	return tc
}

// answered waits for a call in to be answered and ACKs it.
func (tc *trunkCall) answered(t *testing.T) {
	t.Helper()
	ackAnswer(t, "the call in", tc.dlg, tc.err, 15*time.Second)
}

// ackAnswer waits up to wait for a call a test placed to be answered (err
// is the outcome of its WaitAnswer) and ACKs it; what names the call.
func ackAnswer(t *testing.T, what string, dlg *sipgo.DialogClientSession, err <-chan error, wait time.Duration) {
	t.Helper()
	select {
	case err := <-err:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(wait):
		t.Fatalf("%s got no answer", what)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

func (tc *trunkCall) bye(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tc.dlg.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
}

// A client who withholds his number (From: anonymous, Privacy: id) but
// whom the provider asserts (P-Asserted-Identity, national spelling) rings
// his own manager, shown by name and code; the manager's INVITE carries no
// number and none of the identity headers.
func TestInboundAssertedIdentity(t *testing.T) {
	env := startCallEnv(t, nil)
	client := env.createClient(t, "Acme", "+79161112233")
	call := env.callTo(t, newTrunk(t), company, "anonymous",
		sip.NewHeader("P-Asserted-Identity", "<sip:89161112233@"+trunkHost+";user=phone>"),
		sip.NewHeader("Privacy", "id"))
	call.answered(t)
	var inv answeredInvite
	select {
	case inv = <-env.phone.answered:
	case <-time.After(5 * time.Second):
		t.Fatal("the phone was not called")
	}
	if from := inv.invite.From().Value(); !strings.Contains(from, client.Code) || !strings.Contains(from, "Acme") {
		t.Errorf("the phone saw From %q, want the client's name and code %s", from, client.Code)
	}
	text := inv.invite.String()
	for _, leak := range []string{"9161112233", "P-Asserted-Identity", "Privacy", "Remote-Party-ID", trunkHost} {
		if strings.Contains(text, leak) {
			t.Errorf("the phone's INVITE contains %q:\n%s", leak, text)
		}
	}
	if st := liveCall(t, env.srv); st.ClientID != client.ID || st.ManagerID != env.manager.ID {
		t.Errorf("call between %q and %q, want client %s and his manager", st.ClientID, st.ManagerID, client.ID)
	}
	call.bye(t)
}

// P-Asserted-Identity from a source that is not a trunk asserts nothing:
// the INVITE to the company number is refused without a hint, nothing rings
// and no client is made of the asserted number.
func TestAssertedIdentityFromUntrustedSource(t *testing.T) {
	env := startCallEnv(t, nil)
	host, port, _ := net.SplitHostPort(env.addr)
	var p int
	fmt.Sscan(port, &p)
	client := newUAC(t, phoneHost)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: company, Host: host, Port: p})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "anonymous", Host: "anonymous.invalid"}, Params: sip.NewParams()}
	from.Params.Add("tag", "f1")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: company, Host: host}})
	req.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:+79161114444@"+phoneHost+">"))
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: phoneHost}})
	res := transactOnce(t, client, req)
	if res.StatusCode != 403 {
		t.Fatalf("INVITE with PAI from an untrusted source: %d, want 403", res.StatusCode)
	}
	if n := env.phone.invites.Load(); n != 0 {
		t.Errorf("the phone rang %d times", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := env.store.ClientByBlindIndex(ctx, env.keys.IndexKeyID(), env.keys.BlindIndex("+79161114444")); err == nil {
		t.Error("a client was made of the asserted number")
	}
}

// transactOnce sends a request and returns its final response.
func transactOnce(t *testing.T, client *sipgo.Client, req *sip.Request) *sip.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := client.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", req.Method, err)
	}
	return res
}

// Two company numbers on one trunk, each for its own team: a call the
// provider forwarded from the support number to the trunk's account
// (Request-URI: the login; Diversion: the number dialled) is taken, and a
// new caller rings the support team only, and becomes its client.
func TestCompanyNumbersRouteTeams(t *testing.T) {
	const support = "+78120000000"
	env := startCallEnv(t, func(c *CallConfig) {
		c.CompanyNumbers = []CompanyNumber{{Number: company, Team: "sales"}, {Number: support, Team: "support"}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	bob, err := env.store.CreateManager(ctx, storage.NewManager{Name: "Bob", SIPUsername: "bob2",
		HA1MD5: "x", HA1SHA256: "x", Team: "support", Role: storage.RoleManager}, "test")
	if err != nil {
		t.Fatal(err)
	}
	bobPhone := startTestPhone(t)
	if err := env.regs.Put(ctx, Registration{ManagerID: bob.ID, Username: "bob2", Contact: fmt.Sprintf("<sip:bob2@%s>", bobPhone.addr),
		Source: bobPhone.addr, Transport: "UDP", ExpiresAt: time.Now().Add(time.Hour), CallID: "reg-bob", CSeq: 1}); err != nil {
		t.Fatal(err)
	}
	call := env.callTo(t, newTrunk(t), "trunkuser", "+79161115555",
		sip.NewHeader("Diversion", "<sip:"+support+"@provider.example>;reason=unconditional"))
	call.answered(t)
	if a, b := env.phone.invites.Load(), bobPhone.invites.Load(); a != 0 || b != 1 {
		t.Errorf("sales phone rang %d times, support phone %d; want only support, once", a, b)
	}
	c, err := env.store.ClientByBlindIndex(ctx, env.keys.IndexKeyID(), env.keys.BlindIndex("+79161115555"))
	if err != nil || c.ManagerID != bob.ID {
		t.Errorf("the new caller's client %+v %v, want one of bob's", c, err)
	}
	call.bye(t)
	testenv.Eventually(t, 10*time.Second, func() bool { return len(liveCallIDs(env.srv)) == 0 }, "the call to end")
}
