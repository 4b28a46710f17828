package pbx

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap/zapcore"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// md5First puts the MD5 challenge first: SIPp 3.6 (Debian bookworm's
// sip-tester) answers only the first WWW-Authenticate and knows no SHA-256,
// like some legacy desk phones.
func md5First(c *Config) { c.DigestAlgorithms = []string{"MD5", "SHA-256"} }

// bothAlgorithms offers SHA-256 and then MD5, the opt-in for phones that choose.
func bothAlgorithms(c *Config) { c.DigestAlgorithms = []string{"SHA-256", "MD5"} }

func contactsOfManager(t *testing.T, e *testEnv, managerID string) []Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	regs, err := e.regs.Contacts(ctx, managerID)
	if err != nil {
		t.Fatalf("Contacts: %v", err)
	}
	return regs
}

// A phone (SIPp) registers with the right password: the binding is in the
// KV bucket for other nodes to read, and it disappears when it expires.
func TestSIPpRegisterExpires(t *testing.T) {
	testenv.Require(t, "sipp")
	e := startPBX(t, md5First)
	if err := e.sipp(t, aliceSIPp("register_auth.xml", 2*time.Second, alicePass)); err != nil {
		t.Fatal(err)
	}
	if keys := kvBindings(t, e.js, aliceID); len(keys) != 1 {
		t.Fatalf("KV keys = %v, want one binding", keys)
	}
	regs := contactsOfManager(t, e, aliceID)
	if len(regs) != 1 || regs[0].Username != "alice" || regs[0].Transport != "UDP" ||
		!strings.HasPrefix(regs[0].Source, phoneHost+":") || !strings.Contains(regs[0].Contact, phoneHost) {
		t.Fatalf("Contacts = %+v", regs)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return len(kvBindings(t, e.js, aliceID)) == 0
	}, "the binding to leave the bucket")
	if regs := contactsOfManager(t, e, aliceID); len(regs) != 0 {
		t.Fatalf("Contacts after expiry = %+v", regs)
	}
}

// The same over TCP.
func TestSIPpRegisterTCP(t *testing.T) {
	testenv.Require(t, "sipp")
	e := startPBX(t, md5First)
	run := aliceSIPp("register_auth.xml", time.Hour, alicePass)
	run.args = append(run.args, "-t", "t1")
	if err := e.sipp(t, run); err != nil {
		t.Fatal(err)
	}
	regs := contactsOfManager(t, e, aliceID)
	if len(regs) != 1 || regs[0].Transport != "TCP" {
		t.Fatalf("Contacts = %+v, want one TCP binding", regs)
	}
}

