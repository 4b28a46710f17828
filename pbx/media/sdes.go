package media

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pion/srtp/v3"
)

// SDES keying (RFC 4568): each side writes its own SRTP master key in an
// a=crypto line of its SDP, and each side decrypts what the other sends with
// the key the other wrote. Keys live in MasterKey values, which print as
// "[redacted]" however they are formatted, so an Offer, a Crypto or SRTPKeys
// can go to a log or an error without the key.

// Suite is an SRTP crypto suite of an a=crypto line (RFC 4568 §6.2).
type Suite uint8

// The suites the relay supports, in the PBX's order of preference. Both use
// a 128-bit AES-CM key and a 112-bit salt; they differ in the length of the
// HMAC-SHA1 tag on SRTP (RTP) packets. SRTCP always has an 80-bit tag.
const (
	SuiteAES128SHA1_80 Suite = iota + 1 // AES_CM_128_HMAC_SHA1_80
	SuiteAES128SHA1_32                  // AES_CM_128_HMAC_SHA1_32
)

// SupportedSuites is what the PBX accepts and offers, in order of preference.
func SupportedSuites() []Suite {
	return []Suite{SuiteAES128SHA1_80, SuiteAES128SHA1_32}
}

var suiteNames = [...]string{
	SuiteAES128SHA1_80: "AES_CM_128_HMAC_SHA1_80",
	SuiteAES128SHA1_32: "AES_CM_128_HMAC_SHA1_32",
}

// String is the suite's name in SDP, e.g. "AES_CM_128_HMAC_SHA1_80".
func (s Suite) String() string {
	if s.valid() {
		return suiteNames[s]
	}
	return "unknown"
}

func (s Suite) valid() bool { return s == SuiteAES128SHA1_80 || s == SuiteAES128SHA1_32 }

func (s Suite) profile() srtp.ProtectionProfile {
	if s == SuiteAES128SHA1_32 {
		return srtp.ProtectionProfileAes128CmHmacSha1_32
	}
	return srtp.ProtectionProfileAes128CmHmacSha1_80
}

func suiteNamed(name string) (Suite, bool) {
	for s, n := range suiteNames {
		if n != "" && n == name {
			return Suite(s), true
		}
	}
	return 0, false
}

const (
	masterKeyLen  = 16
	masterSaltLen = 14
)

// MasterKey is an SRTP master key followed by its master salt, as an
// a=crypto inline: parameter carries them. It formats as "[redacted]" with
// every fmt verb, as text and in JSON: key material must never reach a log,
// an error or a CDR.
type MasterKey [masterKeyLen + masterSaltLen]byte

const redacted = "[redacted]"

// String hides the key.
func (MasterKey) String() string { return redacted }

