package pbx

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// trunkAllowed reports whether src (host:port) may send calls in.
func (cc *callControl) trunkAllowed(src string) bool {
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	if cc.trunkReg.trusts(ip) {
		return true // the provider we are registered at (trunkreg.go)
	}
	for _, p := range cc.cfg.TrunkAllow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// inbound runs one call from the trunk to the company number, from the
// INVITE to the last BYE. It is the call's owner goroutine. The steps:
// admit (is it ours, can we take it) → route (who is the caller, who rings)
// → ring the managers → bridge the one who answered → talk.
func (cc *callControl) inbound(req *sip.Request, tx sip.ServerTransaction) {
	offer, called, ok := cc.admitInbound(req, tx)
	if !ok {
		return
	}
	setup := cc.admission.enter()
	defer setup.leave()
	if setup.shed {
		cc.shedInbound(req, tx)
		return
	}
	respond(tx, req, 100, "Trying", nil)

	// Every source that reaches here is a trusted trunk (onInvite).
	caller := callerNumber(req, true, cc.cfg.Numbers)
	lookup, stopLookup := context.WithTimeout(context.Background(), routeLookupTimeout)
	manager, fromMobile := cc.mobileCaller(lookup, caller)
	stopLookup()
	if fromMobile {
		cc.fromMobile(req, tx, offer, manager, setup, called.Number)
		return
	}

	c := cc.newCall(newCallID(), events.Inbound, nil)
	defer c.release()
	trunk := cc.newUASLeg(c, media.SideA, req, tx)
	if err := c.allocatePorts(); err != nil {
		// Every call attempt gets a CDR, also one refused for lack of ports.
		c.logger.Error("no RTP ports for a call", zap.Error(err))
		c.publish(events.Offered, nil)
		trunk.reject(DispOverload)
		c.end(DispOverload, sideSystem)
		return
	}
	c.setRemote(media.SideA, offer, trunk.dlg.dest)

	// The caller gives up: sipgo answers the CANCEL with 200 and the INVITE
	// with 487 itself; we only need to stop ringing.
	ringCtx, stopRinging := context.WithCancel(context.Background())
	defer stopRinging()
	tx.OnCancel(func(*sip.Request) { stopRinging() })
	if !tx.OnTerminate(func(string, error) { stopRinging() }) {
		stopRinging()
	}

	route, disp := cc.routeInbound(ringCtx, c, caller, called.Team)
	c.publish(events.Offered, nil)
	if ringCtx.Err() != nil {
		c.end(DispMissed, sideClient) // the caller hung up; the transaction said 487
		return
	}
	if disp != "" {
		trunk.reject(disp)
		c.end(disp, sideSystem)
		return
	}

	winner, answer, disp := cc.ringManagers(ringCtx, c, route, offer, trunk, setup, called.Number)
	setup.leave()
	if winner == nil {
		if ringCtx.Err() != nil {
			c.end(disp, sideClient) // the caller hung up; the transaction said 487
			return
		}
		trunk.reject(disp)
		c.end(disp, sideSystem)
		return
	}

	if disp := cc.bridgeInbound(c, trunk, winner, offer, answer); disp != "" {
		winner.hangup()
		trunk.reject(disp)
		c.end(disp, sideSystem)
		return
	}
	defer cc.dialogs.remove(trunk.dlg.callID)
	if err := trunk.accept(c.localSDP(media.SideA, c.codecs, media.SendRecv)); err != nil || ringCtx.Err() != nil {
		// The caller left in the very moment the manager answered.
		winner.hangup()
		c.end(DispMissed, sideClient)
		return
	}
	stopRinging()
	cc.talk(c, winner, trunk)
}

// admitInbound checks that an INVITE is a call in for this PBX and parses
// its offer; ok is false when it has been answered (403 without a hint, 400,
// 422 or 488) and nothing was allocated. called is the company number the
// call is for.
func (cc *callControl) admitInbound(req *sip.Request, tx sip.ServerTransaction) (offer media.Offer, called CompanyNumber, ok bool) {
	// 403 without a hint: a scanner learns nothing of why.
	if !cc.trunkAllowed(req.Source()) {
		respond(tx, req, 403, "Forbidden", nil)
		return media.Offer{}, called, false
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil {
		respond(tx, req, 400, "Bad Request", nil)
		return media.Offer{}, called, false
	}
	if called, ok = calledNumber(req, cc.cfg.Numbers, cc.companyNumbers()); !ok {
		if called, ok = cc.calledAlias(req); !ok {
			respond(tx, req, 403, "Forbidden", nil)
			return media.Offer{}, called, false
		}
	}
	if !cc.admitSessionTimer(req, tx) {
		return media.Offer{}, called, false
	}
	offer, err := media.ParseOffer(req.Body())
	if err != nil || offer.Secure { // the trunk's leg is plain RTP
		respond(tx, req, 488, "Not Acceptable Here", nil)
		return media.Offer{}, called, false
	}
	return offer, called, true
}

// shedInbound refuses a call the node can't serve now, at once and before it
// takes anything: 503 with Retry-After (the trunk tries another node or
// retries), counted, and with its CDR like every call attempt.
func (cc *callControl) shedInbound(req *sip.Request, tx sip.ServerTransaction) {
	code, reason, hdrs, _ := failureResponse(DispOverload)
	respond(tx, req, code, reason, nil, hdrs...)
	c := cc.newCall(newCallID(), events.Inbound, nil)
	defer c.release()
	c.publish(events.Offered, nil)
	c.end(DispOverload, sideSystem)
}

// routeLookupTimeout bounds the routing lookup of one call; a lookup that
// takes longer means the node is overloaded.
const routeLookupTimeout = 2 * time.Second

// routeInbound finds who the caller is and whom to ring (team: the called
// company number's, "" for all); a non-empty
// disposition means the call can't be routed (nobody registered: missed;
// the lookup too slow: overload; it broke: failed).
func (cc *callControl) routeInbound(ctx context.Context, c *call, callerNumber, team string) (Route, string) {
	lookupCtx, cancel := context.WithTimeout(withRoutedCall(ctx, c.id), routeLookupTimeout)
	defer cancel()
	start := time.Now()
	route, err := cc.cfg.Router.InboundRouteForTeam(lookupCtx, callerNumber, team)
	cc.admission.observeLookup(time.Since(start))
	switch {
	case errors.Is(err, ErrNobodyToRing):
		return route, DispMissed
	case err != nil && ctx.Err() != nil:
		return route, DispMissed // the caller hung up
	case err != nil && errors.Is(lookupCtx.Err(), context.DeadlineExceeded):
		c.logger.Warn("routing lookup too slow; call refused as overload", zap.Error(err))
		return route, DispOverload
	case err != nil:
		c.logger.Error("routing failed", zap.Error(err))
		return route, DispFailed
	}
	c.setClient(route.ClientID, route.ClientCode)
	c.logger = c.logger.With(zap.String("client_id", route.ClientID))
	return route, ""
}

// ringManagers rings the route's managers step by step with the client's
// name and code as the caller, offering exactly what the trunk offered that
// we support (whatever a phone picks, the trunk has agreed to it); their
// mobiles ring through the trunk from the called company number. It
// returns the phone (or mobile) that answered and its SDP, or nil and the
// disposition.
func (cc *callControl) ringManagers(ctx context.Context, c *call, route Route, offer media.Offer, trunk *uasLeg, setup *setupSlot, companyNumber string) (*outLeg, media.Offer, string) {
	rang := false
	onRinging := func() {
		setup.leave() // ringing: the node's part of the setup is done
		if !rang {
			rang = true
			_ = trunk.respond(180, "Ringing", nil)
			c.publish(events.Ringing, nil)
		}
	}
	from, fromUser := route.ClientName, "anonymous"
	if route.ClientCode != "" {
		from, fromUser = clientDisplayName(nil, route.ClientName, route.ClientCode), route.ClientCode
	}
	mr := cc.newMobileRing(c, route.Mobiles, offer.Codecs, cmp.Or(companyNumber, cc.cfg.CompanyNumber), route.ClientCode)
	winner, answer, status := cc.ring(ctx, route.Steps, outInvite{
		from:        sip.Uri{Scheme: "sip", User: fromUser, Host: cc.domain},
		displayName: from,
		sdp:         c.localSDP(media.SideB, offer.Codecs, media.SendRecv),
		secureSDP:   c.secureOfferSDP(media.SideB, offer.Codecs),
	}, onRinging, mr, c.logger)
	mr.release(winner)
	switch {
	case winner != nil && winner.mobile:
		mr.take(winner)
		return winner, answer, ""
	case winner != nil:
		return winner, answer, ""
	case status == 486 || status == 600:
		return nil, media.Offer{}, DispBusy
	}
	return nil, media.Offer{}, DispMissed
}

// bridgeInbound joins the phone that answered to the trunk's leg through
// the relay, with the codec it chose (one the trunk offered); a non-empty
// disposition means it failed.
func (cc *callControl) bridgeInbound(c *call, trunk *uasLeg, winner *outLeg, offer, answer media.Offer) string {
	c.setManager(winner.managerID)
	c.logger = c.logger.With(zap.String("manager_id", winner.managerID))
	if err := c.acceptAnswer(media.SideB, answer, winner.secureOffer); err != nil {
		c.logger.Warn("the phone's SRTP answer is unusable", zap.Error(err))
		return DispFailed
	}
	c.setRemote(media.SideB, answer, winner.dlg.dest)
	trunkCodecs := pickSame(offer.Codecs, answer.Codecs)
	c.codecs = trunkCodecs
	if err := c.bridge(media.PayloadTypeMap(trunkCodecs, answer.Codecs), media.PayloadTypeMap(answer.Codecs, trunkCodecs)); err != nil {
		c.logger.Error("relay failed", zap.Error(err))
		return DispFailed
	}
	winner.moveTo(c, media.SideB)
	if err := cc.dialogs.add(trunk.dlg.callID, trunk); err != nil {
		return DispFailed
	}
	return ""
}
