package pbx

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Call-control tests inside the package, run under -race: the PBX on
// 127.0.0.2 with a real Postgres (testenv) and NATS, a phone written with
// sipgo on 127.0.0.3, and a trunk on 127.0.0.4 (a sipgo UAC for calls in, a
// sipgo UAS for calls out). Only the event sink is the unit's edge.

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	trunkHost = "127.0.0.4"
	company   = "+74950000000"
)

// ended returns the ended event of every call so far, by call id.
func (m *readyEvents) ended() map[string]events.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]events.Event{}
	for _, e := range m.evs {
		if e.Kind == events.Ended {
			out[e.CallID] = e
		}
	}
	return out
}

// callEnv is a PBX with call control, its store, one active manager and
// the manager's phone.
type callEnv struct {
	*testEnv
	store   *storage.Store
	keys    *masking.Keyring
	events  *readyEvents
	manager storage.Manager
	phone   *testPhone
}

// startCallEnv runs a PBX with call control; tweak adjusts its call config.
func startCallEnv(t *testing.T, tweak func(*CallConfig)) *callEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	store := openStore(t, ctx, testenv.Database(t))
	keys, err := masking.NewKeyring(randomKey(t), randomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ev := &readyEvents{}
	env := startPBXBefore(t, func(s *Server) {
		ports, err := media.NewPortPool(pbxHost, 42000, 42999)
		if err != nil {
			t.Fatal(err)
		}
		numbers := masking.NewNormalizer("RU")
		cfg := CallConfig{
			CompanyNumber: company,
			TrunkAllow:    []netip.Prefix{netip.MustParsePrefix(trunkHost + "/32")},
			RingTimeout:   5 * time.Second,
			MediaTimeout:  time.Minute,
			Ports:         ports,
			Router:        &Router{Store: store, Keys: keys, Numbers: numbers, Regs: s.regs},
			Events:        ev,
			Numbers:       numbers,
		}
		if tweak != nil {
			tweak(&cfg)
		}
		if err := s.EnableCalls(cfg); err != nil {
			t.Fatal(err)
		}
	})
	m, err := store.CreateManager(ctx, storage.NewManager{Name: "Alice", SIPUsername: "alice",
		HA1MD5: "x", HA1SHA256: "x", Team: "sales", Role: storage.RoleManager}, "test")
	if err != nil {
		t.Fatalf("create manager: %v", err)
	}
	phone := startTestPhone(t)
	if err := env.regs.Put(ctx, Registration{ManagerID: m.ID, Username: "alice", Contact: phone.contact(),
		Source: phone.addr, Transport: "UDP", ExpiresAt: time.Now().Add(time.Hour), CallID: "reg-1", CSeq: 1}); err != nil {
		t.Fatalf("register phone: %v", err)
	}
	return &callEnv{testEnv: env, store: store, keys: keys, events: ev, manager: m, phone: phone}
}

func randomKey(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// testPhone is a manager's phone: it answers every INVITE with 200 and its
// SDP once hold lets it (at once when nil), and 200s BYEs and OPTIONS (an
// OPTIONS once optionsHold lets it).
type testPhone struct {
	addr     string
	invites  atomic.Int32
	byes     atomic.Int32
	options  atomic.Int32
	answered chan answeredInvite

	mu          sync.Mutex
	from        []string      // the From of every INVITE it received
	hold        chan struct{} // closed or nil: answer INVITEs (holdAnswers)
	optionsHold chan struct{} // closed or nil: answer OPTIONS (holdOptions)
}

// answeredInvite is an INVITE a test peer answered 200, and its answer:
// what the peer needs to send requests in the dialog.
type answeredInvite struct {
	invite *sip.Request
	res    *sip.Response
}

func startTestPhone(t *testing.T) *testPhone {
	t.Helper()
	p := &testPhone{addr: fmt.Sprintf("%s:%d", phoneHost, freeUDPPort(t, phoneHost)), answered: make(chan answeredInvite, 16)}
	serveSIP(t, p.addr, func(req *sip.Request, tx sip.ServerTransaction) {
		p.invites.Add(1)
		p.mu.Lock()
		p.from = append(p.from, req.From().Value())
		hold := p.hold
		p.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-tx.Done():
				return
			}
		}
		sdp := fmt.Sprintf("v=0\r\no=phone 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
			phoneHost, phoneHost, 40002)
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(sdp))
		res.To().Params.Add("tag", sip.GenerateTagN(8))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: phoneHost, Port: p.port()}})
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
		if tx.Respond(res) == nil {
			select {
			case p.answered <- answeredInvite{req, res}:
			default:
			}
		}
	}, func(req *sip.Request) {
		switch req.Method {
		case sip.BYE:
			p.byes.Add(1)
		case sip.OPTIONS:
			p.options.Add(1)
			p.mu.Lock()
			hold := p.optionsHold
			p.mu.Unlock()
			if hold != nil {
				<-hold
			}
		}
	})
	return p
}

