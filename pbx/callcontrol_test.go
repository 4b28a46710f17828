package pbx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Call control end to end, one flow each (inbound, click-to-call, desk
// phone), and the defects of review 10 item 5, each with the test that
// shows it. Every flow runs with a status poller (the API's GET
// /api/v1/calls/{id}) so -race sees the call's state read while it runs.

// newUAC is a SIP client sending from host (a phone or the trunk).
func newUAC(t *testing.T, host string) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname(host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientConnectionAddr(host+":0"))
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// uasDialog sends requests inside a dialog whose INVITE a test peer
// answered: From is the peer's To with its tag, To the PBX's From.
type uasDialog struct {
	client *sipgo.Client
	answeredInvite
	seq atomic.Uint32
}

func newUASDialog(t *testing.T, host string, a answeredInvite) *uasDialog {
	return &uasDialog{client: newUAC(t, host), answeredInvite: a}
}

// do sends one in-dialog request and returns its final response.
func (d *uasDialog) do(method sip.RequestMethod, body []byte) (*sip.Response, error) {
	req := sip.NewRequest(method, d.invite.Contact().Address)
	from, to := d.res.To().AsFrom(), d.invite.From().AsTo()
	req.AppendHeader(&from)
	req.AppendHeader(&to)
	req.AppendHeader(sip.HeaderClone(d.invite.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 100 + d.seq.Add(1), MethodName: method})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.ContactHeader{Address: *d.res.Contact().Address.Clone()})
	if len(body) > 0 {
		req.AppendHeader(contentTypeSDP())
	}
	req.SetBody(body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tx, err := d.client.TransactionRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if method == sip.INVITE && res.IsSuccess() {
				ack := sip.NewRequest(sip.ACK, d.invite.Contact().Address)
				for _, h := range []sip.Header{&from, &to, sip.HeaderClone(d.invite.CallID()), &maxFwd} {
					ack.AppendHeader(h)
				}
				ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
				if err := d.client.WriteRequest(ack); err != nil {
					return res, err
				}
			}
			return res, nil
		case <-tx.Done():
			return nil, fmt.Errorf("%s: %w", method, tx.Err())
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", method, ctx.Err())
		}
	}
}

// pollStatuses reads the status of every live call over and over until
// the test ends, as the API does for GET /api/v1/calls/{id}.
func pollStatuses(t *testing.T, srv *Server) {
	stop, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		pace := time.NewTicker(time.Millisecond) // pacing, not waiting
		defer pace.Stop()
		for {
			for _, id := range liveCallIDs(srv) {
				srv.CallStatus(id)
			}
			select {
			case <-stop:
				return
			case <-pace.C:
			}
		}
	}()
}

func liveCallIDs(srv *Server) []string {
	srv.calls.mu.Lock()
	defer srv.calls.mu.Unlock()
	ids := make([]string, 0, len(srv.calls.calls))
	for id := range srv.calls.calls {
		ids = append(ids, id)
	}
	return ids
}

// liveCall is the one call in progress, once there is exactly one.
func liveCall(t *testing.T, srv *Server) CallStatus {
	t.Helper()
	var st CallStatus
	testenv.Eventually(t, 10*time.Second, func() bool {
		ids := liveCallIDs(srv)
		if len(ids) != 1 {
			return false
		}
		st, _ = srv.CallStatus(ids[0])
		return true
	}, "one call in progress")
	return st
}

