package ivr

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// Goroutines and ownership of a Session
//
//   - Start opens the port's media.Endpoint (which holds the port against
//     Bridge) and starts one reader goroutine: the only reader of the RTP
//     socket. It owns both digit detectors and queues digits on a buffered
//     channel that Digit takes from.
//   - Play runs on its caller's goroutine under playMu, so there is one
//     writer at a time; the RTP stream state (SSRC, sequence, timestamp)
//     belongs to whoever holds playMu.
//   - Stop closes stop, wakes the reader with a past read deadline, waits
//     for it to exit, then takes playMu (a Play sees stop and returns) and
//     releases the endpoint. After Stop returns no goroutine of the session
//     touches the port: media.Bridge may take it.
//   - RTCP is not read while the session runs; the relay that takes the
//     port later reads and scrubs what queued up.

const (
	// ptime is the packet length of what Play sends.
	ptime          = 20 * time.Millisecond
	samplesPerPkt  = sampleRate * int(ptime/time.Millisecond) / 1000
	rtpHeaderBytes = 12

	// digitQueue is how many digits wait for Digit; more are dropped (a
	// caller who types far ahead of the flow).
	digitQueue = 32

	// maxReadErrors ends a session whose socket keeps failing.
	maxReadErrors = 100

	// sameKeyWindow is how long after tones gave a digit the first RFC
	// 4733 event of the same digit is taken for the same key press.
	sameKeyWindow = 500 * time.Millisecond

	// readBuffer fits any datagram the port accepts.
	readBuffer = 1500
)

// Session is the PBX as the far end of one leg's media: it plays audio to
// the leg's peer and hears the digits it sends, until Stop hands the port
// back.
type Session struct {
	ep     *media.Endpoint
	codec  media.Codec
	dtmfPT uint8
	encode func(int16) byte
	decode *[256]int16
	logger *zap.Logger

	digits   chan rune
	stop     chan struct{}
	stopOnce sync.Once
	readDone chan struct{}
	readErr  error // why the reader ended; written before readDone closes

	playMu  sync.Mutex // one Play at a time; the fields below are its
	ssrc    uint32
	seq     uint16
	ts0     uint32    // the RTP timestamp at created
	created time.Time // monotonic reference of the timestamps
	nextTS  uint32    // the timestamp after the last packet sent
	played  bool
}

// Start makes the PBX the far end of port's media: codec is the G.711
// format negotiated with the leg's peer (its payload type is what Play
// sends and in-band detection listens to), dtmfPT the telephone-event
// payload type negotiated (0: none, digits come in-band only). The port
// must be plain RTP and not bridged; it stays the caller's to close, and
// Stop gives it back for media.Bridge. A session has no media timeout of
// its own: the flow bounds its waits with their contexts. Start fails with
// ErrBadCodec, or media.ErrBadLeg for a port that is closed, bridged or in
// another session.
func Start(port *media.Port, codec media.Codec, dtmfPT uint8, logger *zap.Logger) (*Session, error) {
	s := &Session{
		codec:    codec,
		dtmfPT:   dtmfPT,
		logger:   logger,
		digits:   make(chan rune, digitQueue),
		stop:     make(chan struct{}),
		readDone: make(chan struct{}),
		created:  time.Now(),
	}
	switch codec.Name {
	case audio.PCMU.Name:
		s.encode, s.decode = audio.LinearToULaw, audio.ULawToLinear
	case audio.PCMA.Name:
		s.encode, s.decode = audio.LinearToALaw, audio.ALawToLinear
	default:
		return nil, ErrBadCodec
	}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	ep, err := port.OpenEndpoint()
	if err != nil {
		return nil, err
	}
	s.ep = ep
	var r [10]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails (Go 1.24+)
	s.ssrc = binary.BigEndian.Uint32(r[0:])
	s.ts0 = binary.BigEndian.Uint32(r[4:])
	s.seq = binary.BigEndian.Uint16(r[8:])
	go s.read()
	return s, nil
}

// Play sends clips to the leg's peer one after the other, encoded to the
// negotiated G.711 in 20 ms packets paced by the monotonic clock from the
// first packet (a late packet is sent at once and the next keep the
// schedule, so nothing drifts). The stream has the session's own SSRC;
// the first packet of each Play has the marker bit, and timestamps follow
// the time since the session started. Play returns when everything is
// sent (nil), or at once with ctx's error, ErrStopped, or ErrMedia if the
// port fails. Calls are serialised; Play may run while another goroutine
// waits in Digit.
func (s *Session) Play(ctx context.Context, clips ...[]int16) error {
	s.playMu.Lock()
	defer s.playMu.Unlock()
	select {
	case <-s.stop:
		return ErrStopped
	default:
	}
	pkt := make([]byte, rtpHeaderBytes+samplesPerPkt)
	start := time.Now()
	ts := s.ts0 + uint32(start.Sub(s.created)*sampleRate/time.Second)
	if s.played && int32(ts-s.nextTS) < 0 {
		ts = s.nextTS
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	src := clipReader{clips: clips}
	for i := 0; ; i++ {
		payload := pkt[rtpHeaderBytes:]
		n := src.read(payload, s.encode)
		if n == 0 {
			break
		}
		if wait := time.Until(start.Add(time.Duration(i) * ptime)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			case <-s.stop:
				return ErrStopped
			}
		}
		pkt[0], pkt[1] = 0x80, s.codec.PayloadType&0x7f
		if i == 0 {
			pkt[1] |= 0x80
		}
		binary.BigEndian.PutUint16(pkt[2:], s.seq)
		binary.BigEndian.PutUint32(pkt[4:], ts)
		binary.BigEndian.PutUint32(pkt[8:], s.ssrc)
		if err := s.ep.WriteRTP(pkt); err != nil {
			return fmt.Errorf("%w: %w", ErrMedia, err)
		}
		s.seq++
		ts += uint32(samplesPerPkt)
		s.nextTS, s.played = ts, true
	}
	return nil
}

