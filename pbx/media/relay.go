package media

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/zap"
)

// Goroutines and ownership of a Relay
//
//   - Bridge starts two RTP reader goroutines, A-RTP and B-RTP. Each owns
//     its read buffer and is the only goroutine writing to the other leg's
//     RTP socket, so each RTP socket has one reader and one writer.
//   - RTCP of both legs is read by the process's one RTCP poller goroutine
//     (rtcppoll_linux.go), which then is the only writer of both RTCP
//     sockets. Where epoll is missing or refuses the sockets, Bridge starts
//     an RTCP reader goroutine per leg instead, with the same ownership.
//   - A reader is the only writer of its port's latched destination; the
//     other leg's reader reads it lock-free (atomic pointers).
//   - The media-timeout check runs on a time.AfterFunc timer, not a goroutine
//     of its own; timerMu serialises it with SetMediaTimeout.
//   - end (once) records the reason, stops the timer, takes the RTCP sockets
//     out of the poller, closes both Ports (which returns them to the pool
//     and unblocks the readers) and closes done.
//     Stop, the timeout, and a reader whose socket failed all go through end.
//   - The Relay owns both Ports from Bridge on: nobody else reads them.
//     Bridge refuses a port an Endpoint holds (endpoint.go); Release
//     leaves no reader behind and no read deadline set.
//     Call control may still Close a Port (Close is idempotent); the relay
//     then ends with ErrStopped.
//   - A Monitor (monitor.go) is called by both RTP readers, under its own
//     queues' locks; it never writes to the relay's sockets.
//   - A secure leg's SRTP contexts belong to the goroutines that use them;
//     srtp.go says which.
//   - Stop waits for the reader goroutines, so no Tap call runs after Stop
//     returns. The poller may still be relaying one RTCP datagram of the
//     relay: its write to the closed socket fails and changes nothing.
//     Done only says the relay ended and its ports are back in the pool.

const (
	// DefaultMediaTimeout is the --media-timeout default.
	DefaultMediaTimeout = 60 * time.Second

	// maxPacket is the read buffer size; a datagram filling it may have been
	// truncated and is dropped. RTP/RTCP for G.711 are far smaller.
	maxPacket = 1500

	// maxReadErrors ends a relay whose socket keeps failing (not closed).
	maxReadErrors = 100

	rtpHeaderLen = 12
)

// Side names a leg of a relay.
type Side uint8

// The two legs: A and B in Bridge's argument order.
const (
	SideA Side = iota
	SideB
)

// String is "a" or "b", as in log fields and errors.
func (s Side) String() string {
	if s == SideA {
		return "a"
	}
	return "b"
}

// Tap sees each RTP packet a relay forwards, tagged with the side it came
// from, after forwarding and in the form sent (the relay's SSRC, no CSRC,
// extension or padding: stream.go), always plain RTP: a secure leg's
// packets are decrypted before it sees them. It runs on the reader
// goroutine: it must return quickly and never block (a recorder copies and
// queues, dropping when behind), must not modify pkt, and must not keep pkt
// or its Payload after returning. It must not call Stop.
type Tap func(from Side, pkt *rtp.Packet)

// BridgeOptions tune a relay. The zero value is usable.
type BridgeOptions struct {
	// MediaTimeout ends the relay when a leg sends no RTP for this long.
	// 0 means DefaultMediaTimeout, negative disables it.
	MediaTimeout time.Duration
	// PayloadTypesAToB and PayloadTypesBToA rewrite RTP payload types per
	// direction, for legs that negotiated different dynamic numbers for the
	// same codec (see PayloadTypeMap). Types not listed pass unchanged.
	PayloadTypesAToB, PayloadTypesBToA map[uint8]uint8
	// Tap, if set, sees every forwarded RTP packet (see SetTap).
	Tap Tap
	// Logger gets the relay's end; nil means no logging.
	Logger *zap.Logger
	// SRTP holds the keys of each secure side (nil: a plain side), indexed
	// by Side. The relay decrypts and authenticates SRTP and SRTCP from a
	// secure side, dropping what fails, and encrypts what it sends there.
	SRTP [2]*SRTPKeys

	// rtcpOnGoroutines makes the relay read RTCP on goroutines of its own,
	// as it does where the poller is unavailable (tests of that path).
	rtcpOnGoroutines bool
}