// createClient stores a client of the env's manager with one number.
func (e *callEnv) createClient(t *testing.T, name, number string) storage.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := e.store.CreateClient(ctx, storage.NewClient{Name: name, ManagerID: e.manager.ID,
		Phones:  []masking.SealedPhone{sealPhone(t, e.keys, number)},
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deskCall is a call a manager's desk phone (a sipgo UAC on 127.0.0.3)
// dials to a client code.
type deskCall struct {
	dlg *sipgo.DialogClientSession
	err chan error // the outcome of WaitAnswer, digest challenge included
}

// dial sends INVITE sip:<code>@<domain> from alice's desk phone; the phone
// answers the PBX's 407 with alice's credentials.
func (e *callEnv) dial(t *testing.T, code string) *deskCall {
	t.Helper()
	client := newUAC(t, phoneHost)
	dc := sipgo.NewDialogClientCache(client, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: phoneHost}})
	sdp := fmt.Sprintf("v=0\r\no=desk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40006 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", phoneHost, phoneHost)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: code, Host: testDomain})
	req.SetDestination(e.addr)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: code, Host: testDomain}, Params: sip.NewParams()})
	req.AppendHeader(contentTypeSDP())
	req.SetBody([]byte(sdp))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	dlg, err := dc.WriteInvite(ctx, req)
	if err != nil {
		t.Fatalf("desk INVITE: %v", err)
	}
	d := &deskCall{dlg: dlg, err: make(chan error, 1)}
	go func() { d.err <- dlg.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: alicePass}) }()
	return d
}

// A manager dials a client code from his desk phone: challenged with 407,
// he proves who he is, the PBX dials the client's number through the trunk
// and connects them; the status shows the call with both parties while it
// runs, and the phone's BYE ends it as answered, hung up by the manager.
func TestDeskPhoneDialsClientCode(t *testing.T) {
	const number = "+79161112233"
	trunk := startTrunkUAS(t, nil)
	env := startCallEnv(t, func(c *CallConfig) { c.Trunk = trunk.addr })
	env.creds.add(env.manager.ID, "alice", alicePass, true) // the desk phone's SIP account
	client := env.createClient(t, "Acme", number)
	pollStatuses(t, env.srv)

	desk := env.dial(t, client.Code)
	ackAnswer(t, "the desk call", desk.dlg, desk.err, 15*time.Second)
	if got := trunk.numbers(); len(got) != 1 || got[0] != number {
		t.Fatalf("the trunk was asked for %v, want [%s]", got, number)
	}
	// The phone has its 200 a moment before the call's owner marks it
	// connected: wait for that, don't race it.
	var st CallStatus
	testenv.Eventually(t, 5*time.Second, func() bool { st = liveCall(t, env.srv); return st.State == StateConnected },
		"the desk call connected")
	if st.ClientID != client.ID || st.ManagerID != env.manager.ID {
		t.Fatalf("status of the desk call %+v, want connected, client %s, manager %s", st, client.ID, env.manager.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := desk.dlg.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(env.events.ended()) == 1 }, "the desk call's ended event")
	for _, e := range env.events.ended() {
		if e.Disposition != DispAnswered || e.HangupSide != sideManager || e.ClientID != client.ID || e.ManagerID != env.manager.ID {
			t.Errorf("ended event %+v, want answered, hung up by the manager, with both parties", e)
		}
	}
}

// Defect 1: the status of a call in (GET /api/v1/calls/{id}) is read while
// the call learns its client (routing) and its manager (the answer). Under
// -race the reads during ringing and the writes at the answer must be
// ordered; the status shows both parties once connected.
func TestCallStatusWhileInboundRings(t *testing.T) {
	env := startCallEnv(t, nil)
	hold := env.phone.holdAnswers()
	trunk := newTrunk(t)
	call := env.call(t, trunk, "+79161230077")
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.invites.Load() == 1 }, "the phone to ring")
	ringing := liveCall(t, env.srv)
	if ringing.ClientID == "" || ringing.ManagerID != "" {
		t.Fatalf("status while ringing %+v, want the client and no manager yet", ringing)
	}
	close(hold)
	select {
	case err := <-call.err:
		if err != nil {
			t.Fatalf("call: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call got no answer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := call.dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	var st CallStatus
	testenv.Eventually(t, 5*time.Second, func() bool {
		st, _ = env.srv.CallStatus(ringing.ID)
		return st.State == StateConnected
	}, "the call to connect")
	if st.ClientID != ringing.ClientID || st.ManagerID != env.manager.ID {
		t.Fatalf("status once connected %+v, want client %s and manager %s", st, ringing.ClientID, env.manager.ID)
	}
	if err := call.dlg.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, _ = env.srv.CallStatus(ringing.ID)
		return st.State == StateEnded
	}, "the call to end")
}

