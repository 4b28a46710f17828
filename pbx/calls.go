package pbx

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
)

// EnableCalls turns on call control: INVITEs from the trunk to the company
// number ring the client's managers. Call it before Serve.
func (s *Server) EnableCalls(cfg CallConfig) error {
	switch {
	case s.calls != nil:
		return errors.New("pbx: EnableCalls called twice")
	case cfg.Ports == nil || cfg.Router == nil:
		return errors.New("pbx: EnableCalls needs Ports and a Router")
	case cfg.RingTimeout <= 0:
		return errors.New("pbx: RingTimeout must be positive")
	}
	ip, err := netip.ParseAddr(s.cfg.PublicAddr)
	if err != nil || ip.IsUnspecified() {
		return fmt.Errorf("pbx: calls need a concrete --public-addr IP (got %q)", s.cfg.PublicAddr)
	}
	var tr *trunk
	if cfg.Trunk != "" {
		resolveCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tr, err = resolveTrunk(resolveCtx, cfg.Resolver, cfg.Trunk)
		cancel()
		if err != nil {
			return err
		}
		if len(cfg.TrunkAllow) == 0 {
			cfg.TrunkAllow = tr.allowPrefixes()
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	s.calls = &callControl{
		trunk:     tr,
		ctx:       ctx,
		stop:      stop,
		cfg:       cfg,
		domain:    s.cfg.Domain,
		logger:    s.logger.Named("calls"),
		dialogs:   newDialogs(),
		calls:     map[string]*call{},
		regs:      s.regs,
		publicIP:  ip,
		srv:       s,
		limits:    newOutboundGate(cfg, s.logger.Named("calls")),
		admission: newAdmission(cmp.Or(cfg.MaxSetups, 1000)),
		aliases:   map[string]bool{},
	}
	if cfg.Node != "" {
		s.calls.nodeAuth = newNodeAuth(s.auth.key, cfg.Node, time.Now)
	}
	for _, a := range cfg.AliasNumbers {
		s.calls.aliases[a] = true
	}
	if cfg.TrunkRegister > 0 {
		if cfg.Trunk == "" || !cfg.TrunkAuth.Enabled() {
			return errTrunkRegisterConfig
		}
		if s.calls.trunkReg, err = newTrunkRegistration(s.calls); err != nil {
			return err
		}
	}
	s.allow = append(s.allow, sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.INFO, sip.UPDATE)
	s.sip.OnInvite(s.guard(s.calls.onInvite))
	s.sip.OnAck(s.calls.onInDialog)
	s.sip.OnBye(s.guard(s.calls.onInDialog))
	s.sip.OnInfo(s.guard(s.calls.onInDialog))
	s.sip.OnUpdate(s.guard(s.calls.onInDialog))
	// CANCEL of a pending INVITE is answered by sipgo's transaction layer;
	// one that reaches us matches nothing.
	s.sip.OnCancel(s.guard(s.handleNoTransaction))
	return nil
}

// bind creates the SIP clients legs are sent with, once Serve knows the
// bound addresses. UDP requests leave from the listening socket, so phones
// and the trunk see one address for the PBX. Requests over TCP or TLS go on
// the connection the phone opened when it registered: the transport layer
// finds it by the phone's address (never by our listener's, which every
// accepted connection shares).
func (cc *callControl) bind(ua *sipgo.UserAgent, listen, tlsListen string) error {
	port, err := portOf(listen)
	if err != nil {
		return err
	}
	host := cc.publicIP.String()
	client, err := sipgo.NewClient(ua,
		sipgo.WithClientHostname(host),
		sipgo.WithClientPort(port),
		sipgo.WithClientConnectionAddr(listen))
	if err != nil {
		return fmt.Errorf("pbx: sip client: %w", err)
	}
	stream, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	if err != nil {
		return fmt.Errorf("pbx: sip client: %w", err)
	}
	cc.client, cc.streamClient = client, stream
	if cc.trunk != nil {
		go cc.pingTrunk(cc.ctx, cc.trunk, cmp.Or(cc.cfg.TrunkPing, defaultTrunkPing))
	}
	cc.contact = sip.Uri{Scheme: "sip", User: "maskpbx", Host: host, Port: port}
	cc.tcpContact = cc.contact
	cc.tcpContact.UriParams = sip.HeaderParams{{K: "transport", V: "tcp"}}
	cc.tlsContact = cc.tcpContact
	if tlsListen != "" {
		tlsPort, err := portOf(tlsListen)
		if err != nil {
			return err
		}
		cc.tlsContact = sip.Uri{Scheme: "sip", User: "maskpbx", Host: host, Port: tlsPort,
			UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}
	}
	return nil
}

func portOf(hostPort string) (int, error) {
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// clientFor is the client for requests over transport ("UDP", "TCP", "TLS").
func (cc *callControl) clientFor(transport string) *sipgo.Client {
	if sip.IsReliable(transport) {
		return cc.streamClient
	}
	return cc.client
}

// contactFor is our Contact on a dialog over transport: in-dialog requests
// come back over the same transport.
func (cc *callControl) contactFor(transport string) sip.Uri {
	switch strings.ToUpper(transport) {
	case "TLS":
		return cc.tlsContact
	case "TCP":
		return cc.tcpContact
	}
	return cc.contact
}

func (cc *callControl) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && tagOf(to.Params) != "" {
		cc.onInDialog(req, tx)
		return
	}
	if !cc.begin() {
		cc.refuseAtShutdown(req, tx)
		return
	}
	defer cc.wg.Done()
	// Another node's INVITE for a phone registered here (relay.go); without
	// a node name nobody may send one.
	if req.GetHeader(nodeHeader) != nil {
		if cc.nodeAuth == nil {
			respond(tx, req, 403, "Forbidden", nil)
			return
		}
		cc.relayToPhone(req, tx)
		return
	}
	// The trunk's sources bring calls in and nothing else; every other
	// INVITE is a manager's phone dialling a client code.
	if cc.trunkAllowed(req.Source()) {
		cc.inbound(req, tx)
		return
	}
	// A call to the company number from anywhere but the trunk is forged:
	// refuse it without a challenge or a hint.
	if cc.isCompanyNumber(req.Recipient.User) {
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	cc.fromDeskPhone(req, tx)
}

// refuseAtShutdown answers a new INVITE while the node shuts down: 503 with
// Retry-After, so the trunk tries another node; a call in still gets its
// CDR, as every call attempt does.
func (cc *callControl) refuseAtShutdown(req *sip.Request, tx sip.ServerTransaction) {
	if cc.trunkAllowed(req.Source()) {
		if _, _, ok := cc.admitInbound(req, tx); ok {
			cc.shedInbound(req, tx)
		}
		return
	}
	code, reason, hdrs, _ := failureResponse(DispOverload)
	respond(tx, req, code, reason, nil, hdrs...)
}

func newCallID() string { return uuid.NewString() }

// onInDialog routes a request inside an existing dialog to its leg.
func (cc *callControl) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	h := cc.dialogs.find(req)
	if h == nil {
		if !req.IsAck() {
			respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		}
		return
	}
	h.handleInDialog(context.Background(), req, tx)
}

// ActiveCalls is the number of calls in progress.
func (s *Server) ActiveCalls() int {
	if s.calls == nil {
		return 0
	}
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return len(s.calls.calls)
}

// endAll hangs up every connected call (shutdown), refuses new ones from
// now on, and waits up to d for the calls and what they started to finish.
func (cc *callControl) endAll(d time.Duration) {
	cc.mu.Lock()
	cc.closing = true
	for _, c := range cc.calls {
		c.hangup(sideSystem)
	}
	cc.mu.Unlock()
	cc.stop() // every call's context: pauses and probes end now
	done := make(chan struct{})
	go func() { cc.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		cc.logger.Warn("calls still running at shutdown")
	}
}
