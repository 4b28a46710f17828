package pbx

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// A phone is reached through the node it registered with: its TCP or TLS
// connection, or its NAT binding, belongs to that node's socket. A node
// that rings a phone registered via another node (ringPhones) sends the
// INVITE to that node instead, signed with its node credential
// (nodeauth.go); the holding node answers it as a B2BUA of its own
// (relayToPhone): one leg from the calling node, one to the phone on its
// flow, and a media relay between them. The calling node keeps the call:
// its events, CDR and recording; the holding node publishes nothing.

// directionRelay names a holding node's relay in its logs and status.
const directionRelay = "relay"

// viaNode points a phone's INVITE at the node that holds its registration
// when that is another node; false when this node reaches the phone itself.
func (cc *callControl) viaNode(in outInvite, r Registration) (outInvite, bool) {
	if r.Node == "" || r.Node == cc.cfg.Node || cc.nodeAuth == nil {
		return in, false
	}
	host, port, err := net.SplitHostPort(r.NodeAddr)
	if err != nil {
		return in, false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return in, false
	}
	key, err := registrationKey(r.ManagerID, r.Contact)
	if err != nil {
		return in, false
	}
	in.target = sip.Uri{Scheme: "sip", User: r.Username, Host: host, Port: p}
	in.dest, in.transport = r.NodeAddr, "UDP"
	in = in.forTransport("UDP") // the holding node offers the phone SRTP if its flow is TLS
	in.binding = key
	return in, true
}

// relayUser is what the From user of a relayed INVITE may be: a client
// code, or "anonymous".
var relayUser = regexp.MustCompile(`^[A-Za-z0-9]{1,32}$`)

// relayToPhone serves another node's INVITE for a phone registered here:
// a stranger's (no valid node credential) gets 403 without a hint. The
// phone's INVITE is built from our allow-list like any other: the From
// user (a client code) and display name (client name and code) the calling
// node chose, nothing else of its INVITE.
func (cc *callControl) relayToPhone(req *sip.Request, tx sip.ServerTransaction) {
	claim, ok := cc.nodeAuth.verify(req)
	if !ok {
		cc.logger.Warn("INVITE with a bad node credential refused", zap.String("source", sourceIP(req)))
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	reg, ok := cc.heldBinding(claim.binding)
	if !ok {
		respond(tx, req, 480, "Temporarily Unavailable", nil)
		return
	}
	offer, err := media.ParseOffer(req.Body())
	if err != nil || offer.Secure {
		respond(tx, req, 488, "Not Acceptable Here", nil)
		return
	}
	target, err := parseContactURI(reg.Contact)
	if err != nil {
		respond(tx, req, 480, "Temporarily Unavailable", nil)
		return
	}
	c := cc.newCall(newCallID(), directionRelay, cc.logger.With(zap.String("leg_call_id", req.CallID().Value()),
		zap.String("direction", directionRelay), zap.String("from_node", claim.node)))
	defer c.release()
	up := cc.newUASLeg(c, media.SideA, req, tx)
	if err := c.allocatePorts(); err != nil {
		c.logger.Error("no RTP ports for a relayed call", zap.Error(err))
		up.reject(DispOverload)
		return
	}
	c.setRemote(media.SideA, offer, up.dlg.dest)
	respond(tx, req, 100, "Trying", nil)

	ringCtx, stopRinging := context.WithCancel(c.ctx)
	defer stopRinging()
	tx.OnCancel(func(*sip.Request) { stopRinging() })
	if !tx.OnTerminate(func(string, error) { stopRinging() }) {
		stopRinging()
	}
	fromUser := req.From().Address.User
	if !relayUser.MatchString(fromUser) {
		fromUser = "anonymous"
	}
	in := outInvite{
		target:      target,
		to:          sip.Uri{Scheme: "sip", User: reg.Username, Host: cc.domain},
		from:        sip.Uri{Scheme: "sip", User: fromUser, Host: cc.domain},
		displayName: req.From().DisplayName,
		sdp:         c.localSDP(media.SideB, offer.Codecs, media.SendRecv),
		secureSDP:   c.secureOfferSDP(media.SideB, offer.Codecs),
		dest:        reg.Source,
		transport:   transportOf(reg.Transport),
	}.forTransport(reg.Transport)
	events := make(chan legEvent, 64)
	leg, err := cc.startOutLeg(ringCtx, reg.ManagerID, in, events)
	if err != nil {
		c.logger.Warn("INVITE to a phone failed", zap.Error(err))
		respond(tx, req, 480, "Temporarily Unavailable", nil)
		return
	}
	rang := false
	winner, answer, status := cc.waitStep(ringCtx, []*outLeg{leg}, events, func() {
		if !rang {
			rang = true
			_ = up.respond(180, "Ringing", nil)
		}
	}, nil, nil)
	switch {
	case winner == nil && ringCtx.Err() != nil:
		return // the calling node cancelled: the transaction said 487
	case winner == nil && status == 486:
		_ = up.respond(486, "Busy Here", nil)
		return
	case winner == nil:
		_ = up.respond(480, "Temporarily Unavailable", nil)
		return
	}
	if disp := cc.bridgeInbound(c, up, winner, offer, answer); disp != "" {
		winner.hangup()
		up.reject(disp)
		return
	}
	defer cc.dialogs.remove(up.dlg.callID)
	if err := up.accept(c.localSDP(media.SideA, c.codecs, media.SendRecv)); err != nil || ringCtx.Err() != nil {
		winner.hangup()
		return
	}
	stopRinging()
	side := cc.awaitHangup(c, map[string]party{sideManager: winner, sideClient: up})
	hangUpOther(side, winner, up)
	c.logger.Info("relayed call ended", zap.String("hangup_side", side))
}

// heldBinding is the registration a node credential names, if this node
// holds it (the phone registered here and is registered still).
func (cc *callControl) heldBinding(key string) (Registration, bool) {
	managerID, _, _ := strings.Cut(key, ".")
	regs, err := cc.regs.Contacts(context.Background(), managerID)
	if err != nil {
		return Registration{}, false
	}
	for _, r := range regs {
		if k, err := registrationKey(r.ManagerID, r.Contact); err == nil && k == key && r.Node == cc.cfg.Node {
			return r, true
		}
	}
	return Registration{}, false
}