// legToPhone sends an INVITE to the env's manager's phone as a ring step
// does; the leg reports on evs.
func (e *callEnv) legToPhone(t *testing.T, evs chan legEvent) *outLeg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	regs, err := e.regs.Contacts(ctx, e.manager.ID)
	if err != nil || len(regs) != 1 {
		t.Fatalf("the phone's registration: %v %v", regs, err)
	}
	target, err := parseContactURI(regs[0].Contact)
	if err != nil {
		t.Fatal(err)
	}
	sdp := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 42998 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", pbxHost, pbxHost)
	leg, err := e.srv.calls.startOutLeg(ctx, e.manager.ID, outInvite{
		target: target, to: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain},
		from: sip.Uri{Scheme: "sip", User: "test", Host: testDomain}, displayName: "Test",
		sdp: []byte(sdp), dest: regs[0].Source, transport: "UDP",
	}, evs)
	if err != nil {
		t.Fatalf("INVITE to the phone: %v", err)
	}
	return leg
}

// answeredLeg waits for the leg's 200 and for the phone's record of it.
func (e *callEnv) answeredLeg(t *testing.T, evs chan legEvent) answeredInvite {
	t.Helper()
	for {
		select {
		case ev := <-evs:
			if ev.status < 200 {
				continue
			}
			if ev.status != 200 {
				t.Fatalf("the phone answered %d", ev.status)
			}
			return <-e.phone.answered
		case <-time.After(10 * time.Second):
			t.Fatal("the phone did not answer")
		}
	}
}

func closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// Defect 2: a party that answers and hangs up at once sends its BYE before
// the leg has joined its call (the call has not yet said whom to tell). The
// BYE is answered 200 and told to the call when it joins, or the call stays
// up until the media timeout.
func TestOutLegByeBeforeJoin(t *testing.T) {
	env := startCallEnv(t, nil)
	evs := make(chan legEvent, 8)
	leg := env.legToPhone(t, evs)
	phone := newUASDialog(t, phoneHost, env.answeredLeg(t, evs))
	res, err := phone.do(sip.BYE, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the phone's BYE: %v %v, want 200", res, err)
	}
	hungUp := make(chan struct{})
	leg.join(nil, func() { close(hungUp) }, nil)
	testenv.Eventually(t, 5*time.Second, closed(hungUp), "the BYE that came before the leg joined its call to reach the call")
}

// Defect 3: requests in a leg's dialog are matched (its remote tag) while
// the 200 that sets the tag is processed, and answered (its local SDP)
// while the call joins the leg. Under -race both must be read under the
// locks that guard their writes; once joined, INFO is answered 200.
func TestOutLegInDialogWhileAnswering(t *testing.T) {
	env := startCallEnv(t, nil)
	hold := env.phone.holdAnswers()
	evs := make(chan legEvent, 8)
	leg := env.legToPhone(t, evs)
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.invites.Load() == 1 }, "the phone to ring")

	// sipgo hands each request to its own goroutine: one in this dialog
	// may be matched while the 200 is processed.
	probe := sip.NewRequest(sip.INFO, sip.Uri{Scheme: "sip", Host: pbxHost})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", Host: phoneHost}, Params: sip.NewParams()}
	from.Params.Add("tag", "x")
	probe.AppendHeader(from)
	callID := sip.CallIDHeader(leg.dlg.callID)
	probe.AppendHeader(&callID)
	stopMatching, matching := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(matching)
		for !closed(stopMatching)() {
			env.srv.calls.dialogs.find(probe)
			runtime.Gosched()
		}
	}()
	close(hold)
	phone := newUASDialog(t, phoneHost, env.answeredLeg(t, evs))
	close(stopMatching)
	<-matching

	// The phone sends INFO while the call joins the leg.
	infoOK := make(chan struct{})
	go func() {
		defer close(infoOK)
		testenv.WaitFor(10*time.Second, func() bool {
			res, err := phone.do(sip.INFO, nil)
			return err == nil && res.StatusCode == 200
		})
	}()
	ours := []byte(fmt.Sprintf("v=0\r\no=- 1 2 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 42998 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", pbxHost, pbxHost))
	leg.join(func(media.Direction) []byte { return ours }, func() {}, nil)
	<-infoOK
	res, err := phone.do(sip.INFO, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO once joined: %v %v, want 200", res, err)
	}
	leg.hangup()
}

