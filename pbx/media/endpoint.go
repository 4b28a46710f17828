package media

import (
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// Endpoint is the PBX itself as the far end of a leg's media: it reads what
// the leg's peer sends and sends to it, with the same rules as a relay (only
// the IPs the signalling named, symmetric latching, RTCP-range payload types
// and header extras refused or cut). It is plain RTP: call control opens one
// only on a leg that negotiated no SRTP (the trunk's).
//
// While an Endpoint is open its Port is held: Bridge refuses it with
// ErrBadLeg. Release gives it back untouched (latch, counters, sockets), so
// a Bridge can take it right after. An Endpoint is meant for one reader
// goroutine (ReadRTP) and one writer goroutine (WriteRTP) at a time, as a
// relay uses a port; Release must come after both have returned.
type Endpoint struct {
	p        *Port
	released atomic.Bool
}

// OpenEndpoint holds the port for the PBX's own use. It fails with ErrBadLeg
// on a closed port, one a relay has bridged, or one already open.
func (p *Port) OpenEndpoint() (*Endpoint, error) {
	if p.closed.Load() || !p.bridged.CompareAndSwap(false, true) {
		return nil, ErrBadLeg
	}
	return &Endpoint{p: p}, nil
}

// Port is the port the endpoint holds.
func (e *Endpoint) Port() *Port { return e.p }

// ReadRTP blocks until the port accepts an RTP packet from the leg's peer
// and returns it parsed into pkt, its payload aliasing buf (at least
// 1500 bytes are needed for a full datagram; a datagram filling buf is
// dropped as truncated). Packets a relay would drop are dropped and counted
// the same way, and reading goes on. The error is the socket's: a deadline
// (SetReadDeadline) or net.ErrClosed once the port is closed.
func (e *Endpoint) ReadRTP(buf []byte, pkt *rtp.Packet) error {
	in := e.p
	for {
		n, src, err := in.rtp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if n >= len(buf) {
			in.dropped.Add(1)
			continue
		}
		now := monotime()
		n, ok := parseRTP(pkt, buf[:n])
		if !ok || !in.acceptRTP(unmap(src), now) {
			in.dropped.Add(1)
			continue
		}
		in.rtpIn.Add(1)
		in.rtpBytesIn.Add(uint64(n))
		return nil
	}
}

// WriteRTP sends the RTP packet b to the leg's peer: its latched address,
// else its SDP address. With neither (a peer on hold that never sent) it
// sends nothing and returns nil, as a relay would.
func (e *Endpoint) WriteRTP(b []byte) error {
	dst, ok := e.p.rtpDest()
	if !ok {
		return nil
	}
	if _, err := e.p.rtp.WriteToUDPAddrPort(b, dst); err != nil {
		return err
	}
	e.p.rtpOut.Add(1)
	e.p.rtpBytesOut.Add(uint64(len(b)))
	return nil
}

// SetReadDeadline sets the deadline of ReadRTP; a time in the past wakes a
// blocked reader at once.
func (e *Endpoint) SetReadDeadline(t time.Time) error { return e.p.rtp.SetReadDeadline(t) }

// Release clears the read deadline and gives the port back: Bridge may take
// it. Call it after the reader and writer have returned; later calls do
// nothing (the port may be a relay's by then).
func (e *Endpoint) Release() {
	if !e.released.CompareAndSwap(false, true) {
		return
	}
	_ = e.p.rtp.SetReadDeadline(time.Time{}) // fails only on a closed socket
	e.p.bridged.Store(false)
}
