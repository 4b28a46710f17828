package pbx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// The registration to the SIP provider (RFC 3261 10.2, as a UAC): with
// CallConfig.TrunkRegister set, the PBX REGISTERs sip:<username>@<realm or
// trunk host> at the trunk with its Contact, answers the digest challenge
// (MD5 or SHA-256), refreshes at 85% of the expiry granted, backs off
// exponentially while it fails, and unregisters (Expires: 0) at shutdown.
// While registered, INVITEs from the address the registration reached are
// calls in (trunkAllowed), whatever --trunk-allow lists.
//
// One goroutine (run, started by Serve) owns the requests; status and
// the trusted address are read by others under mu.

// TrunkRegistration is the state of the PBX's registration at the SIP
// provider, for /healthz, /metrics and the console.
type TrunkRegistration struct {
	Enabled    bool      // the PBX registers (CallConfig.TrunkRegister > 0)
	Registered bool      // the last REGISTER was accepted and has not lapsed
	ExpiresAt  time.Time // when the binding lapses at the provider, if Registered
	Failures   uint64    // failed attempts since start
	LastError  string    // why the last attempt failed; "" after a success
}

// Back-off of a failing registration: the first retry after
// trunkRegisterBackoff, doubling up to trunkRegisterMaxBackoff.
const (
	trunkRegisterBackoff    = 2 * time.Second
	trunkRegisterMaxBackoff = 5 * time.Minute
	// trunkRegisterWait bounds one REGISTER transaction (64*T1 on UDP).
	trunkRegisterWait = 32 * time.Second
	// trunkUnregisterWait bounds the Expires: 0 at shutdown.
	trunkUnregisterWait = 3 * time.Second
)

// registerBackoff is the pause after the n-th failure in a row (n >= 1).
func registerBackoff(n int) time.Duration {
	d := trunkRegisterBackoff
	for i := 1; i < n && d < trunkRegisterMaxBackoff; i++ {
		d *= 2
	}
	return min(d, trunkRegisterMaxBackoff)
}

// refreshIn is when to refresh a binding granted for d: at 85%, so one
// lost REGISTER is retransmitted before the binding lapses.
func refreshIn(d time.Duration) time.Duration {
	return max(d*85/100, time.Second)
}

type trunkRegistration struct {
	cc      *callControl
	auth    *TrunkAuth
	expires time.Duration // asked for
	aor     sip.Uri       // To and From: sip:<username>@<domain>
	uri     sip.Uri       // Request-URI: sip:<domain>
	callID  string        // one Call-ID for all our REGISTERs (RFC 3261 10.2.4)
	tag     string
	logger  *zap.Logger
	done    chan struct{} // closed when run has unregistered and returned

	failures atomic.Uint64
	seq      uint32 // run's alone

	mu      sync.Mutex
	state   TrunkRegistration
	trusted []netip.Addr // where the registration went and its 200 came from
}

func newTrunkRegistration(cc *callControl) (*trunkRegistration, error) {
	if cc.trunk == nil {
		return nil, fmt.Errorf("pbx: registering to the trunk needs a Trunk")
	}
	host, port := cc.trunk.host, cc.trunk.port
	auth := cc.trunkAuth()
	r := &trunkRegistration{
		cc:      cc,
		auth:    auth,
		expires: cc.cfg.TrunkRegister,
		callID:  uuid.NewString(),
		tag:     sip.GenerateTagN(16),
		logger:  cc.logger.Named("trunk").With(zap.String("trunk", cc.cfg.Trunk)),
		done:    make(chan struct{}),
		state:   TrunkRegistration{Enabled: true},
	}
	domain := auth.Realm
	r.uri = sip.Uri{Scheme: "sip", Host: domain}
	if domain == "" {
		domain = host
		r.uri = sip.Uri{Scheme: "sip", Host: host}
		if port != 5060 {
			r.uri.Port = port // 0 (a name looked up by SRV) writes none
		}
	}
	r.aor = sip.Uri{Scheme: "sip", User: auth.Username, Host: domain}
	for _, p := range cc.trunk.allowPrefixes() {
		r.trusted = append(r.trusted, p.Addr())
	}
	return r, nil
}