// Defect 4: each server names the methods it serves in Allow: a registrar
// without calls does not offer INVITE, and two servers with calls in one
// process name each method once.
func TestAllowListPerServer(t *testing.T) {
	withCalls := func(s *Server) {
		ports, err := media.NewPortPool(pbxHost, 46100, 46199)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.EnableCalls(CallConfig{Ports: ports, Router: &Router{}, RingTimeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	first, second := startPBXBefore(t, withCalls), startPBXBefore(t, withCalls)
	registrar := startPBX(t, nil)
	allow := func(env *testEnv) map[string]int {
		p := env.newPhone(t)
		res := p.send(p.request("OPTIONS", "sip:"+testDomain, "alice"))
		h := res.GetHeader("Allow")
		if res.StatusCode != 200 || h == nil {
			t.Fatalf("OPTIONS: %v", res)
		}
		n := map[string]int{}
		for _, m := range splitHeaderList(h.Value()) {
			n[strings.TrimSpace(m)]++
		}
		return n
	}
	for name, env := range map[string]*testEnv{"first": first, "second": second} {
		got := allow(env)
		for _, m := range []string{"REGISTER", "OPTIONS", "INVITE", "ACK", "CANCEL", "BYE", "INFO", "UPDATE"} {
			if got[m] != 1 {
				t.Errorf("%s server with calls: Allow names %s %d times (%v), want once", name, m, got[m], got)
			}
		}
	}
	if got := allow(registrar); got["INVITE"] != 0 || got["REGISTER"] != 1 {
		t.Errorf("registrar without calls: Allow %v, want REGISTER and no INVITE", got)
	}
}

// Defect 7: a carrier's session timer refreshes the click-to-call's trunk
// leg with re-INVITE or UPDATE. The PBX answers them as it does on a call
// in: 200 with its SDP for that side on the same media port (with or
// without an offer), INFO 200, and the call stays up.
func TestClickToCallTrunkSessionRefresh(t *testing.T) {
	const number = "+79161114455"
	trunk := startTrunkUAS(t, nil)
	env := startCallEnv(t, func(c *CallConfig) { c.Trunk = trunk.addr })
	client := env.createClient(t, "Acme", number)
	pollStatuses(t, env.srv)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := env.srv.Originate(ctx, Originate{CallID: "c-refresh", ManagerID: env.manager.ID, ClientID: client.ID}); err != nil {
		t.Fatalf("Originate: %v", err)
	}
	var leg answeredInvite
	select {
	case leg = <-trunk.answered:
	case <-time.After(15 * time.Second):
		t.Fatal("the trunk was not called")
	}
	connected := func() bool { st, _ := env.srv.CallStatus("c-refresh"); return st.State == StateConnected }
	testenv.Eventually(t, 10*time.Second, connected, "the call to connect")
	first, err := media.ParseOffer(leg.invite.Body())
	if err != nil {
		t.Fatal(err)
	}
	d := newUASDialog(t, trunkHost, leg)
	for _, step := range []struct {
		method sip.RequestMethod
		offer  []byte
	}{
		{sip.INVITE, leg.res.Body()},
		{sip.INVITE, nil},
		{sip.UPDATE, leg.res.Body()},
	} {
		res, err := d.do(step.method, step.offer)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s (offer: %v): %v %v, want 200", step.method, step.offer != nil, res, err)
		}
		answer, err := media.ParseOffer(res.Body())
		if err != nil {
			t.Fatalf("%s: the 200 carries no usable SDP: %v\n%s", step.method, err, res.Body())
		}
		if answer.Remote != first.Remote {
			t.Errorf("%s: SDP names %v, the call's media is at %v", step.method, answer.Remote, first.Remote)
		}
	}
	if res, err := d.do(sip.INFO, nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO: %v %v, want 200", res, err)
	}
	if !connected() {
		t.Fatal("the call did not stay up through the refreshes")
	}
	env.srv.calls.endAll(10 * time.Second)
	if st, _ := env.srv.CallStatus("c-refresh"); st.State != StateEnded || st.Disposition != DispAnswered {
		t.Errorf("status after the end %+v, want ended, answered", st)
	}
}

// Defect 8: a click-to-call whose client never answered lets the manager
// hear the failure for a moment before the BYE. That pause waits on the
// call, not on a bare timer: shutting down while the client rings hangs up
// the manager at once, and the shutdown does not wait for the pause.
func TestClickToCallFailurePauseEndsAtShutdown(t *testing.T) {
	const number = "+79161116677"
	trunk := startTrunkUAS(t, map[string]int{number: 180})
	env := startCallEnv(t, func(c *CallConfig) {
		c.Trunk = trunk.addr
		c.failurePause = time.Minute
	})
	client := env.createClient(t, "Acme", number)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := env.srv.Originate(ctx, Originate{CallID: "c-pause", ManagerID: env.manager.ID, ClientID: client.ID}); err != nil {
		t.Fatalf("Originate: %v", err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return len(trunk.numbers()) == 1 }, "the client to ring")
	shutDown := make(chan struct{})
	go func() { defer close(shutDown); env.srv.calls.endAll(20 * time.Second) }()
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.byes.Load() == 1 }, "the manager's phone to be hung up")
	testenv.Eventually(t, 10*time.Second, closed(shutDown), "the shutdown to finish")
	if st, _ := env.srv.CallStatus("c-pause"); st.State != StateEnded {
		t.Errorf("status after shutdown %+v, want ended", st)
	}
	if n := env.logs.FilterMessage("calls still running at shutdown").Len(); n != 0 {
		t.Error("the shutdown gave up waiting for the call")
	}
}

