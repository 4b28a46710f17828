package sipnet

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Per-source rate limiting in front of the SIP stack, after Kamailio's
// pike: a source IP that sends more than its rate in one second is ignored
// (its datagrams dropped unread, its TCP connections closed) until it has
// kept under the rate for BlockFor. It sits below the parser, so what it
// drops costs no parsing, no transaction and no connection-pool entry.

// Class is what a source is to the PBX; it sets the source's rate.
type Class uint8

// Classes of sources, from the least trusted.
const (
	Stranger Class = iota // anyone else
	Phone                 // the address a registered phone sends from
	Trunk                 // the trunk (--trunk-allow)
	numClasses
)

func (c Class) String() string {
	switch c {
	case Phone:
		return "phone"
	case Trunk:
		return "trunk"
	}
	return "stranger"
}

// LimitConfig is the limiter's configuration.
type LimitConfig struct {
	// Rate is, by Class, how many datagrams (UDP) or messages, reads and
	// connections (TCP) one source IP may send in a second; 0 is no limit.
	Rate [numClasses]int
	// MaxConns is, by Class, how many TCP connections one source IP may
	// hold open; 0 is no limit.
	MaxConns [numClasses]int
	// BlockFor is how long a source is ignored after it last went over its
	// rate; default DefaultBlockFor.
	BlockFor time.Duration
	// MaxSources bounds the sources tracked at once (default
	// DefaultMaxSources): a flood from many addresses must not grow the
	// table without end. New strangers beyond it share one allowance.
	MaxSources int
	// Classify says what a source is; nil takes every source for a
	// stranger. It is called with the limiter's lock held, when a source
	// is first seen and once a second while it sends, so it must be cheap
	// and must not call back into the limiter.
	Classify func(netip.Addr) Class
	Now      func() time.Time // default time.Now
}

// Defaults of LimitConfig.
const (
	DefaultBlockFor   = 30 * time.Second
	DefaultMaxSources = 65536
)

// Limiter counts what each source IP sends and says whether to let it in.
// It is safe for concurrent use.
type Limiter struct {
	cfg LimitConfig

	mu        sync.Mutex
	sources   map[netip.Addr]*source
	overflow  source // strangers beyond MaxSources
	lastSweep time.Time

	passed, dropped, blocks, connsRefused atomic.Uint64
}

// source is what the limiter knows of one IP; guarded by Limiter.mu.
type source struct {
	ip           netip.Addr // zero for the shared overflow entry
	class        Class
	window       time.Time // start of the current one-second window
	count        int       // sent in the window, dropped or not
	blockedUntil time.Time
	conns        int // TCP connections open
}