// Relay is the running media bridge of one call between two Ports.
type Relay struct {
	legs   [2]*Port
	cname  [2][]byte      // RTCP CNAME token standing in for each side
	ptmap  [2]*[128]uint8 // payload type rewrite per source side, nil = none
	stream [2]rtpStream   // SSRC, sequence and timestamp rewriting per source side
	srtp   [2]*srtpLeg    // SRTP state per secure side, nil = plain
	tap    atomic.Pointer[Tap]
	// monitor is the supervisor listening in, nil for none (monitor.go).
	monitor atomic.Pointer[Monitor]
	logger  *zap.Logger

	timerMu sync.Mutex // serialises checkMedia and SetMediaTimeout
	timer   *time.Timer
	rtcp    rtcpWatch    // the RTCP sockets' registration with the poller
	timeout atomic.Int64 // time.Duration; <= 0 disabled
	armedAt atomic.Int64 // monotime a silent leg is measured from

	wg      sync.WaitGroup
	endOnce sync.Once
	done    chan struct{}
	err     error // written once before done is closed
}

// Bridge starts relaying RTP and RTCP between a and b and takes ownership of
// both ports: they are closed when the relay ends, however it ends. On error
// (ErrBadLeg, or ErrNoCrypto for unusable opts.SRTP) the ports stay the
// caller's to close.
func Bridge(a, b *Port, opts BridgeOptions) (*Relay, error) {
	if a == nil || b == nil || a == b || a.closed.Load() || b.closed.Load() {
		return nil, ErrBadLeg
	}
	var legs [2]*srtpLeg
	for s, k := range opts.SRTP {
		var err error
		if legs[s], err = newSRTPLeg(k); err != nil {
			return nil, fmt.Errorf("leg %s: %w", Side(s), err)
		}
	}
	if !a.bridged.CompareAndSwap(false, true) {
		return nil, ErrBadLeg
	}
	if !b.bridged.CompareAndSwap(false, true) {
		a.bridged.Store(false)
		return nil, ErrBadLeg
	}
	r := &Relay{
		legs:   [2]*Port{a, b},
		srtp:   legs,
		logger: opts.Logger,
		done:   make(chan struct{}),
	}
	if r.logger == nil {
		r.logger = zap.NewNop()
	}
	r.cname[SideA], r.cname[SideB] = newCNAME(), newCNAME()
	r.stream[SideA].ssrc, r.stream[SideB].ssrc = newStreams()
	r.ptmap[SideA] = ptTable(opts.PayloadTypesAToB)
	r.ptmap[SideB] = ptTable(opts.PayloadTypesBToA)
	if opts.Tap != nil {
		r.SetTap(opts.Tap)
	}

	timeout := opts.MediaTimeout
	if timeout == 0 {
		timeout = DefaultMediaTimeout
	}
	r.timeout.Store(int64(timeout))
	r.armedAt.Store(monotime())

	// The timer exists before any reader can call end.
	r.timer = time.AfterFunc(time.Duration(1<<62), r.checkMedia)
	r.timer.Stop()
	if timeout > 0 {
		r.timer.Reset(timeout)
	}

	if opts.rtcpOnGoroutines || !r.rtcp.start(r) {
		r.wg.Add(2)
		go r.readRTCP(SideA)
		go r.readRTCP(SideB)
	}
	r.wg.Add(2)
	go r.forwardRTP(SideA)
	go r.forwardRTP(SideB)
	return r, nil
}

// Done is closed when the relay has ended and both ports are back in the pool.
func (r *Relay) Done() <-chan struct{} { return r.done }

// Err is why the relay ended (ErrStopped, ErrMediaTimeout, a socket error),
// nil while it runs.
func (r *Relay) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Stop ends the relay, closes both ports and waits for its goroutines.
func (r *Relay) Stop() {
	r.end(ErrStopped)
	r.wg.Wait()
}

// SetTap installs (or with nil removes) the tap, e.g. when a recording starts
// mid-call. Safe to call while the relay runs.
func (r *Relay) SetTap(t Tap) {
	if t == nil {
		r.tap.Store(nil)
		return
	}
	r.tap.Store(&t)
}

// SetMediaTimeout changes the media timeout while the relay runs (negative
// disables it, e.g. while a leg is on hold); silent legs get the full new
// timeout from now.
func (r *Relay) SetMediaTimeout(d time.Duration) {
	if d == 0 {
		d = DefaultMediaTimeout
	}
	r.timerMu.Lock()
	defer r.timerMu.Unlock()
	r.timeout.Store(int64(d))
	r.armedAt.Store(monotime())
	if d > 0 {
		r.timer.Reset(d)
	} else {
		r.timer.Stop()
	}
}

// Stats returns the counters of one side's port.
func (r *Relay) Stats(s Side) PortStats { return r.legs[s].Stats() }

func (r *Relay) end(reason error) {
	r.endOnce.Do(func() {
		r.err = reason
		r.timer.Stop()
		r.rtcp.stop()
		errA, errB := r.legs[SideA].Close(), r.legs[SideB].Close()
		close(r.done)
		fields := []zap.Field{zap.String("reason", reason.Error())}
		if err := errors.Join(errA, errB); err != nil {
			fields = append(fields, zap.NamedError("close_error", err))
		}
		r.logger.Info("media relay ended", fields...)
	})
}

