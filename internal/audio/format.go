package audio

import (
	"errors"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// SampleRate is the clock rate of every format here, in Hz.
const SampleRate = 8000

// ErrBadFormat says an RTP/AVP m-line lists a format that is not a payload
// type number (0-127).
var ErrBadFormat = errors.New("audio: m-line format is not an RTP payload type")

// Format is an RTP payload format we relay and record, under the payload
// type one peer gave it.
type Format struct {
	PayloadType uint8
	Name        string // canonical spelling: "PCMU", "PCMA", "telephone-event"
	ClockRate   uint32
	// Fmtp is the format parameter string; only telephone-event has one
	// (the events, e.g. "0-16"), and only what ValidEvents accepts is kept.
	Fmtp string
}

// The formats we handle, with their usual payload types.
var (
	PCMU           = Format{PayloadType: 0, Name: "PCMU", ClockRate: SampleRate}
	PCMA           = Format{PayloadType: 8, Name: "PCMA", ClockRate: SampleRate}
	TelephoneEvent = Format{PayloadType: 101, Name: "telephone-event", ClockRate: SampleRate, Fmtp: "0-16"}
)

// IsAudio reports whether f carries voice (not telephone-event).
func (f Format) IsAudio() bool { return f.Name != TelephoneEvent.Name }

// Formats reads the formats we handle out of an m-line, in the order the
// m-line lists them, one per payload type. A payload type resolves through
// its a=rtpmap (any case, 8000 Hz, one channel), or without one through the
// static RFC 3551 assignment (0 PCMU, 8 PCMA); telephone-event keeps its
// a=fmtp events when ValidEvents accepts them. Other formats are left out.
// If a format is no payload type number the error wraps ErrBadFormat, and
// the formats that could be read are returned with it.
func Formats(md *sdp.MediaDescription) ([]Format, error) {
	rtpmaps, fmtps := map[uint8]string{}, map[uint8]string{}
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" && a.Key != "fmtp" {
			continue
		}
		pt, rest, ok := strings.Cut(a.Value, " ")
		n, err := strconv.ParseUint(pt, 10, 7)
		if !ok || err != nil {
			continue
		}
		if a.Key == "rtpmap" {
			rtpmaps[uint8(n)] = strings.TrimSpace(rest)
		} else {
			fmtps[uint8(n)] = strings.TrimSpace(rest)
		}
	}

	var formats []Format
	var err error
	var seen [128]bool
	for _, f := range md.MediaName.Formats {
		n, perr := strconv.ParseUint(f, 10, 7)
		if perr != nil {
			err = ErrBadFormat
			continue
		}
		pt := uint8(n)
		if seen[pt] {
			continue
		}
		seen[pt] = true
		if ft, ok := resolve(pt, rtpmaps, fmtps); ok {
			formats = append(formats, ft)
		}
	}
	return formats, err
}

// resolve names a payload type through its rtpmap, or the static RFC 3551
// assignment when there is none.
func resolve(pt uint8, rtpmaps, fmtps map[uint8]string) (Format, bool) {
	m, ok := rtpmaps[pt]
	if !ok {
		switch pt {
		case PCMU.PayloadType:
			return PCMU, true
		case PCMA.PayloadType:
			return PCMA, true
		}
		return Format{}, false
	}
	parts := strings.Split(m, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[1] != "8000" {
		return Format{}, false
	}
	if len(parts) == 3 && parts[2] != "1" {
		return Format{}, false
	}
	var f Format
	switch {
	case strings.EqualFold(parts[0], PCMU.Name):
		f = PCMU
	case strings.EqualFold(parts[0], PCMA.Name):
		f = PCMA
	case strings.EqualFold(parts[0], TelephoneEvent.Name):
		f = TelephoneEvent
		f.Fmtp = ""
		if v := fmtps[pt]; ValidEvents(v) {
			f.Fmtp = v
		}
	default:
		return Format{}, false
	}
	f.PayloadType = pt
	return f, true
}

// ValidEvents accepts an RFC 4733 event list such as "0-15,66,70"; anything
// else is dropped rather than carried into SDP we write.
func ValidEvents(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && r != ',' && r != '-' {
			return false
		}
	}
	return true
}

// AppendMedia appends an audio m-line on port listing formats, and their
// a=rtpmap and a=fmtp lines, each ending in CRLF. An fmtp that ValidEvents
// refuses is not written.
func AppendMedia(dst []byte, port uint16, formats []Format) []byte {
	dst = append(dst, "m=audio "...)
	dst = strconv.AppendUint(dst, uint64(port), 10)
	dst = append(dst, " RTP/AVP"...)
	for _, f := range formats {
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, uint64(f.PayloadType), 10)
	}
	dst = append(dst, "\r\n"...)
	for _, f := range formats {
		dst = appendAttribute(dst, "rtpmap", f.PayloadType, f.Name+"/"+strconv.FormatUint(uint64(f.ClockRate), 10))
		if f.Fmtp != "" && ValidEvents(f.Fmtp) {
			dst = appendAttribute(dst, "fmtp", f.PayloadType, f.Fmtp)
		}
	}
	return dst
}

// appendAttribute appends "a=<key>:<pt> <value>" and CRLF.
func appendAttribute(dst []byte, key string, pt uint8, value string) []byte {
	dst = append(dst, "a="...)
	dst = append(dst, key...)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, uint64(pt), 10)
	dst = append(dst, ' ')
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}