// A wrong password is challenged again; after AuthFailLimit failures the
// source gets 403 for everything, logged with source and username.
func TestSIPpWrongPasswordBlocksSource(t *testing.T) {
	testenv.Require(t, "sipp")
	e := startPBX(t, md5First) // AuthFailLimit 3
	for i := range 3 {
		if err := e.sipp(t, aliceSIPp("register_wrong_password.xml", time.Hour, "wrong")); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	if err := e.sipp(t, aliceSIPp("register_blocked.xml", time.Hour, alicePass)); err != nil {
		t.Fatal(err)
	}
	if regs := contactsOfManager(t, e, aliceID); len(regs) != 0 {
		t.Fatalf("Contacts = %+v, want none", regs)
	}
	st := e.srv.Stats()
	if st.AuthFailures != 3 || st.SourcesBlocked != 1 || st.BlockedRequests != 1 {
		t.Fatalf("Stats = %+v", st)
	}
	blocked := e.logs.FilterMessage("sip source blocked after failed authentication").All()
	if len(blocked) != 1 || blocked[0].Level != zapcore.WarnLevel ||
		blocked[0].ContextMap()["source"] != phoneHost || blocked[0].ContextMap()["username"] != "alice" {
		t.Fatalf("block log = %+v", blocked)
	}
}

// Expires: 0 removes the phone's binding; Contact: * removes all of them.
func TestSIPpUnregister(t *testing.T) {
	testenv.Require(t, "sipp")
	e := startPBX(t, md5First)

	one := aliceSIPp("register_auth.xml", time.Hour, alicePass)
	one.port = freeUDPPort(t, phoneHost)
	if err := e.sipp(t, one); err != nil {
		t.Fatal(err)
	}
	if n := len(contactsOfManager(t, e, aliceID)); n != 1 {
		t.Fatalf("%d bindings after REGISTER, want 1", n)
	}
	unreg := aliceSIPp("register_auth.xml", 0, alicePass)
	unreg.port = one.port // the same contact
	if err := e.sipp(t, unreg); err != nil {
		t.Fatal(err)
	}
	if keys := kvBindings(t, e.js, aliceID); len(keys) != 0 {
		t.Fatalf("KV keys after Expires: 0 = %v", keys)
	}

	for range 2 { // two phones of alice
		if err := e.sipp(t, aliceSIPp("register_auth.xml", time.Hour, alicePass)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(contactsOfManager(t, e, aliceID)); n != 2 {
		t.Fatalf("%d bindings after two phones registered, want 2", n)
	}
	if err := e.sipp(t, aliceSIPp("register_unregister.xml", 0, alicePass)); err != nil {
		t.Fatal(err)
	}
	if keys := kvBindings(t, e.js, aliceID); len(keys) != 0 {
		t.Fatalf("KV keys after Contact: * = %v", keys)
	}
}

// An unknown user and a dismissed one get the same 401 as a known user with
// a wrong password: same headers in the same order, same realm, both
// algorithms; only nonce, tags, Call-ID and branch differ.
func TestChallengeSameForUnknownUsers(t *testing.T) {
	var mu sync.Mutex
	var tries []string // what Config.DismissedTry heard
	e := startPBX(t, func(c *Config) {
		bothAlgorithms(c)
		c.DismissedTry = func(_ context.Context, method, managerID, source string) {
			mu.Lock()
			defer mu.Unlock()
			tries = append(tries, method+" "+managerID+" "+source)
		}
	})
	shape := func(user, password string, withCredentials bool) string {
		p := e.newPhone(t)
		req := p.request("REGISTER", "sip:"+testDomain, user, "Contact: <"+p.contact(user)+">")
		res := p.send(req)
		if withCredentials {
			auth := p.authorization(res, user, password, "SHA-256", "sip:"+testDomain)
			res = p.send(p.request("REGISTER", "sip:"+testDomain, user, "Contact: <"+p.contact(user)+">", auth))
		}
		if res.StatusCode != sip.StatusUnauthorized {
			t.Fatalf("%s: status %d, want 401", user, res.StatusCode)
		}
		return normalizeResponse(res, user, p)
	}
	for _, withCredentials := range []bool{false, true} {
		known := shape("alice", "wrong", withCredentials)
		for _, other := range []struct{ user, password string }{
			{"nobody", "whatever"}, // unknown
			{"bob", bobPass},       // dismissed, right password
		} {
			if got := shape(other.user, other.password, withCredentials); got != known {
				t.Errorf("credentials=%v: 401 for %s differs from a known user's:\n%s\nvs\n%s", withCredentials, other.user, got, known)
			}
		}
	}

	p := e.newPhone(t)
	res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice"))
	if res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
	var algs []string
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		v := h.Value()
		if !strings.Contains(v, `realm="`+testDomain+`"`) || !strings.Contains(v, `qop="auth"`) {
			t.Errorf("challenge %q lacks realm or qop", v)
		}
		algs = append(algs, regexp.MustCompile(`algorithm=([A-Z0-9-]+)`).FindStringSubmatch(v)[1])
	}
	if !slices.Equal(algs, []string{"SHA-256", "MD5"}) {
		t.Errorf("challenge algorithms = %v, want SHA-256 then MD5", algs)
	}
	// alice's and nobody's wrong credentials count; a first 401 does not, nor
	// does the right password of dismissed bob (his old phone retrying must
	// not block the office's address).
	if st := e.srv.Stats(); st.AuthFailures != 2 {
		t.Errorf("AuthFailures = %d, want 2", st.AuthFailures)
	}
	if n := len(e.logs.FilterMessage("sip registration of a dismissed manager refused").All()); n != 1 {
		t.Errorf("%d dismissed-manager log lines, want 1", n)
	}
	// The alerts hear of bob's right password (and of nothing else).
	mu.Lock()
	defer mu.Unlock()
	if len(tries) != 1 || !strings.HasPrefix(tries[0], "REGISTER "+bobID+" ") {
		t.Errorf("DismissedTry heard %q, want one REGISTER of bob", tries)
	}
}

// normalizeResponse blanks what differs per request: nonce, tags, Call-ID,
// Via branch and port, the user name and this phone's address.
func normalizeResponse(res *sip.Response, user string, p *phone) string {
	var b strings.Builder
	b.WriteString(res.StartLine() + "\n")
	for _, h := range res.Headers() {
		b.WriteString(h.Name() + ": " + h.Value() + "\n")
	}
	s := b.String()
	for _, r := range []struct{ re, with string }{
		{`nonce="[^"]*"`, `nonce="N"`},
		{`tag=[^;,\s]*`, `tag=T`},
		{`branch=[^;,\s]*`, `branch=B`},
		{`Call-ID: .*`, `Call-ID: C`},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	s = strings.ReplaceAll(s, p.local(), "PHONE")
	_, port, _ := strings.Cut(p.local(), ":")
	s = strings.ReplaceAll(s, "rport="+port, "rport=P")
	return strings.ReplaceAll(s, "sip:"+user+"@", "sip:USER@")
}

// sipgo's own client (icholy/digest underneath) registers with SHA-256,
// the first challenge, when both are offered; the raw phone does MD5 and
// SHA-256 explicitly. By default the 401 carries one MD5 challenge: phones
// such as baresip 1.0 give up on a 401 with two.
func TestRegisterDigestAlgorithms(t *testing.T) {
	if got := challengesOf(t, startPBX(t, nil)); len(got) != 1 || !strings.Contains(got[0], "algorithm=MD5") {
		t.Fatalf("default 401 challenges %q, want one MD5", got)
	}
	e := startPBX(t, bothAlgorithms)
	if got := challengesOf(t, e); len(got) != 2 {
		t.Fatalf("401 challenges %q, want SHA-256 and MD5", got)
	}

	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname(testDomain))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientConnectionAddr(phoneHost+":0"), sipgo.WithClientHostname(phoneHost))
	if err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: testDomain})
	req.SetDestination(e.addr)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}}
	from.Params = sip.NewParams()
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(sip.NewHeader("Contact", "<sip:alice@"+phoneHost+":5099>"))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	res, err := client.Do(ctx, req)
	if err != nil || res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("first REGISTER: %v %v", res, err)
	}
	res, err = client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "alice", Password: alicePass})
	if err != nil || res.StatusCode != sip.StatusOK {
		t.Fatalf("REGISTER with digest: %v %v", res, err)
	}
	if auth := req.GetHeader("Authorization").Value(); !strings.Contains(auth, "algorithm=SHA-256") {
		t.Fatalf("sipgo answered %q, want SHA-256", auth)
	}

	for _, alg := range []string{"MD5", "SHA-256"} {
		p := e.newPhone(t)
		res := p.register("alice", alicePass, alg, "Contact: <"+p.contact("alice")+">")
		if res.StatusCode != sip.StatusOK {
			t.Fatalf("%s: status %d", alg, res.StatusCode)
		}
	}
	if n := len(contactsOfManager(t, e, aliceID)); n != 3 {
		t.Fatalf("%d bindings, want 3", n)
	}
}

