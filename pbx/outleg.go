package pbx

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// legEvent is what an outgoing leg reports to the call that rings it.
type legEvent struct {
	leg    *outLeg
	status int         // 180/183 ringing, 200 answered, >= 300 failed
	answer media.Offer // the peer's SDP: with 200, and with a 18x that has one (early media)
	early  bool        // a 18x carried SDP
	// whispered: the final event of a mobile leg's whisper (mobile.go),
	// with outcome; 200 means the mobile pressed 1.
	whispered bool
	outcome   string
	port      *media.Port // with whispered: the mobile leg's port
}

// outLeg is one INVITE we send: to one registered contact of a manager, or
// (click-to-call) to the trunk. It is a UAC dialog built from an allow-list
// of our own headers; nothing of the other leg is copied into it.
type outLeg struct {
	cc          *callControl
	managerID   string
	mobile      bool // an INVITE to a manager's mobile through the trunk (mobile.go)
	secureOffer bool // we offered it SRTP (srtp.go)
	// plain is the same INVITE without SRTP, tried once if the phone
	// refuses the SRTP offer (srtp.go, refusesSRTP); nil if not secure.
	plain *outInvite
	// invite is the INVITE in flight: the one a CANCEL must match. After
	// the trunk's challenge it is the INVITE resent with credentials, and
	// tx its transaction; both are swapped under mu (invite is read by
	// cancel), tx only by watch.
	invite *sip.Request
	tx     sip.ClientTransaction
	// authTries counts the digest challenges this INVITE answered; watch
	// alone uses it.
	authTries int
	dlg       *dialog
	logger    *zap.Logger
	st        *sessionTimer

	cancelSent chan struct{} // closed when our CANCEL goes out

	mu        sync.Mutex
	answered  bool
	cancelled bool
	ended     bool
	byePeer   bool   // the peer hung up (before we did)
	onBye     func() // set when the leg joins a call (join)
	// localSDP builds our SDP for re-INVITE and UPDATE answers once the
	// leg has joined its call.
	localSDP func(dir media.Direction) []byte
	// moved follows the peer's media to where a mid-call offer moves it.
	moved func(media.Offer)
}

// outInvite describes the INVITE of an outgoing leg.
type outInvite struct {
	target      sip.Uri // Request-URI
	to          sip.Uri
	from        sip.Uri
	displayName string
	dest        string // host:port to send to
	transport   string
	sdp         []byte
	// secureSDP, if set, is offered instead of sdp to phones registered
	// over TLS (SRTP, srtp.go).
	secureSDP []byte
	secure    bool       // sdp is the SRTP offer
	plain     *outInvite // with secure: the same INVITE offering plain RTP
	// auth answers the peer's digest challenges (the trunk's credentials);
	// nil for phones.
	auth *TrunkAuth
	// binding, if set, is the registration (its KV key) of a phone another
	// node holds: the INVITE goes to that node with our node credential
	// (relay.go).
	binding string
}

// forTransport is the INVITE for a phone registered over transport: with
// the SRTP offer if that phone gets one.
func (in outInvite) forTransport(transport string) outInvite {
	in.secure, in.plain = false, nil
	if in.secureSDP != nil && securesTransport(transport) {
		plain := in
		plain.secureSDP = nil
		in.sdp, in.secure, in.plain = in.secureSDP, true, &plain
	}
	in.secureSDP = nil
	return in
}

// maxDisplayName is the longest display name sent to a phone, in runes.
const maxDisplayName = 64

// sanitizeDisplayName keeps a name safe inside a quoted display name: no
// quote or backslash, no control, format (bidi overrides such as U+202E,
// zero-width) or line/paragraph separator characters (U+2028), which could
// reorder or hide what a phone shows. Runs of spaces become one.
func sanitizeDisplayName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '"' || r == '\\' || unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp):
			return -1
		case unicode.IsSpace(r):
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxDisplayName {
		s = strings.TrimSpace(string(r[:maxDisplayName]))
	}
	return s
}

