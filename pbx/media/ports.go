package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
)

// ParsePortRange parses an --rtp-ports value such as "20000-29999".
func ParsePortRange(s string) (min, max int, err error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return 0, 0, fmt.Errorf("%w: want min-max", ErrBadPortRange)
	}
	min, err1 := strconv.Atoi(strings.TrimSpace(lo))
	max, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: want two numbers", ErrBadPortRange)
	}
	if err := checkRange(min, max); err != nil {
		return 0, 0, err
	}
	return min, max, nil
}

func checkRange(min, max int) error {
	if min < 1 || max > 65535 || min > max {
		return fmt.Errorf("%w: want 1 <= min <= max <= 65535", ErrBadPortRange)
	}
	if firstEven(min)+1 > max {
		return fmt.Errorf("%w: no even port with a free odd neighbour", ErrBadPortRange)
	}
	return nil
}

func firstEven(p int) int { return p + p%2 }

// PortPool hands out RTP/RTCP port pairs on one IP from a fixed range.
//
// Free pairs are kept in FIFO order, so a released pair goes to the back and
// is reused as late as possible: stray packets of an ended call then reach a
// closed port rather than the next call. Safe for concurrent use.
type PortPool struct {
	ip      netip.Addr
	logger  *zap.Logger
	refused atomic.Uint64 // packets its ports refused for their source

	mu    sync.Mutex // guards the fields below
	free  []int      // ring of even RTP ports not handed out
	head  int        // index of the oldest free port in free
	count int        // number of free ports in the ring
	inUse int
}

// NewPortPool returns a pool of even RTP ports (RTCP on port+1) in [min, max]
// on ip. Sockets are bound lazily by Allocate.
func NewPortPool(ip string, min, max int) (*PortPool, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("media: bad RTP listen IP: %w", err)
	}
	if err := checkRange(min, max); err != nil {
		return nil, err
	}
	var ports []int
	for p := firstEven(min); p+1 <= max; p += 2 {
		ports = append(ports, p)
	}
	return &PortPool{ip: addr.Unmap(), logger: zap.NewNop(), free: ports, count: len(ports)}, nil
}

// SetLogger sets the logger new ports start with; call it before Allocate.
func (pp *PortPool) SetLogger(l *zap.Logger) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.logger = l
}

// Size is the number of port pairs in the range.
func (pp *PortPool) Size() int { return len(pp.free) }

// InUse is the number of pairs handed out and not yet closed.
func (pp *PortPool) InUse() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.inUse
}

// Refused is the number of RTP and RTCP packets the pool's ports, open or
// closed, refused for where they came from (PortStats.Refused).
func (pp *PortPool) Refused() uint64 { return pp.refused.Load() }

// Allocate binds the next free even port and its odd neighbour. Ports the OS
// refuses (taken by another process) are skipped and retried on a later
// call; ErrNoPorts means every pair was tried.
func (pp *PortPool) Allocate() (*Port, error) {
	pp.mu.Lock()
	tries := pp.count
	logger := pp.logger
	pp.mu.Unlock()

	for range tries {
		rtpPort, ok := pp.take()
		if !ok {
			break
		}
		rtp, err := pp.listen(rtpPort)
		if err != nil {
			pp.giveBack(rtpPort)
			if refused(err) {
				continue
			}
			return nil, fmt.Errorf("media: bind RTP port: %w", err)
		}
		rtcp, err := pp.listen(rtpPort + 1)
		if err != nil {
			rtp.Close()
			pp.giveBack(rtpPort)
			if refused(err) {
				continue
			}
			return nil, fmt.Errorf("media: bind RTCP port: %w", err)
		}
		return newPort(pp, rtpPort, rtp, rtcp, logger), nil
	}
	return nil, ErrNoPorts
}

func (pp *PortPool) listen(port int) (*net.UDPConn, error) {
	// udp4 for an IPv4 IP, so 0.0.0.0 is not a dual-stack socket that
	// reports v4-mapped sources.
	network := "udp6"
	if pp.ip.Is4() {
		network = "udp4"
	}
	return net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(pp.ip, uint16(port))))
}

// refused reports bind errors that mean "this port, not this IP": the next
// port may work. Anything else (address not local) fails the whole Allocate.
func refused(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EACCES)
}

func (pp *PortPool) take() (int, bool) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.count == 0 {
		return 0, false
	}
	p := pp.free[pp.head]
	pp.head = (pp.head + 1) % len(pp.free)
	pp.count--
	pp.inUse++
	return p, true
}

// giveBack returns an RTP port to the back of the ring. The ring never
// overflows: a port is only given back after take removed it.
func (pp *PortPool) giveBack(p int) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.free[(pp.head+pp.count)%len(pp.free)] = p
	pp.count++
	pp.inUse--
}
