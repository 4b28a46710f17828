package media

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

var update = flag.Bool("update", false, "rewrite the expected answers in testdata/sdp/*.sdptest")

const goldenDir = "../../testdata/sdp"

// Golden answers are built for this address and session.
var (
	goldenLocal              = netip.MustParseAddrPort("203.0.113.10:20000")
	goldenSession, goldenVer = uint64(1234567890), uint64(1)
)

const goldenSeparator = "-----\n"

var goldenErrors = map[string]error{"ErrBadSDP": ErrBadSDP, "ErrNoCodec": ErrNoCodec, "ErrNoCrypto": ErrNoCrypto}

// goldenCase is one *.sdptest file: '#' comment lines (with optional
// "must-not-contain: <text>" directives), the offer, a "-----" line, and the
// expected answer or "error: <sentinel name>". Files use LF; the test feeds
// the offer with CRLF as SIP carries it and compares the answer with CRLF
// turned into LF.
type goldenCase struct {
	header, offer, want string
	mustNotContain      []string
}

func readGolden(t *testing.T, path string) goldenCase {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	in, want, ok := strings.Cut(string(raw), goldenSeparator)
	if !ok {
		t.Fatalf("%s: no %q separator", path, strings.TrimSpace(goldenSeparator))
	}
	var gc goldenCase
	lines := strings.SplitAfter(in, "\n")
	for len(lines) > 0 && strings.HasPrefix(lines[0], "#") {
		gc.header += lines[0]
		if v, ok := strings.CutPrefix(strings.TrimSpace(lines[0]), "# must-not-contain:"); ok {
			gc.mustNotContain = append(gc.mustNotContain, strings.TrimSpace(v))
		}
		lines = lines[1:]
	}
	gc.offer, gc.want = strings.Join(lines, ""), want
	return gc
}

func TestGoldenAnswers(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.sdptest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files in %s: %v", goldenDir, err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".sdptest"), func(t *testing.T) {
			gc := readGolden(t, path)
			crlf := strings.ReplaceAll(gc.offer, "\n", "\r\n")
			got := answerOrError(crlf)
			if lf := answerOrError(gc.offer); lf != got {
				t.Errorf("LF and CRLF offers answered differently:\n%s\nvs\n%s", lf, got)
			}
			if *update {
				if err := os.WriteFile(path, []byte(gc.header+gc.offer+goldenSeparator+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != gc.want {
				t.Errorf("answer mismatch (run with -update to accept)\ngot:\n%s\nwant:\n%s", got, gc.want)
			}
			if name, ok := strings.CutPrefix(strings.TrimSpace(got), "error: "); ok {
				if _, known := goldenErrors[name]; !known {
					t.Errorf("unexpected error %q", name)
				}
				return
			}
			assertNoLeak(t, gc.offer, got, gc.mustNotContain)
		})
	}
}

// ourKey is the inline key of an a=crypto line in our SDP, fresh each time.
var ourKey = regexp.MustCompile(`inline:[A-Za-z0-9+/]{40}`)

// answerOrError is the golden form of an offer's outcome; our SRTP keys,
// random, are written <key>.
func answerOrError(offer string) string {
	o, err := ParseOffer([]byte(offer))
	var body []byte
	if err == nil {
		body, _, _, err = AnswerSRTP(o, goldenLocal, goldenSession, goldenVer)
		body = ourKey.ReplaceAll(body, []byte("inline:<key>"))
	}
	if err != nil {
		for name, sentinel := range goldenErrors {
			if errors.Is(err, sentinel) {
				return "error: " + name + "\n"
			}
		}
		return "error: " + err.Error() + "\n"
	}
	return strings.ReplaceAll(string(body), "\r\n", "\n")
}

// assertNoLeak checks invariant 1 on an answer: none of the offer's
// identifying values (o= user and address, s=, i=, u=, e=, p=, c=) nor the
// file's must-not-contain strings appear, and no line type that could carry
// them exists.
func assertNoLeak(t *testing.T, offer, answer string, extra []string) {
	t.Helper()
	secrets := slices.Clone(extra)
	for line := range strings.Lines(offer) {
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 2 || line[1] != '=' {
			continue
		}
		v := line[2:]
		switch line[0] {
		case 'o':
			if f := strings.Fields(v); len(f) == 6 {
				secrets = append(secrets, f[0], f[5])
			}
		case 'c':
			if f := strings.Fields(v); len(f) == 3 {
				secrets = append(secrets, f[2])
			}
		case 's', 'i', 'u', 'e', 'p':
			secrets = append(secrets, v)
		}
	}
	for _, s := range secrets {
		if s == "" || s == "-" {
			continue
		}
		if strings.Contains(answer, s) {
			t.Errorf("answer contains %q from the offer:\n%s", s, answer)
		}
	}
	for line := range strings.Lines(answer) {
		if len(line) >= 2 && strings.ContainsRune("iuepbkz", rune(line[0])) && line[1] == '=' {
			t.Errorf("answer has a %c= line: %q", line[0], line)
		}
	}
	if !strings.Contains(answer, "\no=maskpbx ") || !strings.Contains(answer, "\ns=maskpbx\n") {
		t.Errorf("answer is not our own o=/s=:\n%s", answer)
	}
}

