package recorder

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// ErrNoPorts means no UDP port for a recorded stream could be bound.
var ErrNoPorts = errors.New("recorder: no free RTP port")

// ErrBadPortRange means a --rtp-ports value is not "min-max".
var ErrBadPortRange = errors.New("recorder: bad RTP port range")

// udpPorts binds the receive sockets of recorded streams: anywhere the OS
// likes, or inside a configured range (for firewalls).
type udpPorts struct {
	ip     netip.Addr
	lo, hi int // 0, 0: any port

	mu   sync.Mutex
	next int
}

// parsePortRange reads "min-max"; "" means any port.
func parsePortRange(s string) (lo, hi int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1024 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("%w: %q", ErrBadPortRange, s)
	}
	return lo, hi, nil
}

func newUDPPorts(ip netip.Addr, lo, hi int) *udpPorts {
	return &udpPorts{ip: ip, lo: lo, hi: hi, next: lo}
}

// listen binds one socket.
func (p *udpPorts) listen() (*net.UDPConn, error) {
	if p.lo == 0 {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, 0)))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoPorts, err)
		}
		return c, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.hi - p.lo + 1 {
		port := p.next
		if p.next++; p.next > p.hi {
			p.next = p.lo
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port))))
		if err == nil {
			return c, nil
		}
	}
	return nil, ErrNoPorts
}
