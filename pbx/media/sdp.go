package media

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// maxSDP bounds the body we are willing to parse.
const maxSDP = 64 << 10

// Direction is an SDP media direction attribute (RFC 4566 §6, RFC 3264).
type Direction uint8

// Directions; the zero value is sendrecv, the SDP default.
const (
	SendRecv Direction = iota
	SendOnly
	RecvOnly
	Inactive
)

var directionNames = [...]string{"sendrecv", "sendonly", "recvonly", "inactive"}

// String is the SDP attribute name, e.g. "sendrecv".
func (d Direction) String() string {
	if int(d) < len(directionNames) {
		return directionNames[d]
	}
	return "sendrecv"
}

// Reverse is the direction an answer gives to an offer with d: sendonly
// becomes recvonly and the other way round (RFC 3264 §6.1).
func (d Direction) Reverse() Direction {
	switch d {
	case SendOnly:
		return RecvOnly
	case RecvOnly:
		return SendOnly
	}
	return d
}

// Codec is an RTP payload format the PBX relays: G.711 or telephone-event,
// under the payload type the peer gave it.
type Codec = audio.Format

// The codecs the relay supports, with their usual payload types.
var (
	PCMU           = audio.PCMU
	PCMA           = audio.PCMA
	TelephoneEvent = audio.TelephoneEvent
)

// DefaultCodecs is what the PBX offers, in its order of preference.
func DefaultCodecs() []Codec { return []Codec{PCMU, PCMA, TelephoneEvent} }

// Offer is what the relay needs from a peer's SDP: where to send and what.
// ParseOffer reads answers the same way.
type Offer struct {
	// Remote is the RTP address from c= and m= (0.0.0.0 means hold).
	Remote netip.AddrPort
	// RemoteRTCP is from a=rtcp (RFC 3605); invalid if absent (port+1).
	RemoteRTCP netip.AddrPort
	// Codecs are the supported ones offered, in the offerer's order, with
	// the offerer's payload types. At least one is PCMU or PCMA.
	Codecs []Codec
	// Direction is the stream's direction attribute (sendrecv if none).
	Direction Direction
	// Ptime is the a=ptime value in milliseconds, 0 if absent.
	Ptime int
	// Proto is the stream's transport: RTP/AVP, RTP/SAVP or RTP/SAVPF.
	Proto string
	// Secure is set for RTP/SAVP and RTP/SAVPF: the peer sends and expects
	// SRTP, keyed by the Crypto lines (SDES, RFC 4568).
	Secure bool
	// Crypto are the a=crypto lines of a secure stream the relay can use, in
	// the peer's order; at least one if Secure. Their keys print redacted.
	Crypto []Crypto
}

// Format prints the offer field by field with f's verb and flags; its
// a=crypto lines print without their keys (see Crypto.Format).
func (o Offer) Format(f fmt.State, verb rune) {
	type fields Offer // no methods: printed field by field
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), fields(o))
}

// The transports ParseOffer accepts.
const (
	ProtoRTPAVP    = "RTP/AVP"
	ProtoRTPSAVP   = "RTP/SAVP"
	ProtoRTPSAVPF  = "RTP/SAVPF"
	maxCryptoLines = 16 // per stream; more is junk
)