// Several contacts per manager: each is a binding with its own expiry, the
// 200 lists them all, a REGISTER without Contact just lists them, and
// RemoveManager drops them all at once.
func TestSeveralContactsAndRemoveManager(t *testing.T) {
	e := startPBX(t, nil)
	p := e.newPhone(t)
	res := p.register("alice", alicePass, "MD5",
		"Contact: <"+p.contact("desk")+">;expires=600, <"+p.contact("soft")+">",
		"Contact: <"+p.contact("mobile")+">;expires=99999",
		"Expires: 300")
	if res.StatusCode != sip.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	want := map[string]string{"desk": "600", "soft": "300", "mobile": "3600"} // max 3600
	got := contactsOf(res)
	if len(got) != 3 {
		t.Fatalf("200 lists %v, want 3 contacts", got)
	}
	for _, c := range got {
		m := regexp.MustCompile(`^<sip:(\w+)@[^>]+>;expires=(\d+)$`).FindStringSubmatch(c)
		if m == nil || want[m[1]] != m[2] {
			t.Errorf("contact %q, want expires %v", c, want)
		}
	}
	if keys := kvBindings(t, e.js, aliceID); len(keys) != 3 {
		t.Fatalf("KV keys = %v", keys)
	}

	other := e.newPhone(t)
	res = other.register("alice", alicePass, "MD5") // no Contact: a query
	if res.StatusCode != sip.StatusOK || len(contactsOf(res)) != 3 {
		t.Fatalf("query: %d %v", res.StatusCode, contactsOf(res))
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := e.regs.RemoveManager(ctx, aliceID); err != nil {
		t.Fatal(err)
	}
	if keys := kvBindings(t, e.js, aliceID); len(keys) != 0 {
		t.Fatalf("KV keys after RemoveManager = %v", keys)
	}
	if regs := contactsOfManager(t, e, aliceID); len(regs) != 0 {
		t.Fatalf("Contacts after RemoveManager = %v", regs)
	}
}

// Expiry below the minimum: 423 with Min-Expires, nothing bound.
func TestIntervalTooBrief(t *testing.T) {
	e := startPBX(t, func(c *Config) { c.RegisterMinExpires = time.Minute })
	p := e.newPhone(t)
	res := p.register("alice", alicePass, "MD5", "Contact: <"+p.contact("alice")+">;expires=10")
	if res.StatusCode != sip.StatusIntervalToBrief {
		t.Fatalf("status %d, want 423", res.StatusCode)
	}
	if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "60" {
		t.Fatalf("Min-Expires = %v, want 60", h)
	}
	if regs := contactsOfManager(t, e, aliceID); len(regs) != 0 {
		t.Fatalf("Contacts = %v, want none", regs)
	}
}

// A nonce past NonceTTL with the right credentials gets stale=true and is
// not a failure; a replayed nonce count is refused.
func TestNonceStaleAndReplay(t *testing.T) {
	e := startPBX(t, func(c *Config) { c.NonceTTL = time.Second })
	p := e.newPhone(t)
	contact := "Contact: <" + p.contact("alice") + ">"
	res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice", contact))
	time.Sleep(1100 * time.Millisecond) // the nonce's expiry is what is tested: wait out its 1 s TTL
	auth := p.authorization(res, "alice", alicePass, "MD5", "sip:"+testDomain)
	res = p.send(p.request("REGISTER", "sip:"+testDomain, "alice", contact, auth))
	if res.StatusCode != sip.StatusUnauthorized || !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "stale=true") {
		t.Fatalf("expired nonce: %d %v, want 401 stale=true", res.StatusCode, res.GetHeader("WWW-Authenticate"))
	}
	if st := e.srv.Stats(); st.AuthFailures != 0 {
		t.Fatalf("a stale nonce counted as failure: %+v", st)
	}

	auth = p.authorization(res, "alice", alicePass, "MD5", "sip:"+testDomain)
	if res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice", contact, auth)); res.StatusCode != sip.StatusOK {
		t.Fatalf("fresh nonce: %d", res.StatusCode)
	}
	if res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice", contact, auth)); res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("replayed nonce count: %d, want 401", res.StatusCode)
	}
}

