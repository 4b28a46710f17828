package pbx

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// clock is a settable time source for units that take a now func.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestNonce(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	a, err := newDigestAuth(testDomain, []string{"SHA-256", "MD5"}, time.Minute, &memCredentials{}, clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newDigestAuth(testDomain, []string{"MD5"}, time.Minute, &memCredentials{}, clk.now, nil)

	n := a.newNonce()
	if _, ok := a.nonceFresh(n); !ok {
		t.Fatal("fresh nonce refused")
	}
	if n == a.newNonce() {
		t.Fatal("two nonces alike")
	}
	tampered := []byte(n)
	tampered[3] ^= 1
	for name, nonce := range map[string]string{
		"tampered":         string(tampered),
		"another key":      other.newNonce(),
		"not base64":       "!!!",
		"short":            n[:10],
		"empty":            "",
		"longer than ours": n + "AAAA",
		"case changed":     strings.ToUpper(n),
	} {
		if _, ok := a.nonceFresh(nonce); ok && nonce != n {
			t.Errorf("%s nonce accepted", name)
		}
	}

	clk.advance(time.Minute)
	if _, ok := a.nonceFresh(n); ok {
		t.Error("nonce accepted after its TTL")
	}
	clk.advance(-time.Minute - nonceClockSkew - time.Second)
	if _, ok := a.nonceFresh(n); ok {
		t.Error("nonce from the future accepted")
	}
}

func TestNonceCount(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	a, _ := newDigestAuth(testDomain, []string{"MD5"}, time.Minute, &memCredentials{}, clk.now, nil)
	exp := clk.t.Add(time.Minute)
	for i, step := range []struct {
		nonce string
		nc    int
		ok    bool
	}{
		{"n1", 1, true}, {"n1", 1, false}, {"n1", 3, true}, {"n1", 2, false},
		{"n2", 1, true}, {"n2", 2, true},
	} {
		if got := a.useNonce(step.nonce, step.nc, exp); got != step.ok {
			t.Errorf("step %d: useNonce(%s, %d) = %v", i, step.nonce, step.nc, got)
		}
	}
	clk.advance(2 * time.Minute) // the sweep forgets expired nonces
	a.useNonce("n3", 1, clk.t.Add(time.Minute))
	if len(a.counts) != 1 {
		t.Errorf("%d nonces remembered after expiry, want 1", len(a.counts))
	}
}

func TestDigestAlgorithmsConfig(t *testing.T) {
	for _, tc := range []struct {
		algs []string
		ok   bool
	}{
		{[]string{"SHA-256", "MD5"}, true},
		{[]string{"md5"}, true},
		{[]string{"SHA-512"}, false},
		{[]string{"MD5", "md5"}, false},
		{nil, false},
	} {
		_, err := newDigestAuth(testDomain, tc.algs, time.Minute, &memCredentials{}, time.Now, nil)
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v", tc.algs, err)
		}
	}
}

func TestFailureLimiter(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	l := newFailureLimiter(3, time.Minute, 5*time.Minute, clk.now)
	const ip = "192.0.2.7"

	l.fail(ip)
	clk.advance(61 * time.Second) // the first failure leaves the window
	l.fail(ip)
	if l.fail(ip) || l.blocked(ip) {
		t.Fatal("blocked after 2 failures inside the window")
	}
	if !l.fail(ip) || !l.blocked(ip) {
		t.Fatal("not blocked after 3 failures inside the window")
	}
	if l.blocked("192.0.2.8") {
		t.Fatal("another source blocked")
	}
	clk.advance(5*time.Minute - time.Second)
	if !l.blocked(ip) {
		t.Fatal("block lifted early")
	}
	clk.advance(time.Second)
	if l.blocked(ip) {
		t.Fatal("block not lifted after AuthBlockFor")
	}
	if l.fail(ip) {
		t.Fatal("a block's failures counted again after it ended")
	}
}

func TestDigestURIMatches(t *testing.T) {
	ruri := func(s string) sip.Uri {
		var u sip.Uri
		if err := sip.ParseUri(s, &u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		digest, request string
		want            bool
	}{
		{"sip:pbx.test", "sip:pbx.test", true},
		{"sip:PBX.test", "sip:pbx.test", true},
		{"sip:pbx.test:5060", "sip:pbx.test", true},
		{"sip:pbx.test:5070", "sip:pbx.test", false},
		{"sip:other.test", "sip:pbx.test", false},
		{"sip:alice@pbx.test", "sip:pbx.test", false},
		{"garbage", "sip:pbx.test", false},
		{"", "sip:pbx.test", false},
	} {
		if got := digestURIMatches(tc.digest, ruri(tc.request)); got != tc.want {
			t.Errorf("digestURIMatches(%q, %q) = %v", tc.digest, tc.request, got)
		}
	}
}

func TestParseExpires(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{" 3600 ", time.Hour, true},
		{"4294967296", 4294967295 * time.Second, true},
		{"99999999999999999999999", 4294967295 * time.Second, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, err := parseExpires(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseExpires(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestSplitHeaderList(t *testing.T) {
	for in, want := range map[string][]string{
		`<sip:a@h>, <sip:b@h>;expires=0`: {`<sip:a@h>`, ` <sip:b@h>;expires=0`},
		`"Doe, John" <sip:j@h>`:          {`"Doe, John" <sip:j@h>`},
		`<sip:a@h;x=1,2>`:                {`<sip:a@h;x=1,2>`},
		`"a \" , b" <sip:a@h>, sip:b@h`:  {`"a \" , b" <sip:a@h>`, ` sip:b@h`},
		`*`:                              {`*`},
		``:                               {``},
		`<sip:a@h>,`:                     {`<sip:a@h>`, ``},
		`>>,<<`:                          {`>>`, `<<`},
	} {
		if got := splitHeaderList(in); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("splitHeaderList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSIPStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("%w: bad Expires", errMalformed), 400},
		{errNoCredentials, 401},
		{errAuthFailed, 401},
		{errInactiveUser, 401},
		{errStaleNonce, 401},
		{errNonceReplay, 401},
		{errForbidden, 403},
		{errSourceBlocked, 403},
		{errUnknownDomain, 404},
		{errMethodNotAllowed, 405},
		{errBadExtension, 420},
		{errIntervalTooBrief, 423},
		{errNoTransaction, 481},
		{errOutOfOrder, 500},
		{errNotImplemented, 501},
		{errors.New("nats: timeout"), 500},
	} {
		if code, _ := sipStatus(tc.err); code != tc.code {
			t.Errorf("sipStatus(%v) = %d, want %d", tc.err, code, tc.code)
		}
	}
}