// ParseOffer reads the first RTP/AVP, RTP/SAVP or RTP/SAVPF audio stream of
// an SDP body. Errors wrap ErrBadSDP, ErrNoCodec or (a secure stream without
// a usable a=crypto line) ErrNoCrypto; their text never quotes the body.
func ParseOffer(body []byte) (offer Offer, err error) {
	// pion/sdp parses bytes from the network; a panic in it must become a
	// 488, not a crash.
	defer func() {
		if recover() != nil {
			offer, err = Offer{}, fmt.Errorf("%w: unparseable", ErrBadSDP)
		}
	}()
	if len(bytes.TrimSpace(body)) == 0 {
		return Offer{}, fmt.Errorf("%w: empty", ErrBadSDP)
	}
	if len(body) > maxSDP {
		return Offer{}, fmt.Errorf("%w: too large", ErrBadSDP)
	}
	var sd sdp.SessionDescription
	if sd.Unmarshal(body) != nil {
		// pion's error quotes the offending line, which may hold an address.
		return Offer{}, fmt.Errorf("%w: unparseable", ErrBadSDP)
	}
	md, crypto, unkeyed := firstAudio(&sd)
	switch {
	case md == nil && unkeyed:
		return Offer{}, fmt.Errorf("%w: no a=crypto line with a supported suite and plain key", ErrNoCrypto)
	case md == nil:
		return Offer{}, fmt.Errorf("%w: no RTP/AVP or RTP/SAVP audio stream", ErrBadSDP)
	}
	offer.Proto = strings.Join(md.MediaName.Protos, "/")
	offer.Secure, offer.Crypto = offer.Proto != ProtoRTPAVP, crypto
	ci := md.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	ip, ok := connectionAddr(ci)
	if !ok {
		return Offer{}, fmt.Errorf("%w: no usable c= address", ErrBadSDP)
	}
	offer.Remote = netip.AddrPortFrom(ip, uint16(md.MediaName.Port.Value))
	offer.Codecs, err = offeredCodecs(md)
	if err != nil {
		return Offer{}, err
	}
	offer.Direction = direction(md.Attributes, sd.Attributes)
	if v, ok := attribute(md.Attributes, sd.Attributes, "ptime"); ok {
		if ms, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && ms > 0 && ms <= 1000 {
			offer.Ptime = ms
		}
	}
	if v, ok := attribute(md.Attributes, nil, "rtcp"); ok {
		offer.RemoteRTCP = rtcpAttr(v, ip)
	}
	return offer, nil
}

// firstAudio is the first audio stream we can relay, with its usable
// a=crypto lines if it is secure: RTP/AVP, or RTP/SAVP or RTP/SAVPF with a
// usable line; port not 0 (a port of 0 is a declined stream). unkeyed says
// a secure stream was passed over for want of a usable line.
func firstAudio(sd *sdp.SessionDescription) (md *sdp.MediaDescription, crypto []Crypto, unkeyed bool) {
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Media != "audio" || md.MediaName.Port.Value <= 0 || md.MediaName.Port.Value > 65535 {
			continue
		}
		p := md.MediaName.Protos
		if len(p) != 2 || p[0] != "RTP" {
			continue
		}
		switch p[1] {
		case "AVP":
			return md, nil, unkeyed
		case "SAVP", "SAVPF":
			if crypto := cryptoLines(md.Attributes); len(crypto) > 0 {
				return md, crypto, unkeyed
			}
			unkeyed = true
		}
	}
	return nil, nil, unkeyed
}

// cryptoLines are the usable media-level a=crypto lines, one per tag (RFC
// 4568 puts them at media level only). Lines the relay cannot honour are
// skipped, not refused: the peer may offer others.
func cryptoLines(attrs []sdp.Attribute) []Crypto {
	var lines []Crypto
	seen := 0
	for _, a := range attrs {
		if a.Key != "crypto" {
			continue
		}
		if seen++; seen > maxCryptoLines {
			break
		}
		c, ok := parseCrypto(a.Value)
		if !ok || slices.ContainsFunc(lines, func(l Crypto) bool { return l.Tag == c.Tag }) {
			continue
		}
		lines = append(lines, c)
	}
	return lines
}

// connectionAddr accepts a literal unicast IP of the declared family; host
// names are not resolved, multicast (with /ttl) is refused.
func connectionAddr(ci *sdp.ConnectionInformation) (netip.Addr, bool) {
	if ci == nil || ci.NetworkType != "IN" || ci.Address == nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(ci.Address.Address)
	if err != nil || ip.Zone() != "" || ip.IsMulticast() {
		return netip.Addr{}, false
	}
	switch {
	case ci.AddressType == "IP4" && ip.Is4():
	case ci.AddressType == "IP6" && ip.Is6() && !ip.Is4In6():
	default:
		return netip.Addr{}, false
	}
	return ip, true
}

