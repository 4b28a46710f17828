package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx"
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// callConfig turns flags into the PBX's call configuration.
func (c Config) callConfig(numbers masking.Normalizer, listenHost string) (pbx.CallConfig, error) {
	cc := pbx.CallConfig{
		Trunk:          c.Trunk,
		RingTimeout:    c.RingTimeout,
		MediaTimeout:   c.MediaTimeout,
		CallsPerMinute: c.CallsPerMinute,
		MonitorNotice:  c.MonitorNotice,
		MaxSetups:      c.MaxSetups,
		KeepAlive:      c.KeepAlive,
		TrunkAuth: pbx.TrunkAuth{Username: c.TrunkUsername, AuthUser: c.TrunkAuthUser, Password: c.TrunkPassword,
			Realm: c.TrunkRealm},
		TrunkRegister: c.TrunkRegister.Truncate(time.Second),
		TrunkPing:     c.trunkPing,
	}
	allow := c.TrunkAllow
	// Without --trunk-allow, the trunk's own addresses (resolved by pbx).
	var err error
	if cc.CompanyNumbers, err = parseCompanyNumbers(c.CompanyNumber, numbers); err != nil {
		return cc, fmt.Errorf("--company-number: %w", err)
	}
	if len(cc.CompanyNumbers) > 0 {
		cc.CompanyNumber = cc.CompanyNumbers[0].Number // the From of calls out
	}
	if cc.TrunkAllow, err = parsePrefixes(allow); err != nil {
		return cc, fmt.Errorf("--trunk-allow: %w", err)
	}
	if cc.AliasNumbers, err = parseAliasNumbers(c.AliasNumbers, numbers); err != nil {
		return cc, fmt.Errorf("--alias-numbers: %w", err)
	}
	cc.AliasQuarantine = c.AliasQuarantine
	// Segments' working hours are the company's, as the console shows them.
	tz := c.TimeZone
	if tz == "" {
		tz = os.Getenv("TZ")
	}
	if tz != "" {
		if cc.Location, err = time.LoadLocation(tz); err != nil {
			return cc, fmt.Errorf("--timezone: %w", err)
		}
	}
	if cc.Prompts, err = ivr.LoadPrompts(c.PromptsDir); err != nil {
		return cc, fmt.Errorf("--prompts-dir: %w", err)
	}
	// The prompts speak the company's language; English while it is the
	// default and the numbers are Russian speaks Russian.
	cc.PromptLanguage = c.PromptsLanguage
	switch {
	case cc.PromptLanguage != "":
	case c.DefaultLanguage != "" && c.DefaultLanguage != i18n.Default:
		cc.PromptLanguage = c.DefaultLanguage
	case strings.EqualFold(c.Region, "RU"):
		cc.PromptLanguage = "ru"
	}
	lo, hi, err := media.ParsePortRange(c.RTPPorts)
	if err != nil {
		return cc, fmt.Errorf("--rtp-ports: %w", err)
	}
	cc.Ports, err = media.NewPortPool(listenHost, lo, hi)
	if err != nil {
		return cc, fmt.Errorf("--rtp-ports: %w", err)
	}
	return cc, nil
}

// maxAliasNumbers bounds the alias pool (a typo in a range must not make
// millions of rows).
const maxAliasNumbers = 100000