// serveSIP runs a sipgo server on addr (UDP) for the test: ACKs are taken,
// BYE and OPTIONS answered 200 once seen (if set) has seen them, INVITEs go
// to onInvite.
func serveSIP(t *testing.T, addr string, onInvite sipgo.RequestHandler, seen func(*sip.Request)) {
	t.Helper()
	host, _, _ := net.SplitHostPort(addr)
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname(host))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		if seen != nil {
			seen(req)
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
	srv.OnInvite(onInvite)
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(ok)
	srv.OnOptions(ok)
	listenUntilCleanup(t, srv, addr)
}

// listenUntilCleanup serves srv on addr (UDP) until the test ends; the
// socket is bound before it returns.
func listenUntilCleanup(t *testing.T, srv *sipgo.Server, addr string) {
	t.Helper()
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	go func() { _ = srv.ServeUDP(conn) }()
}

// holdAnswers makes the phone ring without answering until the returned
// channel is closed; the phone's handlers read it under mu.
func (p *testPhone) holdAnswers() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = make(chan struct{})
	return p.hold
}

// holdOptions keeps the phone from answering OPTIONS until the returned
// channel is closed.
func (p *testPhone) holdOptions() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.optionsHold = make(chan struct{})
	return p.optionsHold
}

func (p *testPhone) port() int {
	_, port, _ := net.SplitHostPort(p.addr)
	var n int
	fmt.Sscan(port, &n)
	return n
}

func (p *testPhone) contact() string { return fmt.Sprintf("<sip:alice@%s>", p.addr) }

func (p *testPhone) froms() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.from...)
}

// trunkCall is a call the trunk sends to the company number.
type trunkCall struct {
	dlg *sipgo.DialogClientSession
	err chan error // the outcome of WaitAnswer
}

// newTrunk is the trunk's UAC on 127.0.0.4 (its own port per call leg;
// the PBX answers where the request came from). It answers the PBX's BYE
// and OPTIONS in its dialogs 200.
func newTrunk(t *testing.T) *sipgo.DialogClientCache {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname(trunkHost))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(trunkHost), sipgo.WithClientConnectionAddr(trunkHost+":0"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
	srv.OnBye(ok)
	srv.OnOptions(ok)
	return sipgo.NewDialogClientCache(client, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "trunk", Host: trunkHost}})
}

// call sends an INVITE from caller to the company number; the answer (or
// failure) arrives on the returned call's err.
func (e *callEnv) call(t *testing.T, dc *sipgo.DialogClientCache, caller string) *trunkCall {
	t.Helper()
	host, port, _ := net.SplitHostPort(e.addr)
	var p int
	fmt.Sscan(port, &p)
	sdp := fmt.Sprintf("v=0\r\no=trunk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", trunkHost, trunkHost)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: caller, Host: trunkHost}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	ct := sip.ContentTypeHeader("application/sdp")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	dlg, err := dc.Invite(ctx, sip.Uri{Scheme: "sip", User: company, Host: host, Port: p}, []byte(sdp), from, &ct)
	if err != nil {
		t.Fatalf("INVITE: %v", err)
	}
	tc := &trunkCall{dlg: dlg, err: make(chan error, 1)}
	go func() { tc.err <- dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}) }()
	return tc
}

