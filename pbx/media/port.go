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
// packet from another port of an allowed IP may take its place. Latching to
// any new source at once would let anyone who guesses the port steal or
// inject audio (the "RTP bleed" attack); never re-latching would break a
// phone whose NAT binding changes mid-call. Silence alone never lets in an
// IP the signalling did not name (see acceptRTP): a leg on hold, silent
// with VAD or not yet talking is not up for grabs.
const relatchAfter = time.Second

// epoch anchors the monotonic clock used for packet times; wall-clock jumps
// must not fire media timeouts.
var epoch = time.Now()

// monotime is nanoseconds since epoch, never 0 (0 means "never").
func monotime() int64 { return int64(time.Since(epoch)) + 1 }

// Port is the RTP+RTCP socket pair of one call leg: RTP on an even port,
// RTCP on the next one. It learns where to send from SDP (SetRemote) and
// then from the packets themselves (symmetric latching, for phones behind
// NAT), taking packets only from the IPs the signalling named: the SDP's and
// those of SetAllowedSources. A Bridge reads its sockets (or, before one,
// an Endpoint: the PBX itself as the peer's far end); Close returns it to
// its pool.
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
	// allowed are the source IPs besides the SDP addresses' that may send
	// (SetAllowedSources); the readers only load it.
	allowed atomic.Pointer[[]netip.Addr]

	lastRTP atomic.Int64 // monotime of the last accepted RTP packet, 0 = never

	rtpIn, rtpBytesIn   atomic.Uint64
	rtpOut, rtpBytesOut atomic.Uint64
	rtcpIn, rtcpOut     atomic.Uint64
	dropped, refused    atomic.Uint64

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
	// Refused counts the dropped RTP and RTCP refused for where it came
	// from: an IP the signalling did not name, or another port of an
	// allowed IP while the latched one is active. It is the count of
	// hijack attempts (and of NAT rebindings cut short).
	Refused uint64
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

// SetAllowedSources replaces the IPs, besides those of the SDP addresses
// (SetRemote, SetRemoteRTCP), that RTP and RTCP may come from: where the
// peer's signalling comes from, i.e. a phone's registration source (its NAT)
// or the trunk's address. Packets from any other IP are refused, however
// long the leg has been silent; with no SDP address and no allowed IP the
// port takes nothing. Unusable IPs (invalid, unspecified, multicast) are
// skipped.
func (p *Port) SetAllowedSources(ips ...netip.Addr) {
	allowed := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if ip = ip.Unmap(); ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast() {
			allowed = append(allowed, ip)
		}
	}
	p.allowed.Store(&allowed)
}

// allows reports whether the signalling named ip as the peer's.
func (p *Port) allows(ip netip.Addr) bool {
	if a := p.sdpRTP.Load(); a != nil && a.Addr() == ip {
		return true
	}
	if a := p.sdpRTCP.Load(); a != nil && a.Addr() == ip {
		return true
	}
	if allowed := p.allowed.Load(); allowed != nil {
		for _, a := range *allowed {
			if a == ip {
				return true
			}
		}
	}
	return false
}

// refuse counts a packet refused for its source; the caller counts it as
// dropped.
func (p *Port) refuse() {
	p.refused.Add(1)
	p.pool.refused.Add(1)
}

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
		Refused:        p.refused.Load(),
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

// acceptRTP decides whether a valid RTP packet from src is taken. Only an
// IP the signalling named may send (allows); among its ports, src becomes
// the destination when there is no latch yet, the latched source has gone
// quiet for relatchAfter, or src is exactly where the peer's SDP says it is
// (so an early sender on the peer's NAT cannot keep a peer without NAT
// out). Refused packets are counted. Called only by the RTP reader of this
// port.
func (p *Port) acceptRTP(src netip.AddrPort, now int64) bool {
	cur := p.latchedRTP.Load()
	if cur != nil && *cur == src {
		p.lastRTP.Store(now)
		return true
	}
	if !p.allows(src.Addr()) {
		p.refuse()
		return false
	}
	sdp := p.sdpRTP.Load()
	fromSDP := sdp != nil && *sdp == src
	if cur != nil && !fromSDP && now-p.lastRTP.Load() < int64(relatchAfter) {
		p.refuse()
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

// acceptRTCP takes RTCP from the IP RTP comes from (before RTP has latched,
// from an IP the signalling named) and latches the RTCP destination to its
// source. Refused packets are counted.
func (p *Port) acceptRTCP(src netip.AddrPort) bool {
	if r := p.latchedRTP.Load(); r != nil && r.Addr() != src.Addr() || r == nil && !p.allows(src.Addr()) {
		p.refuse()
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
