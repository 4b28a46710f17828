// Package sipnet holds the network plumbing the SIP servers of maskpbx
// (the PBX and the recorder) share: binding UDP and TCP on one port, and
// the per-source rate limiter that sits below the SIP stack (limit.go). It
// knows sockets and addresses, no SIP.
package sipnet

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ListenUDPAndTCP binds both on addr. With port 0 it finds a port free for
// both, so a peer can use either transport on the one port.
func ListenUDPAndTCP(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp: %w", err)
		}
		_, bound, _ := net.SplitHostPort(udp.LocalAddr().String())
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, bound))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || attempt == 10 {
			return nil, nil, fmt.Errorf("listen tcp: %w", err)
		}
	}
}
