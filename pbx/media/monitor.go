package media

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// Goroutines and ownership of a Monitor
//
//   - Relay.Monitor opens the supervisor's Port as an Endpoint (held against
//     Bridge) and starts two goroutines: the listener, the only reader of the
//     supervisor's RTP socket, and the pacer, its only writer.
//   - The relay's two RTP readers call heard (after forwarding, like a Tap)
//     and mix (before sending) on the monitor. Both only take a queue's
//     mutex for a copy of one packet's samples; neither waits for anything
//     else. In listen mode mix returns at once: the legs get exactly what
//     they got without a monitor.
//   - Queues: parties[side] is written by that side's relay reader and read by
//     the pacer; speak[side] (what the supervisor says towards side) is
//     written by the listener and read by the relay reader that sends to
//     side. Each queue holds at most queueSamples, dropping the oldest, so
//     the supervisor adds no more than that of delay anywhere.
//   - Stop detaches the monitor from the relay (its readers see nil from
//     their next packet; one already holding the monitor touches only its
//     queues), wakes and waits for both goroutines and releases the
//     endpoint. The Port stays the caller's to close.

// MonitorMode is what a supervisor's leg does on a call.
type MonitorMode uint32

// The modes of a monitor.
const (
	// MonitorListen: the supervisor hears both parties; they hear nothing.
	MonitorListen MonitorMode = iota
	// MonitorWhisper: he also speaks to the manager's side (SideB) only.
	MonitorWhisper
	// MonitorBarge: he speaks to both sides.
	MonitorBarge
)

const (
	// monitorPtime is the supervisor leg's packet length.
	monitorPtime = 20 * time.Millisecond
	// frameSamples is one packet of G.711 at monitorPtime.
	frameSamples = audio.SampleRate * int(monitorPtime/time.Millisecond) / 1000
	// queueSamples bounds every monitor queue: 60 ms.
	queueSamples = 3 * frameSamples
	// noticeSamples is the barge notice: 300 ms of a 1400 Hz beep.
	noticeSamples = audio.SampleRate * 3 / 10
	noticeFreq    = 1400
	noticeLevel   = 6000
)

// notice is the beep both parties hear when a barge starts (--monitor-notice).
var notice = func() []int16 {
	s := make([]int16, noticeSamples)
	for i := range s {
		s[i] = int16(noticeLevel * math.Sin(2*math.Pi*noticeFreq*float64(i)/audio.SampleRate))
	}
	return s
}()

// Monitor is a supervisor's leg on a running relay: he hears both legs
// mixed, in packets of his own timing, and in whisper or barge mode his
// audio is mixed into what the relay sends to the manager (SideB) or to
// both sides.
type Monitor struct {
	relay  *Relay
	ep     *Endpoint
	codec  Codec
	notice bool
	logger *zap.Logger

	mode       atomic.Uint32
	parties    [2]pcmQueue     // by the side it came from
	speak      [2]pcmQueue     // by the side it goes to
	noticeLeft [2]atomic.Int32 // samples of the notice still to mix per side
	sent       atomic.Uint64   // packets sent to the supervisor
	stop       chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup
}

// MonitorOptions tune a monitor.
type MonitorOptions struct {
	Mode MonitorMode
	// Notice plays a short beep to both parties when barge starts.
	Notice bool
	Logger *zap.Logger
}

// Monitor attaches a supervisor's leg, whose media is port (plain RTP,
// its remote set from the supervisor's SDP) and codec (PCMU or PCMA, as
// his phone answered), to the running relay. It fails with ErrNotG711,
// ErrMonitored if the relay has one already, ErrStopped if the relay has
// ended, or ErrBadLeg for a port that is closed or in use.
func (r *Relay) Monitor(port *Port, codec Codec, opts MonitorOptions) (*Monitor, error) {
	if codec.Name != PCMU.Name && codec.Name != PCMA.Name {
		return nil, ErrNotG711
	}
	ep, err := port.OpenEndpoint()
	if err != nil {
		return nil, err
	}
	m := &Monitor{relay: r, ep: ep, codec: codec, notice: opts.Notice, logger: opts.Logger, stop: make(chan struct{})}
	if m.logger == nil {
		m.logger = zap.NewNop()
	}
	m.SetMode(opts.Mode)
	if !r.monitor.CompareAndSwap(nil, m) {
		ep.Release()
		return nil, ErrMonitored
	}
	select {
	case <-r.done:
		r.monitor.CompareAndSwap(m, nil)
		ep.Release()
		return nil, ErrStopped
	default:
	}
	m.wg.Add(2)
	go m.listen()
	go m.pace()
	return m, nil
}

