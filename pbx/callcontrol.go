package pbx

import (
	"cmp"
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// CallConfig is the call side of the PBX.
type CallConfig struct {
	CompanyNumber string // E.164; calls in must be to this number; the From of calls out
	// CompanyNumbers are more public numbers on the same trunk, each with
	// the team a new caller to it rings; CompanyNumber is one too, for
	// every team, unless listed here.
	CompanyNumbers []CompanyNumber
	TrunkAllow     []netip.Prefix // sources allowed to send calls in
	// Trunk is where calls out go: host:port, or a host name looked up
	// as DNS SRV, with an optional ";transport=" (trunk.go).
	Trunk string
	// Resolver looks the trunk's name up; nil is the system's.
	Resolver     *net.Resolver
	RingTimeout  time.Duration // one step of the ring order
	MediaTimeout time.Duration // no RTP this long ends a call
	KeepAlive    time.Duration // in-dialog OPTIONS to each leg this often; 0: off
	Ports        *media.PortPool
	Router       *Router
	Events       EventSink
	Numbers      masking.Normalizer
	// CallsPerMinute limits how many calls out a manager may start in a
	// minute (click-to-call and desk phone); 0 means 10.
	CallsPerMinute int
	// TrunkAuth, if its Username is set, answers the trunk's digest
	// challenges to our INVITEs, BYEs and re-INVITEs.
	TrunkAuth TrunkAuth
	// TrunkRegister, if positive, is the expiry the PBX asks for when it
	// registers to the trunk with TrunkAuth (refreshed before it lapses);
	// 0 trusts the trunk by IP alone.
	TrunkRegister time.Duration
	// Recorder records every connected call (SIPREC); nil records none.
	Recorder *SRC
	// MaxSetups is how many calls in may be in setup (INVITE received, no
	// phone ringing yet) before more are refused with 503; 0 means 1000.
	MaxSetups int
	// Prompts are the clips the PBX plays to managers' mobiles (whisper,
	// code entry); nil: mobiles are neither rung nor answered.
	Prompts *ivr.Prompts
	// PromptLanguage picks the prompts' language ("en" if empty).
	PromptLanguage string
	// AliasNumbers is the pool of alias DIDs (E.164): each (manager,
	// client) pair's mobile calls go from and to a sticky alias of it
	// (alias.go); a call in to one from anyone else is a call to the
	// company number. AliasQuarantine is how long a released alias rests.
	AliasNumbers    []string
	AliasQuarantine time.Duration
	// Language is the company's language (--default-language): the
	// wording a manager's phone shows ("Calling …") unless he chose his
	// own; empty is English.
	Language string
	// Location is the company's time zone (--timezone): segments' working
	// hours are read in it; nil is UTC.
	Location *time.Location
	// Node names this node in every call event (events.Event.Node), so a
	// restarted node can close the calls it left open.
	Node string
	// Cluster is the CLUSTER bucket (OpenCluster): with it and Node, a
	// manager's call-out limits are shared by every node; nil keeps them
	// per node.
	Cluster jetstream.KeyValue
	// MonitorNotice plays a short beep to both parties of a call when a
	// supervisor barges in (--monitor-notice).
	MonitorNotice bool
	// TrunkPing is how often each trunk target is asked OPTIONS; 0 means
	// every 30 s. (Tests whose SIPp trunk answers one call and nothing
	// else set it beyond their length.)
	TrunkPing time.Duration

	// Timings tests shorten or lengthen; zero means the default.
	failurePause time.Duration // the manager hears a click-to-call fail this long before our BYE (1 s)
	cancelGiveUp time.Duration // an INVITE we CANCELled ends this long after without a final response (64*T1)
	// minSessionExpires is our Min-SE (90 s, RFC 4028); tests lower it to
	// see several session refreshes in seconds.
	minSessionExpires time.Duration
	mobileAccept      time.Duration // an answered mobile has this long after the whisper to press 1 (10 s)
}

// companyNumbers is every number calls in may be for (and the alias
// numbers, isAlias).
func (cc *callControl) companyNumbers() []CompanyNumber {
	out := cc.cfg.CompanyNumbers
	if cc.cfg.CompanyNumber == "" {
		return out
	}
	for _, c := range out {
		if c.Number == cc.cfg.CompanyNumber {
			return out
		}
	}
	return append([]CompanyNumber{{Number: cc.cfg.CompanyNumber}}, out...)
}

// isCompanyNumber reports whether raw is one of the company's numbers in
// any spelling.
func (cc *callControl) isCompanyNumber(raw string) bool {
	n, err := cc.cfg.Numbers.Normalize(raw)
	if err != nil {
		return false
	}
	for _, c := range cc.companyNumbers() {
		if c.Number == n {
			return true
		}
	}
	return false
}

// defaultFailurePause is CallConfig.failurePause's default.
const defaultFailurePause = time.Second

// cancelGiveUp is how long an INVITE we CANCELled may go without a final
// response before we end its transaction (RFC 3261 9.1: 64*T1). sipgo
// keeps an INVITE that got a provisional open until a final response, so
// a peer that ignores our CANCEL would hold its leg's watcher forever.
func (cc *callControl) cancelGiveUp() time.Duration {
	return cmp.Or(cc.cfg.cancelGiveUp, 64*sip.T1)
}

// EventSink takes call events (offered, ringing, answered, ended).
type EventSink interface {
	Publish(ctx context.Context, e events.Event) error
}

const dialogAllow = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"

// callControl is the B2BUA: it owns the dialog store and every live call.
type callControl struct {
	cfg    CallConfig
	domain string
	logger *zap.Logger
	// client sends over UDP from the listening socket, streamClient over
	// the TCP or TLS connection a phone opened (see bind).
	client, streamClient *sipgo.Client
	// Our Contact on a leg, by its transport (contactFor).
	contact, tcpContact, tlsContact sip.Uri
	dialogs                         *dialogs
	regs                            *Registrations
	// nodeAuth signs and checks the INVITEs nodes send each other for
	// phones registered via another node (relay.go); nil without
	// CallConfig.Node.
	nodeAuth *nodeAuth
	publicIP netip.Addr

	trunk     *trunk          // nil without --trunk
	aliases   map[string]bool // CallConfig.AliasNumbers; read-only
	limits    outboundGate
	admission *admission
	srv       *Server // for digest auth and failure limits of desk phones

	// trunkReg is the registration at the provider; nil without
	// CallConfig.TrunkRegister.
	trunkReg *trunkRegistration
	// trunkAuthFailures counts requests the trunk refused our credentials to.
	trunkAuthFailures atomic.Uint64

	// monitors are the supervisors listening in (monitor.go).
	monitors monitors

	// ctx is done once the node shuts down (endAll); every call's context
	// derives from it.
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	calls   map[string]*call
	recent  recentCalls
	closing bool // endAll has begun: no new call
	// wg counts the goroutines of calls and of what they started (legs'
	// watchers, drains, CANCELs, probes); endAll waits for it. A new call
	// joins it only through begin, under mu, so no Add races the Wait;
	// the rest join while their call holds it open.
	wg sync.WaitGroup
}

// begin joins a new call to the wait group; false once the node shuts
// down, and then the call must be refused.
func (cc *callControl) begin() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closing {
		return false
	}
	cc.wg.Add(1)
	return true
}

