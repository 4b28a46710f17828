package pbx

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// fromDeskPhone runs a call a manager dials from his phone: INVITE
// sip:<client code>@<domain>. He proves who he is (407 digest challenge);
// the code must name a client assigned to him; then the PBX dials the
// client through the trunk exactly as a click-to-call does. Any other
// target gets 403, the same for an unknown code, another manager's client
// or a raw number: there is no path from a phone to an arbitrary number.
//
// The steps: authenticate → resolve the code → admit (limits, audit) →
// dial the client → answer the phone → talk.
func (cc *callControl) fromDeskPhone(req *sip.Request, tx sip.ServerTransaction) {
	if req.From() == nil || req.To() == nil || req.CallID() == nil {
		respond(tx, req, 400, "Bad Request", nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	creds, ok := cc.authenticateDeskPhone(ctx, req, tx)
	if !ok || !cc.admitSessionTimer(req, tx) {
		return
	}
	logger := cc.logger.With(zap.String("manager_id", creds.ManagerID), zap.String("direction", events.Outbound))
	if colleague, ok := cc.colleagueDialled(ctx, creds.ManagerID, req.Recipient.User); ok {
		// A colleague's username: a consultation call (consult.go).
		cc.consult(req, tx, creds, colleague, cc.logger.With(zap.String("manager_id", creds.ManagerID), zap.String("direction", directionInternal)))
		return
	}
	if cc.trunk == nil {
		// No --trunk: calls out are not configured on this node.
		logger.Warn("desk phone dialled, but no trunk is configured for calls out")
		respond(tx, req, 503, "Service Unavailable", nil)
		return
	}
	target, err := cc.resolveDialledCode(ctx, creds.ManagerID, req.Recipient.User)
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, ErrNotAssigned):
		// Log the fact, never the dialled string: it may be a number.
		logger.Warn("desk phone dialled a target it may not reach")
		respond(tx, req, 403, "Forbidden", nil)
		return
	case errors.Is(err, ErrOutsideHours):
		logger.Warn("desk phone dialled a client outside his segment's working hours")
		respond(tx, req, 403, "Outside Working Hours", nil)
		return
	case errors.Is(err, ErrNoPhone):
		logger.Warn("client has no usable number", zap.Error(err))
		respond(tx, req, 404, "Not Found", nil)
		return
	case err != nil:
		logger.Error("client lookup failed", zap.Error(err))
		respond(tx, req, 500, "Server Internal Error", nil)
		return
	}
	offer, crypto, ok := phoneOffer(req, tx)
	if !ok {
		return
	}
	if code, reason := cc.admitDialledCall(ctx, creds.ManagerID, target.id, "call.dial_code", logger); code != 0 {
		respond(tx, req, code, reason, nil)
		return
	}
	defer cc.limits.end(creds.ManagerID)
	respond(tx, req, 100, "Trying", nil)

	c := cc.newCall(newCallID(), events.Outbound, logger)
	defer c.release()
	c.setClient(target.id, target.code)
	c.setManager(creds.ManagerID)
	c.logger = logger.With(zap.String("call_id", c.id), zap.String("client_id", target.id))
	c.publish(events.Offered, nil)
	phone := cc.newUASLeg(c, media.SideB, req, tx)
	if err := c.allocatePorts(); err != nil {
		phone.reject(DispOverload)
		c.end(DispOverload, sideSystem)
		return
	}
	c.crypto[media.SideB] = crypto
	c.setRemote(media.SideB, offer, phone.dlg.dest)
	// The manager's phone and the client speak one codec: the first the
	// phone offered, plus telephone-event if it offered it.
	c.codecs = firstAudioAndEvents(offer.Codecs)

	// The manager hangs up while the client rings: sipgo answers his CANCEL;
	// we stop dialling.
	tx.OnCancel(func(*sip.Request) { c.hangup(sideManager) })
	if err := cc.dialogs.add(phone.dlg.callID, phone); err != nil {
		phone.reject(DispFailed)
		c.end(DispFailed, sideSystem)
		return
	}
	defer cc.dialogs.remove(phone.dlg.callID)

	c.setState(StateCallingClient)
	client, disp, side := cc.dialClient(c, target, c.codecs, phone.progress)
	if client == nil {
		phone.reject(disp)
		c.end(disp, side)
		return
	}
	if err := phone.accept(c.localSDP(media.SideB, c.codecs, media.SendRecv)); err != nil {
		client.hangup()
		c.end(DispFailed, sideSystem)
		return
	}
	cc.talk(c, phone, client)
}

