package recorder

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

const testOffer = "v=0\r\no=src 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n" +
	"m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=label:1\r\na=sendonly\r\n" +
	"m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:2\r\na=sendonly\r\n" +
	"m=audio 4004 RTP/AVP 18 0\r\nc=IN IP4 10.0.0.2\r\na=label:3\r\na=sendonly\r\n" +
	"m=audio 4006 RTP/AVP 0\r\na=label:4\r\na=sendonly\r\n"

const testMetadata = `<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>`

func multipartOf(boundary string, parts ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(parts); i += 2 {
		b.WriteString("--" + boundary + "\r\nContent-Type: " + parts[i] + "\r\n\r\n" + parts[i+1] + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.String()
}

// manyParts is n text parts followed by more.
func manyParts(n int, more ...string) []string {
	var p []string
	for range n {
		p = append(p, "text/plain", "x")
	}
	return append(p, more...)
}

func TestSplitBody(t *testing.T) {
	mixed := "multipart/mixed;boundary=foo"
	for _, tc := range []struct {
		name, contentType, body string
		wantSDP, wantMeta       bool
		err                     error
	}{
		{"bare SDP", "application/sdp", testOffer, true, false, nil},
		{"SDP and metadata", mixed, multipartOf("foo", "application/sdp", testOffer, "application/rs-metadata+xml", testMetadata), true, true, nil},
		{"quoted boundary, parameters", `multipart/mixed; boundary="foo"`, multipartOf("foo", "application/sdp", testOffer), true, false, nil},
		{"metadata first, an unknown part", mixed, multipartOf("foo", "text/plain", "hi", "application/rs-metadata+xml", testMetadata, "application/sdp", testOffer), true, true, nil},
		{"no SDP part", mixed, multipartOf("foo", "application/rs-metadata+xml", testMetadata), false, false, ErrBadBody},
		{"two SDP parts", mixed, multipartOf("foo", "application/sdp", testOffer, "application/sdp", testOffer), false, false, ErrBadBody},
		{"no boundary", "multipart/mixed", multipartOf("foo", "application/sdp", testOffer), false, false, ErrBadBody},
		{"wrong boundary", "multipart/mixed;boundary=bar", multipartOf("foo", "application/sdp", testOffer), false, false, ErrBadBody},
		{"garbage", mixed, "--foo\r\nthis is not a part", false, false, ErrBadBody},
		{"too many parts", mixed, multipartOf("foo", manyParts(maxBodyParts, "application/sdp", testOffer)...), false, false, ErrBadBody},
		{"too large", "application/sdp", strings.Repeat("x", maxBody+1), false, false, ErrBadBody},
		{"unsupported type", "text/plain", "hello", false, false, ErrUnsupportedBody},
		{"no type", "", testOffer, false, false, ErrUnsupportedBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdp, meta, err := splitBody(tc.contentType, []byte(tc.body))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || (sdp != nil) != tc.wantSDP || (meta != nil) != tc.wantMeta {
				t.Fatalf("sdp %v meta %v err %v", sdp != nil, meta != nil, err)
			}
			if string(sdp) != testOffer {
				t.Fatalf("SDP part %q", sdp)
			}
		})
	}
}

func TestOfferAndAnswer(t *testing.T) {
	o, err := parseRecordingOffer([]byte(testOffer))
	if err != nil {
		t.Fatal(err)
	}
	acc := o.accepted()
	// Stream 1 (PCMA, events) and 4 (PCMU); video refused; stream 3 has
	// PCMU too, but two streams are all a recording has.
	if len(acc) != 2 || acc[0].label != "1" || acc[1].label != "3" {
		t.Fatalf("accepted %+v", acc)
	}
	if acc[0].kinds[8] != kindPCMA || acc[0].kinds[101] != kindEvent || acc[0].kinds[0] != kindPCMU || acc[0].audioCodec() != "PCMA" {
		t.Errorf("stream 1 kinds wrong")
	}
	if acc[1].addr != netip.MustParseAddr("10.0.0.2") || acc[1].kinds[18] != kindIgnore {
		t.Errorf("stream 3: %+v", acc[1])
	}
	got := string(buildAnswer(o, netip.MustParseAddr("192.0.2.9"), map[int]uint16{0: 30000, 2: 30002}, 42, 1))
	want := "v=0\r\no=maskpbx-recorder 42 1 IN IP4 192.0.2.9\r\ns=maskpbx recording\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n" +
		"m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=label:1\r\na=recvonly\r\n" +
		"m=video 0 RTP/AVP 96\r\n" +
		"m=audio 30002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:3\r\na=recvonly\r\n" +
		"m=audio 0 RTP/AVP 0\r\n"
	if got != want {
		t.Errorf("answer\n%q\nwant\n%q", got, want)
	}

	for name, bad := range map[string]string{
		"empty":     "",
		"garbage":   "hello",
		"only G729": "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n",
		"port 0":    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
		"SRTP":      "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n",
	} {
		if _, err := parseRecordingOffer([]byte(bad)); !errors.Is(err, ErrBadSDP) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzSplitBody(f *testing.F) {
	f.Add("multipart/mixed;boundary=foo", []byte(multipartOf("foo", "application/sdp", testOffer, "application/rs-metadata+xml", testMetadata)))
	f.Add("application/sdp", []byte(testOffer))
	f.Add("multipart/mixed;boundary=\"a b\"", []byte("--a b\r\n\r\n--a b--"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		sdp, meta, err := splitBody(contentType, body)
		if err != nil {
			if !errors.Is(err, ErrBadBody) && !errors.Is(err, ErrUnsupportedBody) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if sdp == nil || len(sdp) > maxBody || len(meta) > maxMetadata+1 {
			t.Fatal("accepted without SDP or over the limits")
		}
		// Whatever came through must not crash the SDP reader either.
		if o, err := parseRecordingOffer(sdp); err == nil {
			_ = buildAnswer(o, netip.MustParseAddr("192.0.2.9"), map[int]uint16{}, 1, 1)
		}
	})
}

func FuzzParseRecordingOffer(f *testing.F) {
	f.Add([]byte(testOffer))
	f.Add([]byte("v=0\r\nm=audio 1 RTP/AVP 0\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := parseRecordingOffer(body)
		if err != nil {
			if !errors.Is(err, ErrBadSDP) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		acc := o.accepted()
		if len(acc) == 0 || len(acc) > maxStreams {
			t.Fatalf("%d accepted streams", len(acc))
		}
		ports := map[int]uint16{}
		for i, s := range acc {
			ports[s.index] = uint16(40000 + i*2)
		}
		ans := string(buildAnswer(o, netip.MustParseAddr("192.0.2.9"), ports, 1, 1))
		if n := strings.Count(ans, "\r\nm="); n != len(o.streams) {
			t.Fatalf("answer has %d m-lines for %d offered", n, len(o.streams))
		}
		for _, line := range strings.Split(strings.TrimSuffix(ans, "\r\n"), "\r\n") {
			if len(line) < 2 || line[1] != '=' || strings.ContainsAny(line, "\r\n") {
				t.Fatalf("bad answer line %q", line)
			}
		}
	})
}
