//go:build linux

package media

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
)

// RTCP is read for every relay of the process on one goroutine woken by
// epoll. A leg sends RTCP every few seconds, so a goroutine blocked on each
// RTCP socket costs a call two stacks (8 KB each with their buffers) for
// almost no work. RTP keeps its goroutine per socket: it is 50 packets a
// second and its delay matters.
//
// The poller's epoll set holds the RTCP sockets beside the runtime's own
// netpoller, which never waits on them (nobody calls Read on them). The
// poller reads with non-blocking recvfrom through RawConn, so a socket
// closed behind its back reports net.ErrClosed instead of reading a reused
// descriptor. It is the only reader of every watched socket and the only
// writer of every relay's RTCP sockets while they are watched.

// errNoRoute: an IPv6 destination for a port on an IPv4 address.
var errNoRoute = errors.New("media: destination family differs from the socket's")

type rtcpPoller struct {
	epfd int

	mu      sync.Mutex // guards watched, next and every rtcpWatch.stopped
	watched map[int32]*rtcpSource
	next    int32
}

// rtcpSource is one watched RTCP socket.
type rtcpSource struct {
	relay    *Relay
	side     Side
	raw      syscall.RawConn
	token    int32 // key in watched; 0 = not watched
	failures int   // poller goroutine only
}

// rtcpWatch is a relay's registration with the poller.
type rtcpWatch struct {
	src     [2]rtcpSource
	stopped bool
}

var (
	pollerOnce sync.Once
	poller     *rtcpPoller
)

// sharedPoller starts the process's RTCP poller on first use; nil if epoll
// is unavailable (relays then read RTCP on goroutines of their own).
func sharedPoller() *rtcpPoller {
	pollerOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		poller = &rtcpPoller{epfd: fd, watched: map[int32]*rtcpSource{}}
		go poller.run()
	})
	return poller
}

// start hands both RTCP sockets of r to the poller. false means they are
// not watched and r must read them itself.
func (w *rtcpWatch) start(r *Relay) bool {
	p := sharedPoller()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.stopped { // the relay ended already (its timer can fire this early)
		return false
	}
	for s := range w.src {
		raw, err := r.legs[s].rtcp.SyscallConn()
		if err == nil {
			w.src[s] = rtcpSource{relay: r, side: Side(s), raw: raw}
		}
		if err != nil || !p.add(&w.src[s]) {
			p.removeLocked(w)
			return false
		}
	}
	return true
}

// stop takes r's sockets out of the poller; call it before closing them.
// The poller may still be handling a datagram of r: it then writes to a
// closed socket, which fails harmlessly.
func (w *rtcpWatch) stop() {
	p := sharedPoller()
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w.stopped = true
	p.removeLocked(w)
}

// add registers src under a fresh token; p.mu is held, so the epoll set and
// watched change together.
func (p *rtcpPoller) add(src *rtcpSource) bool {
	for {
		p.next++
		if p.next <= 0 {
			p.next = 1
		}
		if p.watched[p.next] == nil {
			break
		}
	}
	var ctlErr error
	err := src.raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: p.next}
		ctlErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || ctlErr != nil {
		return false
	}
	src.token = p.next
	p.watched[src.token] = src
	return true
}

func (p *rtcpPoller) removeLocked(w *rtcpWatch) {
	for s := range w.src {
		src := &w.src[s]
		if src.token == 0 {
			continue
		}
		delete(p.watched, src.token)
		src.token = 0
		// A socket already closed has left the epoll set with its last
		// descriptor, and Control fails instead of touching a reused one.
		_ = src.raw.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
	}
}

func (p *rtcpPoller) run() {
	events := make([]syscall.EpollEvent, 128)
	buf := make([]byte, maxPacket)
	scrubbed := make([]byte, maxPacket)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// Only a bad epfd or events buffer gets here: a bug, not load.
			panic(fmt.Sprintf("media: RTCP poller: epoll_wait: %v", err))
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			src := p.watched[ev.Fd]
			p.mu.Unlock()
			if src != nil {
				src.drain(buf, scrubbed)
			}
		}
	}
}

// drain relays what src's socket holds, up to a few datagrams: the epoll
// set is level-triggered, so the rest wakes the poller again after the
// other ready sockets had their turn.
func (src *rtcpSource) drain(buf, scrubbed []byte) {
	r := src.relay
	for range 8 {
		var n int
		var from syscall.Sockaddr
		var rerr error
		err := src.raw.Read(func(fd uintptr) bool {
			n, from, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true
		})
		if err == nil && rerr != nil {
			if rerr == syscall.EAGAIN || rerr == syscall.EINTR {
				return
			}
			err = os.NewSyscallError("recvfrom", rerr)
		}
		if err != nil {
			src.failures++
			if r.readFailed(err, src.failures) {
				return
			}
			continue
		}
		src.failures = 0
		r.relayRTCP(src.side, buf[:n], sockaddrPort(from), scrubbed, sendRTCP)
	}
}

// sendRTCP sends on out's RTCP socket without waiting: a full send buffer
// drops the datagram (RTCP tolerates loss) rather than hold up the shared
// poller and so every other call's RTCP. (A write deadline would not do: a
// poller descheduled past it would fail writes that had room.)
func sendRTCP(out *Port, b []byte, dst netip.AddrPort) error {
	var sa syscall.Sockaddr
	switch {
	case out.local.Addr().Is4() && dst.Addr().Is4():
		sa = &syscall.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	case out.local.Addr().Is6() && dst.Addr().Zone() == "":
		sa = &syscall.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()} // v4 as v4-mapped
	case out.local.Addr().Is6():
		return writeRTCP(out, b, dst) // a scoped (link-local) peer: let net resolve the zone
	default:
		return errNoRoute
	}
	raw, err := out.rtcp.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), b, syscall.MSG_DONTWAIT, sa)
		return true
	}); err != nil {
		return err
	}
	return serr
}

func sockaddrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{} // no source: relayRTCP drops the datagram
}