// Format hides the key from every verb, %x and %#v included.
func (MasterKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalText hides the key from encoding/json and zap's reflection encoder.
func (MasterKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

func (k *MasterKey) key() []byte  { return k[:masterKeyLen] }
func (k *MasterKey) salt() []byte { return k[masterKeyLen:] }

func (k *MasterKey) isZero() bool { return *k == MasterKey{} }

// newMasterKey is a fresh random key and salt.
func newMasterKey() MasterKey {
	var k MasterKey
	_, _ = rand.Read(k[:]) // crypto/rand.Read never fails (Go 1.24+)
	return k
}

// Crypto is one a=crypto line: a tag that names it within the m= section, a
// suite and a key. Lines with key parameters the relay cannot honour (an MKI,
// several keys, session parameters) never become a Crypto.
type Crypto struct {
	Tag   uint32
	Suite Suite
	Key   MasterKey
}

// String names the tag and suite; the key is left out.
func (c Crypto) String() string {
	return "crypto:" + strconv.FormatUint(uint64(c.Tag), 10) + " " + c.Suite.String()
}

// Format prints String with every verb. (Each type holding a key by value
// has a Format: fmt prints a pointer to a method-less struct raw, MasterKey
// and all, when the verb does not suit a pointer, e.g. %s.)
func (c Crypto) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// appendSDP writes c as an SDP attribute line, key included.
func (c Crypto) appendSDP(dst []byte) []byte {
	dst = append(dst, "a=crypto:"...)
	dst = strconv.AppendUint(dst, uint64(c.Tag), 10)
	dst = append(dst, ' ')
	dst = append(dst, c.Suite.String()...)
	dst = append(dst, " inline:"...)
	dst = base64.StdEncoding.AppendEncode(dst, c.Key[:])
	return append(dst, "\r\n"...)
}

// parseCrypto reads the value of an a=crypto attribute,
//
//	<tag> <suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [<session params>]
//
// and says whether the relay can use it. Lifetimes are accepted and not
// enforced (a 20 ms G.711 stream takes over 240 days to send 2^30 packets;
// pion ends the stream at the RFC 3711 limit). An MKI, more than one key,
// and session parameters other than a window size hint are refused: each
// changes how packets look or are protected.
func parseCrypto(v string) (Crypto, bool) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return Crypto{}, false
	}
	if len(f[0]) > 9 { // 1*9DIGIT
		return Crypto{}, false
	}
	tag, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return Crypto{}, false
	}
	suite, ok := suiteNamed(f[1])
	if !ok {
		return Crypto{}, false
	}
	for _, p := range f[3:] {
		if !strings.HasPrefix(p, "WSH=") {
			return Crypto{}, false
		}
	}
	keyInfo, ok := strings.CutPrefix(f[2], "inline:")
	if !ok || strings.Contains(keyInfo, ";") {
		return Crypto{}, false
	}
	parts := strings.Split(keyInfo, "|")
	if len(parts) > 2 || (len(parts) == 2 && !validLifetime(parts[1])) {
		return Crypto{}, false // MKI, or a second field that is no lifetime
	}
	c := Crypto{Tag: uint32(tag), Suite: suite}
	// Decode writes up to DecodedLen bytes: the length is checked first.
	if len(parts[0]) != base64.StdEncoding.EncodedLen(len(c.Key)) {
		return Crypto{}, false
	}
	if n, err := base64.StdEncoding.Decode(c.Key[:], []byte(parts[0])); err != nil || n != len(c.Key) {
		return Crypto{}, false
	}
	return c, true
}

// validLifetime: ["2^"]1*DIGIT (RFC 4568 §9.2).
func validLifetime(s string) bool {
	s = strings.TrimPrefix(s, "2^")
	if s == "" || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// NewCryptoOffer is our a=crypto lines for an SDP offer towards a secure
// leg: one per supported suite in order of preference, tagged 1..n, each
// with a key of its own. Keep them: AnsweredKeys needs them when the answer
// comes.
func NewCryptoOffer() []Crypto {
	suites := SupportedSuites()
	lines := make([]Crypto, len(suites))
	for i, s := range suites {
		lines[i] = Crypto{Tag: uint32(i + 1), Suite: s, Key: newMasterKey()}
	}
	return lines
}

// AnswerCrypto picks the line of a secure offer to accept (the first with
// the most preferred suite) and returns our line for the answer (the same
// tag and suite, a fresh key) and the keys for the relay. It fails with
// ErrNoCrypto if the offer has no usable line.
func AnswerCrypto(offer Offer) (ours Crypto, keys SRTPKeys, err error) {
	for _, s := range SupportedSuites() {
		for _, c := range offer.Crypto {
			if c.Suite == s {
				ours = Crypto{Tag: c.Tag, Suite: s, Key: newMasterKey()}
				return ours, SRTPKeys{Suite: s, Local: ours.Key, Remote: c.Key}, nil
			}
		}
	}
	return Crypto{}, SRTPKeys{}, ErrNoCrypto
}

// AnsweredKeys matches the a=crypto line of an answer to the line we offered
// with the same tag and suite and returns the keys for the relay. It fails
// with ErrNoCrypto if the answer is not secure or picked no line we offered.
func AnsweredKeys(offered []Crypto, answer Offer) (SRTPKeys, error) {
	if !answer.Secure || len(answer.Crypto) != 1 {
		return SRTPKeys{}, fmt.Errorf("%w: the answer must accept exactly one offered line", ErrNoCrypto)
	}
	a := answer.Crypto[0]
	for _, o := range offered {
		if o.Tag == a.Tag && o.Suite == a.Suite {
			return SRTPKeys{Suite: a.Suite, Local: o.Key, Remote: a.Key}, nil
		}
	}
	return SRTPKeys{}, fmt.Errorf("%w: the answer accepts a line we did not offer", ErrNoCrypto)
}