// An overloaded node answers 503 with Retry-After at once, before it takes
// anything, and the call it already admitted still connects; the refused
// call has its CDR (offered + ended "overload") and is counted.
func TestInboundShedsOverload(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.MaxSetups = 1 })
	hold := env.phone.holdAnswers()
	trunk := newTrunk(t)

	first := env.call(t, trunk, "+79161230001")
	testenv.Eventually(t, 10*time.Second, func() bool { return env.phone.invites.Load() == 1 }, "the first call to ring the phone")

	start := time.Now()
	second := env.call(t, trunk, "+79161230002")
	var resErr *sipgo.ErrDialogResponse
	select {
	case err := <-second.err:
		if !errors.As(err, &resErr) || resErr.Res.StatusCode != 503 {
			t.Fatalf("second call: %v, want 503", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second call got no answer: overload must be answered, not timed out")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("503 took %v; shedding must be immediate", d)
	}
	if h := resErr.Res.GetHeader("Retry-After"); h == nil || h.Value() == "" {
		t.Error("503 without Retry-After")
	}
	if n := env.phone.invites.Load(); n != 1 {
		t.Errorf("the phone got %d INVITEs; a shed call must ring nobody", n)
	}
	if st := env.srv.AdmissionStats(); st.Shed != 1 {
		t.Errorf("shed calls counted %d, want 1", st.Shed)
	}

	close(hold)
	select {
	case err := <-first.err:
		if err != nil {
			t.Fatalf("the admitted call did not connect: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the admitted call got no answer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.dlg.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(env.events.ended()) == 2 }, "both calls' ended events")
	var disps []string
	for _, e := range env.events.ended() {
		disps = append(disps, e.Disposition)
	}
	if !(strings.Contains(strings.Join(disps, ","), DispOverload) && strings.Contains(strings.Join(disps, ","), DispAnswered)) {
		t.Errorf("dispositions %v, want one %s and one %s", disps, DispOverload, DispAnswered)
	}
	if st := env.srv.AdmissionStats(); st.CallsInSetup != 0 {
		t.Errorf("%d calls still counted in setup after both ended", st.CallsInSetup)
	}
}

// Many calls at once under -race: each is admitted or shed, none hangs, the
// setup count returns to zero and every call has its ended event.
func TestInboundConcurrentAdmission(t *testing.T) {
	env := startCallEnv(t, func(c *CallConfig) { c.MaxSetups = 4 })
	trunk := newTrunk(t)
	const n = 20
	calls := make([]*trunkCall, n)
	for i := range calls {
		calls[i] = env.call(t, trunk, fmt.Sprintf("+7916123%04d", i))
	}
	answered, shed := 0, 0
	for i, c := range calls {
		select {
		case err := <-c.err:
			var resErr *sipgo.ErrDialogResponse
			switch {
			case err == nil:
				answered++
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = c.dlg.Ack(ctx)
				_ = c.dlg.Bye(ctx)
				cancel()
			case errors.As(err, &resErr) && resErr.Res.StatusCode == 503:
				shed++
			default:
				t.Errorf("call %d: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("call %d got no answer", i)
		}
	}
	if answered == 0 {
		t.Fatal("no call connected")
	}
	if got := int(env.srv.AdmissionStats().Shed); got != shed {
		t.Errorf("shed counter %d, trunk saw %d 503s", got, shed)
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return len(env.events.ended()) == n }, "every call's ended event")
	testenv.Eventually(t, 5*time.Second, func() bool { return env.srv.AdmissionStats().CallsInSetup == 0 }, "no call left in setup")
}

func TestFailureResponse(t *testing.T) {
	for _, tc := range []struct {
		disp  string
		code  int
		retry bool
		sent  bool
	}{
		{DispBusy, 486, false, true},
		{DispRejected, 603, false, true},
		{DispMissed, 480, false, true},
		{DispNoAnswer, 480, false, true},
		{DispFailed, 503, false, true},
		{DispOverload, 503, true, true},
		{DispCancelled, 0, false, false},
	} {
		t.Run(tc.disp, func(t *testing.T) {
			code, _, hdrs, ok := failureResponse(tc.disp)
			if code != tc.code || ok != tc.sent || (len(hdrs) > 0) != tc.retry {
				t.Errorf("failureResponse(%s) = %d %v %v", tc.disp, code, hdrs, ok)
			}
		})
	}
}

func TestDispositionOf(t *testing.T) {
	for status, want := range map[int]string{486: DispBusy, 600: DispBusy, 408: DispNoAnswer, 480: DispNoAnswer,
		487: DispNoAnswer, 403: DispRejected, 603: DispRejected, 404: DispFailed, 500: DispFailed, 503: DispFailed} {
		if got := dispositionOf(status); got != want {
			t.Errorf("dispositionOf(%d) = %s, want %s", status, got, want)
		}
	}
}

// The outbound limits hold under concurrent starts: one call at a time per
// manager, whoever wins the race.
func TestOutboundLimitsConcurrent(t *testing.T) {
	l := newOutboundLimits(100)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.begin("m1", time.Now()) == nil {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent starts won, want 1", wins.Load())
	}
	l.end("m1")
	if err := l.begin("m1", time.Now()); err != nil {
		t.Fatalf("after end: %v", err)
	}
}

// trunkUAS is the trunk's side of calls out: it answers an INVITE by its
// Request-URI user (a number) with the status in answers (200 if absent;
// 180: rings until the PBX cancels) and keeps the order of the numbers it
// was asked for.
type trunkUAS struct {
	addr     string
	answers  map[string]int
	answered chan answeredInvite // the INVITEs it answered 200

	mu      sync.Mutex
	dialled []string
	hosts   []string // each INVITE's Request-URI host
	headers []string // every header of every INVITE, as received
}

func startTrunkUAS(t *testing.T, answers map[string]int) *trunkUAS {
	t.Helper()
	return startTrunkUASOn(t, trunkHost, answers, nil)
}

// startTrunkUASOn is startTrunkUAS on host; seen, if set, sees each BYE
// and OPTIONS before it is answered (and may hold it).
func startTrunkUASOn(t *testing.T, host string, answers map[string]int, seen func(*sip.Request)) *trunkUAS {
	t.Helper()
	tr := &trunkUAS{addr: fmt.Sprintf("%s:%d", host, freeUDPPort(t, host)), answers: answers,
		answered: make(chan answeredInvite, 16)}
	serveSIP(t, tr.addr, func(req *sip.Request, tx sip.ServerTransaction) {
		tr.mu.Lock()
		tr.dialled = append(tr.dialled, req.Recipient.User)
		tr.hosts = append(tr.hosts, req.Recipient.Host)
		for _, h := range req.Headers() {
			tr.headers = append(tr.headers, h.Name()+": "+h.Value())
		}
		tr.mu.Unlock()
		code := 200
		if c, ok := tr.answers[req.Recipient.User]; ok {
			code = c
		}
		var body []byte
		if code == 200 {
			body = []byte(fmt.Sprintf("v=0\r\no=trunk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", trunkHost, trunkHost))
		}
		res := sip.NewResponseFromRequest(req, code, "", body)
		res.To().Params.Add("tag", sip.GenerateTagN(8))
		if code == 200 {
			host, port, _ := net.SplitHostPort(tr.addr)
			var p int
			fmt.Sscan(port, &p)
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: p}})
			ct := sip.ContentTypeHeader("application/sdp")
			res.AppendHeader(&ct)
		}
		if err := tx.Respond(res); err != nil {
			return
		}
		switch {
		case code == 200:
			select {
			case tr.answered <- answeredInvite{req, res}:
			default:
			}
		case code < 200:
			<-tx.Done() // rings until cancelled
		}
	}, seen)
	return tr
}

func (tr *trunkUAS) numbers() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.dialled...)
}