// respond answers a request statelessly within its transaction, with our
// own To tag where the response needs one.
func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, body []byte, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}

// sendBye ends an established dialog from our side, answering the trunk's
// digest challenge if it sends one.
func (cc *callControl) sendBye(d *dialog, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cc.requestInDialog(ctx, d, d.request(sip.BYE, cc.contactFor(d.transport)), logger); err != nil {
		logger.Debug("BYE not answered", zap.Error(err))
	}
}

// requestAndWait sends a request that ends something (BYE, CANCEL) and
// waits briefly for its answer; a peer that never answers is gone anyway.
func (cc *callControl) requestAndWait(req *sip.Request, logger *zap.Logger, opts ...sipgo.ClientRequestOption) {
	requestAndWait(cc.clientFor(req.Transport()), req, 10*time.Second, logger, opts...)
}

func requestAndWait(client *sipgo.Client, req *sip.Request, wait time.Duration, logger *zap.Logger, opts ...sipgo.ClientRequestOption) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	tx, err := client.TransactionRequest(ctx, req, opts...)
	if err != nil {
		logger.Debug("request not sent", zap.String("method", string(req.Method)), zap.Error(err))
		return
	}
	defer tx.Terminate()
	select {
	case <-tx.Responses():
	case <-tx.Done():
	case <-ctx.Done():
	}
}

// answerMidDialog answers re-INVITE, UPDATE and INFO on one leg by itself:
// hold and resume change nothing in the relay (it forwards what arrives),
// and the other leg never learns of them, so no detail crosses over.
//
// A re-INVITE or UPDATE is also a session refresh (RFC 4028): it renews the
// leg's session timer st, and our 200 states the terms.
//
// An offer that moves the peer's media (a softphone that roamed from one
// network to another) is passed to moved, so the relay sends there and
// takes media from there; a hold offer with c=0.0.0.0 moves nothing.
func (cc *callControl) answerMidDialog(req *sip.Request, tx sip.ServerTransaction, d *dialog, local func(dir media.Direction) []byte, moved func(media.Offer), st *sessionTimer) {
	switch req.Method {
	case sip.INVITE, sip.UPDATE:
		if cc.tooSmall(req, tx) {
			return
		}
		dir := media.SendRecv
		if len(req.Body()) > 0 {
			offer, err := media.ParseOffer(req.Body())
			if err != nil {
				respond(tx, req, 488, "Not Acceptable Here", nil)
				return
			}
			dir = offer.Direction.Reverse()
			if moved != nil && offer.Remote.IsValid() && !offer.Remote.Addr().IsUnspecified() {
				moved(offer)
			}
		}
		hdrs := append(st.onRequest(req), contentTypeSDP())
		respond(tx, req, 200, "OK", local(dir), hdrs...)
	case sip.INFO, sip.OPTIONS:
		respond(tx, req, 200, "OK", nil)
	case sip.ACK:
	default:
		respond(tx, req, 405, "Method Not Allowed", nil, sip.NewHeader("Allow", dialogAllow))
	}
}

func contentTypeSDP() sip.Header {
	ct := sip.ContentTypeHeader("application/sdp")
	return &ct
}

func newSessionID() uint64 { return rand.Uint64() >> 1 }
