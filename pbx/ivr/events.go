package ivr

import "encoding/binary"

// RFC 4733 telephone-event packets carry one event each: the event code
// (0-9, 10 '*', 11 '#', 12-15 'A'-'D'), an end bit, a volume and the
// duration so far. All packets of one event share the RTP timestamp of its
// start: the start packet, updates while the key is held, and the end
// packet, usually sent three times. A digit is reported on the first packet
// of an event that arrives, whichever it is (the start packet may be
// lost), and never again for the same event.

// eventCodes maps the event codes of DTMF digits to their digits.
const eventCodes = "0123456789*#ABCD"

// recentEvents is how many past events are remembered to drop late
// retransmissions of their end packets.
const recentEvents = 8

// A sender that holds a key for more than 0xFFFF samples (8 s) goes on
// with a new event whose timestamp is the old one plus that duration (RFC
// 4733 §2.5.1.3). A packet of the same key, no end seen, at least
// longEvent into the old segment and starting where it stopped (within
// segmentSlack), continues it: it is no new digit.
const (
	longEvent    = 0xFF00
	segmentSlack = sampleRate / 10
)

type eventKey struct {
	ts   uint32
	code uint8
}

// eventReader is the RFC 4733 state of one stream; the session's reader
// goroutine owns it.
type eventReader struct {
	recent [recentEvents]eventKey
	n      int // events seen, the next slot is n % recentEvents
	last   eventKey
	ended  bool   // the last event's end packet arrived
	dur    uint16 // the longest duration the last event's packets gave
}

// packet takes one telephone-event payload sent with RTP timestamp ts. ok
// says it begins a new digit d; valid says the payload was a DTMF event
// at all.
func (r *eventReader) packet(ts uint32, payload []byte) (d rune, ok, valid bool) {
	if len(payload) < 4 || payload[0] >= uint8(len(eventCodes)) {
		return 0, false, false
	}
	key := eventKey{ts: ts, code: payload[0]}
	end, dur := payload[1]&0x80 != 0, binary.BigEndian.Uint16(payload[2:])
	if r.seen(key) {
		if key == r.last {
			r.ended = r.ended || end
			r.dur = max(r.dur, dur)
		}
		return 0, false, true
	}
	delta := key.ts - r.last.ts
	continued := r.n > 0 && !r.ended && r.last.code == key.code && r.dur >= longEvent &&
		delta >= uint32(r.dur)-segmentSlack && delta <= 0xFFFF+segmentSlack
	r.recent[r.n%recentEvents] = key
	r.n++
	r.last, r.ended, r.dur = key, end, dur
	if continued {
		return 0, false, true
	}
	return rune(eventCodes[key.code]), true, true
}

func (r *eventReader) seen(key eventKey) bool {
	for i := range min(r.n, recentEvents) {
		if r.recent[i] == key {
			return true
		}
	}
	return false
}
