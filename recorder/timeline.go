package recorder

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/storage"
)

// A recording's two channels share one time base: the recorder's own clock,
// counted in frames (1/8000 s) from the moment the session was accepted.
//
// Each stream maps its RTP timestamps onto that clock through an anchor
// (an RTP timestamp and the frame it falls on). A stream anchors on its
// first packet, on an SSRC change, and after a timestamp jump, always at
// the packet's arrival; between those, samples go where their timestamp
// says, so a lost packet leaves silence of exactly its length and a late
// one lands in its place. The anchor follows the least delayed packet: one
// that would end in the future moves it back, so both channels sit at
// their minimum network delay and stay aligned with each other.
//
// Samples become final jitterDelay after their time: the flusher writes
// every frame older than that to the file, silence where nothing came. A
// packet wholly older than that is late and dropped; several late in a row
// mean the timestamps jumped back, and the stream re-anchors.
const (
	jitterDelay = 200 * time.Millisecond
	// ringFrames is the jitter buffer: frames not yet final. It must hold
	// jitterDelay plus a flush interval with room to spare; a flusher
	// stalled longer than that loses samples (counted as overruns).
	ringFrames = 8000 // 1 s: 200 ms of jitter, a 250 ms flush interval, 550 ms for a late flush
	// lateReanchor wholly late packets in a row re-anchor a stream.
	lateReanchor = 3
	// maxDTMF bounds the DTMF events kept per recording.
	maxDTMF = 500
)

// Sides of a recording: the channel each stream is written to.
const (
	sideClient  = 0 // left
	sideManager = 1 // right
)

var sideNames = [2]string{"client", "manager"}

func framesSince(start time.Time, now time.Time) int64 {
	return int64(now.Sub(start)) * SampleRate / int64(time.Second)
}

// streamState is one channel's mapping from RTP time to the recording's.
type streamState struct {
	kinds *payloadTable

	anchored  bool
	ssrc      uint32
	anchorTS  uint32
	anchorPos int64 // frame of anchorTS
	lateRun   int

	// RFC 3550 A.1-style loss count of the current SSRC.
	seqBase, seqMax uint32 // extended sequence numbers
	received        uint64

	eventTS   uint32 // RTP timestamp of the DTMF event being recorded
	eventIdx  int    // its index in timeline.dtmf, -1 if none
	haveEvent bool
}

// timelineStats are a recording's packet counters.
type timelineStats struct {
	Packets   uint64 // RTP packets taken (audio and events)
	Late      uint64 // audio packets dropped as too late
	Lost      uint64 // packets never received (by sequence number)
	Reanchors uint64 // SSRC changes and timestamp jumps
	Ignored   uint64 // payload types that are neither G.711 nor telephone-event
	Overruns  uint64 // packets dropped because the flusher fell behind
}

// timeline is the jitter buffer and clock of one recording. Readers of the
// two streams call place; one flusher goroutine calls take and writes what
// it returns. mu guards everything but the flusher's own buffer.
type timeline struct {
	mu      sync.Mutex
	ring    []int16 // ringFrames interleaved (left, right) pairs
	head    int64   // frames handed to the flusher so far
	streams [2]streamState
	dtmf    []storage.DTMFEvent
	stats   timelineStats
	lostAcc [2]uint64 // loss of previous SSRCs
}

func newTimeline(kinds [2]*payloadTable) *timeline {
	t := &timeline{ring: make([]int16, 2*ringFrames)}
	for i := range t.streams {
		t.streams[i].kinds = kinds[i]
		t.streams[i].eventIdx = -1
	}
	return t
}

