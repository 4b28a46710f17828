package pbx

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// SIPCredentials is what the registrar needs to know about a SIP user. The
// password itself is never stored, only the digest HA1 per algorithm
// (ha1.MD5 and ha1.SHA256): hex(H(user:realm:password)).
type SIPCredentials struct {
	ManagerID, Username string
	HA1MD5, HA1SHA256   string // hex
	Active              bool   // false once the manager is dismissed
}

// CredentialSource looks SIP users up by username; it returns ErrUnknownUser
// when there is none.
type CredentialSource interface {
	SIPCredentials(ctx context.Context, username string) (SIPCredentials, error)
}

// digestAlgorithm is one hash the registrar offers for digest auth.
type digestAlgorithm struct {
	name    string
	newHash func() hash.Hash
	ha1     func(SIPCredentials) string
}

// digestAlgorithms are the hashes the registrar can verify, by name.
var digestAlgorithms = map[string]digestAlgorithm{
	"SHA-256": {name: "SHA-256", newHash: sha256.New, ha1: func(c SIPCredentials) string { return c.HA1SHA256 }},
	"MD5":     {name: "MD5", newHash: md5.New, ha1: func(c SIPCredentials) string { return c.HA1MD5 }},
}

// lookupAlgorithm finds a digest algorithm by name, case-insensitively.
func lookupAlgorithm(name string) (digestAlgorithm, bool) {
	for n, a := range digestAlgorithms {
		if strings.EqualFold(n, name) {
			return a, true
		}
	}
	return digestAlgorithm{}, false
}

const (
	nonceTimeLen = 8  // issue time, unix milliseconds
	nonceRandLen = 12 // makes every nonce unique
	nonceMACLen  = 16 // truncated HMAC-SHA256 over time and random part
	nonceLen     = nonceTimeLen + nonceRandLen + nonceMACLen
	// nonceClockSkew tolerates nonces issued by a node whose clock runs ahead.
	nonceClockSkew = 2 * time.Second
)

// digestAuth challenges and verifies SIP digest authentication (RFC 7616
// with qop=auth, RFC 8760 for SHA-256 in SIP).
//
// Nonces are stateless: issue time plus random bytes, signed with an HMAC
// key, so they expire after ttl and any holder of the key can check them.
// The only state is the highest nonce count seen per nonce, kept while the
// nonce is valid, which is what stops a captured Authorization from being
// replayed.
type digestAuth struct {
	realm string
	algs  []digestAlgorithm // offered, in challenge order
	ttl   time.Duration
	creds CredentialSource
	now   func() time.Time

	key [32]byte
	// dummy stands in for the credentials of an unknown or dismissed user,
	// so such a request does the same work as a wrong password.
	dummy SIPCredentials

	mu        sync.Mutex
	counts    map[string]nonceUse // nonce -> highest nc accepted
	lastSweep time.Time
}

type nonceUse struct {
	nc      int
	expires time.Time
}

// newDigestAuth makes the authenticator; key signs nonces (32 bytes), and a
// nil key is a random one.
func newDigestAuth(realm string, algorithms []string, ttl time.Duration, creds CredentialSource, now func() time.Time, key []byte) (*digestAuth, error) {
	a := &digestAuth{realm: realm, ttl: ttl, creds: creds, now: now, counts: map[string]nonceUse{}}
	for _, name := range algorithms {
		alg, ok := lookupAlgorithm(name)
		if !ok {
			return nil, fmt.Errorf("pbx: unsupported digest algorithm %q", name)
		}
		if _, dup := a.offered(alg.name); dup {
			return nil, fmt.Errorf("pbx: digest algorithm %q listed twice", name)
		}
		a.algs = append(a.algs, alg)
	}
	if len(a.algs) == 0 {
		return nil, errors.New("pbx: no digest algorithm to offer")
	}
	switch len(key) {
	case 0:
		_, _ = rand.Read(a.key[:]) // crypto/rand.Read never fails
	case len(a.key):
		copy(a.key[:], key)
	default:
		return nil, fmt.Errorf("pbx: nonce key of %d bytes, want %d", len(key), len(a.key))
	}
	var md5Dummy [md5.Size]byte
	var shaDummy [sha256.Size]byte
	_, _ = rand.Read(md5Dummy[:])
	_, _ = rand.Read(shaDummy[:])
	a.dummy = SIPCredentials{HA1MD5: hex.EncodeToString(md5Dummy[:]), HA1SHA256: hex.EncodeToString(shaDummy[:])}
	return a, nil
}

// challenge returns the WWW-Authenticate values for a 401: one per offered
// algorithm, sharing one fresh nonce. It depends on nothing but stale, so
// known and unknown users get the same answer.
func (a *digestAuth) challenge(stale bool) []string {
	nonce := a.newNonce()
	values := make([]string, 0, len(a.algs))
	for _, alg := range a.algs {
		c := digest.Challenge{
			Realm:     a.realm,
			Nonce:     nonce,
			Algorithm: alg.name,
			QOP:       []string{"auth"},
			Stale:     stale,
		}
		values = append(values, c.String())
	}
	return values
}