const baseOffer = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"

func TestParseOffer(t *testing.T) {
	tests := []struct {
		name string
		sdp  string
		want Offer
	}{
		{
			name: "session c=, dynamic telephone-event, ptime",
			sdp: baseOffer + "m=audio 4000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\n" +
				"a=fmtp:96 0-15\r\na=ptime:30\r\n",
			want: Offer{
				Remote: netip.MustParseAddrPort("198.51.100.7:4000"),
				Codecs: []Codec{PCMA, PCMU, {PayloadType: 96, Name: "telephone-event", ClockRate: 8000, Fmtp: "0-15"}},
				Ptime:  30,
			},
		},
		{
			name: "media c= overrides session c=, session direction",
			sdp: "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\na=inactive\r\n" +
				"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.9\r\n",
			want: Offer{
				Remote:    netip.MustParseAddrPort("198.51.100.9:4000"),
				Codecs:    []Codec{PCMU},
				Direction: Inactive,
			},
		},
		{
			name: "media direction beats session direction",
			sdp:  baseOffer + "a=sendrecv\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n",
			want: Offer{Remote: netip.MustParseAddrPort("198.51.100.7:4000"), Codecs: []Codec{PCMU}, Direction: RecvOnly},
		},
		{
			name: "PCMU under a dynamic type, lower-case name",
			sdp:  baseOffer + "m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 pcmu/8000/1\r\n",
			want: Offer{
				Remote: netip.MustParseAddrPort("198.51.100.7:4000"),
				Codecs: []Codec{{PayloadType: 97, Name: "PCMU", ClockRate: 8000}},
			},
		},
		{
			name: "wideband telephone-event and stereo PCMA not supported",
			sdp: baseOffer + "m=audio 4000 RTP/AVP 98 99 0 100\r\na=rtpmap:98 telephone-event/16000\r\n" +
				"a=rtpmap:99 PCMA/8000/2\r\na=rtpmap:100 telephone-event/8000\r\n",
			want: Offer{
				Remote: netip.MustParseAddrPort("198.51.100.7:4000"),
				Codecs: []Codec{PCMU, {PayloadType: 100, Name: "telephone-event", ClockRate: 8000}},
			},
		},
		{
			name: "a=rtcp with and without address",
			sdp:  baseOffer + "m=audio 4000 RTP/AVP 0\r\na=rtcp:4005 IN IP4 198.51.100.8\r\n",
			want: Offer{
				Remote:     netip.MustParseAddrPort("198.51.100.7:4000"),
				RemoteRTCP: netip.MustParseAddrPort("198.51.100.8:4005"),
				Codecs:     []Codec{PCMU},
			},
		},
		{
			name: "hold with 0.0.0.0",
			sdp:  "v=0\r\no=- 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
			want: Offer{Remote: netip.MustParseAddrPort("0.0.0.0:4000"), Codecs: []Codec{PCMU}},
		},
		{
			name: "IPv6",
			sdp:  "v=0\r\no=- 1 2 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n",
			want: Offer{Remote: netip.MustParseAddrPort("[2001:db8::7]:4000"), Codecs: []Codec{PCMA}},
		},
		{
			name: "declined and unkeyed SRTP streams skipped for the first RTP/AVP one",
			sdp: baseOffer + "m=audio 0 RTP/AVP 0\r\nm=audio 5000 RTP/SAVP 0\r\n" +
				"m=video 6000 RTP/AVP 96\r\nm=audio 7000 RTP/AVP 8\r\n",
			want: Offer{Remote: netip.MustParseAddrPort("198.51.100.7:7000"), Codecs: []Codec{PCMA}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOffer([]byte(tt.sdp))
			if err != nil {
				t.Fatalf("ParseOffer: %v", err)
			}
			if got.Remote != tt.want.Remote || got.RemoteRTCP != tt.want.RemoteRTCP ||
				got.Direction != tt.want.Direction || got.Ptime != tt.want.Ptime ||
				!slices.Equal(got.Codecs, tt.want.Codecs) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseOfferErrors(t *testing.T) {
	tests := []struct {
		name string
		sdp  string
		want error
	}{
		{"nil", "", ErrBadSDP},
		{"whitespace", " \r\n ", ErrBadSDP},
		{"garbage", "\x00\xff\xfe not sdp", ErrBadSDP},
		{"no v=", "o=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", ErrBadSDP},
		{"no m= line", baseOffer, ErrBadSDP},
		{"video only", baseOffer + "m=video 4000 RTP/AVP 96\r\n", ErrBadSDP},
		{"audio declined", baseOffer + "m=audio 0 RTP/AVP 0\r\n", ErrBadSDP},
		{"SRTP without a=crypto", baseOffer + "m=audio 4000 RTP/SAVP 0\r\n", ErrNoCrypto},
		{"no c= anywhere", "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", ErrBadSDP},
		{"host name in c=", "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", ErrBadSDP},
		{"multicast c=", "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 224.2.1.1/127\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", ErrBadSDP},
		{"IPv6 address as IP4", "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", ErrBadSDP},
		{"bad format", baseOffer + "m=audio 4000 RTP/AVP 0 x\r\n", ErrBadSDP},
		{"format out of range", baseOffer + "m=audio 4000 RTP/AVP 0 300\r\n", ErrBadSDP},
		{"G.729 only", baseOffer + "m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n", ErrNoCodec},
		{"telephone-event only", baseOffer + "m=audio 4000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n", ErrNoCodec},
		{"PCMU remapped to G.729", baseOffer + "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 G729/8000\r\n", ErrNoCodec},
		{"PCMU at 16 kHz", baseOffer + "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 PCMU/16000\r\n", ErrNoCodec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseOffer([]byte(tt.sdp))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			// Error text goes to logs and SIP reasons: never the input.
			for _, s := range []string{"10.1.2.3", "198.51.100", "example.com", "2001:db8", "224.2"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error text %q quotes the SDP", err)
				}
			}
		})
	}
}

func TestAnswerNeedsAudio(t *testing.T) {
	_, _, err := Answer(Offer{Codecs: []Codec{TelephoneEvent}}, goldenLocal, 1, 1)
	if !errors.Is(err, ErrNoCodec) {
		t.Fatalf("err = %v, want ErrNoCodec", err)
	}
}

func TestBuildSDP(t *testing.T) {
	for _, local := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.10:20000"),
		netip.MustParseAddrPort("[2001:db8::10]:20002"),
	} {
		t.Run(local.String(), func(t *testing.T) {
			body := BuildSDP(local, 42, 3, DefaultCodecs(), SendOnly)
			if !bytes.HasSuffix(body, []byte("\r\n")) || bytes.Count(body, []byte("\r\n")) != bytes.Count(body, []byte("\n")) {
				t.Errorf("lines must end in CRLF:\n%q", body)
			}
			var sd sdp.SessionDescription
			if err := sd.Unmarshal(body); err != nil {
				t.Fatalf("our SDP does not parse: %v\n%s", err, body)
			}
			if sd.Origin.Username != "maskpbx" || sd.Origin.SessionID != 42 || sd.Origin.SessionVersion != 3 ||
				sd.Origin.UnicastAddress != local.Addr().String() {
				t.Errorf("o= = %+v", sd.Origin)
			}
			// Our SDP parses as an offer to our own parser, with everything intact.
			o, err := ParseOffer(body)
			if err != nil {
				t.Fatalf("ParseOffer(BuildSDP): %v", err)
			}
			want := Offer{
				Remote:     local,
				RemoteRTCP: netip.AddrPortFrom(local.Addr(), local.Port()+1),
				Codecs:     DefaultCodecs(),
				Direction:  SendOnly,
				Ptime:      20,
			}
			if o.Remote != want.Remote || o.RemoteRTCP != want.RemoteRTCP || o.Direction != want.Direction ||
				o.Ptime != want.Ptime || !slices.Equal(o.Codecs, want.Codecs) {
				t.Errorf("round trip: got %+v, want %+v", o, want)
			}
		})
	}
}

func TestDirectionReverse(t *testing.T) {
	for d, want := range map[Direction]Direction{SendRecv: SendRecv, SendOnly: RecvOnly, RecvOnly: SendOnly, Inactive: Inactive} {
		if got := d.Reverse(); got != want {
			t.Errorf("%s.Reverse() = %s, want %s", d, got, want)
		}
	}
}

func FuzzParseOffer(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.sdptest"))
	for _, path := range files {
		raw, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		offer, _, _ := strings.Cut(string(raw), goldenSeparator)
		f.Add([]byte(offer))
		f.Add([]byte(strings.ReplaceAll(offer, "\n", "\r\n")))
	}
	f.Add([]byte(baseOffer + "m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=rtcp:1 IN IP4 1.2.3.4\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		offer, err := ParseOffer(body)
		if err != nil {
			if !errors.Is(err, ErrBadSDP) && !errors.Is(err, ErrNoCodec) && !errors.Is(err, ErrNoCrypto) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		answer, codecs, keys, err := AnswerSRTP(offer, goldenLocal, 1, 1)
		if err != nil {
			t.Fatalf("parsed offer %+v has no answer: %v", offer, err)
		}
		if (keys != nil) != offer.Secure {
			t.Fatalf("secure offer %v, keys %v", offer.Secure, keys)
		}
		if len(codecs) == 0 || !codecs[0].IsAudio() {
			t.Fatalf("answer codecs %+v", codecs)
		}
		parsed, err := ParseOffer(answer)
		if err != nil {
			t.Fatalf("our answer does not parse: %v\n%s", err, answer)
		}
		if parsed.Proto != offer.Proto || (offer.Secure && (len(parsed.Crypto) != 1 || parsed.Crypto[0].Key != keys.Local)) {
			t.Fatalf("our answer to %s: %+v", offer.Proto, parsed)
		}
		for line := range strings.Lines(string(answer)) {
			if strings.ContainsRune("iuepbkz", rune(line[0])) {
				t.Fatalf("answer has %q", line)
			}
		}
	})
}
