package audio

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

const session = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

// mediaOf parses one media section (without the session part).
func mediaOf(t testing.TB, media string) *sdp.MediaDescription {
	t.Helper()
	var sd sdp.SessionDescription
	if err := sd.Unmarshal([]byte(session + media)); err != nil {
		t.Fatalf("test SDP does not parse: %v", err)
	}
	if len(sd.MediaDescriptions) != 1 {
		t.Fatalf("test SDP has %d media sections", len(sd.MediaDescriptions))
	}
	return sd.MediaDescriptions[0]
}

func TestFormats(t *testing.T) {
	pt := func(f Format, n uint8) Format { f.PayloadType = n; return f }
	events := func(n uint8, fmtp string) Format {
		f := pt(TelephoneEvent, n)
		f.Fmtp = fmtp
		return f
	}
	for _, tc := range []struct {
		name, media string
		want        []Format
		err         error
	}{
		{"static types", "m=audio 4000 RTP/AVP 0 8\r\n", []Format{PCMU, PCMA}, nil},
		{"offer order kept", "m=audio 4000 RTP/AVP 8 0\r\n", []Format{PCMA, PCMU}, nil},
		{"dynamic, any case", "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n", []Format{pt(PCMU, 96)}, nil},
		{"one channel", "m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 PCMA/8000/1\r\n", []Format{pt(PCMA, 97)}, nil},
		{"two channels refused", "m=audio 4000 RTP/AVP 97 0\r\na=rtpmap:97 PCMA/8000/2\r\n", []Format{PCMU}, nil},
		{"extra rtpmap field refused", "m=audio 4000 RTP/AVP 97 0\r\na=rtpmap:97 PCMA/8000/1/x\r\n", []Format{PCMU}, nil},
		{"wideband refused", "m=audio 4000 RTP/AVP 9 96 0\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 PCMU/16000\r\n", []Format{PCMU}, nil},
		{"rtpmap overrides static", "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMA/8000\r\n", []Format{pt(PCMA, 0)}, nil},
		{"unmapped dynamic and static 18 left out", "m=audio 4000 RTP/AVP 18 96 8\r\n", []Format{PCMA}, nil},
		{"events with fmtp", "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15,66\r\n",
			[]Format{PCMU, events(101, "0-15,66")}, nil},
		{"events without fmtp", "m=audio 4000 RTP/AVP 0 100\r\na=rtpmap:100 Telephone-Event/8000\r\n",
			[]Format{PCMU, events(100, "")}, nil},
		{"events with a bad fmtp", "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15;x=<y>\r\n",
			[]Format{PCMU, events(101, "")}, nil},
		{"one per payload type", "m=audio 4000 RTP/AVP 0 0 96 96\r\na=rtpmap:96 PCMU/8000\r\n", []Format{PCMU, pt(PCMU, 96)}, nil},
		{"rtpmap of an unlisted type ignored", "m=audio 4000 RTP/AVP 0\r\na=rtpmap:96 PCMA/8000\r\n", []Format{PCMU}, nil},
		{"garbled rtpmap ignored", "m=audio 4000 RTP/AVP 96 8\r\na=rtpmap:96\r\na=rtpmap:x PCMU/8000\r\n", []Format{PCMA}, nil},
		{"not a payload type", "m=audio 4000 RTP/AVP 0 foo 8\r\n", []Format{PCMU, PCMA}, ErrBadFormat},
		{"payload type out of range", "m=audio 4000 RTP/AVP 128 0\r\n", []Format{PCMU}, ErrBadFormat},
		{"nothing we handle", "m=audio 4000 RTP/AVP 18\r\n", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Formats(mediaOf(t, tc.media))
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Errorf("err = %v, want %v", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Formats = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidEvents(t *testing.T) {
	for s, want := range map[string]bool{
		"0-16": true, "0-15,66,70": true, "5": true,
		"": false, "0-15 ": false, "0-15;x": false, "0-15\r\na=x": false, strings.Repeat("1", 65): false,
	} {
		if got := ValidEvents(s); got != want {
			t.Errorf("ValidEvents(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestAppendMedia(t *testing.T) {
	bad := TelephoneEvent
	bad.PayloadType, bad.Fmtp = 96, "0-15\r\na=inject"
	got := string(AppendMedia([]byte("c=IN IP4 192.0.2.1\r\n"), 40000, []Format{PCMA, TelephoneEvent, bad}))
	want := "c=IN IP4 192.0.2.1\r\n" +
		"m=audio 40000 RTP/AVP 8 101 96\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" +
		"a=rtpmap:96 telephone-event/8000\r\n"
	if got != want {
		t.Errorf("AppendMedia =\n%q\nwant\n%q", got, want)
	}
}

// FuzzFormats feeds media sections from the network: whatever Formats
// returns is canonical and survives being written and read again.
func FuzzFormats(f *testing.F) {
	f.Add("m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n")
	f.Add("m=audio 4000 RTP/AVP 96 97 foo\r\na=rtpmap:96 pcmu/8000/1\r\na=rtpmap:97 TELEPHONE-EVENT/8000\r\na=fmtp:97 0-15;x\r\n")
	f.Add("m=audio 4000 RTP/AVP 0 0 128\r\na=rtpmap:0 PCMA/8000\r\n")
	f.Fuzz(func(t *testing.T, media string) {
		var sd sdp.SessionDescription
		if sd.Unmarshal([]byte(session+media)) != nil {
			return
		}
		for _, md := range sd.MediaDescriptions {
			formats, err := Formats(md)
			if err != nil && !errors.Is(err, ErrBadFormat) {
				t.Fatalf("unexpected error %v", err)
			}
			seen := map[uint8]bool{}
			for _, ft := range formats {
				switch {
				case ft.PayloadType > 127 || seen[ft.PayloadType]:
					t.Fatalf("payload type %d out of range or twice in %+v", ft.PayloadType, formats)
				case ft.Name != PCMU.Name && ft.Name != PCMA.Name && ft.Name != TelephoneEvent.Name:
					t.Fatalf("name %q", ft.Name)
				case ft.ClockRate != SampleRate:
					t.Fatalf("clock rate %d", ft.ClockRate)
				case ft.Fmtp != "" && (ft.IsAudio() || !ValidEvents(ft.Fmtp)):
					t.Fatalf("fmtp %q on %s", ft.Fmtp, ft.Name)
				}
				seen[ft.PayloadType] = true
			}
			if len(formats) == 0 {
				continue
			}
			var again sdp.SessionDescription
			if err := again.Unmarshal(AppendMedia([]byte(session), 4000, formats)); err != nil {
				t.Fatalf("our m-line does not parse: %v", err)
			}
			if back, err := Formats(again.MediaDescriptions[0]); err != nil || !reflect.DeepEqual(back, formats) {
				t.Fatalf("written and read again: %+v, %v; want %+v", back, err, formats)
			}
		}
	})
}