// parseAliasNumbers reads --alias-numbers: comma-separated numbers and
// ranges first-last of numbers of the same length (+74950000100-+74950000199).
func parseAliasNumbers(list string, numbers masking.Normalizer) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(n string) error {
		if seen[n] {
			return fmt.Errorf("%q is listed twice", n)
		}
		if len(out) == maxAliasNumbers {
			return fmt.Errorf("more than %d numbers", maxAliasNumbers)
		}
		seen[n] = true
		out = append(out, n)
		return nil
	}
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		first, last, isRange := strings.Cut(item[1:], "-")
		first = item[:1] + first
		a, err := numbers.Normalize(strings.TrimSpace(first))
		if err != nil {
			return nil, fmt.Errorf("%q: not a valid phone number (E.164, e.g. +74950000100)", first)
		}
		if !isRange {
			if err := add(a); err != nil {
				return nil, err
			}
			continue
		}
		b, err := numbers.Normalize(strings.TrimSpace(last))
		if err != nil {
			return nil, fmt.Errorf("%q: not a valid phone number (E.164, e.g. +74950000199)", last)
		}
		lo, err1 := strconv.ParseUint(a[1:], 10, 64)
		hi, err2 := strconv.ParseUint(b[1:], 10, 64)
		if err1 != nil || err2 != nil || len(a) != len(b) || hi < lo || hi-lo >= maxAliasNumbers {
			return nil, fmt.Errorf("%q: a range is first-last, of equal length, first <= last, at most %d numbers", item, maxAliasNumbers)
		}
		for n := lo; n <= hi; n++ {
			if err := add(fmt.Sprintf("+%0*d", len(a)-1, n)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// parseCompanyNumbers reads --company-number: comma-separated numbers in
// any spelling numbers reads, each with an optional =team. A number listed
// twice is an error: it could ring only one team.
func parseCompanyNumbers(list string, numbers masking.Normalizer) ([]pbx.CompanyNumber, error) {
	var out []pbx.CompanyNumber
	seen := map[string]bool{}
	for _, item := range strings.Split(list, ",") {
		raw, team, _ := strings.Cut(strings.TrimSpace(item), "=")
		raw, team = strings.TrimSpace(raw), strings.TrimSpace(team)
		if raw == "" && team == "" {
			continue
		}
		n, err := numbers.Normalize(raw)
		if err != nil {
			return nil, fmt.Errorf("%q: not a valid phone number (E.164, e.g. +74950000000)", raw)
		}
		if seen[n] {
			return nil, fmt.Errorf("%q is listed twice", raw)
		}
		seen[n] = true
		out = append(out, pbx.CompanyNumber{Number: n, Team: team})
	}
	return out, nil
}

// publisherFlushTimeout bounds how long a stopping process waits for its
// queued events to reach NATS.
const publisherFlushTimeout = 10 * time.Second

// startPublisher makes sure the events stream exists (stream is
// events.EnsureStream or, for a recorder, events.OpenStream, with replicas)
// and starts the
// process's event publisher. stop flushes what is still queued, waiting at
// most publisherFlushTimeout, and logs unflushed (what a lost queue means for
// this process) if that fails. With a spool file the outbox is kept on disk
// too (events.Publisher.Spool); "" keeps it in memory only.
func startPublisher(ctx context.Context, js jetstream.JetStream,
	stream func(context.Context, jetstream.JetStream, int) (jetstream.Stream, error), replicas int,
	logger *zap.Logger, unflushed, spool string) (p *events.Publisher, stop func(), err error) {
	if _, err := stream(ctx, js, replicas); err != nil {
		return nil, nil, err
	}
	p = events.NewPublisher(js, logger.Named("events"))
	if spool != "" {
		if err := p.Spool(spool); err != nil {
			_ = p.Close(ctx)
			return nil, nil, err
		}
	}
	stop = func() {
		flush, cancel := context.WithTimeout(context.Background(), publisherFlushTimeout)
		defer cancel()
		if err := p.Close(flush); err != nil {
			logger.Error(unflushed, zap.Error(err))
		}
	}
	return p, stop, nil
}

// digestAlgorithms is the order of the digest challenges in a 401.
func (c Config) digestAlgorithms() []string {
	var out []string
	for _, a := range strings.Split(c.DigestAlgorithms, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, strings.ToUpper(a))
		}
	}
	return out
}