// place puts one packet of side's stream on the timeline; now is the
// arrival in frames. It never blocks on I/O.
func (t *timeline) place(side int, h rtpHeader, payload []byte, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := &t.streams[side]
	kind := st.kinds[h.pt]
	if kind == kindIgnore {
		t.stats.Ignored++
		return
	}
	t.stats.Packets++
	n := int64(len(payload))
	if kind == kindEvent {
		n = 0 // an event's timestamp is its start; it covers no samples here
	}
	if !st.anchored || h.ssrc != st.ssrc {
		if st.anchored {
			t.stats.Reanchors++
			t.lostAcc[side] += st.lost()
		}
		st.anchor(h, now-n)
		st.seqBase, st.seqMax, st.received = uint32(h.seq), uint32(h.seq), 0
	}
	st.countSeq(h.seq)
	pos := st.anchorPos + int64(int32(h.ts-st.anchorTS))

	if kind == kindEvent {
		t.event(side, st, h, payload, pos)
		return
	}
	if pos+n > now {
		// Ahead of its time: the anchor was set on a delayed packet, the
		// sender's clock runs fast, or the timestamps jumped forward.
		st.anchorPos -= pos + n - now
		pos = now - n
	}
	if pos+n <= t.head {
		t.stats.Late++
		if st.lateRun++; st.lateRun >= lateReanchor {
			// Timestamps went back: take this packet as arriving now.
			t.stats.Reanchors++
			st.anchor(h, now-n)
			st.lateRun = 0
		}
		return
	}
	st.lateRun = 0
	// Keep the anchor near the newest packet so timestamp differences stay
	// small however long the call.
	st.anchorTS, st.anchorPos = h.ts, pos

	if pos < t.head { // partly late: keep the part that is not final yet
		payload = payload[t.head-pos:]
		pos = t.head
	}
	if pos+int64(len(payload)) > t.head+ringFrames {
		t.stats.Overruns++
		return
	}
	dec := audio.ULawToLinear
	if kind == kindPCMA {
		dec = audio.ALawToLinear
	}
	i := int(pos%ringFrames)*2 + side
	for _, b := range payload {
		t.ring[i] = dec[b]
		if i += 2; i >= len(t.ring) {
			i = side
		}
	}
}

func (st *streamState) anchor(h rtpHeader, pos int64) {
	st.anchored, st.ssrc, st.anchorTS, st.anchorPos, st.lateRun = true, h.ssrc, h.ts, pos, 0
	st.haveEvent = false
}

// countSeq extends the sequence number (RFC 3550 A.1) for the loss count.
func (st *streamState) countSeq(seq uint16) {
	st.received++
	ext := st.seqMax&^0xffff | uint32(seq)
	switch {
	case int32(ext-st.seqMax) < -0x8000:
		ext += 0x10000 // wrapped forward
	case int32(ext-st.seqMax) > 0x8000:
		ext -= 0x10000 // an old packet from before a wrap
	}
	if int32(ext-st.seqMax) > 0 {
		st.seqMax = ext
	}
	if int32(ext-st.seqBase) < 0 {
		st.seqBase = ext
	}
}

func (st *streamState) lost() uint64 {
	if !st.anchored {
		return 0
	}
	expected := uint64(st.seqMax-st.seqBase) + 1
	if expected <= st.received {
		return 0
	}
	return expected - st.received
}

// event records an RFC 4733 telephone-event packet as a DTMF digit: once
// per event (all its packets share the start timestamp), with the duration
// its end packet reports.
func (t *timeline) event(side int, st *streamState, h rtpHeader, p []byte, pos int64) {
	if len(p) < 4 {
		return
	}
	end := p[1]&0x80 != 0
	duration := int64(uint16(p[2])<<8|uint16(p[3])) * 1000 / SampleRate
	if st.haveEvent && h.ts == st.eventTS {
		if end && st.eventIdx >= 0 {
			t.dtmf[st.eventIdx].DurationMS = duration
		}
		return
	}
	st.haveEvent, st.eventTS, st.eventIdx = true, h.ts, -1
	digit := dtmfDigit(p[0])
	if digit == 0 || len(t.dtmf) >= maxDTMF {
		return
	}
	ev := storage.DTMFEvent{Digit: string(rune(digit)), Side: sideNames[side], AtMS: max(pos, 0) * 1000 / SampleRate}
	if end {
		ev.DurationMS = duration
	}
	st.eventIdx = len(t.dtmf)
	t.dtmf = append(t.dtmf, ev)
}

// take moves the frames before upTo out of the jitter buffer and appends
// them to out as little-endian stereo samples; the caller writes out to the
// file. Frames nobody sent are silence.
func (t *timeline) take(upTo int64, out []byte) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.head < upTo {
		i := int(t.head%ringFrames) * 2
		n := min(upTo-t.head, int64(ringFrames-t.head%ringFrames))
		seg := t.ring[i : i+2*int(n)]
		for _, s := range seg {
			out = binary.LittleEndian.AppendUint16(out, uint16(s))
		}
		clear(seg)
		t.head += n
	}
	return out
}

// snapshot returns the counters and DTMF events so far.
func (t *timeline) snapshot() (timelineStats, []storage.DTMFEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Lost = t.lostAcc[0] + t.lostAcc[1] + t.streams[0].lost() + t.streams[1].lost()
	return s, append([]storage.DTMFEvent(nil), t.dtmf...)
}