// offeredCodecs keeps the supported formats in offer order, one per codec.
func offeredCodecs(md *sdp.MediaDescription) ([]Codec, error) {
	formats, err := audio.Formats(md)
	if err != nil {
		return nil, fmt.Errorf("%w: bad RTP/AVP format", ErrBadSDP)
	}
	var codecs []Codec
	seen := map[string]bool{}
	hasAudio := false
	for _, c := range formats {
		if seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		hasAudio = hasAudio || c.IsAudio()
		codecs = append(codecs, c)
	}
	if !hasAudio {
		return nil, ErrNoCodec
	}
	return codecs, nil
}

// attribute is the first media-level value of key, else the session-level one.
func attribute(media, session []sdp.Attribute, key string) (string, bool) {
	for _, attrs := range [][]sdp.Attribute{media, session} {
		for _, a := range attrs {
			if a.Key == key {
				return a.Value, true
			}
		}
	}
	return "", false
}

func direction(media, session []sdp.Attribute) Direction {
	for _, attrs := range [][]sdp.Attribute{media, session} {
		for _, a := range attrs {
			for d, name := range directionNames {
				if a.Key == name {
					return Direction(d)
				}
			}
		}
	}
	return SendRecv
}

// rtcpAttr parses "a=rtcp:<port> [IN IP4 <addr>]"; invalid if unusable.
func rtcpAttr(v string, rtpIP netip.Addr) netip.AddrPort {
	f := strings.Fields(v)
	if len(f) == 0 {
		return netip.AddrPort{}
	}
	port, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}
	}
	ip := rtpIP
	if len(f) == 4 {
		a, ok := connectionAddr(&sdp.ConnectionInformation{
			NetworkType: f[1], AddressType: f[2], Address: &sdp.Address{Address: f[3]},
		})
		if !ok {
			return netip.AddrPort{}
		}
		ip = a
	}
	return netip.AddrPortFrom(ip, uint16(port))
}

// BuildSDP writes the PBX's own SDP for one audio stream at local, with
// nothing taken from the other side: o= names maskpbx and our address, no
// i=, u=, e=, p= or b= lines. codecs must hold at least one audio codec.
func BuildSDP(local netip.AddrPort, sessionID, version uint64, codecs []Codec, dir Direction) []byte {
	return BuildSDPWith(local, sessionID, version, codecs, dir, SDPOptions{})
}

// SDPOptions is what BuildSDPWith writes beyond BuildSDP's plain stream.
// The zero value writes BuildSDP's SDP.
type SDPOptions struct {
	// Crypto, if not empty, makes the stream secure (RTP/SAVP) with one
	// a=crypto line each: NewCryptoOffer's lines in an offer, AnswerCrypto's
	// line in an answer. Send the same lines in every SDP of the dialog
	// unless the relay is rekeyed.
	Crypto []Crypto
	// Feedback writes RTP/SAVPF instead of RTP/SAVP, to answer an RTP/SAVPF
	// offer with the transport it asked for (RFC 3264 §6). The relay sends
	// no RTCP feedback.
	Feedback bool
}

// Format prints the options with f's verb and flags, keys left out.
func (o SDPOptions) Format(f fmt.State, verb rune) {
	type fields SDPOptions // no methods: printed field by field
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), fields(o))
}