// clipReader reads clips one after the other as 20 ms payloads.
type clipReader struct {
	clips [][]int16
	clip  int // index of the clip being read
	pos   int // next sample in it
}

// read fills payload with the next samples, encoded, padding the last
// payload with silence; it returns how many samples were real (0 at the
// end).
func (c *clipReader) read(payload []byte, encode func(int16) byte) int {
	n := 0
	for n < len(payload) && c.clip < len(c.clips) {
		cl := c.clips[c.clip]
		if c.pos >= len(cl) {
			c.clip, c.pos = c.clip+1, 0
			continue
		}
		payload[n] = encode(cl[c.pos])
		n, c.pos = n+1, c.pos+1
	}
	if n > 0 {
		for j := n; j < len(payload); j++ {
			payload[j] = encode(0)
		}
	}
	return n
}

// Digit returns the next DTMF digit the peer sent ('0'-'9', '*', '#',
// 'A'-'D'), in the order sent, whether it came as an RFC 4733 event or as
// tones in the audio. Digits typed before the call waits for them are
// kept. It returns ctx's error, ErrStopped, or ErrMedia once the port fails
// or is closed and no digit is left.
func (s *Session) Digit(ctx context.Context) (rune, error) {
	select {
	case d := <-s.digits:
		return d, nil
	default:
	}
	select {
	case d := <-s.digits:
		return d, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.stop:
		return 0, ErrStopped
	case <-s.readDone:
		select {
		case d := <-s.digits:
			return d, nil
		default:
			return 0, s.readErr
		}
	}
}

// Stop ends the session: Play and Digit return ErrStopped, the reader
// exits, and the port is returned as it was (sockets open, latch and
// counters kept, no read deadline), for media.Bridge to take at once.
// Stop waits for the session's goroutine and any Play in progress; later
// calls only return the port.
func (s *Session) Stop() *media.Port {
	s.stopOnce.Do(func() {
		close(s.stop)
		_ = s.ep.SetReadDeadline(time.Unix(1, 0)) // wakes the reader; fails only if the port is closed
		<-s.readDone
		s.playMu.Lock()
		s.ep.Release()
		s.playMu.Unlock()
	})
	return s.ep.Port()
}

// read is the session's reader goroutine: it feeds telephone-event packets
// to the RFC 4733 decoder and audio to the in-band detector. Once the peer
// has sent an event, in-band detection stops: a gateway that sends both
// would otherwise give each digit twice. The first event is not a new
// digit if the tones just gave the same one (its start packet was lost and
// the tones were heard first).
func (s *Session) read() {
	defer close(s.readDone)
	buf := make([]byte, readBuffer)
	var samples [readBuffer]int16
	var found [readBuffer/minDigitSamples + 1]rune
	var pkt rtp.Packet
	var events eventReader
	var tones toneDetector
	inband := true
	var lastTone rune
	var lastToneAt time.Time
	failures := 0
	for {
		err := s.ep.ReadRTP(buf, &pkt)
		if err != nil {
			select {
			case <-s.stop:
				s.readErr = ErrStopped
				return
			default:
			}
			if failures++; failures >= maxReadErrors || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				s.readErr = fmt.Errorf("%w: %w", ErrMedia, err)
				return
			}
			continue
		}
		failures = 0
		switch {
		case s.dtmfPT != 0 && pkt.PayloadType == s.dtmfPT:
			if d, ok, valid := events.packet(pkt.Timestamp, pkt.Payload); valid {
				heard := inband && d == lastTone && time.Since(lastToneAt) < sameKeyWindow
				inband = false
				if ok && !heard {
					s.emit(d, "rfc4733")
				}
			}
		case inband && pkt.PayloadType == s.codec.PayloadType:
			n := min(len(pkt.Payload), len(samples))
			for i, b := range pkt.Payload[:n] {
				samples[i] = s.decode[b]
			}
			for _, d := range tones.feed(samples[:n], found[:0]) {
				lastTone, lastToneAt = d, time.Now()
				s.emit(d, "inband")
			}
		}
	}
}

// emit queues a digit for Digit, dropping it if the queue is full. The
// digit itself is not logged: it may be part of a client code.
func (s *Session) emit(d rune, via string) {
	select {
	case s.digits <- d:
		s.logger.Debug("dtmf digit", zap.String("via", via))
	default:
		s.logger.Warn("dtmf digit dropped: queue full", zap.String("via", via))
	}
}