// contact is our Contact at the provider. Its user is the company number:
// a provider sends calls in to the Contact it holds, and the Request-URI
// then names the number calls in must be to.
func (r *trunkRegistration) contact() sip.Uri {
	c := r.cc.contactFor(r.cc.trunk.choose().transport)
	c.User = r.cc.cfg.CompanyNumber
	if c.User == "" {
		c.User = r.auth.Username
	}
	return c
}

// run registers, refreshes and retries until ctx ends, then unregisters.
func (r *trunkRegistration) run(ctx context.Context) {
	defer close(r.done)
	failures := 0
	everRegistered := false
	for {
		granted, err := r.register(ctx, r.expires)
		if ctx.Err() != nil {
			break
		}
		var wait time.Duration
		if err != nil {
			failures++
			wait = registerBackoff(failures)
			r.failed(err, wait)
		} else {
			if failures > 0 || !everRegistered {
				r.logger.Info("registered at the trunk", zap.Duration("expires", granted))
			}
			failures, everRegistered = 0, true
			wait = refreshIn(granted)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
			continue
		}
		break
	}
	if everRegistered {
		r.unregister()
	}
}

// register sends one REGISTER asking for expires (0 unregisters) and
// answers what it may: one digest challenge (or a stale nonce), one 423
// with Min-Expires. It returns the expiry granted.
func (r *trunkRegistration) register(ctx context.Context, expires time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, trunkRegisterWait)
	defer cancel()
	req := r.request(expires)
	authTries, tooBrief := 0, false
	for {
		res, err := r.cc.finalResponse(ctx, req)
		if err != nil {
			return 0, fmt.Errorf("REGISTER: %w", err)
		}
		switch {
		case res.IsSuccess() && expires == 0:
			r.mu.Lock()
			r.state.Registered, r.state.ExpiresAt = false, time.Time{}
			r.mu.Unlock()
			return 0, nil
		case res.IsSuccess():
			granted := r.granted(res, expires)
			r.succeeded(res, granted)
			return granted, nil
		case res.StatusCode == 401 || res.StatusCode == 407:
			answer, err := r.auth.answerChallenge(req, res)
			if err != nil || !mayRetry(authTries, answer.stale) {
				r.cc.trunkAuthRefused(r.logger, sip.REGISTER, res.StatusCode, err)
				return 0, fmt.Errorf("the trunk refused our credentials (%d %s)", res.StatusCode, res.Reason)
			}
			authTries++
			req = withCredentials(req, r.nextSeq(), answer.header)
		case res.StatusCode == sip.StatusIntervalToBrief && !tooBrief && expires > 0:
			minExp := headerOf(res, "Min-Expires")
			d, err := parseExpires(minExp)
			if err != nil || d <= expires {
				return 0, fmt.Errorf("the trunk answered 423 with Min-Expires %.16q", minExp)
			}
			tooBrief, expires, authTries = true, d, 0
			req = r.request(expires)
		default:
			return 0, fmt.Errorf("the trunk answered %d %s", res.StatusCode, res.Reason)
		}
	}
}

// unregister removes our binding at shutdown (Expires: 0), briefly: a
// provider that doesn't answer lets it lapse.
func (r *trunkRegistration) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), trunkUnregisterWait)
	defer cancel()
	if _, err := r.register(ctx, 0); err != nil {
		r.logger.Warn("unregistering at the trunk failed; the binding lapses by itself", zap.Error(err))
		return
	}
	r.logger.Info("unregistered at the trunk")
}

func (r *trunkRegistration) nextSeq() uint32 {
	r.seq++
	return r.seq
}