// BuildSDPWith is BuildSDP with options, such as the secure transport.
func BuildSDPWith(local netip.AddrPort, sessionID, version uint64, codecs []Codec, dir Direction, opts SDPOptions) []byte {
	ip := local.Addr().Unmap()
	family := "IP4"
	if ip.Is6() {
		family = "IP6"
	}
	var b bytes.Buffer
	line := func(parts ...string) {
		for _, p := range parts {
			b.WriteString(p)
		}
		b.WriteString("\r\n")
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }

	line("v=0")
	line("o=maskpbx ", u(sessionID), " ", u(version), " IN ", family, " ", ip.String())
	line("s=maskpbx")
	line("c=IN ", family, " ", ip.String())
	line("t=0 0")
	m := audio.AppendMedia(b.AvailableBuffer(), local.Port(), codecs)
	if len(opts.Crypto) > 0 {
		m = secureProto(m, opts.Feedback)
	}
	b.Write(m)
	line("a=ptime:20")
	line("a=", dir.String())
	if local.Port() < 65535 {
		line("a=rtcp:", u(uint64(local.Port())+1))
	}
	for _, c := range opts.Crypto {
		b.Write(c.appendSDP(b.AvailableBuffer()))
	}
	return b.Bytes()
}

// secureProto turns the "RTP/AVP" of the m= line that starts m into
// RTP/SAVP or RTP/SAVPF.
func secureProto(m []byte, feedback bool) []byte {
	proto := ProtoRTPSAVP
	if feedback {
		proto = ProtoRTPSAVPF
	}
	i := bytes.Index(m, []byte(" "+ProtoRTPAVP+" "))
	if i < 0 {
		return m
	}
	i++
	return slices.Concat(m[:i], []byte(proto), m[i+len(ProtoRTPAVP):])
}

// Answer negotiates a plain offer against what the relay supports and
// builds our answer. It keeps the offerer's payload types, takes the first
// audio codec in the offerer's order, plus telephone-event if offered; one
// audio codec only, because the relay does not transcode: a peer allowed to
// switch between PCMU and PCMA mid-call would send the other leg a codec it
// never agreed to. A secure offer fails with ErrNoCrypto: it needs
// AnswerSRTP, which returns the keys for the relay.
func Answer(offer Offer, local netip.AddrPort, sessionID, version uint64) (body []byte, codecs []Codec, err error) {
	if offer.Secure {
		return nil, nil, fmt.Errorf("%w: a secure offer needs AnswerSRTP", ErrNoCrypto)
	}
	body, codecs, _, err = AnswerSRTP(offer, local, sessionID, version)
	return body, codecs, err
}

// AnswerSRTP is Answer for plain and secure offers. To a secure offer it
// answers with the transport offered and one a=crypto line (AnswerCrypto)
// and returns the keys for the relay's side of this leg; keys is nil for a
// plain offer.
func AnswerSRTP(offer Offer, local netip.AddrPort, sessionID, version uint64) (body []byte, codecs []Codec, keys *SRTPKeys, err error) {
	codecs, err = answerCodecs(offer.Codecs)
	if err != nil {
		return nil, nil, nil, err
	}
	var opts SDPOptions
	if offer.Secure {
		ours, k, err := AnswerCrypto(offer)
		if err != nil {
			return nil, nil, nil, err
		}
		opts = SDPOptions{Crypto: []Crypto{ours}, Feedback: offer.Proto == ProtoRTPSAVPF}
		keys = &k
	}
	return BuildSDPWith(local, sessionID, version, codecs, offer.Direction.Reverse(), opts), codecs, keys, nil
}

// answerCodecs is the first offered audio codec, plus telephone-event if
// offered.
func answerCodecs(offered []Codec) ([]Codec, error) {
	var audio, events *Codec
	for i := range offered {
		c := &offered[i]
		switch {
		case c.Name == PCMU.Name || c.Name == PCMA.Name:
			if audio == nil && c.ClockRate == 8000 {
				audio = c
			}
		case c.Name == TelephoneEvent.Name:
			if events == nil && c.ClockRate == 8000 {
				events = c
			}
		}
	}
	if audio == nil {
		return nil, ErrNoCodec
	}
	codecs := []Codec{*audio}
	if events != nil {
		codecs = append(codecs, *events)
	}
	return codecs, nil
}