// sealPhone seals a number as the API stores it.
func sealPhone(t *testing.T, keys *masking.Keyring, e164 string) masking.SealedPhone {
	t.Helper()
	p, err := keys.Seal(e164)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Click-to-call names the client by id only; the PBX opens his numbers at
// dial time and tries them in order while a number itself fails (404 here),
// and the manager's phone sees the client's code and name, no number.
func TestOriginateTriesNumbersInOrder(t *testing.T) {
	const first, second = "+79161110001", "+79161110002"
	trunk := startTrunkUAS(t, map[string]int{first: 404})
	env := startCallEnv(t, func(c *CallConfig) { c.Trunk = trunk.addr })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, err := env.store.CreateClient(ctx, storage.NewClient{Name: "Acme", Segment: "vip", ManagerID: env.manager.ID,
		Phones:  []masking.SealedPhone{sealPhone(t, env.keys, first), sealPhone(t, env.keys, second)},
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	other, err := env.store.CreateManager(ctx, storage.NewManager{Name: "Oleg", SIPUsername: "oleg",
		HA1MD5: "x", HA1SHA256: "x", Team: "sales", Role: storage.RoleManager}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.srv.Originate(ctx, Originate{CallID: "c-other", ManagerID: other.ID, ClientID: client.ID}); !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("another manager's click-to-call: %v, want ErrNotAssigned", err)
	}
	if len(trunk.numbers()) != 0 || env.phone.invites.Load() != 0 {
		t.Fatal("a refused click-to-call reached the trunk or a phone")
	}

	if err := env.srv.Originate(ctx, Originate{CallID: "c-1", ManagerID: env.manager.ID, ClientID: client.ID}); err != nil {
		t.Fatalf("Originate: %v", err)
	}
	// The API answers with the state read right after Originate returns.
	if st, ok := env.srv.CallStatus("c-1"); !ok || st.State == "" {
		t.Fatalf("status right after Originate: %+v %v, want a state", st, ok)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		st, _ := env.srv.CallStatus("c-1")
		return st.State == StateConnected
	}, "the call to connect")
	if got := trunk.numbers(); len(got) != 2 || got[0] != first || got[1] != second {
		t.Fatalf("the trunk was asked for %v, want [%s %s] in that order", got, first, second)
	}
	froms := env.phone.froms()
	if len(froms) != 1 || !strings.Contains(froms[0], client.Code) || !strings.Contains(froms[0], "Acme") {
		t.Fatalf("the manager's phone saw From %v, want the client's name and code", froms)
	}
	for _, f := range froms {
		if strings.Contains(f, "9161110") {
			t.Fatalf("the manager's phone saw a client's number: %s", f)
		}
	}
	env.srv.calls.endAll(10 * time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, _ := env.srv.CallStatus("c-1")
		return st.State == StateEnded
	}, "the call's end")
	if st, _ := env.srv.CallStatus("c-1"); st.Disposition != DispAnswered {
		t.Errorf("disposition %s, want %s", st.Disposition, DispAnswered)
	}
}

// Slow setups shed new calls once more than a handful are in setup; fast
// ones don't, up to the hard limit; every slot given back empties it.
func TestAdmissionSlowSetups(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ewma     time.Duration
		limit    int
		inFlight int
		wantShed bool
	}{
		{"fast setups, many in setup", 50 * time.Millisecond, 1000, 500, false},
		{"slow setups, few in setup", 2 * time.Second, 1000, slowSetupFloor - 1, false},
		{"slow setups, many in setup", 2 * time.Second, 1000, slowSetupFloor, true},
		{"fast setups at the hard limit", 50 * time.Millisecond, 100, 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAdmission(tc.limit)
			a.setupEWMA.Store(int64(tc.ewma))
			var slots []*setupSlot
			for range tc.inFlight {
				slots = append(slots, a.enter())
			}
			// The others were admitted while setups were fast.
			for _, s := range slots {
				s.shed = false
			}
			a.shed.Store(0)
			s := a.enter()
			if s.shed != tc.wantShed {
				t.Fatalf("shed = %v, want %v", s.shed, tc.wantShed)
			}
			for _, o := range append(slots, s) {
				o.leave()
				o.leave() // once only
			}
			if n := a.inFlight.Load(); n != 0 {
				t.Fatalf("%d left in setup", n)
			}
		})
	}
}

