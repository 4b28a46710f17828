package media

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// relatchAfter is how long the latched RTP source must be silent before a
// packet from another source may take its place. Latching to any new source
// at once would let anyone who guesses the port steal or inject audio (the
// "RTP bleed" attack); never re-latching would break a phone whose NAT
// binding or address changes mid-call.
const relatchAfter = time.Second

// epoch anchors the monotonic clock used for packet times; wall-clock jumps
// must not fire media timeouts.
var epoch = time.Now()

// monotime is nanoseconds since epoch, never 0 (0 means "never").
func monotime() int64 { return int64(time.Since(epoch)) + 1 }

// Port is the RTP+RTCP socket pair of one call leg: RTP on an even port,
// RTCP on the next one. It learns where to send from SDP (SetRemote) and
// then from the packets themselves (symmetric latching, for phones behind
// NAT). A Bridge reads its sockets; Close returns it to its pool.
type Port struct {
	pool      *PortPool
	rtp, rtcp *net.UDPConn
	local     netip.AddrPort // RTP socket address
	logger    atomic.Pointer[zap.Logger]

	// Destinations. The sdp* pointers are set by SetRemote/SetRemoteRTCP;
	// latchedRTP is written only by the goroutine reading the RTP socket,
	// latchedRTCP by the RTCP reader, the shared poller or the relay's RTCP
	// goroutine (and cleared by the RTP reader when RTP moves to another
	// IP). Writers of the peer leg read them lock-free.
	sdpRTP      atomic.Pointer[netip.AddrPort]
	sdpRTCP     atomic.Pointer[netip.AddrPort]
	latchedRTP  atomic.Pointer[netip.AddrPort]
	latchedRTCP atomic.Pointer[netip.AddrPort]

	lastRTP atomic.Int64 // monotime of the last accepted RTP packet, 0 = never

	rtpIn, rtpBytesIn   atomic.Uint64
	rtpOut, rtpBytesOut atomic.Uint64
	rtcpIn, rtcpOut     atomic.Uint64
	dropped             atomic.Uint64

	bridged   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
}

// PortStats is a snapshot of a Port's counters. "In" is from this leg's
// peer, "Out" is towards it.
type PortStats struct {
	RTPPacketsIn, RTPBytesIn   uint64
	RTPPacketsOut, RTPBytesOut uint64
	RTCPPacketsIn              uint64
	RTCPPacketsOut             uint64
	// Dropped counts packets not relayed: not RTP/RTCP, RTP from a source
	// other than the latched one, RTCP from a foreign IP or with nothing left
	// after scrubbing, and on a secure leg SRTP/SRTCP that fails
	// authentication or is replayed.
	Dropped uint64
	// LastRTP is when the last accepted RTP packet arrived (zero if none).
	LastRTP time.Time
	// Latched is true once RTP has arrived and fixed the destination.
	Latched bool
}

func newPort(pool *PortPool, rtpPort int, rtp, rtcp *net.UDPConn, logger *zap.Logger) *Port {
	p := &Port{
		pool:  pool,
		rtp:   rtp,
		rtcp:  rtcp,
		local: netip.AddrPortFrom(pool.ip, uint16(rtpPort)),
	}
	p.logger.Store(logger)
	return p
}

// SetLogger sets the logger, typically one carrying call and leg fields.
func (p *Port) SetLogger(l *zap.Logger) { p.logger.Store(l) }

// LocalAddr is the address of the RTP socket; RTCP is on the next port.
func (p *Port) LocalAddr() netip.AddrPort { return p.local }

// SetRemote sets the RTP destination written in the peer's SDP; RTCP goes to
// the next port unless SetRemoteRTCP says otherwise. An invalid, unspecified
// (0.0.0.0 hold) or port-0 address means "send nothing until the peer's
// RTP arrives". A destination latched from packets takes precedence.
func (p *Port) SetRemote(addr netip.AddrPort) {
	p.sdpRTP.Store(usable(addr))
	p.sdpRTCP.Store(nil)
}

// SetRemoteRTCP sets the RTCP destination from an SDP a=rtcp attribute.
func (p *Port) SetRemoteRTCP(addr netip.AddrPort) { p.sdpRTCP.Store(usable(addr)) }

func usable(addr netip.AddrPort) *netip.AddrPort {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.IsValid() || addr.Port() == 0 || addr.Addr().IsUnspecified() || addr.Addr().IsMulticast() {
		return nil
	}
	return &addr
}

// Remote is where RTP for this leg's peer goes now (invalid if nowhere yet).
func (p *Port) Remote() netip.AddrPort {
	a, _ := p.rtpDest()
	return a
}