// clientDisplayName is what a manager's phone shows for a client: the
// client's name in its wording (nil: the name alone; else e.g. "Calling
// <name>" in the manager's language), then " #<code>", in UTF-8 (RFC 3261
// quoted-strings carry it). A long name is cut, never the code: the code
// is how the manager knows whom he talks to.
func clientDisplayName(wording func(client string) string, name, code string) string {
	if wording == nil {
		wording = func(client string) string { return client }
	}
	tail := " #" + sanitizeDisplayName(code)
	room := maxDisplayName - utf8.RuneCountInString(wording("")) - utf8.RuneCountInString(tail)
	n := []rune(sanitizeDisplayName(name))
	if len(n) > room {
		n = []rune(strings.TrimSpace(string(n[:max(room-1, 0)])) + "…")
	}
	return strings.Join(strings.Fields(wording(string(n))+tail), " ")
}

// startOutLeg sends the INVITE and reports its progress on events until a
// final response (or failure). It never blocks on events for long: the
// channel is buffered by the caller.
func (cc *callControl) startOutLeg(ctx context.Context, managerID string, in outInvite, events chan<- legEvent) (*outLeg, error) {
	callID := uuid.NewString()
	dlg := &dialog{
		callID:    callID,
		localTag:  sip.GenerateTagN(16),
		local:     in.from,
		localName: sanitizeDisplayName(in.displayName),
		remote:    in.to,
		target:    in.target,
		dest:      in.dest,
		transport: in.transport,
		auth:      in.auth,
	}
	req := dlg.request(sip.INVITE, cc.contactFor(dlg.transport))
	req.AppendHeader(sip.NewHeader("Allow", dialogAllow))
	// We do session timers: a peer that wants one names its terms in the
	// 200 (RFC 4028 7.1); we ask for none ourselves.
	req.AppendHeader(sip.NewHeader("Supported", "timer"))
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(in.sdp)
	if in.binding != "" {
		cc.nodeAuth.sign(req, in.binding)
	}
	leg := &outLeg{cc: cc, managerID: managerID, invite: req, dlg: dlg, cancelSent: make(chan struct{}), secureOffer: in.secure, plain: in.plain, st: newSessionTimer(cc.minSE()),
		logger: cc.logger.With(zap.String("leg_call_id", callID), zap.String("manager_id", managerID))}
	if err := cc.dialogs.add(callID, leg); err != nil {
		return nil, err
	}
	tx, err := cc.clientFor(req.Transport()).TransactionRequest(ctx, req)
	if err != nil {
		cc.dialogs.remove(callID)
		return nil, err
	}
	leg.tx = tx
	// Legs are started by a call's goroutine, which holds cc.wg open.
	cc.wg.Go(func() { leg.watch(events) })
	return leg, nil
}

// watch reads the INVITE transaction's responses. sipgo's dialog helper
// gives up after ten provisional responses; a phone or trunk that repeats
// 180 every second must still connect, so we read them all ourselves.
//
// It ends after sending exactly one final event (a final response, the
// transaction's end, or cancelGiveUp after our CANCEL), so whoever reads
// events (the ring step, then drain) knows how many to expect.
func (l *outLeg) watch(events chan<- legEvent) {
	cancelSent := l.cancelSent
	var giveUp <-chan time.Time
	for {
		select {
		case <-cancelSent:
			cancelSent = nil
			t := time.NewTimer(l.cc.cancelGiveUp())
			defer t.Stop()
			giveUp = t.C
		case <-giveUp:
			giveUp = nil
			l.logger.Info("no final response to our CANCEL; the INVITE is given up")
			l.tx.Terminate() // Done follows

		case res, ok := <-l.tx.Responses():
			if !ok {
				events <- legEvent{leg: l, status: 408}
				return
			}
			switch {
			case res.StatusCode == 100:
			case res.IsProvisional():
				ev := legEvent{leg: l, status: res.StatusCode}
				if len(res.Body()) > 0 {
					if early, err := media.ParseOffer(res.Body()); err == nil {
						ev.answer, ev.early = early, true
					}
				}
				events <- ev
			case res.IsSuccess():
				l.onAnswer(res, events)
				return
			case (res.StatusCode == 401 || res.StatusCode == 407) && l.dlg.auth != nil && l.retryWithCredentials(res):
				// The transaction layer ACKed the challenge; the INVITE
				// with credentials is in flight now, on l.tx.
			default:
				l.cc.dialogs.remove(l.dlg.callID)
				events <- legEvent{leg: l, status: res.StatusCode}
				return
			}
		case <-l.tx.Done():
			l.cc.dialogs.remove(l.dlg.callID)
			events <- legEvent{leg: l, status: 408}
			return
		}
	}
}