// connectInbound connects a call from the trunk to the env's phone.
func (e *callEnv) connectInbound(t *testing.T, caller string) *trunkCall {
	t.Helper()
	call := e.call(t, newTrunk(t), caller)
	ackAnswer(t, "the call in", call.dlg, call.err, 10*time.Second)
	testenv.Eventually(t, 5*time.Second, func() bool {
		ids := liveCallIDs(e.srv)
		if len(ids) != 1 {
			return false
		}
		st, _ := e.srv.CallStatus(ids[0])
		return st.State == StateConnected
	}, "the call in to connect")
	return call
}

// Defect 5: once the node shuts down (endAll) it takes no new call: an
// INVITE from the trunk or a desk phone gets 503 (the trunk tries another
// node), a click-to-call is refused, nothing rings. Under -race no call
// joins the wait group the shutdown is waiting on.
func TestShutdownRefusesNewCalls(t *testing.T) {
	trunkUAS := startTrunkUAS(t, nil)
	env := startCallEnv(t, func(c *CallConfig) { c.Trunk = trunkUAS.addr })
	env.creds.add(env.manager.ID, "alice", alicePass, true)
	client := env.createClient(t, "Acme", "+79161118899")
	env.connectInbound(t, "+79161230088")

	shutDown := make(chan struct{})
	go func() { defer close(shutDown); env.srv.calls.endAll(10 * time.Second) }()
	testenv.Eventually(t, 15*time.Second, closed(shutDown), "the shutdown to end the call")

	var resErr *sipgo.ErrDialogResponse
	select {
	case err := <-env.call(t, newTrunk(t), "+79161230089").err:
		if !errors.As(err, &resErr) || resErr.Res.StatusCode != 503 || resErr.Res.GetHeader("Retry-After") == nil {
			t.Fatalf("a call in during shutdown: %v, want 503 with Retry-After", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a call in during shutdown got no answer")
	}
	select {
	case err := <-env.dial(t, client.Code).err:
		if !errors.As(err, &resErr) || resErr.Res.StatusCode != 503 {
			t.Fatalf("a desk call during shutdown: %v, want 503", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a desk call during shutdown got no answer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := env.srv.Originate(ctx, Originate{CallID: "c-late", ManagerID: env.manager.ID, ClientID: client.ID}); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("a click-to-call during shutdown: %v, want ErrShuttingDown", err)
	}
	if n := env.phone.invites.Load(); n != 1 {
		t.Errorf("the phone rang %d times, want once (the call before the shutdown)", n)
	}
	if n := len(trunkUAS.numbers()); n != 0 {
		t.Errorf("the trunk was dialled %d times during shutdown", n)
	}
}

// Defect 5: a keep-alive probe of a connected call is part of the call: a
// shutdown hangs the call up, stops its probe and waits for it.
func TestShutdownWaitsForProbes(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.KeepAlive = 50 * time.Millisecond })
	release := env.phone.holdOptions()
	t.Cleanup(func() { close(release) })
	env.connectInbound(t, "+79161230090")
	env.srv.calls.mu.Lock()
	var c *call
	for _, live := range env.srv.calls.calls {
		c = live
	}
	env.srv.calls.mu.Unlock()
	testenv.Eventually(t, 5*time.Second, func() bool { return env.phone.options.Load() > 0 && c.probing.Load() },
		"a keep-alive probe waiting for the phone")
	env.srv.calls.endAll(10 * time.Second)
	if c.probing.Load() {
		t.Fatal("a keep-alive probe still runs after the shutdown's wait")
	}
}

// ringOnlyPhone is a phone that answers INVITE 180 and ignores everything
// else, CANCEL included: a broken phone, or one whose answers are lost.
func ringOnlyPhone(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", phoneHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(buf[:n])
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || req.Method != sip.INVITE {
				continue
			}
			res := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
			res.To().Params.Add("tag", "ringonly")
			_, _ = conn.WriteTo([]byte(res.String()), from)
		}
	}()
	return conn.LocalAddr().String()
}