// checkMedia runs on the timer: it ends the relay if a leg has been silent
// for the timeout, or re-arms for the earliest moment one could be.
func (r *Relay) checkMedia() {
	r.timerMu.Lock()
	defer r.timerMu.Unlock()
	d := r.timeout.Load()
	if d <= 0 {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	now, armed := monotime(), r.armedAt.Load()
	next := d
	for s, p := range r.legs {
		idle := now - max(p.lastRTP.Load(), armed)
		if idle >= d {
			r.end(fmt.Errorf("%w: leg %s silent for %s", ErrMediaTimeout, Side(s), time.Duration(d)))
			return
		}
		next = min(next, d-idle)
	}
	r.timer.Reset(time.Duration(next))
}

// forwardRTP reads RTP from side from and sends it on to the other leg.
func (r *Relay) forwardRTP(from Side) {
	defer r.wg.Done()
	in, out := r.legs[from], r.legs[1-from]
	ptmap, stream := r.ptmap[from], &r.stream[from]
	buf := make([]byte, maxPacket)
	var pkt rtp.Packet
	// SRTP state of this goroutine: the source side's decryption, the other
	// side's encryption into sealed (the Tap sees buf, which stays plain).
	open, seal := r.srtp[from], r.srtp[1-from]
	var sealed []byte
	var hdr rtp.Header
	if seal != nil {
		sealed = make([]byte, maxPacket+srtpOverhead)
	}
	// mixed holds a packet with a supervisor's audio added (monitor.go),
	// made the first time one speaks: the recording and the monitor hear
	// buf, as the peer sent it.
	var mixed []byte
	failures := 0
	for {
		n, src, err := in.rtp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if failures++; r.readFailed(err, failures) {
				return
			}
			continue
		}
		failures = 0
		if n >= len(buf) {
			in.dropped.Add(1)
			continue
		}
		b := buf[:n]
		if open != nil {
			// Authenticate before acceptRTP: a forged packet must neither
			// move the latch nor count as media.
			var ok bool
			if b, ok = open.openRTP(b, &hdr); !ok {
				in.dropped.Add(1)
				continue
			}
		}
		now := monotime()
		n, ok := parseRTP(&pkt, b)
		if !ok || !in.acceptRTP(unmap(src), now) {
			in.dropped.Add(1)
			continue
		}
		in.rtpIn.Add(1)
		in.rtpBytesIn.Add(uint64(n))
		if ptmap != nil {
			pkt.PayloadType = ptmap[pkt.PayloadType]
			buf[1] = buf[1]&0x80 | pkt.PayloadType
		}
		stream.rewrite(buf[:n], &pkt, now)
		mon := r.monitor.Load()
		if dst, ok := out.rtpDest(); ok {
			wire, ok := buf[:n], true
			if mon != nil {
				if mixed == nil {
					mixed = make([]byte, maxPacket)
				}
				if m := mon.mix(1-from, buf[:n], mixed); m > 0 {
					wire = mixed[:m]
				}
			}
			if seal != nil {
				wire, ok = seal.sealRTP(sealed, wire, &hdr)
			}
			if ok {
				if _, err := out.rtp.WriteToUDPAddrPort(wire, dst); err == nil {
					out.rtpOut.Add(1)
					out.rtpBytesOut.Add(uint64(len(wire)))
				}
			}
		}
		if tap := r.tap.Load(); tap != nil {
			(*tap)(from, &pkt)
		}
		if mon != nil {
			mon.heard(from, &pkt)
		}
	}
}

// readRTCP reads side from's RTCP socket on a goroutine of its own, for
// relays whose RTCP the poller does not watch.
func (r *Relay) readRTCP(from Side) {
	defer r.wg.Done()
	buf := make([]byte, maxPacket)
	scrubbed := make([]byte, maxPacket)
	failures := 0
	for {
		n, src, err := r.legs[from].rtcp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if failures++; r.readFailed(err, failures) {
				return
			}
			continue
		}
		failures = 0
		r.relayRTCP(from, buf[:n], src, scrubbed, writeRTCP)
	}
}

