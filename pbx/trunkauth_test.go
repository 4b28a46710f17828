package pbx

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

func challengeResponse(status int, challenges ...string) *sip.Response {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+79161234567", Host: "192.0.2.10", Port: 5060})
	res := sip.NewResponseFromRequest(req, status, "Challenge", nil)
	name := "WWW-Authenticate"
	if status == 407 {
		name = "Proxy-Authenticate"
	}
	for _, c := range challenges {
		res.AppendHeader(sip.NewHeader(name, c))
	}
	return res
}

func TestAnswerChallenge(t *testing.T) {
	auth := &TrunkAuth{Username: "acct", AuthUser: "auth-id", Password: "s3cret", Realm: "carrier.test"}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "+79161234567", Host: "192.0.2.10", Port: 5060})
	for _, tc := range []struct {
		name       string
		status     int
		challenges []string
		header     string // "" when no answer is expected
		algorithm  string
		stale      bool
	}{
		{"407 MD5", 407, []string{`Digest realm="carrier.test", nonce="n1", algorithm=MD5, qop="auth"`}, "Proxy-Authorization", "MD5", false},
		{"401 without algorithm", 401, []string{`Digest realm="carrier.test", nonce="n1"`}, "Authorization", "", false},
		{"SHA-256 first of two (RFC 8760)", 401, []string{`Digest realm="carrier.test", nonce="n1", algorithm=SHA-256, qop="auth"`,
			`Digest realm="carrier.test", nonce="n1", algorithm=MD5, qop="auth"`}, "Authorization", "SHA-256", false},
		{"an unknown algorithm is skipped", 401, []string{`Digest realm="carrier.test", nonce="n1", algorithm=SHA-512-256-sess`,
			`Digest realm="carrier.test", nonce="n1", algorithm=MD5`}, "Authorization", "MD5", false},
		{"stale nonce", 407, []string{`Digest realm="carrier.test", nonce="n2", stale=true, algorithm=MD5`}, "Proxy-Authorization", "MD5", true},
		{"another realm is not answered", 407, []string{`Digest realm="elsewhere", nonce="n1"`}, "", "", false},
		{"no challenge", 407, nil, "", "", false},
		{"not digest", 401, []string{`Basic realm="carrier.test"`}, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := auth.answerChallenge(req, challengeResponse(tc.status, tc.challenges...))
			if tc.header == "" {
				if err == nil {
					t.Fatalf("answered %v, want no answer", got.header)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.header.Name() != tc.header || got.stale != tc.stale {
				t.Fatalf("%s (stale %v), want %s (stale %v)", got.header.Name(), got.stale, tc.header, tc.stale)
			}
			cred, err := digest.ParseCredentials(got.header.Value())
			if err != nil {
				t.Fatal(err)
			}
			if cred.Username != "auth-id" || cred.Realm != "carrier.test" || cred.URI != req.Recipient.String() ||
				!strings.EqualFold(cred.Algorithm, tc.algorithm) {
				t.Fatalf("credentials %+v", cred)
			}
			if strings.Contains(got.header.Value(), "s3cret") {
				t.Fatal("the password is in the header")
			}
		})
	}
}

// The SHA-256 answer is the one RFC 8760 defines, computed here apart from
// the library.
func TestAnswerChallengeSHA256(t *testing.T) {
	auth := &TrunkAuth{Username: "acct", Password: "s3cret"}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "carrier.test"})
	got, err := auth.answerChallenge(req, challengeResponse(401, `Digest realm="carrier.test", nonce="abc", algorithm=SHA-256`))
	if err != nil {
		t.Fatal(err)
	}
	h := func(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }
	want := h(h("acct:carrier.test:s3cret") + ":abc:" + h("REGISTER:sip:carrier.test"))
	cred, _ := digest.ParseCredentials(got.header.Value())
	if cred.Response != want {
		t.Fatalf("response %s, want %s", cred.Response, want)
	}
}

func TestMayRetry(t *testing.T) {
	for _, tc := range []struct {
		tries int
		stale bool
		want  bool
	}{
		{0, false, true},  // the first challenge
		{1, false, false}, // a second one to our credentials: they are wrong
		{1, true, true},   // only our nonce went stale
		{2, true, false},  // stale again and again: a loop
	} {
		if got := mayRetry(tc.tries, tc.stale); got != tc.want {
			t.Errorf("mayRetry(%d, %v) = %v, want %v", tc.tries, tc.stale, got, tc.want)
		}
	}
}

func TestWithCredentials(t *testing.T) {
	d := &dialog{callID: "c1", localTag: "t1", local: sip.Uri{Scheme: "sip", User: "+74950000000", Host: "192.0.2.1"},
		remote: sip.Uri{Scheme: "sip", User: "+79161234567", Host: "192.0.2.10"}, target: sip.Uri{Scheme: "sip", User: "+79161234567", Host: "192.0.2.10"},
		dest: "192.0.2.10:5060", transport: "UDP"}
	first := d.request(sip.INVITE, sip.Uri{Scheme: "sip", Host: "192.0.2.1"})
	first.AppendHeader(sip.NewHeader("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKold"))
	first.SetBody([]byte("v=0\r\n"))
	next := withCredentials(first, d.nextSeq(), sip.NewHeader("Proxy-Authorization", "Digest x"))
	switch {
	case next.CSeq().SeqNo != 2 || next.CSeq().MethodName != sip.INVITE:
		t.Errorf("CSeq %v, want 2 INVITE", next.CSeq())
	case next.CallID().Value() != "c1" || tagOf(next.From().Params) != "t1":
		t.Error("Call-ID or From tag changed")
	case next.Via() != nil:
		t.Error("the old Via (branch) is kept: the retry would be the old transaction")
	case string(next.Body()) != "v=0\r\n" || next.Destination() != "192.0.2.10:5060":
		t.Error("body or destination lost")
	case first.CSeq().SeqNo != 1:
		t.Error("the first INVITE was changed (a CANCEL of it would not match)")
	}
	if h := next.GetHeaders("Proxy-Authorization"); len(h) != 1 {
		t.Errorf("%d Proxy-Authorization headers", len(h))
	}
}

func TestRegisterTiming(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second, 8: 256 * time.Second,
		9: 5 * time.Minute, 40: 5 * time.Minute} {
		if got := registerBackoff(n); got != want {
			t.Errorf("registerBackoff(%d) = %s, want %s", n, got, want)
		}
	}
	for granted, want := range map[time.Duration]time.Duration{600 * time.Second: 510 * time.Second, 2 * time.Second: 1700 * time.Millisecond,
		time.Second: time.Second} {
		if got := refreshIn(granted); got != want {
			t.Errorf("refreshIn(%s) = %s, want %s", granted, got, want)
		}
	}
}