// authenticateDeskPhone challenges the INVITE with 407 until it carries the
// manager's digest credentials; ok is false when it has been answered.
func (cc *callControl) authenticateDeskPhone(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) (SIPCredentials, bool) {
	srv := cc.srv
	user := req.From().Address.User
	creds, err := srv.auth.authenticateProxy(ctx, req, user)
	switch {
	case err == nil:
		return creds, true
	case errors.Is(err, errAuthFailed):
		srv.authFailed(req, user)
	case errors.Is(err, errInactiveUser):
		cc.logger.Info("call from a dismissed manager's phone refused", zap.String("manager_id", creds.ManagerID))
		srv.dismissedTry(ctx, req, creds.ManagerID)
	}
	if code, _ := sipStatus(err); code == sip.StatusUnauthorized {
		res := sip.NewResponseFromRequest(req, sip.StatusProxyAuthRequired, "Proxy Authentication Required", nil)
		for _, c := range srv.auth.challenge(errors.Is(err, errStaleNonce)) {
			res.AppendHeader(sip.NewHeader("Proxy-Authenticate", c))
		}
		_ = tx.Respond(res)
		return creds, false
	}
	srv.respondError(req, tx, err)
	return creds, false
}

// resolveDialledCode finds the client a dialled code names, if the manager
// may reach him; anything that is not a client code is storage.ErrNotFound.
func (cc *callControl) resolveDialledCode(ctx context.Context, managerID, code string) (clientTarget, error) {
	if !masking.ValidClientCode(code) {
		return clientTarget{}, storage.ErrNotFound
	}
	client, err := cc.cfg.Router.Store.ClientByCode(ctx, code)
	if err != nil {
		return clientTarget{}, err
	}
	return cc.reachClient(ctx, managerID, client)
}

// admitDialledCall applies the manager's limits and audits the call as
// action (call.dial_code from a desk phone, call.mobile_dial from his
// mobile); a non-zero code is the refusal to send (the limit is released
// by the caller when the call ends).
func (cc *callControl) admitDialledCall(ctx context.Context, managerID, clientID, action string, logger *zap.Logger) (int, string) {
	store := cc.cfg.Router.Store
	if err := cc.limits.begin(managerID, time.Now()); err != nil {
		_ = store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + managerID, Action: "call.limited",
			Object: "client:" + clientID, Reason: err.Error()})
		return 486, "Busy Here"
	}
	if err := store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + managerID, Action: action,
		Object: "client:" + clientID}); err != nil {
		cc.limits.end(managerID)
		logger.Error("audit failed; call refused", zap.Error(err))
		return 500, "Server Internal Error"
	}
	return 0, ""
}

// phoneOffer reads the SDP offer of a call from a manager's phone and the
// crypto our answer takes (SRTP if the phone offers it), or answers 488.
func phoneOffer(req *sip.Request, tx sip.ServerTransaction) (media.Offer, sideCrypto, bool) {
	offer, err := media.ParseOffer(req.Body())
	var crypto sideCrypto
	if err == nil {
		crypto, err = answerCrypto(offer)
	}
	if err != nil {
		respond(tx, req, 488, "Not Acceptable Here", nil)
		return media.Offer{}, sideCrypto{}, false
	}
	return offer, crypto, true
}