// relayRTCP scrubs a datagram read from side from's RTCP socket and sends it
// on with send; scrubbed is maxPacket bytes of scratch space. b is the
// reader's buffer (capacity maxPacket): SRTCP is decrypted in it, and once
// scrubbed it is free to hold the SRTCP sent to a secure side.
func (r *Relay) relayRTCP(from Side, b []byte, src netip.AddrPort, scrubbed []byte,
	send func(out *Port, b []byte, dst netip.AddrPort) error) {
	in, out := r.legs[from], r.legs[1-from]
	if len(b) >= maxPacket || !src.IsValid() {
		in.dropped.Add(1)
		return
	}
	if open := r.srtp[from]; open != nil {
		// Authenticate before acceptRTCP latches the RTCP destination.
		var ok bool
		if b, ok = open.openRTCP(b); !ok {
			in.dropped.Add(1)
			return
		}
	}
	m := scrubRTCP(scrubbed, b, r.cname[from])
	if m == 0 || !in.acceptRTCP(unmap(src)) {
		in.dropped.Add(1)
		return
	}
	ids := rtcpIDs{sender: r.stream[from].ssrc, reported: r.stream[1-from].ssrc}
	if s := r.stream[from].out.Load(); s != nil {
		ids.tsOff = s.tsOff
	}
	if s := r.stream[1-from].out.Load(); s != nil {
		ids.source, ids.seqOff, ids.known = s.src, s.seqOff, true
	}
	if m = rewriteRTCP(scrubbed[:m], &ids); m == 0 {
		in.dropped.Add(1)
		return
	}
	in.rtcpIn.Add(1)
	if dst, ok := out.rtcpDest(); ok {
		wire, ok := scrubbed[:m], true
		if seal := r.srtp[1-from]; seal != nil {
			wire, ok = seal.sealRTCP(b[:0:cap(b)], wire)
		}
		if ok && send(out, wire, dst) == nil {
			out.rtcpOut.Add(1)
		}
	}
}

// writeRTCP sends on out's RTCP socket, as its own reader goroutine may:
// waiting for room holds up no other call.
func writeRTCP(out *Port, b []byte, dst netip.AddrPort) error {
	_, err := out.rtcp.WriteToUDPAddrPort(b, dst)
	return err
}

// readFailed reports whether a reader must exit, ending the relay if the
// socket was closed behind its back or keeps failing.
func (r *Relay) readFailed(err error, failures int) bool {
	switch {
	case errors.Is(err, net.ErrClosed):
		r.end(fmt.Errorf("%w: port closed", ErrStopped))
		return true
	case failures >= maxReadErrors:
		r.end(fmt.Errorf("media: socket read: %w", err))
		return true
	}
	return false
}

// parseRTP validates an RTP packet in b, cuts it in place to its fixed
// header and payload and leaves the parsed packet in pkt (payload aliasing
// b). It returns the new length.
func parseRTP(pkt *rtp.Packet, b []byte) (int, bool) {
	if len(b) < rtpHeaderLen || b[0]>>6 != 2 {
		return 0, false
	}
	// Payload types 64-95 collide with RTCP (RFC 5761 §4): RTCP sent to the
	// RTP port must not be forwarded unscrubbed.
	if pt := b[1] & 0x7f; pt >= 64 && pt <= 95 {
		return 0, false
	}
	if pkt.Unmarshal(b) != nil {
		return 0, false
	}
	if b[0]&0x3f == 0 { // no padding, header extension or CSRC: the usual case
		return len(b), true
	}
	// Header extensions can carry identity (RFC 7941 SDES items such as
	// CNAME), CSRC lists and padding anything at all (a covert channel of
	// some 300 bytes a packet); G.711 needs none of them, so they are cut out.
	n := rtpHeaderLen + copy(b[rtpHeaderLen:], pkt.Payload)
	b[0] &^= 0x3f
	if pkt.Unmarshal(b[:n]) != nil {
		return 0, false
	}
	return n, true
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// newCNAME is a random RTCP CNAME for one side of one call (RFC 7022 style),
// so RTCP carries nothing that identifies the other party.
func newCNAME() []byte {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return []byte(hex.EncodeToString(b[:]))
}

func ptTable(m map[uint8]uint8) *[128]uint8 {
	if len(m) == 0 {
		return nil
	}
	var t [128]uint8
	for i := range t {
		t[i] = uint8(i)
	}
	for from, to := range m {
		if from < 128 && to < 128 {
			t[from] = to
		}
	}
	return &t
}

// PayloadTypeMap maps each payload type negotiated on one leg to the type
// negotiated for the same codec on the other leg, where the numbers differ
// (typically telephone-event: 101 on one side, 96 on the other).
func PayloadTypeMap(from, to []Codec) map[uint8]uint8 {
	m := map[uint8]uint8{}
	for _, f := range from {
		for _, t := range to {
			if f.Name == t.Name && f.ClockRate == t.ClockRate {
				if f.PayloadType != t.PayloadType {
					m[f.PayloadType] = t.PayloadType
				}
				break
			}
		}
	}
	return m
}
