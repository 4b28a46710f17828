package pbx

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// The provider's servers. --trunk names them as an IP and port, a host
// name and port (its A records), or a bare host name, looked up as DNS SRV
// (RFC 3263: _sip._udp, _sip._tcp and _sips._tcp, in priority order) and
// then, without SRV, as A records on port 5060. An optional
// ";transport=udp|tcp|tls" keeps one transport. Calls out go to the first
// target that answers OPTIONS pings; when it stops answering, to the next.

// TrunkTarget is one server of the provider and whether it answers.
type TrunkTarget struct {
	Addr      string // ip:port
	Transport string // UDP, TCP or TLS
	Up        bool
}

type trunkTarget struct {
	addr      string
	transport string
	up        atomic.Bool
}

// trunk is the resolved --trunk.
type trunk struct {
	host    string // the Request-URI's host: the provider's name or IP
	port    int    // the Request-URI's port; 0 with SRV (the name says it all)
	targets []*trunkTarget
}

// defaultTrunkPing is how often each target is asked OPTIONS.
const defaultTrunkPing = 30 * time.Second

// resolveTrunk turns a --trunk spec into its targets, all presumed up until
// a ping says otherwise.
func resolveTrunk(ctx context.Context, r *net.Resolver, spec string) (*trunk, error) {
	host, port, transport, err := parseTrunk(spec)
	if err != nil {
		return nil, err
	}
	t := &trunk{host: host, port: port}
	add := func(ip netip.Addr, port int, transport string) {
		addr := netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
		for _, old := range t.targets {
			if old.addr == addr && old.transport == transport {
				return
			}
		}
		tt := &trunkTarget{addr: addr, transport: transport}
		tt.up.Store(true)
		t.targets = append(t.targets, tt)
	}
	orUDP := func(tr string) string { return cmpOr(tr, "UDP") }
	defaultPort := func(tr string) int {
		if tr == "TLS" {
			return 5061
		}
		return 5060
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		add(ip, cmpOrInt(port, defaultPort(transport)), orUDP(transport))
		return t, nil
	}
	if r == nil {
		r = net.DefaultResolver
	}
	if port == 0 {
		type srv struct {
			*net.SRV
			transport string
		}
		var found []srv
		for _, s := range []struct{ service, proto, transport string }{
			{"sip", "udp", "UDP"}, {"sip", "tcp", "TCP"}, {"sips", "tcp", "TLS"},
		} {
			if transport != "" && s.transport != transport {
				continue
			}
			_, recs, err := r.LookupSRV(ctx, s.service, s.proto, host)
			if err != nil {
				continue
			}
			for _, rec := range recs {
				found = append(found, srv{rec, s.transport})
			}
		}
		// LookupSRV orders each service by priority and weight; across
		// services the priority decides, the services' order breaks ties.
		slices.SortStableFunc(found, func(a, b srv) int { return int(a.Priority) - int(b.Priority) })
		for _, s := range found {
			ips, err := r.LookupNetIP(ctx, "ip4", strings.TrimSuffix(s.Target, "."))
			if err != nil {
				continue
			}
			for _, ip := range ips {
				add(ip, int(s.Port), s.transport)
			}
		}
		if len(t.targets) > 0 {
			return t, nil
		}
	}
	ips, err := r.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return nil, fmt.Errorf("pbx: trunk %q: %w", spec, err)
	}
	for _, ip := range ips {
		add(ip, cmpOrInt(port, defaultPort(transport)), orUDP(transport))
	}
	if len(t.targets) == 0 {
		return nil, fmt.Errorf("pbx: trunk %q: no address", spec)
	}
	return t, nil
}

// ValidTrunk checks the form of a --trunk value without looking it up.
func ValidTrunk(spec string) error {
	_, _, _, err := parseTrunk(spec)
	return err
}