// Defect 5: a leg we CANCEL whose phone never sends a final response ends
// all the same (RFC 3261 9.1: given up 64*T1 after the CANCEL, shortened
// here); its watcher and its dialog entry no longer live forever.
func TestCancelledLegEndsWithoutFinalResponse(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.cancelGiveUp = time.Second })
	broken := ringOnlyPhone(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := env.regs.Put(ctx, Registration{ManagerID: env.manager.ID, Username: "alice", Contact: "<sip:alice@" + broken + ">",
		Source: broken, Transport: "UDP", ExpiresAt: time.Now().Add(time.Hour), CallID: "reg-2", CSeq: 1}); err != nil {
		t.Fatal(err)
	}
	call := env.connectInbound(t, "+79161230091")
	if err := call.dlg.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	legs := func() int {
		env.srv.calls.dialogs.mu.Lock()
		defer env.srv.calls.dialogs.mu.Unlock()
		return len(env.srv.calls.dialogs.legs)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return legs() == 0 }, "every leg's dialog to be gone")
	shutDown := make(chan struct{})
	go func() { defer close(shutDown); env.srv.calls.endAll(20 * time.Second) }()
	testenv.Eventually(t, 15*time.Second, closed(shutDown), "the shutdown to find nothing left running")
}

// A node without a trunk takes calls in only: a desk phone's dialled code
// is refused with 503 (once it proved who it is), and the node lives on.
func TestDeskPhoneWithoutTrunk(t *testing.T) {
	env := startCallEnv(t, nil) // no Trunk
	env.creds.add(env.manager.ID, "alice", alicePass, true)
	client := env.createClient(t, "Acme", "+79161112234")
	desk := env.dial(t, client.Code)
	var resErr *sipgo.ErrDialogResponse
	select {
	case err := <-desk.err:
		if !errors.As(err, &resErr) || resErr.Res.StatusCode != 503 {
			t.Fatalf("desk call without a trunk: %v, want 503", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the desk call got no answer")
	}
	// (A panic in a handler would have ended this test binary already.)
	if err := <-env.dial(t, client.Code).err; !errors.As(err, &resErr) || resErr.Res.StatusCode != 503 {
		t.Fatalf("a second desk call: %v, want 503 again", err)
	}
}