// retryWithCredentials answers the trunk's 401/407 to our INVITE: the
// same INVITE as a new transaction with a new CSeq and our credentials
// (RFC 3261 22.2). It reports false, and the challenge is the leg's final
// response, if the challenge can't be answered, if it is a second one to
// our credentials (they are wrong: never a loop), or if the leg was
// cancelled meanwhile (the caller gave up).
func (l *outLeg) retryWithCredentials(res *sip.Response) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancelled {
		return false
	}
	answer, err := l.dlg.auth.answerChallenge(l.invite, res)
	if err != nil || !mayRetry(l.authTries, answer.stale) {
		l.cc.trunkAuthRefused(l.logger, sip.INVITE, res.StatusCode, err)
		return false
	}
	l.authTries++
	next := withCredentials(l.invite, l.dlg.nextSeq(), answer.header)
	// Under mu: a CANCEL from now on matches the INVITE with credentials.
	tx, err := l.cc.clientFor(next.Transport()).TransactionRequest(context.Background(), next)
	if err != nil {
		l.logger.Error("INVITE with credentials not sent", zap.Error(err))
		return false
	}
	l.invite, l.tx = next, tx
	return true
}

func (l *outLeg) onAnswer(res *sip.Response, events chan<- legEvent) {
	l.dlg.mu.Lock()
	if to := res.To(); to != nil {
		l.dlg.remoteTag = tagOf(to.Params)
	}
	if c := res.Contact(); c != nil {
		l.dlg.target = c.Address
	}
	l.dlg.mu.Unlock()
	l.ack()
	l.st.onAnswer(res, true)
	answer, err := media.ParseOffer(res.Body())
	l.mu.Lock()
	l.answered = true
	late := l.cancelled
	l.mu.Unlock()
	if err != nil || late {
		// A 200 we can't use (bad SDP, or it crossed our CANCEL): ACK it
		// and hang up at once so the phone doesn't stay off-hook.
		l.hangup()
		events <- legEvent{leg: l, status: 488}
		return
	}
	events <- legEvent{leg: l, status: 200, answer: answer}
}

func (l *outLeg) ack() {
	// ACK for a 2xx has the INVITE's CSeq number and takes none of its own.
	ack := l.dlg.requestSeq(sip.ACK, l.invite.CSeq().SeqNo, l.cc.contactFor(l.dlg.transport))
	if err := l.cc.clientFor(ack.Transport()).WriteRequest(ack); err != nil {
		l.logger.Warn("ACK not sent", zap.Error(err))
	}
}

// cancel stops a leg that is still ringing (CANCEL, RFC 3261 9.1). A leg
// that already answered is hung up instead.
func (l *outLeg) cancel() {
	l.mu.Lock()
	if l.cancelled || l.ended {
		l.mu.Unlock()
		return
	}
	l.cancelled = true
	answered := l.answered
	l.mu.Unlock()
	if answered {
		l.hangup()
		return
	}
	close(l.cancelSent)
	l.mu.Lock()
	inv := l.invite
	l.mu.Unlock()
	c := newCancel(inv)
	// ClientRequestBuild keeps the INVITE's Via (CANCEL must match its
	// branch) and only sets what is missing.
	l.cc.requestAndWait(c, l.logger, sipgo.ClientRequestBuild)
}