// request builds a REGISTER asking for expires, without credentials.
func (r *trunkRegistration) request(expires time.Duration) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, r.uri)
	from := &sip.FromHeader{Address: r.aor, Params: sip.NewParams()}
	from.Params.Add("tag", r.tag)
	to := &sip.ToHeader{Address: r.aor, Params: sip.NewParams()}
	callID := sip.CallIDHeader(r.callID)
	maxFwd := sip.MaxForwardsHeader(70)
	secs := strconv.Itoa(int(expires / time.Second))
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: r.nextSeq(), MethodName: sip.REGISTER})
	req.AppendHeader(&maxFwd)
	contact := r.contact()
	req.AppendHeader(sip.NewHeader("Contact", "<"+contact.String()+">;expires="+secs))
	req.AppendHeader(sip.NewHeader("Expires", secs))
	req.AppendHeader(sip.NewHeader("Allow", dialogAllow))
	// The target calls out go to: the first of the provider's servers
	// that answers OPTIONS (trunk.go).
	target := r.cc.trunk.choose()
	req.SetTransport(target.transport)
	req.SetDestination(target.addr)
	return req
}

// granted is the expiry the registrar gave our Contact: its expires
// parameter in the 200, else the Expires header, else what we asked for.
func (r *trunkRegistration) granted(res *sip.Response, asked time.Duration) time.Duration {
	ours := r.contact()
	for _, h := range res.GetHeaders("Contact") {
		for _, v := range splitHeaderList(h.Value()) {
			var uri sip.Uri
			params := sip.NewParams()
			if _, err := sip.ParseAddressValue(strings.TrimSpace(v), &uri, &params); err != nil {
				continue
			}
			if !strings.EqualFold(uri.Host, ours.Host) || uri.Port != ours.Port {
				continue
			}
			if e, ok := params.Get("expires"); ok {
				if d, err := parseExpires(e); err == nil && d > 0 {
					return d
				}
			}
		}
	}
	if d, err := parseExpires(headerOf(res, "Expires")); err == nil && d > 0 {
		return d
	}
	return asked
}

func headerOf(res *sip.Response, name string) string {
	if h := res.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

func (r *trunkRegistration) succeeded(res *sip.Response, granted time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state.Registered, r.state.ExpiresAt, r.state.LastError = true, time.Now().Add(granted), ""
	if ap, err := netip.ParseAddrPort(res.Source()); err == nil {
		src := ap.Addr().Unmap()
		for _, ip := range r.trusted {
			if ip == src {
				return
			}
		}
		r.trusted = append(r.trusted, src)
	}
}

func (r *trunkRegistration) failed(err error, retryIn time.Duration) {
	n := r.failures.Add(1)
	r.mu.Lock()
	r.state.Registered, r.state.LastError = false, err.Error()
	r.mu.Unlock()
	r.logger.Error("registration at the trunk failed", zap.Error(err), zap.Uint64("failures", n),
		zap.Duration("retry_in", retryIn))
}

// status is the registration's state now.
func (r *trunkRegistration) status() TrunkRegistration {
	r.mu.Lock()
	st := r.state
	r.mu.Unlock()
	st.Failures = r.failures.Load()
	if st.Registered && !time.Now().Before(st.ExpiresAt) {
		st.Registered = false // lapsed: refreshes failed meanwhile
	}
	return st
}

// trusts says whether ip is where our live registration went (or its 200
// came from): the provider's calls in come from there.
func (r *trunkRegistration) trusts(ip netip.Addr) bool {
	if r == nil {
		return false
	}
	if !r.status().Registered {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.trusted {
		if t == ip {
			return true
		}
	}
	return false
}

// errTrunkRegisterConfig is EnableCalls refusing a registration it can't make.
var errTrunkRegisterConfig = errors.New("pbx: TrunkRegister needs a Trunk and TrunkAuth.Username")

// TrunkRegistration reports the registration at the provider; Enabled is
// false when the PBX doesn't register.
func (s *Server) TrunkRegistration() TrunkRegistration {
	if s.calls == nil || s.calls.trunkReg == nil {
		return TrunkRegistration{}
	}
	return s.calls.trunkReg.status()
}

// TrunkAuthFailures counts requests to the trunk (INVITE, BYE, REGISTER)
// whose digest challenge our credentials could not satisfy.
func (s *Server) TrunkAuthFailures() uint64 {
	if s.calls == nil {
		return 0
	}
	return s.calls.trunkAuthFailures.Load()
}