// Broken requests get a 4xx (or, if sipgo cannot even parse them, nothing),
// and the server keeps serving.
func TestMalformedRequests(t *testing.T) {
	e := startPBX(t, nil)
	for _, tc := range []struct {
		name   string
		build  func(p *phone) string
		status int
	}{
		{"no To user", func(p *phone) string {
			return strings.Replace(p.request("REGISTER", "sip:"+testDomain, "alice"), "To: <sip:alice@", "To: <sip:", 1)
		}, 400},
		{"Contact not a URI", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: garbage")
		}, 400},
		{"Contact unterminated", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: <sip:alice@1.2.3.4")
		}, 400},
		{"Contact tel URI", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: <tel:+12025550100>")
		}, 400},
		{"Contact expires not a number", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: <sip:a@1.2.3.4>;expires=soon")
		}, 400},
		{"Expires not a number", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: <sip:a@1.2.3.4>", "Expires: -5")
		}, 400},
		{"star with expires", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: *", "Expires: 60")
		}, 400},
		{"star with another contact", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Contact: *, <sip:a@1.2.3.4>", "Expires: 0")
		}, 400},
		{"Authorization not digest", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Authorization: Basic YWxpY2U6eA==")
		}, 400},
		{"another domain", func(p *phone) string {
			return p.request("REGISTER", "sip:other.test", "alice")
		}, 404},
		{"required extension", func(p *phone) string {
			return p.request("REGISTER", "sip:"+testDomain, "alice", "Require: gruu")
		}, 420},
		{"host with port is our domain", func(p *phone) string {
			return p.request("REGISTER", "sip:"+strings.ToUpper(testDomain)+":5060", "alice")
		}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.newPhone(t)
			if res := p.send(tc.build(p)); res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
		})
	}

	t.Run("digest uri not the Request-URI", func(t *testing.T) {
		p := e.newPhone(t)
		res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice"))
		auth := p.authorization(res, "alice", alicePass, "MD5", "sip:elsewhere.test")
		if res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice", auth)); res.StatusCode != 400 {
			t.Fatalf("status %d, want 400", res.StatusCode)
		}
	})
	t.Run("other user's credentials", func(t *testing.T) {
		p := e.newPhone(t)
		res := p.send(p.request("REGISTER", "sip:"+testDomain, "bob"))
		auth := p.authorization(res, "alice", alicePass, "MD5", "sip:"+testDomain)
		if res := p.send(p.request("REGISTER", "sip:"+testDomain, "bob", auth)); res.StatusCode != 403 {
			t.Fatalf("status %d, want 403", res.StatusCode)
		}
	})

	t.Run("unparseable bytes", func(t *testing.T) {
		p := e.newPhone(t)
		for _, raw := range []string{
			"hello\r\n\r\n",
			"REGISTER sip:" + testDomain + " SIP/2.0\r\nTo: garbage\r\n\r\n",
			"\x00\xff\xfe REGISTER",
			strings.Repeat("A", 65000),
		} {
			if res := p.exchange(raw, 200*time.Millisecond); res != nil {
				t.Logf("answer to garbage: %d", res.StatusCode)
			}
		}
		if res := p.send(p.request("OPTIONS", "sip:"+testDomain, "alice")); res.StatusCode != 200 {
			t.Fatalf("OPTIONS after garbage: %d", res.StatusCode)
		}
	})
}

