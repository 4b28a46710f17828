package pbx

import (
	"net/netip"
	"time"

	"github.com/maskpbx/maskpbx/internal/sipnet"
)

// Flood protection: every datagram and TCP connection passes a per-source
// rate limiter (sipnet.Limiter) before sipgo reads it, so a source that
// floods is dropped before parsing and transactions cost anything. The
// trunk and the addresses registered phones send from get higher rates
// than strangers.

// Default per-second rates of one source IP (Config.StrangerRate etc.) and
// the connections it may hold open over TCP and TLS.
const (
	DefaultStrangerRate   = 200
	DefaultPhoneRate      = 2000
	DefaultTrunkRate      = 20000
	DefaultSourceBlockFor = 30 * time.Second

	strangerConns = 64  // an office's phones behind one NAT, before they register
	phoneConns    = 512 // phones on TCP/TLS behind one NAT
)

// phoneSourcesTTL is how stale the set of registered phones' addresses may
// be: a phone that just registered gets a phone's rate within it.
const phoneSourcesTTL = time.Second

// phoneSources is a snapshot of the IPs registered phones send from.
type phoneSources struct {
	at  time.Time
	ips map[netip.Addr]struct{}
}

func (c Config) sourceLimits() sipnet.LimitConfig {
	rate := func(r, def int) int {
		switch {
		case r == 0:
			return def
		case r < 0:
			return 0 // no limit
		}
		return r
	}
	return sipnet.LimitConfig{
		Rate: [...]int{
			sipnet.Stranger: rate(c.StrangerRate, DefaultStrangerRate),
			sipnet.Phone:    rate(c.PhoneRate, DefaultPhoneRate),
			sipnet.Trunk:    rate(c.TrunkRate, DefaultTrunkRate),
		},
		MaxConns: [...]int{sipnet.Stranger: strangerConns, sipnet.Phone: phoneConns, sipnet.Trunk: 0},
		BlockFor: c.SourceBlockFor,
	}
}

// classifySource is the limiter's Classify: the trunk by --trunk-allow, a
// phone by the source of a live registration, else a stranger. It runs
// under the limiter's lock and takes the registrations' read lock at most
// once a second (lock order: limiter, then registrations).
func (s *Server) classifySource(ip netip.Addr) sipnet.Class {
	if cc := s.calls; cc != nil {
		for _, p := range cc.cfg.TrunkAllow {
			if p.Contains(ip) {
				return sipnet.Trunk
			}
		}
	}
	now := s.now()
	snap := s.phoneIPs.Load()
	if snap == nil || now.Sub(snap.at) >= phoneSourcesTTL {
		snap = &phoneSources{at: now, ips: s.regs.sourceIPs(now)}
		s.phoneIPs.Store(snap)
	}
	if _, ok := snap.ips[ip]; ok {
		return sipnet.Phone
	}
	return sipnet.Stranger
}

// sourceIPs returns the IPs live registrations came from.
func (r *Registrations) sourceIPs(now time.Time) map[netip.Addr]struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ips := map[netip.Addr]struct{}{}
	for _, regs := range r.cache {
		for _, reg := range regs {
			if !reg.ExpiresAt.After(now) {
				continue
			}
			// The node a phone registered through sends calls for it
			// to the other nodes (relay.go): it is no stranger.
			for _, src := range []string{reg.Source, reg.NodeAddr} {
				if ap, err := netip.ParseAddrPort(src); err == nil {
					ips[ap.Addr().Unmap()] = struct{}{}
				}
			}
		}
	}
	return ips
}

// FloodStats are the flood limiter's counters (sipnet.LimitStats).
type FloodStats = sipnet.LimitStats

// FloodStats returns the flood limiter's counters.
func (s *Server) FloodStats() FloodStats { return s.flood.Stats() }

// UDPPeers is the number of entries in sipgo's UDP connection table: one
// per source ip:port that got past the limiter, kept until the listener
// stops (sipgo forgets none). The limiter bounds how fast it grows; the
// gauge shows whether it does.
func (s *Server) UDPPeers() int {
	if p := s.ua.TransportLayer().Pool("udp"); p != nil {
		return p.Size()
	}
	return 0
}
