package pbx

import (
	"context"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// uasLeg is the leg whose INVITE we received: the trunk's (inbound) or a
// desk phone's (dialling a client code).
type uasLeg struct {
	dlg *dialog
	// call is the call the leg is part of; a transfer moves the leg to the
	// colleague's part (moveTo) and takes the transferor's BYE (onHangup)
	// while sipgo's goroutines hand the leg requests: both under hookMu.
	// The call's owner goroutine, which moves it, reads it freely.
	hookMu  sync.Mutex
	call    *call
	byeHook func()
	side    media.Side
	acked   chan struct{}
	ackOne  sync.Once

	invite *sip.Request
	tx     sip.ServerTransaction
	final  *sip.Response // the last response sent, for 2xx retransmission

	earlySent bool // a 183 with our SDP went out (progress)

	st        *sessionTimer
	stHeaders []sip.Header // the session timer's terms, for our 200
}

// newUASLeg makes the dialog of a received INVITE; req must have From, To
// and Call-ID.
func (cc *callControl) newUASLeg(c *call, side media.Side, req *sip.Request, tx sip.ServerTransaction) *uasLeg {
	target := req.Recipient
	if h := req.Contact(); h != nil {
		target = h.Address
	}
	st := newSessionTimer(cc.minSE())
	return &uasLeg{call: c, side: side, acked: make(chan struct{}), invite: req, tx: tx, st: st, stHeaders: st.onRequest(req), dlg: &dialog{
		callID:    req.CallID().Value(),
		localTag:  sip.GenerateTagN(16),
		remoteTag: tagOf(req.From().Params),
		local:     req.To().Address,
		remote:    req.From().Address,
		target:    target,
		dest:      req.Source(),
		transport: req.Transport(),
	}}
}

// respond answers the INVITE; every response carries our To tag and
// Contact, and nothing of the other leg.
func (l *uasLeg) respond(code int, reason string, body []byte, hdrs ...sip.Header) error {
	res := sip.NewResponseFromRequest(l.invite, code, reason, body)
	res.To().Params.Add("tag", l.dlg.localTag)
	res.AppendHeader(&sip.ContactHeader{Address: l.call.cc.contactFor(l.dlg.transport)})
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	l.final = res
	return l.tx.Respond(res)
}

func (l *uasLeg) matches(req *sip.Request) bool {
	from, to := req.From(), req.To()
	return from != nil && to != nil && tagOf(from.Params) == l.dlg.remoteTag && tagOf(to.Params) == l.dlg.localTag
}

func (l *uasLeg) handleInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	l.hookMu.Lock()
	c, onBye := l.call, l.byeHook
	l.hookMu.Unlock()
	switch req.Method {
	case sip.ACK:
		l.ackOne.Do(func() { close(l.acked) })
	case sip.BYE:
		respond(tx, req, 200, "OK", nil)
		c.cc.dialogs.remove(l.dlg.callID)
		if onBye != nil {
			onBye()
			return
		}
		c.hangup(sideName(l.side))
	case sip.REFER:
		if l.side != media.SideB || c.snapshot().Via == ViaMobile {
			// The trunk never transfers, also not for a manager's mobile.
			respond(tx, req, 403, "Forbidden", nil)
			return
		}
		c.cc.onRefer(c, l.dlg, req, tx)
	default:
		c.cc.answerMidDialog(req, tx, l.dlg, func(dir media.Direction) []byte {
			return c.localSDP(l.side, c.codecs, dir)
		}, func(o media.Offer) { c.setRemote(l.side, o, l.dlg.dest) }, l.st)
	}
}

// moveTo makes the leg side of call c (a transfer's next part, which has
// the same codecs on this side): its requests go to c from now on.
func (l *uasLeg) moveTo(c *call, side media.Side) {
	l.hookMu.Lock()
	defer l.hookMu.Unlock()
	l.call, l.side, l.byeHook = c, side, nil
}

// onHangup sends the peer's BYE to f instead of the call.
func (l *uasLeg) onHangup(f func()) {
	l.hookMu.Lock()
	defer l.hookMu.Unlock()
	l.byeHook = f
}

func sideName(s media.Side) string {
	if s == media.SideA {
		return sideClient
	}
	return sideManager
}

// reject answers the INVITE of a call that did not connect, as its
// disposition says (failureResponse).
func (l *uasLeg) reject(disp string) {
	if code, reason, hdrs, ok := failureResponse(disp); ok {
		_ = l.respond(code, reason, nil, hdrs...)
	}
}

// accept answers the INVITE 200 with our SDP and, over UDP, resends it until
// the ACK arrives.
func (l *uasLeg) accept(sdp []byte) error {
	hdrs := append([]sip.Header{contentTypeSDP(), sip.NewHeader("Allow", dialogAllow)}, l.stHeaders...)
	if err := l.respond(200, "OK", sdp, hdrs...); err != nil {
		return err
	}
	go l.retransmitUntilAck()
	return nil
}

// retransmitUntilAck resends our 200 (RFC 3261 13.3.1.4: the UAS core
// retransmits 2xx over UDP, T1 doubling up to T2) until its ACK arrives;
// with no ACK in 64*T1 the call is given up.
func (l *uasLeg) retransmitUntilAck() {
	const t1, t2 = 500 * time.Millisecond, 4 * time.Second
	l.hookMu.Lock()
	c, ok := l.call, l.final
	l.hookMu.Unlock()
	giveUp := time.NewTimer(64 * t1)
	defer giveUp.Stop()
	resend := time.NewTimer(t1)
	defer resend.Stop()
	interval := t1
	for {
		select {
		case <-l.acked:
			return
		case <-c.done:
			return
		case <-giveUp.C:
			if c.ports[l.side].Stats().RTPPacketsIn > 0 {
				// The ACK went astray but the peer is talking: keep the call.
				return
			}
			c.logger.Warn("no ACK for our 200; ending the call", zap.String("leg", sideName(l.side)))
			c.hangup(sideSystem)
			return
		case <-resend.C:
			if !sip.IsReliable(ok.Transport()) {
				_ = l.tx.Respond(ok)
			}
			interval = min(2*interval, t2)
			resend.Reset(interval)
		}
	}
}

// hangup ends the answered dialog from our side.
func (l *uasLeg) hangup() { l.call.cc.sendBye(l.dlg, l.call.logger) }

func (l *uasLeg) dialog() *dialog { return l.dlg }

func (l *uasLeg) timer() *sessionTimer { return l.st }

// refreshOffer is the SDP the peer has from us, unchanged (same version).
func (l *uasLeg) refreshOffer() []byte { return l.call.refreshSDP(l.side, l.call.codecs) }

// progress tells the caller how the other leg is doing: the first early
// media (183 with our SDP) or, before any, ringing (180).
func (l *uasLeg) progress(status int, early bool) {
	switch {
	case early && !l.earlySent:
		l.earlySent = true
		_ = l.respond(183, "Session Progress", l.call.localSDP(l.side, l.call.codecs, media.SendRecv), contentTypeSDP())
	case !l.earlySent:
		_ = l.respond(180, "Ringing", nil)
	}
}