// OPTIONS gets 200 with Allow and Accept; other methods 405, 481 or 501.
func TestOtherMethods(t *testing.T) {
	e := startPBX(t, nil)
	p := e.newPhone(t)
	res := p.send(p.request("OPTIONS", "sip:"+testDomain, "alice"))
	if res.StatusCode != 200 || res.GetHeader("Allow") == nil || res.GetHeader("Accept") == nil {
		t.Fatalf("OPTIONS: %s", res)
	}
	if allow := res.GetHeader("Allow").Value(); !strings.Contains(allow, "REGISTER") || !strings.Contains(allow, "OPTIONS") {
		t.Fatalf("Allow: %s", allow)
	}
	for method, status := range map[string]int{"INVITE": 405, "MESSAGE": 405, "BYE": 481, "FROBNICATE": 501} {
		if res := p.send(p.request(method, "sip:"+testDomain, "alice")); res.StatusCode != status {
			t.Errorf("%s: %d, want %d", method, res.StatusCode, status)
		}
	}
}

// A REGISTER that overtook a later one in the same Call-ID must not undo it.
func TestOutOfOrderRegister(t *testing.T) {
	e := startPBX(t, nil)
	p := e.newPhone(t)
	contact := "Contact: <" + p.contact("alice") + ">"
	res := p.send(p.request("REGISTER", "sip:"+testDomain, "alice", contact))
	auth := p.authorization(res, "alice", alicePass, "MD5", "sip:"+testDomain)
	late := p.request("REGISTER", "sip:"+testDomain, "alice", contact, "Expires: 0", auth) // CSeq 2, held back
	res = p.register("alice", alicePass, "MD5", contact)                                   // CSeq 3, 4
	if res.StatusCode != sip.StatusOK {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	if res := p.send(late); res.StatusCode != sip.StatusInternalServerError {
		t.Fatalf("stale REGISTER: %d, want 500", res.StatusCode)
	}
	if n := len(contactsOfManager(t, e, aliceID)); n != 1 {
		t.Fatalf("%d bindings, want the newer one", n)
	}
}

// Whatever bytes sipgo can parse into a REGISTER, parseRegister answers with
// a request or an error, never a panic.
func FuzzParseRegister(f *testing.F) {
	base := "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:alice@pbx.test>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n"
	for _, extra := range []string{
		"Contact: <sip:alice@127.0.0.3:5060>;expires=60\r\nExpires: 30\r\n",
		"Contact: *\r\nExpires: 0\r\n",
		"Contact: \"A, B\" <sip:a@h>, <sip:b@h;transport=tcp>;expires=0\r\n",
		"m: sip:a@h;expires=abc\r\nRequire: path\r\n",
		"Contact: <tel:+1>\r\nExpires: 99999999999999\r\n",
	} {
		f.Add([]byte(base + extra + "Content-Length: 0\r\n\r\n"))
	}
	cfg, err := Config{Domain: testDomain}.withDefaults()
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{cfg: cfg, hosts: []string{testDomain}}
	parser := newSIPParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parser.ParseSIP(data)
		if err != nil {
			return
		}
		if req, ok := msg.(*sip.Request); ok {
			_, _ = s.parseRegister(req)
		}
	})
}

// challengesOf sends an unauthenticated REGISTER and returns the 401's
// WWW-Authenticate values.
func challengesOf(t *testing.T, e *testEnv) []string {
	t.Helper()
	res := e.newPhone(t).register("alice", "", "", "Contact: <sip:alice@"+phoneHost+":5099>")
	if res.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("REGISTER without credentials: status %d", res.StatusCode)
	}
	var got []string
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		got = append(got, h.Value())
	}
	return got
}