// Mode is the monitor's mode now.
func (m *Monitor) Mode() MonitorMode { return MonitorMode(m.mode.Load()) }

// SetMode switches the mode while the monitor runs. Entering barge starts
// the notice beep if the monitor has one; leaving a mode drops what the
// supervisor said that was not mixed yet.
func (m *Monitor) SetMode(mode MonitorMode) {
	old := MonitorMode(m.mode.Swap(uint32(mode)))
	if old == mode {
		return
	}
	for s := range m.speak {
		m.speak[s].reset()
	}
	if mode == MonitorBarge && m.notice {
		m.noticeLeft[SideA].Store(noticeSamples)
		m.noticeLeft[SideB].Store(noticeSamples)
	}
}

// Sent is how many packets went to the supervisor.
func (m *Monitor) Sent() uint64 { return m.sent.Load() }

// Stop detaches the monitor and waits for its goroutines; the port is the
// caller's to close. Safe to call more than once.
func (m *Monitor) Stop() {
	m.stopOnce.Do(func() {
		m.relay.monitor.CompareAndSwap(m, nil)
		close(m.stop)
		_ = m.ep.SetReadDeadline(time.Unix(1, 0))
		m.wg.Wait()
		m.ep.Release()
	})
}

// heard takes a copy of a packet the relay forwarded from side from.
func (m *Monitor) heard(from Side, pkt *rtp.Packet) {
	if dec, _ := g711(pkt.PayloadType); dec != nil {
		m.parties[from].push(dec, pkt.Payload)
	}
}

// mix writes into dst the RTP packet src (a fixed 12-byte header and a
// payload) bound for side to, with the supervisor's audio (and the notice)
// added, and returns its length; 0 means src goes out as it is.
func (m *Monitor) mix(to Side, src, dst []byte) int {
	switch m.Mode() {
	case MonitorListen:
		return 0
	case MonitorWhisper:
		if to != SideB {
			return 0
		}
	}
	dec, enc := g711(src[1] & 0x7f)
	if dec == nil || len(src) <= rtpHeaderLen || len(dst) < len(src) {
		return 0
	}
	var extra []int16
	if left := int(m.noticeLeft[to].Load()); left > 0 {
		at := noticeSamples - left
		extra = notice[at:min(noticeSamples, at+len(src)-rtpHeaderLen)]
		m.noticeLeft[to].Store(int32(left - len(extra)))
	}
	if !m.speak[to].mix(dst[rtpHeaderLen:len(src)], src[rtpHeaderLen:], dec, enc, extra) {
		return 0
	}
	copy(dst, src[:rtpHeaderLen])
	return len(src)
}

// listen reads the supervisor's RTP and queues it for the sides his mode
// speaks to.
func (m *Monitor) listen() {
	defer m.wg.Done()
	buf := make([]byte, maxPacket)
	var pkt rtp.Packet
	failures := 0
	for {
		if err := m.ep.ReadRTP(buf, &pkt); err != nil {
			select {
			case <-m.stop:
				return
			default:
			}
			if failures++; errors.Is(err, net.ErrClosed) || failures >= maxReadErrors {
				m.logger.Info("supervisor leg read ended", zap.Error(err))
				return
			}
			continue
		}
		failures = 0
		dec, _ := g711(pkt.PayloadType)
		if dec == nil {
			continue
		}
		switch m.Mode() {
		case MonitorWhisper:
			m.speak[SideB].push(dec, pkt.Payload)
		case MonitorBarge:
			m.speak[SideA].push(dec, pkt.Payload)
			m.speak[SideB].push(dec, pkt.Payload)
		}
	}
}

