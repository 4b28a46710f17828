package media

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// The RTP a relay sends on is its own stream, not a copy of the source's:
// each direction goes out under an SSRC the relay picked for the call, so a
// peer's SSRC (which a phone or trunk may derive from its identity, or use
// to signal) never reaches the other peer, and a source that changes its
// SSRC mid-call (a trunk switching media servers, a phone after hold) does
// not break the receiver's stream: sequence numbers and timestamps run on
// from where they were, and the marker bit says a new talkspurt begins.
// RTCP is rewritten to match (rewriteRTCP). Payload type, marker, sequence
// numbers and timestamps otherwise pass as the source sent them.

// rtpStream is the rewriting state of the RTP from one side of a relay.
// ssrc is fixed at Bridge; out is published for the RTCP relay (the poller
// or an RTCP goroutine); every other field belongs to forwardRTP of the
// side.
type rtpStream struct {
	ssrc uint32                     // the relay's SSRC for this media, fixed for the call
	out  atomic.Pointer[streamSync] // the source SSRC and offsets in use; nil before the first packet

	started bool
	src     uint32 // the source's SSRC now
	seqOff  uint16 // added to the source's sequence numbers
	tsOff   uint32 // added to the source's timestamps
	maxSeq  uint16 // the highest sequence number sent
	maxTS   uint32 // the latest timestamp sent
	lastAt  int64  // monotime of the last packet
}

// streamSync is what RTCP about a stream needs to be rewritten like its RTP:
// the source's SSRC and the offsets applied to it. Immutable once published.
type streamSync struct {
	src    uint32
	seqOff uint16
	tsOff  uint32
}

// newStreams gives each direction of a relay its own random SSRC.
func newStreams() (a, b uint32) {
	var s [8]byte
	for a == b || a == 0 || b == 0 {
		_, _ = rand.Read(s[:]) // crypto/rand.Read never fails (Go 1.24+)
		a, b = binary.BigEndian.Uint32(s[:]), binary.BigEndian.Uint32(s[4:])
	}
	return a, b
}

// rewrite puts the relay's SSRC and the stream's sequence number and
// timestamp into the RTP packet b (a fixed 12-byte header, as parseRTP
// leaves it) and into pkt, parsed from b. It allocates only when the source
// changes its SSRC.
func (s *rtpStream) rewrite(b []byte, pkt *rtp.Packet, now int64) {
	if !s.started || pkt.SSRC != s.src {
		if s.follow(pkt, now) {
			b[1] |= 0x80
			pkt.Marker = true
		}
	}
	seq, ts := pkt.SequenceNumber+s.seqOff, pkt.Timestamp+s.tsOff
	if int16(seq-s.maxSeq) > 0 {
		s.maxSeq = seq
	}
	if int32(ts-s.maxTS) > 0 {
		s.maxTS = ts
	}
	s.lastAt = now
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], s.ssrc)
	pkt.SequenceNumber, pkt.Timestamp, pkt.SSRC = seq, ts, s.ssrc
}

// follow takes up a new source SSRC: the first packet passes its sequence
// number and timestamp as they are; after a change they continue from the
// last sent, the timestamp advanced by the time since (every payload format
// the relay carries is clocked at audio.SampleRate), and follow reports
// that the packet must carry the marker of a new talkspurt.
func (s *rtpStream) follow(pkt *rtp.Packet, now int64) (changed bool) {
	changed = s.started
	if changed {
		samples := uint32(time.Duration(now-s.lastAt) * audio.SampleRate / time.Second)
		s.seqOff = s.maxSeq + 1 - pkt.SequenceNumber
		s.tsOff = s.maxTS + max(samples, 1) - pkt.Timestamp
	} else {
		s.maxSeq, s.maxTS = pkt.SequenceNumber, pkt.Timestamp
	}
	s.started, s.src = true, pkt.SSRC
	s.out.Store(&streamSync{src: s.src, seqOff: s.seqOff, tsOff: s.tsOff})
	return changed
}