// A phone behind NAT registers a Contact nobody can reach (its private
// address): its calls go to where its REGISTER came from, with that Contact
// as the Request-URI, and connect.
func TestInboundReachesPhoneBehindNAT(t *testing.T) {
	env := startCallEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := env.regs.RemoveManager(ctx, env.manager.ID); err != nil {
		t.Fatal(err)
	}
	const private = "192.0.2.77:5060" // TEST-NET-1: nothing answers there
	if err := env.regs.Put(ctx, Registration{ManagerID: env.manager.ID, Username: "alice", Contact: "<sip:alice@" + private + ">",
		Source: env.phone.addr, Transport: "UDP", ExpiresAt: time.Now().Add(time.Hour), CallID: "reg-nat", CSeq: 1}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		regs, err := env.regs.Contacts(ctx, env.manager.ID)
		return err == nil && len(regs) == 1 && strings.Contains(regs[0].Contact, private)
	}, "only the NATed binding")

	call := env.call(t, newTrunk(t), "+79161230077")
	select {
	case err := <-call.err:
		if err != nil {
			t.Fatalf("the call to a phone behind NAT did not connect: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call to a phone behind NAT got no answer")
	}
	inv := (<-env.phone.answered).invite
	if got := inv.Recipient.Host + ":" + fmt.Sprint(inv.Recipient.Port); got != private {
		t.Errorf("Request-URI %s, want the registered Contact %s", inv.Recipient.String(), private)
	}
	if err := call.dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := call.dlg.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(env.events.ended()) == 1 }, "the call's ended event")
}

