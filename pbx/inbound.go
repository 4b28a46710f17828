package pbx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// Dispositions of a call, as CDRs and events name them.
const (
	DispAnswered = "answered"
	DispMissed   = "missed"
	DispBusy     = "busy"
	DispFailed   = "failed"
)

// trunkAllowed reports whether src (host:port) may send calls in.
func (cc *callControl) trunkAllowed(src string) bool {
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range cc.cfg.TrunkAllow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// inbound runs one call from the trunk to the company number, from the
// INVITE to the last BYE. It is the call's owner goroutine.
func (cc *callControl) inbound(req *sip.Request, tx sip.ServerTransaction) {
	// 403 without a hint: a scanner learns nothing of why.
	if !cc.trunkAllowed(req.Source()) || cc.cfg.CompanyNumber == "" {
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	if n, err := cc.cfg.Numbers.Normalize(req.Recipient.User); err != nil || n != cc.cfg.CompanyNumber {
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil {
		respond(tx, req, 400, "Bad Request", nil)
		return
	}
	offer, err := media.ParseOffer(req.Body())
	if err != nil {
		respond(tx, req, 488, "Not Acceptable Here", nil)
		return
	}
	respond(tx, req, 100, "Trying", nil)

	id := newCallID()
	logger := cc.logger.With(zap.String("call_id", id), zap.String("direction", "inbound"))
	c := cc.newCall(id, "inbound", logger)
	defer c.release()

	trunkPort, err := cc.cfg.Ports.Allocate()
	if err != nil {
		// Every call attempt gets a CDR, also one refused for lack of ports.
		logger.Error("no RTP port for the trunk leg", zap.Error(err))
		respond(tx, req, 503, "Service Unavailable", nil)
		c.publish(events.Offered, nil)
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = DispFailed, "system" })
		return
	}
	c.ports[media.SideA] = trunkPort
	trunkPort.SetRemote(offer.Remote)
	if offer.RemoteRTCP.IsValid() {
		trunkPort.SetRemoteRTCP(offer.RemoteRTCP)
	}

	trunk := cc.newUASLeg(c, media.SideA, req, tx)
	answerTrunk := trunk.respond

	// The caller gives up: sipgo answers the CANCEL with 200 and the INVITE
	// with 487 itself; we only need to stop ringing.
	ringCtx, stopRinging := context.WithCancel(context.Background())
	defer stopRinging()
	tx.OnCancel(func(*sip.Request) { stopRinging() })
	go func() {
		select {
		case <-tx.Done():
			stopRinging()
		case <-ringCtx.Done():
		}
	}()

	lookupCtx, cancelLookup := context.WithTimeout(ringCtx, 5*time.Second)
	route, err := cc.cfg.Router.InboundRoute(lookupCtx, req.From().Address.User)
	cancelLookup()
	if err != nil {
		if errors.Is(err, ErrNobodyToRing) {
			_ = answerTrunk(480, "Temporarily Unavailable", nil)
		} else if ringCtx.Err() == nil {
			logger.Error("routing failed", zap.Error(err))
			_ = answerTrunk(500, "Server Internal Error", nil)
		}
		c.publish(events.Offered, nil)
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = DispFailed, "system" })
		return
	}
	c.clientID, c.clientCode = route.ClientID, route.ClientCode
	logger = logger.With(zap.String("client_id", route.ClientID))
	c.logger = logger
	c.publish(events.Offered, nil)

	managerPort, err := cc.cfg.Ports.Allocate()
	if err != nil {
		logger.Error("no RTP port for the manager leg", zap.Error(err))
		_ = answerTrunk(503, "Service Unavailable", nil)
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = DispFailed, "system" })
		return
	}
	c.ports[media.SideB] = managerPort

	// Offer the managers exactly what the trunk offered that we support, in
	// its order: whatever a phone picks, the trunk has agreed to it.
	managerOffer := c.localSDP(media.SideB, offer.Codecs, media.SendRecv)
	rang := false
	onRinging := func() {
		if !rang {
			rang = true
			_ = answerTrunk(180, "Ringing", nil)
			c.publish(events.Ringing, nil)
		}
	}
	from := route.ClientName
	fromUser := "anonymous"
	if route.ClientCode != "" {
		from = fmt.Sprintf("%s #%s", route.ClientName, route.ClientCode)
		fromUser = route.ClientCode
	}
	winner, answer, status := cc.ring(ringCtx, route.Steps, outInvite{
		from:        sip.Uri{Scheme: "sip", User: fromUser, Host: cc.domain},
		displayName: from,
		sdp:         managerOffer,
	}, onRinging, logger)

	if winner == nil {
		disp := DispMissed
		if status == 486 || status == 600 {
			disp = DispBusy
		}
		if ringCtx.Err() == nil {
			code, reason := 480, "Temporarily Unavailable"
			if disp == DispBusy {
				code, reason = 486, "Busy Here"
			}
			_ = answerTrunk(code, reason, nil)
		}
		side := "system"
		if ringCtx.Err() != nil {
			side = "client"
		}
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = disp, side })
		return
	}

	// A phone answered: the codec it chose is one the trunk offered.
	c.managerID = winner.managerID
	c.logger = logger.With(zap.String("manager_id", winner.managerID))
	managerPort.SetRemote(answer.Remote)
	if answer.RemoteRTCP.IsValid() {
		managerPort.SetRemoteRTCP(answer.RemoteRTCP)
	}
	trunkCodecs := pickSame(offer.Codecs, answer.Codecs)
	c.codecs = trunkCodecs
	if err := c.bridge(media.PayloadTypeMap(trunkCodecs, answer.Codecs), media.PayloadTypeMap(answer.Codecs, trunkCodecs)); err != nil {
		logger.Error("relay failed", zap.Error(err))
		winner.hangup()
		_ = answerTrunk(500, "Server Internal Error", nil)
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = DispFailed, "system" })
		return
	}
	winner.localSDP = func(dir media.Direction) []byte { return c.localSDP(media.SideB, answer.Codecs, dir) }
	winner.setOnBye(func() { c.hangup("manager") })
	if err := cc.dialogs.add(trunk.dlg.callID, trunk); err != nil {
		winner.hangup()
		_ = answerTrunk(500, "Server Internal Error", nil)
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = DispFailed, "system" })
		return
	}
	defer cc.dialogs.remove(trunk.dlg.callID)
	if err := answerTrunk(200, "OK", c.localSDP(media.SideA, trunkCodecs, media.SendRecv), contentTypeSDP(),
		sip.NewHeader("Allow", dialogAllow)); err != nil || ringCtx.Err() != nil {
		// The caller left in the very moment the manager answered.
		winner.hangup()
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = DispMissed, "client" })
		return
	}
	stopRinging()
	go retransmitUntilAck(tx, trunk.final, trunk.acked, c, media.SideA)
	answeredAt := time.Now()
	cc.talk(c, managerSide{leg: winner}, uasSide{leg: trunk}, func(disp, side string) {
		c.logger.Info("talk time", zap.Duration("talk", time.Since(answeredAt)))
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = disp, side })
	})
}

