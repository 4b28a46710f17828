package media

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// Keys of the tests' peers, as their a=crypto lines carry them.
const (
	key80 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e" // bytes 1..30
	key32 = "ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGC" // bytes 101..130
)

func mustKey(t testing.TB, b64 string) MasterKey {
	t.Helper()
	var k MasterKey
	if n, err := base64.StdEncoding.Decode(k[:], []byte(b64)); err != nil || n != len(k) {
		t.Fatalf("test key %q: %d bytes, %v", b64, n, err)
	}
	return k
}

// secureOffer is an offer with the given proto and a=crypto values.
func secureOffer(proto string, crypto ...string) string {
	var b strings.Builder
	b.WriteString(baseOffer + "m=audio 4000 " + proto + " 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
	for _, c := range crypto {
		b.WriteString("a=crypto:" + c + "\r\n")
	}
	return b.String()
}

func TestParseOfferCrypto(t *testing.T) {
	l80 := "1 AES_CM_128_HMAC_SHA1_80 inline:" + key80
	l32 := "2 AES_CM_128_HMAC_SHA1_32 inline:" + key32
	k80, k32 := mustKey(t, key80), mustKey(t, key32)
	tests := []struct {
		name  string
		proto string
		lines []string
		want  []Crypto // nil: ErrNoCrypto
	}{
		{"baresip", "RTP/SAVP", []string{l80, l32}, []Crypto{{1, SuiteAES128SHA1_80, k80}, {2, SuiteAES128SHA1_32, k32}}},
		{"savpf", "RTP/SAVPF", []string{l32}, []Crypto{{2, SuiteAES128SHA1_32, k32}}},
		{"lifetime", "RTP/SAVP", []string{l80 + "|2^31"}, []Crypto{{1, SuiteAES128SHA1_80, k80}}},
		{"decimal lifetime", "RTP/SAVP", []string{l80 + "|1048576"}, []Crypto{{1, SuiteAES128SHA1_80, k80}}},
		{"window size hint", "RTP/SAVP", []string{l80 + " WSH=128"}, []Crypto{{1, SuiteAES128SHA1_80, k80}}},
		{"big tag", "RTP/SAVP", []string{"999999999 AES_CM_128_HMAC_SHA1_80 inline:" + key80}, []Crypto{{999999999, SuiteAES128SHA1_80, k80}}},
		{"mki skipped", "RTP/SAVP", []string{l80 + "|2^20|1:4", l32}, []Crypto{{2, SuiteAES128SHA1_32, k32}}},
		{"mki only", "RTP/SAVP", []string{l80 + "|1:4"}, nil},
		{"two keys", "RTP/SAVP", []string{l80 + ";inline:" + key32}, nil},
		{"session param", "RTP/SAVP", []string{l80 + " UNENCRYPTED_SRTP"}, nil},
		{"kdr", "RTP/SAVP", []string{l80 + " KDR=1"}, nil},
		{"gcm", "RTP/SAVP", []string{"1 AEAD_AES_128_GCM inline:" + key80}, nil},
		{"256-bit suite", "RTP/SAVP", []string{"1 AES_256_CM_HMAC_SHA1_80 inline:" + key80}, nil},
		{"lower-case suite", "RTP/SAVP", []string{"1 aes_cm_128_hmac_sha1_80 inline:" + key80}, nil},
		{"short key", "RTP/SAVP", []string{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key80[:36]}, nil},
		{"long key", "RTP/SAVP", []string{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key80 + "AAAA"}, nil},
		{"not base64", "RTP/SAVP", []string{"1 AES_CM_128_HMAC_SHA1_80 inline:" + strings.Repeat("!", 40)}, nil},
		{"no inline", "RTP/SAVP", []string{"1 AES_CM_128_HMAC_SHA1_80 " + key80}, nil},
		{"bad lifetime", "RTP/SAVP", []string{l80 + "|forever"}, nil},
		{"tag too long", "RTP/SAVP", []string{"1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + key80}, nil},
		{"negative tag", "RTP/SAVP", []string{"-1 AES_CM_128_HMAC_SHA1_80 inline:" + key80}, nil},
		{"truncated", "RTP/SAVP", []string{"1 AES_CM_128_HMAC_SHA1_80"}, nil},
		{"duplicate tag", "RTP/SAVP", []string{l80, "1 AES_CM_128_HMAC_SHA1_32 inline:" + key32}, []Crypto{{1, SuiteAES128SHA1_80, k80}}},
		{"no crypto", "RTP/SAVP", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOffer([]byte(secureOffer(tc.proto, tc.lines...)))
			if tc.want == nil {
				if !errors.Is(err, ErrNoCrypto) {
					t.Fatalf("err = %v, want ErrNoCrypto", err)
				}
				if strings.Contains(err.Error(), key80) || strings.Contains(err.Error(), "inline") {
					t.Fatalf("error quotes the body: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !o.Secure || o.Proto != tc.proto || len(o.Crypto) != len(tc.want) {
				t.Fatalf("offer: secure %v proto %q, %d lines", o.Secure, o.Proto, len(o.Crypto))
			}
			for i, c := range o.Crypto {
				if c != tc.want[i] {
					t.Errorf("line %d: %v, want %v (keys equal: %v)", i, c, tc.want[i], c.Key == tc.want[i].Key)
				}
			}
		})
	}
}

func TestParseOfferPlainUnchanged(t *testing.T) {
	// a=crypto on a plain stream is ignored: the peer asked for RTP/AVP.
	o, err := ParseOffer([]byte(secureOffer("RTP/AVP", "1 AES_CM_128_HMAC_SHA1_80 inline:"+key80)))
	if err != nil {
		t.Fatal(err)
	}
	if o.Secure || o.Crypto != nil || o.Proto != ProtoRTPAVP {
		t.Fatalf("plain offer read as secure: %+v", o)
	}
	for _, proto := range []string{"RTP/AVPF", "UDP/TLS/RTP/SAVPF", "RTP/SAVP/TCP"} {
		if _, err := ParseOffer([]byte(secureOffer(proto, "1 AES_CM_128_HMAC_SHA1_80 inline:"+key80))); !errors.Is(err, ErrBadSDP) {
			t.Errorf("%s: err = %v, want ErrBadSDP", proto, err)
		}
	}
}

func TestAnswerSRTP(t *testing.T) {
	local := netip.MustParseAddrPort("203.0.113.10:20000")
	tests := []struct {
		name     string
		proto    string
		lines    []string
		tag      uint32
		suite    Suite
		peersKey string
	}{
		{"baresip order", "RTP/SAVP", []string{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key80, "2 AES_CM_128_HMAC_SHA1_32 inline:" + key32}, 1, SuiteAES128SHA1_80, key80},
		{"80 preferred over order", "RTP/SAVP", []string{"5 AES_CM_128_HMAC_SHA1_32 inline:" + key32, "9 AES_CM_128_HMAC_SHA1_80 inline:" + key80}, 9, SuiteAES128SHA1_80, key80},
		{"32 only, savpf", "RTP/SAVPF", []string{"3 AES_CM_128_HMAC_SHA1_32 inline:" + key32}, 3, SuiteAES128SHA1_32, key32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			offer, err := ParseOffer([]byte(secureOffer(tc.proto, tc.lines...)))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := Answer(offer, local, 1, 1); !errors.Is(err, ErrNoCrypto) {
				t.Errorf("plain Answer to a secure offer: err = %v", err)
			}
			body, _, keys, err := AnswerSRTP(offer, local, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(body), tc.peersKey) {
				t.Fatal("our answer echoes the peer's key")
			}
			ans, err := ParseOffer(body)
			if err != nil {
				t.Fatal(err)
			}
			if !ans.Secure || ans.Proto != tc.proto || len(ans.Crypto) != 1 {
				t.Fatalf("answer: %+v", ans)
			}
			c := ans.Crypto[0]
			if c.Tag != tc.tag || c.Suite != tc.suite {
				t.Errorf("answer took %v, want tag %d %v", c, tc.tag, tc.suite)
			}
			if keys == nil || keys.Suite != tc.suite || keys.Local != c.Key || keys.Remote != mustKey(t, tc.peersKey) {
				t.Errorf("relay keys do not match the SDP")
			}
			if keys.Local.isZero() || keys.Local == keys.Remote {
				t.Error("our key is not fresh")
			}
		})
	}
}

func TestCryptoOfferRoundTrip(t *testing.T) {
	ours := NewCryptoOffer()
	body := BuildSDPWith(netip.MustParseAddrPort("203.0.113.10:20000"), 1, 1, DefaultCodecs(), SendRecv, SDPOptions{Crypto: ours})
	if !strings.Contains(string(body), "m=audio 20000 RTP/SAVP 0 8 101\r\n") {
		t.Fatalf("offer:\n%s", body)
	}
	offer, err := ParseOffer(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(offer.Crypto) != 2 || offer.Crypto[0].Tag != 1 || offer.Crypto[0].Suite != SuiteAES128SHA1_80 ||
		offer.Crypto[1].Tag != 2 || offer.Crypto[1].Suite != SuiteAES128SHA1_32 {
		t.Fatalf("offered %v", offer.Crypto)
	}
	if offer.Crypto[0].Key != ours[0].Key || ours[0].Key == ours[1].Key {
		t.Fatal("each offered line needs a key of its own")
	}

	// The peer answers with tag 2 and its own key.
	peer := mustKey(t, key32)
	answer := Offer{Secure: true, Proto: ProtoRTPSAVP, Crypto: []Crypto{{2, SuiteAES128SHA1_32, peer}}}
	keys, err := AnsweredKeys(ours, answer)
	if err != nil {
		t.Fatal(err)
	}
	if keys.Suite != SuiteAES128SHA1_32 || keys.Local != ours[1].Key || keys.Remote != peer {
		t.Fatal("keys do not match tag 2")
	}
	for name, a := range map[string]Offer{
		"plain answer":  {Proto: ProtoRTPAVP},
		"unknown tag":   {Secure: true, Crypto: []Crypto{{3, SuiteAES128SHA1_32, peer}}},
		"suite changed": {Secure: true, Crypto: []Crypto{{2, SuiteAES128SHA1_80, peer}}},
		"two lines":     {Secure: true, Crypto: []Crypto{{1, SuiteAES128SHA1_80, peer}, {2, SuiteAES128SHA1_32, peer}}},
	} {
		if _, err := AnsweredKeys(ours, a); !errors.Is(err, ErrNoCrypto) {
			t.Errorf("%s: err = %v, want ErrNoCrypto", name, err)
		}
	}

	// Plain BuildSDP is what it was.
	plain := BuildSDP(netip.MustParseAddrPort("203.0.113.10:20000"), 1, 1, DefaultCodecs(), SendRecv)
	if !strings.Contains(string(plain), " RTP/AVP ") || strings.Contains(string(plain), "crypto") {
		t.Fatalf("plain SDP:\n%s", plain)
	}
}

// Keys must never reach a log, an error or a CDR: whatever prints an Offer,
// a Crypto or SRTPKeys shows none of the key's bytes in any encoding.
func TestKeysNeverPrinted(t *testing.T) {
	offer, err := ParseOffer([]byte(secureOffer("RTP/SAVP",
		"1 AES_CM_128_HMAC_SHA1_80 inline:"+key80, "2 AES_CM_128_HMAC_SHA1_32 inline:"+key32)))
	if err != nil {
		t.Fatal(err)
	}
	_, keys, err := AnswerCrypto(offer)
	if err != nil {
		t.Fatal(err)
	}
	var forms []string
	for _, k := range []MasterKey{mustKey(t, key80), mustKey(t, key32), keys.Local, keys.Remote} {
		forms = append(forms,
			base64.StdEncoding.EncodeToString(k[:]),
			hex.EncodeToString(k[:8]),
			strings.ToUpper(hex.EncodeToString(k[:8])),
			strings.Trim(fmt.Sprint(k[:8]), "[]"),      // decimal bytes, as %v of an array prints
			fmt.Sprintf("%#v", k[:4])[len("[]byte{"):], // 0x01, 0x02, ...
			string(k[:8]),
		)
	}
	values := map[string]any{
		"offer":    offer,
		"&offer":   &offer,
		"crypto":   offer.Crypto[0],
		"lines":    offer.Crypto,
		"keys":     keys,
		"&keys":    &keys,
		"key":      keys.Local,
		"opts":     BridgeOptions{SRTP: [2]*SRTPKeys{&keys}},
		"sdp opts": SDPOptions{Crypto: offer.Crypto},
		// fmt prints a pointer below the top level raw when the verb does
		// not suit a pointer (%s, %t): each key-holding type must catch it.
		"nested pointers": struct {
			O *Offer
			C *Crypto
			K *SRTPKeys
			S *SDPOptions
			M *MasterKey
			B *BridgeOptions
		}{&offer, &offer.Crypto[0], &keys, &SDPOptions{Crypto: offer.Crypto}, &keys.Local, &BridgeOptions{SRTP: [2]*SRTPKeys{&keys}}},
	}
	for name, v := range values {
		var out []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d", "%t", "%c", "%U", "%e"} {
			out = append(out, fmt.Sprintf(verb, v))
		}
		if j, err := json.Marshal(v); err == nil {
			out = append(out, string(j))
		}
		for _, s := range out {
			for _, f := range forms {
				if strings.Contains(s, f) {
					t.Fatalf("%s printed key material %q in %s", name, f, s)
				}
			}
		}
	}
	if s := fmt.Sprint(offer.Crypto[0]); s != "crypto:1 AES_CM_128_HMAC_SHA1_80" {
		t.Errorf("Crypto prints %q", s)
	}
}