// defaultPublicAddr is the IP to write into SDP and Contact when the SIP
// listener is bound to a concrete address (that one) or to all addresses
// (the first non-loopback IPv4 address of the machine).
func defaultPublicAddr(listenHost string) string {
	if ip, err := netip.ParseAddr(listenHost); err == nil && !ip.IsUnspecified() {
		return listenHost
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

// newMetrics registers the process, SIP and relay metrics.
func newMetrics(sip *pbx.Server, ports *media.PortPool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_auth_failures_total",
			Help: "Digest authentications that failed."}, func() float64 { return float64(sip.Stats().AuthFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_sources_blocked_total",
			Help: "Sources blocked after repeated failed authentication."}, func() float64 { return float64(sip.Stats().SourcesBlocked) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_blocked_requests_total",
			Help: "Requests refused because their source was blocked."}, func() float64 { return float64(sip.Stats().BlockedRequests) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_flood_passed_total",
			Help: "SIP datagrams and TCP reads the per-source rate limiter let through to the SIP stack."}, func() float64 { return float64(sip.FloodStats().Passed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_flood_dropped_total",
			Help: "SIP datagrams and TCP reads dropped unparsed because their source was over its rate (--sip-rate-limit*)."}, func() float64 { return float64(sip.FloodStats().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_flood_blocks_total",
			Help: "Times a source went over its SIP rate and was ignored for --sip-rate-limit-block."}, func() float64 { return float64(sip.FloodStats().Blocks) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_sip_flood_conns_refused_total",
			Help: "SIP TCP/TLS connections closed at accept: source blocked or holding too many."}, func() float64 { return float64(sip.FloodStats().ConnsRefused) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_sip_flood_sources",
			Help: "Source IPs the SIP rate limiter tracks now."}, func() float64 { return float64(sip.FloodStats().Sources) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_sip_flood_sources_blocked",
			Help: "Source IPs ignored now for going over their SIP rate."}, func() float64 { return float64(sip.FloodStats().Blocked) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_sip_udp_peers",
			Help: "Source ip:port entries in the SIP stack's UDP connection table (never pruned before the listener stops)."}, func() float64 { return float64(sip.UDPPeers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_calls_active",
			Help: "Calls in progress."}, func() float64 { return float64(sip.ActiveCalls()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_calls_in_setup",
			Help: "Calls in between their INVITE and the first ring of a phone."}, func() float64 { return float64(sip.AdmissionStats().CallsInSetup) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_calls_shed_total",
			Help: "Calls in refused with 503 because the node was at capacity (--max-setups)."}, func() float64 { return float64(sip.AdmissionStats().Shed) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_call_setup_seconds",
			Help: "Smoothed setup time (INVITE to a phone's first answer) of the calls in admitted."}, func() float64 { return sip.AdmissionStats().SetupTime.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_routing_lookup_seconds",
			Help: "Smoothed time of the routing lookup of a call in."}, func() float64 { return sip.AdmissionStats().LookupTime.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_rtp_ports_in_use",
			Help: "Relay ports allocated."}, func() float64 { return float64(ports.InUse()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_rtp_refused_packets_total",
			Help: "RTP and RTCP packets the relay refused for their source: an IP the call's signalling did not name, or another port of the latched IP while it is active."},
			func() float64 { return float64(ports.Refused()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_trunk_auth_failures_total",
			Help: "Requests to the trunk (INVITE, BYE, REGISTER) whose digest challenge our credentials did not satisfy."},
			func() float64 { return float64(sip.TrunkAuthFailures()) }),
	)
	if sip.TrunkRegistration().Enabled {
		// Only a node that registers has these: an alert on
		// maskpbx_trunk_registered == 0 must not fire where nothing registers.
		reg.MustRegister(
			boolGauge(prometheus.GaugeOpts{Name: "maskpbx_trunk_registered",
				Help: "1 while the PBX is registered at the SIP provider (--trunk-register), else 0."},
				func() bool { return sip.TrunkRegistration().Registered }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_trunk_register_failures_total",
				Help: "Registrations at the SIP provider that failed (refused, wrong credentials, no answer)."},
				func() float64 { return float64(sip.TrunkRegistration().Failures) }),
		)
	}
	// Targets are named by their rank, never their address: /metrics is
	// public, and the trunk's address is not for everyone (the log names
	// it, for the operator).
	for i, target := range sip.TrunkTargets() {
		reg.MustRegister(boolGauge(prometheus.GaugeOpts{Name: "maskpbx_trunk_target_up",
			Help:        "1 while the trunk target (by rank: 1 is preferred) answers OPTIONS pings; calls out go to the first that does.",
			ConstLabels: prometheus.Labels{"target": strconv.Itoa(i + 1), "transport": target.Transport}},
			func() bool { return sip.TrunkTargetUp(i) }))
	}
	return reg
}

// boolGauge is a gauge of 1 while f says true, else 0.
func boolGauge(opts prometheus.GaugeOpts, f func() bool) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(opts, func() float64 {
		if f() {
			return 1
		}
		return 0
	})
}

// registerRouteCacheMetrics shows the routing cache: its size, whether
// calls route from it (Postgres down), and the new callers waiting for
// their client row.
func registerRouteCacheMetrics(reg *prometheus.Registry, c *pbx.RouteCache) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_routing_cache_clients",
			Help: "Clients in the routing cache."}, func() float64 { return float64(c.Stats().Clients) }),
		boolGauge(prometheus.GaugeOpts{Name: "maskpbx_routing_from_cache",
			Help: "1 while calls in route from the routing cache because Postgres does not answer, else 0."},
			func() bool { return c.Stats().DatabaseDown }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_routing_pending_callers",
			Help: "First-time callers routed while Postgres was down whose client rows are not written yet."},
			func() float64 { return float64(c.Stats().PendingCallers) }),
	)
}