// retransmitUntilAck resends our 200 to the trunk (RFC 3261 13.3.1.4: the
// UAS core retransmits 2xx over UDP, T1 doubling up to T2) until its ACK
// arrives; with no ACK in 64*T1 the call is given up.
func retransmitUntilAck(tx sip.ServerTransaction, ok *sip.Response, acked <-chan struct{}, c *call, side media.Side) {
	const t1, t2 = 500 * time.Millisecond, 4 * time.Second
	giveUp := time.NewTimer(64 * t1)
	defer giveUp.Stop()
	interval := t1
	for {
		select {
		case <-acked:
			return
		case <-c.done:
			return
		case <-giveUp.C:
			if c.ports[side].Stats().RTPPacketsIn > 0 {
				// The ACK went astray but the caller is talking: keep the call.
				return
			}
			c.logger.Warn("no ACK for our 200 from the trunk; ending the call")
			c.hangup("system")
			return
		case <-time.After(interval):
			if sip.IsReliable(ok.Transport()) {
				continue // TCP delivers it; only wait for the ACK
			}
			_ = tx.Respond(ok)
			interval = min(2*interval, t2)
		}
	}
}

// pickSame returns the entries of offered that name the same codecs as
// chosen (keeping offered's payload types).
func pickSame(offered, chosen []media.Codec) []media.Codec {
	var out []media.Codec
	for _, ch := range chosen {
		for _, o := range offered {
			if o.Name == ch.Name && o.ClockRate == ch.ClockRate {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

// ring runs the ring plan: each step rings every registered contact of its
// managers in parallel for RingTimeout; the first to answer wins and the
// rest get CANCEL. It returns the winner and his SDP, or nil and the most
// telling failure status (486 if everyone was busy).
func (cc *callControl) ring(ctx context.Context, steps [][]string, in outInvite, onRinging func(), logger *zap.Logger) (*outLeg, media.Offer, int) {
	status := 480
	for _, step := range steps {
		if ctx.Err() != nil {
			return nil, media.Offer{}, 487
		}
		events := make(chan legEvent, 64)
		var legs []*outLeg
		for _, managerID := range step {
			regs, err := cc.regs.Contacts(ctx, managerID)
			if err != nil {
				logger.Warn("registrations unavailable", zap.Error(err))
				continue
			}
			username := ""
			for _, r := range regs {
				username = r.Username
				target, err := parseContactURI(r.Contact)
				if err != nil {
					continue
				}
				leg, err := cc.startOutLeg(ctx, managerID, outInvite{
					target: target, to: sip.Uri{Scheme: "sip", User: username, Host: cc.domain},
					from: in.from, displayName: in.displayName, sdp: in.sdp,
					dest: r.Source, transport: transportOf(r.Transport),
				}, events)
				if err != nil {
					logger.Warn("INVITE to a phone failed", zap.String("manager_id", managerID), zap.Error(err))
					continue
				}
				legs = append(legs, leg)
			}
		}
		if len(legs) == 0 {
			continue
		}
		winner, answer, st := cc.waitStep(ctx, legs, events, onRinging)
		if winner != nil {
			return winner, answer, 200
		}
		if st == 486 || st == 600 {
			status = 486
		} else {
			status = 480
		}
	}
	return nil, media.Offer{}, status
}

func (cc *callControl) waitStep(ctx context.Context, legs []*outLeg, events <-chan legEvent, onRinging func()) (*outLeg, media.Offer, int) {
	timer := time.NewTimer(cc.cfg.RingTimeout)
	defer timer.Stop()
	pending := len(legs)
	busy := 0
	cancelAll := func(except *outLeg) {
		for _, l := range legs {
			if l != except {
				go l.cancel()
			}
		}
	}
	for pending > 0 {
		select {
		case ev := <-events:
			switch {
			case ev.status < 200:
				onRinging()
			case ev.status == 200:
				cancelAll(ev.leg)
				// Late answers from the others are hung up by cancel().
				go drain(events, pending-1)
				return ev.leg, ev.answer, 200
			default:
				pending--
				if ev.status == 486 || ev.status == 600 {
					busy++
				}
			}
		case <-timer.C:
			cancelAll(nil)
			go drain(events, pending)
			return nil, media.Offer{}, 480
		case <-ctx.Done():
			cancelAll(nil)
			go drain(events, pending)
			return nil, media.Offer{}, 487
		}
	}
	if busy == len(legs) {
		return nil, media.Offer{}, 486
	}
	return nil, media.Offer{}, 480
}

// drain consumes the final reports of legs we no longer wait for, so their
// goroutines can end; a late 200 among them is hung up.
func drain(events <-chan legEvent, n int) {
	deadline := time.After(40 * time.Second)
	for n > 0 {
		select {
		case ev := <-events:
			if ev.status >= 200 {
				n--
				if ev.status == 200 {
					ev.leg.hangup()
				}
			}
		case <-deadline:
			return
		}
	}
}

func transportOf(t string) string {
	if t == "" {
		return "UDP"
	}
	return t
}

func parseContactURI(s string) (sip.Uri, error) {
	var u sip.Uri
	if err := sip.ParseUri(trimAngles(s), &u); err != nil {
		return u, err
	}
	return u, nil
}

func trimAngles(s string) string {
	if i := strings.IndexByte(s, '<'); i >= 0 {
		if j := strings.IndexByte(s[i:], '>'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return s
}