// pace sends the supervisor both parties mixed, one packet every 20 ms by
// the monotonic clock from the first (a late packet goes at once and the
// next keep the schedule), under an SSRC, sequence and timestamps of its
// own: the legs' timing and loss never reach his phone's jitter buffer.
func (m *Monitor) pace() {
	defer m.wg.Done()
	var r [10]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails (Go 1.24+)
	ssrc, ts, seq := binary.BigEndian.Uint32(r[0:]), binary.BigEndian.Uint32(r[4:]), binary.BigEndian.Uint16(r[8:])
	enc := audio.LinearToULaw
	if m.codec.Name == PCMA.Name {
		enc = audio.LinearToALaw
	}
	pkt := make([]byte, rtpHeaderLen+frameSamples)
	var a, b [frameSamples]int16
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := 0; ; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * monitorPtime)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-m.stop:
				return
			}
		} else {
			select {
			case <-m.stop:
				return
			default:
			}
		}
		m.parties[SideA].take(a[:])
		m.parties[SideB].take(b[:])
		for j := range frameSamples {
			pkt[rtpHeaderLen+j] = enc(saturate(int32(a[j]) + int32(b[j])))
		}
		pkt[0], pkt[1] = 0x80, m.codec.PayloadType&0x7f
		if i == 0 {
			pkt[1] |= 0x80
		}
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], ts)
		binary.BigEndian.PutUint32(pkt[8:], ssrc)
		if err := m.ep.WriteRTP(pkt); err == nil {
			m.sent.Add(1)
		}
		seq++
		ts += uint32(frameSamples)
	}
}

// g711 is the decoding table and encoder of a static G.711 payload type;
// nil for anything else (telephone-event, comfort noise).
func g711(pt uint8) (*[256]int16, func(int16) byte) {
	switch pt {
	case PCMU.PayloadType:
		return audio.ULawToLinear, audio.LinearToULaw
	case PCMA.PayloadType:
		return audio.ALawToLinear, audio.LinearToALaw
	}
	return nil, nil
}

// saturate clamps a sum of samples to 16 bits instead of letting it wrap.
func saturate(s int32) int16 {
	return int16(max(math.MinInt16, min(math.MaxInt16, s)))
}

// pcmQueue is a bounded FIFO of linear samples; the oldest are dropped
// when it is full.
type pcmQueue struct {
	mu   sync.Mutex
	buf  [queueSamples]int16
	head int // index of the oldest sample
	n    int
}

// push decodes payload into the queue.
func (q *pcmQueue) push(dec *[256]int16, payload []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Indices wrap by comparison, not %: this runs for every sample of
	// every packet a monitored relay forwards.
	if drop := q.n + len(payload) - len(q.buf); drop > 0 {
		drop = min(drop, q.n)
		q.head, q.n = wrap(q.head+drop), q.n-drop
	}
	if len(payload) > len(q.buf) {
		payload = payload[len(payload)-len(q.buf):]
	}
	tail := wrap(q.head + q.n)
	for _, c := range payload {
		q.buf[tail] = dec[c]
		if tail++; tail == len(q.buf) {
			tail = 0
		}
	}
	q.n += len(payload)
}

// next pops the oldest sample, 0 when empty; the caller holds mu.
func (q *pcmQueue) next() int16 {
	if q.n == 0 {
		return 0
	}
	s := q.buf[q.head]
	if q.head++; q.head == len(q.buf) {
		q.head = 0
	}
	q.n--
	return s
}

// wrap brings an index below 2*queueSamples back into the ring.
func wrap(i int) int {
	if i >= queueSamples {
		return i - queueSamples
	}
	return i
}

// take fills dst with the oldest samples, silence where there are none.
func (q *pcmQueue) take(dst []int16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range dst {
		dst[i] = q.next()
	}
}

// mix writes to dst the G.711 samples of src with queued samples and extra
// added; it reports false, dst untouched, when there is nothing to add.
func (q *pcmQueue) mix(dst, src []byte, dec *[256]int16, enc func(int16) byte, extra []int16) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 && len(extra) == 0 {
		return false
	}
	for i, c := range src {
		s := int32(dec[c]) + int32(q.next())
		if i < len(extra) {
			s += int32(extra[i])
		}
		dst[i] = enc(saturate(s))
	}
	return true
}

func (q *pcmQueue) reset() {
	q.mu.Lock()
	q.head, q.n = 0, 0
	q.mu.Unlock()
}