// dialer adapts the PBX to the API's click-to-call interface.
type dialer struct{ sip *pbx.Server }

func (d dialer) Originate(ctx context.Context, c api.OriginateCall) error {
	err := d.sip.Originate(ctx, pbx.Originate{CallID: c.CallID, ManagerID: c.ManagerID, ClientID: c.ClientID, Via: c.Via})
	switch {
	case errors.Is(err, pbx.ErrNotRegistered):
		return api.ErrNotRegistered
	case errors.Is(err, pbx.ErrNoMobile):
		return api.ErrNoMobile
	case errors.Is(err, pbx.ErrOutboundBusy), errors.Is(err, pbx.ErrRateLimited):
		return fmt.Errorf("%w: %v", api.ErrTooManyCalls, err)
	case errors.Is(err, pbx.ErrNoTrunk):
		return api.ErrNoTrunk
	case errors.Is(err, pbx.ErrNoPhone):
		return api.ErrNoPhone
	case errors.Is(err, pbx.ErrNotAssigned):
		return api.ErrNotAssigned
	case errors.Is(err, pbx.ErrOutsideHours):
		return api.ErrOutsideHours
	case errors.Is(err, pbx.ErrShuttingDown):
		return api.ErrShuttingDown
	}
	return err
}

func (d dialer) CallStatus(id string) (api.CallStatus, bool) {
	st, ok := d.sip.CallStatus(id)
	return api.CallStatus{State: st.State, Disposition: st.Disposition, Direction: st.Direction, ClientID: st.ClientID,
		ManagerID: st.ManagerID, StartedAt: st.StartedAt, AnsweredAt: st.AnsweredAt, EndedAt: st.EndedAt,
		Via: st.Via, Mobile: st.Mobile}, ok
}

// monitors adapts the PBX to the API's live listen (POST /calls/{id}/monitor).
type monitors struct{ sip *pbx.Server }

func (m monitors) Monitor(ctx context.Context, c api.MonitorCall) (string, error) {
	res, err := m.sip.Monitor(ctx, pbx.MonitorRequest{CallID: c.CallID, SupervisorID: c.SupervisorID, Actor: c.Actor, Mode: c.Mode})
	switch {
	case errors.Is(err, pbx.ErrCallNotLive):
		return "", api.ErrCallNotLive
	case errors.Is(err, pbx.ErrMonitored):
		return "", api.ErrMonitored
	case errors.Is(err, pbx.ErrNotRegistered):
		return "", api.ErrNotRegistered
	case errors.Is(err, pbx.ErrShuttingDown):
		return "", api.ErrShuttingDown
	case errors.Is(err, pbx.ErrBadMonitorMode):
		return "", api.ErrBadMonitorMode
	}
	return res.State, err
}

// trunkStatus adapts the PBX's registration at the provider to /healthz.
type trunkStatus struct{ sip *pbx.Server }

func (t trunkStatus) TrunkRegistered() (enabled, registered bool) {
	st := t.sip.TrunkRegistration()
	return st.Enabled, st.Registered
}
