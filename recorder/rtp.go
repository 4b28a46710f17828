package recorder

import "encoding/binary"

// rtpHeader is what the recorder needs of an RTP packet (RFC 3550 §5.1).
// It is parsed by hand, without allocating, on the receive path of every
// recorded stream.
type rtpHeader struct {
	pt     uint8
	marker bool
	seq    uint16
	ts     uint32
	ssrc   uint32
}

// parseRTP validates b as an RTP packet and returns its header and payload
// (aliasing b), skipping CSRCs, a header extension and padding.
func parseRTP(b []byte) (h rtpHeader, payload []byte, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return h, nil, false
	}
	// Payload types 64-95 are RTCP sent to the RTP port (RFC 5761 §4).
	if pt := b[1] & 0x7f; pt >= 64 && pt <= 95 {
		return h, nil, false
	}
	off := 12 + 4*int(b[0]&0x0f)
	if len(b) < off {
		return h, nil, false
	}
	if b[0]&0x10 != 0 {
		if len(b) < off+4 {
			return h, nil, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
		if len(b) < off {
			return h, nil, false
		}
	}
	end := len(b)
	if b[0]&0x20 != 0 {
		pad := int(b[end-1])
		if pad == 0 || pad > end-off {
			return h, nil, false
		}
		end -= pad
	}
	h = rtpHeader{
		pt:     b[1] & 0x7f,
		marker: b[1]&0x80 != 0,
		seq:    binary.BigEndian.Uint16(b[2:]),
		ts:     binary.BigEndian.Uint32(b[4:]),
		ssrc:   binary.BigEndian.Uint32(b[8:]),
	}
	return h, b[off:end], true
}

// payloadKind is how the recorder treats a payload type of one stream.
type payloadKind uint8

const (
	kindIgnore payloadKind = iota // not negotiated, comfort noise, ...: dropped
	kindPCMU
	kindPCMA
	kindEvent // RFC 4733 telephone-event: recorded as DTMF, never decoded as audio
)

// payloadTable maps each RTP payload type of a stream to its kind.
type payloadTable [128]payloadKind

// dtmfDigit is the digit of an RFC 4733 event code, or 0 for events that
// are not digits (flash, tones).
func dtmfDigit(event byte) byte {
	switch {
	case event <= 9:
		return '0' + event
	case event == 10:
		return '*'
	case event == 11:
		return '#'
	case event >= 12 && event <= 15:
		return 'A' + event - 12
	}
	return 0
}