// parseTrunk splits "host[:port][;transport=udp|tcp|tls]"; port is 0 when
// not given.
func parseTrunk(spec string) (host string, port int, transport string, err error) {
	hostPort, params, _ := strings.Cut(spec, ";")
	if params != "" {
		k, v, _ := strings.Cut(params, "=")
		if !strings.EqualFold(k, "transport") {
			return "", 0, "", fmt.Errorf("pbx: trunk %q: unknown parameter %q", spec, k)
		}
		transport = strings.ToUpper(v)
		if transport != "UDP" && transport != "TCP" && transport != "TLS" {
			return "", 0, "", fmt.Errorf("pbx: trunk %q: transport must be udp, tcp or tls", spec)
		}
	}
	host = hostPort
	if h, p, err := net.SplitHostPort(hostPort); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return "", 0, "", fmt.Errorf("pbx: trunk %q: bad port", spec)
		}
		host, port = h, n
	}
	if host == "" || strings.ContainsAny(host, " :/@") {
		return "", 0, "", fmt.Errorf("pbx: trunk %q: want host[:port][;transport=udp|tcp|tls]", spec)
	}
	return host, port, transport, nil
}

// allowPrefixes are the targets' addresses, the sources trusted to send
// calls in when no --trunk-allow says otherwise.
func (t *trunk) allowPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, tt := range t.targets {
		ap, err := netip.ParseAddrPort(tt.addr)
		if err != nil {
			continue
		}
		p := netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen())
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpOrInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// choose is the target a call goes to: the first that answers, or the
// first of all when none does (the call then fails as it would anyway).
func (t *trunk) choose() *trunkTarget {
	for _, tt := range t.targets {
		if tt.up.Load() {
			return tt
		}
	}
	return t.targets[0]
}

// requestURI is the Request-URI of a call to number.
func (t *trunk) requestURI(number string) sip.Uri {
	return sip.Uri{Scheme: "sip", User: number, Host: t.host, Port: t.port}
}

// status reports every target.
func (t *trunk) status() []TrunkTarget {
	out := make([]TrunkTarget, len(t.targets))
	for i, tt := range t.targets {
		out[i] = TrunkTarget{Addr: tt.addr, Transport: tt.transport, Up: tt.up.Load()}
	}
	return out
}

// pingTrunk asks each target OPTIONS every interval until ctx ends: any
// answer means up, none within the wait means down. The first round is
// one interval after the start (targets are presumed up till then, and
// the listener the pings leave from is surely serving).
func (cc *callControl) pingTrunk(ctx context.Context, t *trunk, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, tt := range t.targets {
			up := cc.pingTarget(ctx, t, tt, min(interval, 5*time.Second))
			if ctx.Err() != nil {
				return
			}
			if tt.up.Swap(up) != up {
				if up {
					cc.logger.Info("trunk target answers again", zap.String("target", tt.addr), zap.String("transport", tt.transport))
				} else {
					cc.logger.Warn("trunk target does not answer OPTIONS; calls out go to the next", zap.String("target", tt.addr), zap.String("transport", tt.transport))
				}
			}
		}
	}
}

func (cc *callControl) pingTarget(ctx context.Context, t *trunk, tt *trunkTarget, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: t.host, Port: t.port})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "maskpbx", Host: cc.publicIP.String()}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.SetTransport(tt.transport)
	req.SetDestination(tt.addr)
	tx, err := cc.clientFor(tt.transport).TransactionRequest(ctx, req)
	if err != nil {
		return false
	}
	defer tx.Terminate()
	select {
	case <-tx.Responses():
		return true
	case <-tx.Done():
		return false
	case <-ctx.Done():
		return false
	}
}

// TrunkTargetUp reports whether the i-th trunk target answers.
func (s *Server) TrunkTargetUp(i int) bool {
	if s.calls == nil || s.calls.trunk == nil || i < 0 || i >= len(s.calls.trunk.targets) {
		return false
	}
	return s.calls.trunk.targets[i].up.Load()
}

// TrunkTargets reports the provider's servers and whether each answers
// (empty without a trunk), for metrics and health.
func (s *Server) TrunkTargets() []TrunkTarget {
	if s.calls == nil || s.calls.trunk == nil {
		return nil
	}
	return s.calls.trunk.status()
}