// A softphone that roams to another network re-INVITEs with its new media
// address: the relay sends there from then on, and a hold offer with
// c=0.0.0.0 moves nothing.
func TestReInviteMovesMedia(t *testing.T) {
	env := startCallEnv(t, nil)
	call := env.call(t, newTrunk(t), "+79161230078")
	select {
	case err := <-call.err:
		if err != nil {
			t.Fatalf("the call did not connect: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call got no answer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := call.dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// The call's ports are its owner's; reading its status as connected
	// (under the status lock, set after the ports) orders the reads after.
	var id string
	testenv.Eventually(t, 5*time.Second, func() bool {
		st := liveCall(t, env.srv)
		id = st.ID
		return st.State == StateConnected
	}, "the call connected")
	env.srv.calls.mu.Lock()
	live := env.srv.calls.calls[id]
	env.srv.calls.mu.Unlock()
	phoneSide := func() netip.AddrPort { return live.ports[media.SideB].Remote() }
	if got := phoneSide(); got.Port() != 40002 {
		t.Fatalf("the phone's first media address %s, want port 40002", got)
	}

	d := newUASDialog(t, phoneHost, <-env.phone.answered)
	offer := func(ip string, port int) []byte {
		return fmt.Appendf(nil, "v=0\r\no=phone 1 2 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", ip, ip, port)
	}
	if res, err := d.do(sip.INVITE, offer("127.0.0.6", 40020)); err != nil || res.StatusCode != 200 {
		t.Fatalf("re-INVITE with a new address: %v %v", res, err)
	}
	if got := phoneSide(); got != netip.MustParseAddrPort("127.0.0.6:40020") {
		t.Fatalf("the relay sends the phone's media to %s, want its new address", got)
	}
	if res, err := d.do(sip.INVITE, offer("0.0.0.0", 40020)); err != nil || res.StatusCode != 200 {
		t.Fatalf("hold re-INVITE: %v %v", res, err)
	}
	if got := phoneSide(); got != netip.MustParseAddrPort("127.0.0.6:40020") {
		t.Fatalf("a c=0.0.0.0 hold moved the media to %s", got)
	}
	if err := call.dlg.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}