// hangup sends BYE on an answered leg, once.
func (l *outLeg) hangup() {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended = true
	l.mu.Unlock()
	l.cc.dialogs.remove(l.dlg.callID)
	l.cc.sendBye(l.dlg, l.logger)
}

// matches runs on sipgo's goroutine for the request, maybe while the 200
// that names the remote tag is processed (onAnswer).
func (l *outLeg) matches(req *sip.Request) bool {
	from := req.From()
	if from == nil {
		return false
	}
	remoteTag := l.dlg.peerTag()
	return remoteTag != "" && tagOf(from.Params) == remoteTag
}

// handleInDialog answers requests the peer sends inside the dialog.
func (l *outLeg) handleInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.BYE:
		respond(tx, req, 200, "OK", nil)
		l.mu.Lock()
		already := l.ended
		l.ended = true
		onBye := l.onBye
		// A peer that answers and hangs up at once may do so before the
		// call has taken the leg (or between a mobile's whisper and its
		// bridge): join tells the call then.
		l.byePeer = l.byePeer || !already
		l.mu.Unlock()
		l.cc.dialogs.remove(l.dlg.callID)
		if !already && onBye != nil {
			onBye()
		}
	case sip.ACK:
		// The ACK of our 200 to a re-INVITE: nothing to answer.
	default:
		l.mu.Lock()
		sdp, moved := l.localSDP, l.moved
		l.mu.Unlock()
		if sdp == nil {
			// Answered but not yet joined to its call: ask the peer to
			// try again in a moment.
			respond(tx, req, 491, "Request Pending", nil)
			return
		}
		l.cc.answerMidDialog(req, tx, l.dlg, sdp, moved, l.st)
	}
}

// join attaches an answered leg to its call: localSDP builds our SDP for
// the peer's re-INVITEs and UPDATEs, onBye is told when the peer hangs up,
// also if he did so before this join, and moved follows his media when a
// re-INVITE or UPDATE moves it. A mobile's leg joins twice: its whisper,
// then its call.
func (l *outLeg) join(localSDP func(dir media.Direction) []byte, onBye func(), moved func(media.Offer)) {
	l.mu.Lock()
	l.localSDP, l.onBye, l.moved = localSDP, onBye, moved
	gone := l.byePeer
	l.mu.Unlock()
	if gone {
		onBye()
	}
}

// newCancel builds the CANCEL of a pending INVITE (RFC 3261 9.1): same
// Request-URI, top Via (branch), From, To, Call-ID and CSeq number.
func newCancel(inv *sip.Request) *sip.Request {
	c := sip.NewRequest(sip.CANCEL, inv.Recipient)
	if via := inv.Via(); via != nil {
		c.AppendHeader(via.Clone())
	}
	from, to := *inv.From(), *inv.To()
	from.Params, to.Params = inv.From().Params.Clone(), inv.To().Params.Clone()
	c.AppendHeader(&from)
	c.AppendHeader(&to)
	callID := *inv.CallID()
	c.AppendHeader(&callID)
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	maxFwd := sip.MaxForwardsHeader(70)
	c.AppendHeader(&maxFwd)
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	return c
}

func (l *outLeg) dialog() *dialog { return l.dlg }

func (l *outLeg) timer() *sessionTimer { return l.st }

// refreshOffer is our SDP for a re-INVITE refresh: the same media, with the
// version raised (the leg keeps no copy of what it sent last).
func (l *outLeg) refreshOffer() []byte {
	l.mu.Lock()
	sdp := l.localSDP
	l.mu.Unlock()
	if sdp == nil {
		return nil
	}
	return sdp(media.SendRecv)
}
