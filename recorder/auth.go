package recorder

import (
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
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// SRCUser is the digest username an SRC authenticates with; the password
// is the shared secret (ServerConfig.Secret).
const SRCUser = "maskpbx-src"

// SRCRealm is the digest realm of the recorder's challenges.
const SRCRealm = "maskpbx-recorder"

// nonceTTL is how long a challenge's nonce may be answered. Each nonce is
// good for one INVITE: a captured Authorization cannot start a second
// recording.
const nonceTTL = 30 * time.Second

// maxUsedNonces bounds the replay memory; past it, the oldest are dropped
// early (their nonces then fail as used, never succeed twice).
const maxUsedNonces = 100_000

// Errors of SRC authentication; sipStatus maps them.
var (
	errUnauthenticated = errors.New("recorder: SRC not authenticated")
	errBadCredentials  = errors.New("recorder: SRC credentials wrong")
)

// srcAuth checks an SRC's digest (RFC 3261 §22, MD5, qop=auth) against
// the shared secret. Nonces are stateless (a time and its HMAC), their use
// is remembered until they expire.
type srcAuth struct {
	ha1 string // hex MD5(SRCUser:SRCRealm:secret)
	key [32]byte
	now func() time.Time

	mu   sync.Mutex
	used map[string]time.Time // nonce -> when it expires
}

func newSRCAuth(secret string) *srcAuth {
	a := &srcAuth{now: time.Now, used: map[string]time.Time{}}
	sum := md5.Sum([]byte(SRCUser + ":" + SRCRealm + ":" + secret))
	a.ha1 = hex.EncodeToString(sum[:])
	_, _ = rand.Read(a.key[:]) // crypto/rand.Read never fails
	return a
}

// challenge is the WWW-Authenticate value of a 401.
func (a *srcAuth) challenge() string {
	c := digest.Challenge{Realm: SRCRealm, Nonce: a.newNonce(), Algorithm: "MD5", QOP: []string{"auth"}}
	return c.String()
}

func (a *srcAuth) newNonce() string {
	b := make([]byte, 8, 8+16)
	binary.BigEndian.PutUint64(b, uint64(a.now().UnixNano()))
	b = append(b, a.mac(b[:8])...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (a *srcAuth) mac(ts []byte) []byte {
	m := hmac.New(sha256.New, a.key[:])
	m.Write(ts)
	return m.Sum(nil)[:16]
}

// fresh says whether nonce is one of ours and not expired, and when it
// expires.
func (a *srcAuth) fresh(nonce string) (time.Time, bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 24 || !hmac.Equal(b[8:], a.mac(b[:8])) {
		return time.Time{}, false
	}
	expires := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8]))).Add(nonceTTL)
	return expires, a.now().Before(expires)
}

// use marks nonce spent; false if it was already.
func (a *srcAuth) use(nonce string, expires time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if len(a.used) >= maxUsedNonces {
		for n, exp := range a.used {
			if !now.Before(exp) || len(a.used) >= maxUsedNonces {
				delete(a.used, n)
			}
		}
	}
	if _, ok := a.used[nonce]; ok {
		return false
	}
	a.used[nonce] = expires
	return true
}

// verify checks req's Authorization: errUnauthenticated if it has none for
// our realm (or its nonce is stale: challenge again), errBadCredentials if
// it is wrong.
func (a *srcAuth) verify(req *sip.Request) error {
	var cred *digest.Credentials
	for _, h := range req.GetHeaders("Authorization") {
		c, err := digest.ParseCredentials(h.Value())
		if err == nil && c.Realm == SRCRealm {
			cred = c
			break
		}
	}
	if cred == nil {
		return errUnauthenticated
	}
	expires, ok := a.fresh(cred.Nonce)
	if !ok {
		return fmt.Errorf("%w: stale nonce", errUnauthenticated)
	}
	switch {
	case cred.Username != SRCUser:
		return fmt.Errorf("%w: unknown user", errBadCredentials)
	case cred.Algorithm != "" && !strings.EqualFold(cred.Algorithm, "MD5"):
		return fmt.Errorf("%w: algorithm %q", errBadCredentials, cred.Algorithm)
	case cred.QOP != "auth" || cred.Cnonce == "": // nc is not checked: a nonce is good once anyway
		return fmt.Errorf("%w: qop=auth required", errBadCredentials)
	case !sameTarget(cred.URI, req.Recipient):
		return fmt.Errorf("%w: digest uri is not the Request-URI", errBadCredentials)
	}
	ha2 := md5Hex(string(req.Method) + ":" + cred.URI)
	want := md5Hex(strings.Join([]string{a.ha1, cred.Nonce, fmt.Sprintf("%08x", cred.Nc), cred.Cnonce, "auth", ha2}, ":"))
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(cred.Response))) != 1 {
		return fmt.Errorf("%w: wrong response", errBadCredentials)
	}
	if !a.use(cred.Nonce, expires) {
		return fmt.Errorf("%w: nonce used before", errBadCredentials)
	}
	return nil
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// sameTarget: the digest uri names the Request-URI's host and port (the
// user part may be left out: SIPp's digest uri is sip:host:port).
func sameTarget(digestURI string, to sip.Uri) bool {
	var u sip.Uri
	if err := sip.ParseUri(digestURI, &u); err != nil {
		return false
	}
	port := func(p int) int {
		if p == 0 {
			return 5060
		}
		return p
	}
	return strings.EqualFold(u.Host, to.Host) && port(u.Port) == port(to.Port)
}
