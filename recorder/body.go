package recorder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// Limits on what a recording INVITE may carry.
const (
	maxBody      = 128 << 10
	maxBodyParts = 8
	maxSDP       = 32 << 10
	maxStreams   = 2 // one per channel; further m-lines are refused (port 0)
)

// Body errors. Each maps to one SIP status in sipStatus; their text never
// quotes the body.
var (
	// ErrUnsupportedBody: neither application/sdp nor multipart/mixed (415).
	ErrUnsupportedBody = errors.New("recorder: unsupported body type")
	// ErrBadBody: a multipart body that does not parse, or no SDP in it (400).
	ErrBadBody = errors.New("recorder: malformed body")
	// ErrBadSDP: an SDP offer that does not parse or has no recordable
	// audio stream (488).
	ErrBadSDP = errors.New("recorder: bad SDP offer")
)

// splitBody finds the SDP offer and the recording metadata (RFC 7866 §7) in
// a request body: either a bare SDP or a multipart/mixed with both.
func splitBody(contentType string, body []byte) (offer, metadata []byte, err error) {
	if len(body) > maxBody {
		return nil, nil, fmt.Errorf("%w: too large", ErrBadBody)
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: content type", ErrUnsupportedBody)
	}
	switch mediaType {
	case "application/sdp":
		return body, nil, nil
	case "multipart/mixed":
	default:
		return nil, nil, ErrUnsupportedBody
	}
	boundary := params["boundary"]
	if boundary == "" || len(boundary) > 70 {
		return nil, nil, fmt.Errorf("%w: no boundary", ErrBadBody)
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for i := 0; ; i++ {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: multipart", ErrBadBody)
		}
		if i == maxBodyParts {
			return nil, nil, fmt.Errorf("%w: too many parts", ErrBadBody)
		}
		pt, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			continue // a part we cannot name is one we do not need
		}
		raw, err := io.ReadAll(io.LimitReader(part, maxMetadata+1))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: multipart", ErrBadBody)
		}
		switch pt {
		case "application/sdp":
			if offer != nil {
				return nil, nil, fmt.Errorf("%w: two SDP parts", ErrBadBody)
			}
			offer = raw
		case "application/rs-metadata+xml":
			if metadata != nil {
				return nil, nil, fmt.Errorf("%w: two metadata parts", ErrBadBody)
			}
			metadata = raw
		}
	}
	if offer == nil {
		return nil, nil, fmt.Errorf("%w: no SDP part", ErrBadBody)
	}
	return offer, metadata, nil
}

// offerStream is one m-line of a recording offer.
type offerStream struct {
	index   int    // m-line position
	label   string // a=label (RFC 4574)
	addr    netip.Addr
	media   string // m-line media and protocol, for a rejecting answer
	proto   string
	formats []string       // as offered, for a rejecting answer
	codecs  []audio.Format // the ones we record, in offer order
	kinds   payloadTable
	ok      bool // an RTP/AVP audio stream with G.711 in it
}

// audioCodec is the name of the stream's first G.711 codec.
func (s offerStream) audioCodec() string {
	for _, c := range s.codecs {
		if c.IsAudio() {
			return c.Name
		}
	}
	return ""
}

// recordingOffer is a parsed SIPREC SDP offer.
type recordingOffer struct {
	streams []offerStream
}

// accepted returns the streams we record, at most maxStreams.
func (o recordingOffer) accepted() []offerStream {
	var out []offerStream
	for _, s := range o.streams {
		if s.ok && len(out) < maxStreams {
			out = append(out, s)
		}
	}
	return out
}