func (a *digestAuth) newNonce() string {
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[:nonceTimeLen], uint64(a.now().UnixMilli()))
	_, _ = rand.Read(b[nonceTimeLen : nonceTimeLen+nonceRandLen])
	copy(b[nonceTimeLen+nonceRandLen:], a.nonceMAC(b[:nonceTimeLen+nonceRandLen]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (a *digestAuth) nonceMAC(data []byte) []byte {
	m := hmac.New(sha256.New, a.key[:])
	m.Write(data)
	return m.Sum(nil)[:nonceMACLen]
}

// nonceFresh reports whether we issued the nonce and it has not expired; if
// so it also returns when it expires.
func (a *digestAuth) nonceFresh(nonce string) (time.Time, bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != nonceLen {
		return time.Time{}, false
	}
	signed, mac := b[:nonceTimeLen+nonceRandLen], b[nonceTimeLen+nonceRandLen:]
	if !hmac.Equal(mac, a.nonceMAC(signed)) {
		return time.Time{}, false
	}
	issued := time.UnixMilli(int64(binary.BigEndian.Uint64(b[:nonceTimeLen])))
	now := a.now()
	expires := issued.Add(a.ttl)
	if issued.After(now.Add(nonceClockSkew)) || !now.Before(expires) {
		return time.Time{}, false
	}
	return expires, true
}

// useNonce records nonce count nc for nonce; it refuses a count that is not
// higher than the last accepted one.
func (a *digestAuth) useNonce(nonce string, nc int, expires time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if now.Sub(a.lastSweep) > a.ttl {
		for n, u := range a.counts {
			if !now.Before(u.expires) {
				delete(a.counts, n)
			}
		}
		a.lastSweep = now
	}
	if u, ok := a.counts[nonce]; ok && nc <= u.nc {
		return false
	}
	a.counts[nonce] = nonceUse{nc: nc, expires: expires}
	return true
}

// authenticate checks req's Authorization for user (the To user) and returns
// the user's credentials. Errors: errNoCredentials, errMalformed,
// errForbidden, errAuthFailed, errInactiveUser (with the credentials, for
// the log), errStaleNonce, errNonceReplay, or a lookup failure.
func (a *digestAuth) authenticate(ctx context.Context, req *sip.Request, user string) (SIPCredentials, error) {
	return a.verify(ctx, req, user, "Authorization")
}

// authenticateProxy is authenticate for a request challenged with 407: the
// credentials come in Proxy-Authorization (a desk phone's INVITE).
func (a *digestAuth) authenticateProxy(ctx context.Context, req *sip.Request, user string) (SIPCredentials, error) {
	return a.verify(ctx, req, user, "Proxy-Authorization")
}

func (a *digestAuth) verify(ctx context.Context, req *sip.Request, user, header string) (SIPCredentials, error) {
	cred, err := a.credentialsFor(req, header)
	if err != nil {
		return SIPCredentials{}, err
	}
	alg, ok := a.offered(cred.Algorithm)
	if !ok {
		return SIPCredentials{}, fmt.Errorf("%w: algorithm %q", errNoCredentials, cred.Algorithm)
	}
	switch {
	case cred.Username == "" || cred.Nonce == "" || cred.URI == "" || cred.Response == "":
		return SIPCredentials{}, fmt.Errorf("%w: incomplete Authorization", errMalformed)
	case !strings.EqualFold(cred.QOP, "auth") || cred.Cnonce == "" || cred.Nc <= 0:
		return SIPCredentials{}, fmt.Errorf("%w: Authorization without qop=auth, cnonce and nc", errMalformed)
	case cred.Userhash:
		return SIPCredentials{}, fmt.Errorf("%w: userhash was not offered", errMalformed)
	case !digestURIMatches(cred.URI, req.Recipient):
		return SIPCredentials{}, fmt.Errorf("%w: digest uri does not match the Request-URI", errMalformed)
	case cred.Username != user:
		return SIPCredentials{}, fmt.Errorf("%w: credentials of another user", errForbidden)
	}

	known, err := a.creds.SIPCredentials(ctx, cred.Username)
	switch {
	case errors.Is(err, ErrUnknownUser):
		known = SIPCredentials{}
	case err != nil:
		return SIPCredentials{}, fmt.Errorf("pbx: credential lookup: %w", err)
	}
	ha1, found := alg.ha1(known), true
	if ha1 == "" {
		// Unknown user (or no HA1 for this algorithm): the same work as for a
		// real user, so timing does not tell them apart.
		ha1, found = alg.ha1(a.dummy), false
	}
	expected := digestResponse(alg, ha1, cred, req.Method.String())
	given := strings.ToLower(cred.Response)
	if subtle.ConstantTimeCompare([]byte(expected), []byte(given)) != 1 || !found {
		return SIPCredentials{}, errAuthFailed
	}
	if !known.Active {
		return known, errInactiveUser
	}

	expires, fresh := a.nonceFresh(cred.Nonce)
	if !fresh {
		return SIPCredentials{}, errStaleNonce
	}
	if !a.useNonce(cred.Nonce, cred.Nc, expires) {
		return SIPCredentials{}, errNonceReplay
	}
	return known, nil
}

// offered finds an algorithm we offer by name; no name means MD5 (RFC 2617).
func (a *digestAuth) offered(name string) (digestAlgorithm, bool) {
	if name == "" {
		name = "MD5"
	}
	for _, alg := range a.algs {
		if strings.EqualFold(alg.name, name) {
			return alg, true
		}
	}
	return digestAlgorithm{}, false
}

// credentialsFor picks the Authorization (or Proxy-Authorization) header
// for our realm.
func (a *digestAuth) credentialsFor(req *sip.Request, header string) (*digest.Credentials, error) {
	headers := req.GetHeaders(header)
	if len(headers) == 0 {
		return nil, errNoCredentials
	}
	for _, h := range headers {
		cred, err := digest.ParseCredentials(h.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errMalformed, header, err)
		}
		if cred.Realm == a.realm {
			return cred, nil
		}
	}
	return nil, fmt.Errorf("%w: no Authorization for realm", errNoCredentials)
}

// digestResponse is KD(HA1, nonce:nc:cnonce:qop:H(A2)) for qop=auth.
func digestResponse(alg digestAlgorithm, ha1 string, c *digest.Credentials, method string) string {
	h := alg.newHash()
	hexOf := func(parts ...string) string {
		h.Reset()
		h.Write([]byte(strings.Join(parts, ":")))
		return hex.EncodeToString(h.Sum(nil))
	}
	ha2 := hexOf(method, c.URI)
	return hexOf(strings.ToLower(ha1), c.Nonce, fmt.Sprintf("%08x", c.Nc), c.Cnonce, "auth", ha2)
}

// digestURIMatches compares the digest uri with the Request-URI: the same
// string, or the same user, host and port (a missing port being 5060).
func digestURIMatches(digestURI string, requestURI sip.Uri) bool {
	if digestURI == requestURI.String() {
		return true
	}
	var u sip.Uri
	if err := sip.ParseUri(digestURI, &u); err != nil {
		return false
	}
	return u.User == requestURI.User &&
		strings.EqualFold(u.Host, requestURI.Host) &&
		portOrDefault(u.Port) == portOrDefault(requestURI.Port)
}

func portOrDefault(p int) int {
	if p == 0 {
		return sip.DefaultUdpPort
	}
	return p
}

// failureLimiter counts failed authentications per source IP and blocks a
// source that fails limit times within window, for blockFor.
type failureLimiter struct {
	limit    int
	window   time.Duration
	blockFor time.Duration
	now      func() time.Time

	mu        sync.Mutex
	sources   map[string]*sourceFailures
	lastSweep time.Time
}

type sourceFailures struct {
	times        []time.Time // failures inside the window, oldest first
	blockedUntil time.Time
}

// maxTrackedSources bounds the limiter's memory against spoofed UDP sources;
// beyond it new sources are not tracked until old ones age out.
const maxTrackedSources = 1 << 16

func newFailureLimiter(limit int, window, blockFor time.Duration, now func() time.Time) *failureLimiter {
	return &failureLimiter{limit: limit, window: window, blockFor: blockFor, now: now, sources: map[string]*sourceFailures{}}
}

// blocked reports whether ip is currently blocked.
func (l *failureLimiter) blocked(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sources[ip]
	return ok && l.now().Before(s.blockedUntil)
}

// fail records a failed authentication from ip and reports whether this
// failure started a block.
func (l *failureLimiter) fail(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	s, ok := l.sources[ip]
	if !ok {
		if len(l.sources) >= maxTrackedSources {
			return false
		}
		s = &sourceFailures{}
		l.sources[ip] = s
	}
	if now.Before(s.blockedUntil) {
		return false
	}
	s.times = append(pruneBefore(s.times, now.Add(-l.window)), now)
	if len(s.times) < l.limit {
		return false
	}
	s.times = nil
	s.blockedUntil = now.Add(l.blockFor)
	return true
}

func (l *failureLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.window {
		return
	}
	l.lastSweep = now
	for ip, s := range l.sources {
		s.times = pruneBefore(s.times, now.Add(-l.window))
		if len(s.times) == 0 && !now.Before(s.blockedUntil) {
			delete(l.sources, ip)
		}
	}
}

// pruneBefore drops the times not after cutoff.
func pruneBefore(times []time.Time, cutoff time.Time) []time.Time {
	i := 0
	for i < len(times) && !times[i].After(cutoff) {
		i++
	}
	return times[i:]
}