// NewLimiter returns a limiter with cfg's defaults filled in.
func NewLimiter(cfg LimitConfig) *Limiter {
	if cfg.BlockFor <= 0 {
		cfg.BlockFor = DefaultBlockFor
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.Classify == nil {
		cfg.Classify = func(netip.Addr) Class { return Stranger }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, sources: map[netip.Addr]*source{}}
}

// LimitStats are the limiter's counters.
type LimitStats struct {
	Passed       uint64 // datagrams and TCP reads let through
	Dropped      uint64 // datagrams and TCP reads dropped: their source was over its rate
	Blocks       uint64 // times a source went over its rate and was blocked
	ConnsRefused uint64 // TCP connections closed at accept (blocked, or too many open)
	Sources      int    // source IPs tracked now
	Blocked      int    // of which blocked now
}

// Stats returns the current counters.
func (l *Limiter) Stats() LimitStats {
	st := LimitStats{Passed: l.passed.Load(), Dropped: l.dropped.Load(), Blocks: l.blocks.Load(),
		ConnsRefused: l.connsRefused.Load()}
	now := l.cfg.Now()
	l.mu.Lock()
	st.Sources = len(l.sources)
	for _, s := range l.sources {
		if now.Before(s.blockedUntil) {
			st.Blocked++
		}
	}
	l.mu.Unlock()
	return st
}

// Allow charges cost (datagrams or messages) to ip and says whether to let
// them in.
func (l *Limiter) Allow(ip netip.Addr, cost int) bool {
	l.mu.Lock()
	now := l.cfg.Now()
	ok := l.chargeLocked(l.sourceLocked(ip, now), cost, now)
	l.mu.Unlock()
	l.count(ok)
	return ok
}

func (l *Limiter) count(ok bool) {
	if ok {
		l.passed.Add(1)
	} else {
		l.dropped.Add(1)
	}
}

// sourceLocked finds or makes ip's entry, sweeping idle entries once a
// second.
func (l *Limiter) sourceLocked(ip netip.Addr, now time.Time) *source {
	if now.Sub(l.lastSweep) >= time.Second {
		l.sweepLocked(now)
	}
	if s := l.sources[ip]; s != nil {
		return s
	}
	class := l.cfg.Classify(ip)
	if class == Stranger && len(l.sources) >= l.cfg.MaxSources {
		return &l.overflow
	}
	s := &source{ip: ip, class: class, window: now}
	l.sources[ip] = s
	return s
}

// sweepLocked forgets sources that sent nothing for a window, are not
// blocked and hold no connection: refused traffic leaves no state behind
// past its block.
func (l *Limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for ip, s := range l.sources {
		if now.Sub(s.window) >= 2*time.Second && !now.Before(s.blockedUntil) && s.conns == 0 {
			delete(l.sources, ip)
		}
	}
}

// chargeLocked counts cost against s in the current window, blocking s if
// that takes it over its rate (or keeping it blocked while it goes on).
func (l *Limiter) chargeLocked(s *source, cost int, now time.Time) bool {
	if now.Sub(s.window) >= time.Second {
		s.window, s.count = now, 0
		if s.ip.IsValid() {
			// A phone that registered since is let in at a phone's rate.
			s.class = l.cfg.Classify(s.ip)
		}
	}
	s.count += cost
	blocked := now.Before(s.blockedUntil)
	if rate := l.cfg.Rate[s.class]; rate > 0 && s.count > rate {
		if !blocked {
			l.blocks.Add(1)
		}
		s.blockedUntil = now.Add(l.cfg.BlockFor)
		return false
	}
	return !blocked
}

// PacketConn returns c with the datagrams of sources over their rate
// dropped inside ReadFrom: the caller (sipgo's UDP reader) never sees them.
func (l *Limiter) PacketConn(c net.PacketConn) net.PacketConn {
	udp, _ := c.(*net.UDPConn)
	return &limitedPacketConn{PacketConn: c, udp: udp, l: l}
}

type limitedPacketConn struct {
	net.PacketConn
	udp *net.UDPConn // c itself if it is one: reads without allocating
	l   *Limiter
}

func (c *limitedPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if c.udp != nil {
			n, ap, err := c.udp.ReadFromUDPAddrPort(b)
			if err != nil {
				return n, nil, err
			}
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if c.l.Allow(ap.Addr(), 1) {
				return n, net.UDPAddrFromAddrPort(ap), nil
			}
			continue
		}
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || c.l.Allow(addrIP(addr), 1) {
			return n, addr, err
		}
	}
}

// Listener returns ln with connections from blocked sources, and beyond a
// source's MaxConns, closed at accept; each accepted connection counts as
// one message, and each read on it as at least one: a source that goes
// over its rate has its connection closed.
func (l *Limiter) Listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

type limitedListener struct {
	net.Listener
	l *Limiter
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if s := ln.l.openConn(addrIP(c.RemoteAddr())); s != nil {
			return &limitedConn{Conn: c, l: ln.l, src: s}, nil
		}
		c.Close()
	}
}

// openConn charges a new connection to ip and returns its entry, or nil if
// the connection is refused.
func (l *Limiter) openConn(ip netip.Addr) *source {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	s := l.sourceLocked(ip, now)
	if !l.chargeLocked(s, 1, now) {
		l.connsRefused.Add(1)
		return nil
	}
	if limit := l.cfg.MaxConns[s.class]; limit > 0 && s.conns >= limit {
		l.connsRefused.Add(1)
		return nil
	}
	s.conns++
	return s
}

type limitedConn struct {
	net.Conn
	l     *Limiter
	src   *source // kept in the table while conns > 0
	close sync.Once
}

var endOfHeaders = []byte("\r\n\r\n")

func (c *limitedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n == 0 {
		return n, err
	}
	// Messages end their headers with an empty line; a read holding none
	// (part of a message, a keep-alive) still costs one.
	cost := max(1, bytes.Count(b[:n], endOfHeaders))
	c.l.mu.Lock()
	ok := c.l.chargeLocked(c.src, cost, c.l.cfg.Now())
	c.l.mu.Unlock()
	c.l.count(ok)
	if !ok {
		c.Close()
		return 0, io.EOF // what sipgo takes for a peer that hung up
	}
	return n, err
}

func (c *limitedConn) Close() error {
	c.close.Do(func() {
		c.l.mu.Lock()
		c.src.conns--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}