// parseRecordingOffer reads every m-line of an SDP offer. It fails unless at
// least one is a recordable audio stream.
func parseRecordingOffer(body []byte) (o recordingOffer, err error) {
	// pion/sdp reads bytes from the network; a panic in it must become a
	// 488, not a crash.
	defer func() {
		if recover() != nil {
			o, err = recordingOffer{}, fmt.Errorf("%w: unparseable", ErrBadSDP)
		}
	}()
	if len(bytes.TrimSpace(body)) == 0 || len(body) > maxSDP {
		return o, fmt.Errorf("%w: empty or too large", ErrBadSDP)
	}
	var sd sdp.SessionDescription
	if sd.Unmarshal(body) != nil {
		return o, fmt.Errorf("%w: unparseable", ErrBadSDP)
	}
	if len(sd.MediaDescriptions) > 16 {
		return o, fmt.Errorf("%w: too many streams", ErrBadSDP)
	}
	recordable := false
	for i, md := range sd.MediaDescriptions {
		s := offerStream{index: i, formats: md.MediaName.Formats, media: md.MediaName.Media,
			proto: strings.Join(md.MediaName.Protos, "/")}
		if v, ok := md.Attribute("label"); ok {
			s.label = strings.TrimSpace(v)
		}
		ci := md.ConnectionInformation
		if ci == nil {
			ci = sd.ConnectionInformation
		}
		if ci != nil && ci.Address != nil {
			if ip, err := netip.ParseAddr(ci.Address.Address); err == nil && !ip.IsUnspecified() {
				s.addr = ip.Unmap()
			}
		}
		if md.MediaName.Media == "audio" && strings.Join(md.MediaName.Protos, "/") == "RTP/AVP" &&
			md.MediaName.Port.Value > 0 {
			s.codecs, s.kinds = supportedFormats(md)
			s.ok = s.audioCodec() != ""
		}
		recordable = recordable || s.ok
		o.streams = append(o.streams, s)
	}
	if !recordable {
		return o, fmt.Errorf("%w: no RTP/AVP audio stream with PCMU or PCMA", ErrBadSDP)
	}
	return o, nil
}

// supportedFormats picks PCMU, PCMA and telephone-event out of an m-line
// (audio.Formats); a format that is no payload type is skipped, not fatal.
func supportedFormats(md *sdp.MediaDescription) ([]audio.Format, payloadTable) {
	formats, _ := audio.Formats(md)
	var kinds payloadTable
	for _, f := range formats {
		switch f.Name {
		case audio.PCMU.Name:
			kinds[f.PayloadType] = kindPCMU
		case audio.PCMA.Name:
			kinds[f.PayloadType] = kindPCMA
		default:
			kinds[f.PayloadType] = kindEvent
		}
	}
	return formats, kinds
}

// buildAnswer answers every m-line of the offer: the recorded ones recvonly
// on our ports, the rest refused with port 0 (RFC 3264 §6).
func buildAnswer(o recordingOffer, ip netip.Addr, ports map[int]uint16, sessionID, version uint64) []byte {
	family := "IP4"
	if ip.Is6() {
		family = "IP6"
	}
	var b bytes.Buffer
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	fmt.Fprintf(&b, "v=0\r\no=maskpbx-recorder %s %s IN %s %s\r\ns=maskpbx recording\r\nc=IN %s %s\r\nt=0 0\r\n",
		u(sessionID), u(version), family, ip, family, ip)
	for _, s := range o.streams {
		port, ok := ports[s.index]
		if !ok {
			// Refused: echo media, protocol and a format when they are
			// plain tokens, as RFC 3264 asks, and nothing else.
			media, proto, f := "audio", "RTP/AVP", "0"
			if validToken(s.media) {
				media = s.media
			}
			if validToken(s.proto) {
				proto = s.proto
			}
			if len(s.formats) > 0 && validToken(s.formats[0]) {
				f = s.formats[0]
			}
			b.WriteString("m=" + media + " 0 " + proto + " " + f + "\r\n")
			continue
		}
		b.Write(audio.AppendMedia(b.AvailableBuffer(), port, s.codecs))
		if s.label != "" && validLabel(s.label) {
			b.WriteString("a=label:" + s.label + "\r\n")
		}
		b.WriteString("a=recvonly\r\n")
	}
	return b.Bytes()
}

// validLabel keeps a label that is safe to echo (RFC 4574 token).
func validLabel(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}

// validToken is a plain SDP token (media, protocol, format) safe to echo.
func validToken(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r)) {
			return false
		}
	}
	return true
}