// RemoteRTCP is where RTCP for this leg's peer goes now.
func (p *Port) RemoteRTCP() netip.AddrPort {
	a, _ := p.rtcpDest()
	return a
}

// Stats returns a snapshot of the counters.
func (p *Port) Stats() PortStats {
	s := PortStats{
		RTPPacketsIn:   p.rtpIn.Load(),
		RTPBytesIn:     p.rtpBytesIn.Load(),
		RTPPacketsOut:  p.rtpOut.Load(),
		RTPBytesOut:    p.rtpBytesOut.Load(),
		RTCPPacketsIn:  p.rtcpIn.Load(),
		RTCPPacketsOut: p.rtcpOut.Load(),
		Dropped:        p.dropped.Load(),
		Latched:        p.latchedRTP.Load() != nil,
	}
	if t := p.lastRTP.Load(); t != 0 {
		s.LastRTP = epoch.Add(time.Duration(t - 1))
	}
	return s
}

// Close closes both sockets and returns the pair to the pool. Only the first
// call does anything, so a Bridge's Stop and a caller's deferred Close may
// both run; call control closes every port it allocated, however the call
// ends.
func (p *Port) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		err = errors.Join(p.rtp.Close(), p.rtcp.Close())
		// Sockets first: the number may be handed out again right away.
		p.pool.giveBack(int(p.local.Port()))
	})
	return err
}

// acceptRTP decides whether a valid RTP packet from src is taken, latching
// the destination to src when there is no latch yet, the latched source has
// gone quiet, or src is exactly where the peer's SDP says it is (so an early
// intruder cannot keep a peer without NAT out). Called only by the RTP
// reader of this port.
func (p *Port) acceptRTP(src netip.AddrPort, now int64) bool {
	cur := p.latchedRTP.Load()
	if cur != nil && *cur == src {
		p.lastRTP.Store(now)
		return true
	}
	sdp := p.sdpRTP.Load()
	fromSDP := sdp != nil && *sdp == src
	if cur != nil && !fromSDP && now-p.lastRTP.Load() < int64(relatchAfter) {
		return false
	}
	latched := src
	p.latchedRTP.Store(&latched)
	p.lastRTP.Store(now)
	if r := p.latchedRTCP.Load(); r != nil && r.Addr() != src.Addr() {
		p.latchedRTCP.Store(nil)
	}
	// The peer's address is not logged: it may be a client's (invariant 1).
	p.logger.Load().Info("rtp latched",
		zap.Uint16("local_port", p.local.Port()),
		zap.Bool("relatch", cur != nil),
		zap.Bool("differs_from_sdp", !fromSDP))
	return true
}

// acceptRTCP takes RTCP from the IP RTP comes from (any IP before RTP has
// latched) and latches the RTCP destination to its source.
func (p *Port) acceptRTCP(src netip.AddrPort) bool {
	if r := p.latchedRTP.Load(); r != nil && r.Addr() != src.Addr() {
		return false
	}
	if cur := p.latchedRTCP.Load(); cur == nil || *cur != src {
		latched := src
		p.latchedRTCP.Store(&latched)
		p.logger.Load().Debug("rtcp latched", zap.Uint16("local_port", p.local.Port()))
	}
	return true
}

// rtpDest is the latched source, else the SDP address.
func (p *Port) rtpDest() (netip.AddrPort, bool) {
	if a := p.latchedRTP.Load(); a != nil {
		return *a, true
	}
	if a := p.sdpRTP.Load(); a != nil {
		return *a, true
	}
	return netip.AddrPort{}, false
}

// rtcpDest is the latched RTCP source; else, once RTP has latched, the SDP
// a=rtcp address if RTP came from where SDP said and the RTP source port+1
// if not (NAT); before any latch, a=rtcp or the SDP RTP port+1.
func (p *Port) rtcpDest() (netip.AddrPort, bool) {
	if a := p.latchedRTCP.Load(); a != nil {
		return *a, true
	}
	sdp, explicit := p.sdpRTP.Load(), p.sdpRTCP.Load()
	if a := p.latchedRTP.Load(); a != nil {
		if explicit != nil && sdp != nil && *sdp == *a {
			return *explicit, true
		}
		return nextPort(*a)
	}
	if explicit != nil {
		return *explicit, true
	}
	if sdp != nil {
		return nextPort(*sdp)
	}
	return netip.AddrPort{}, false
}

func nextPort(a netip.AddrPort) (netip.AddrPort, bool) {
	if a.Port() == 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Addr(), a.Port()+1), true
}
