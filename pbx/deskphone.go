package pbx

import (
	"context"
	"errors"
	"fmt"
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
func (cc *callControl) fromDeskPhone(req *sip.Request, tx sip.ServerTransaction) {
	srv := cc.srv
	if req.From() == nil || req.To() == nil || req.CallID() == nil {
		respond(tx, req, 400, "Bad Request", nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	user := req.From().Address.User
	creds, err := srv.auth.authenticateProxy(ctx, req, user)
	switch {
	case errors.Is(err, errAuthFailed):
		srv.authFailed(req, user)
	case errors.Is(err, errInactiveUser):
		cc.logger.Info("call from a dismissed manager's phone refused", zap.String("manager_id", creds.ManagerID))
	}
	if err != nil {
		if code, _ := sipStatus(err); code == sip.StatusUnauthorized {
			res := sip.NewResponseFromRequest(req, sip.StatusProxyAuthRequired, "Proxy Authentication Required", nil)
			for _, c := range srv.auth.challenge(errors.Is(err, errStaleNonce)) {
				res.AppendHeader(sip.NewHeader("Proxy-Authenticate", c))
			}
			_ = tx.Respond(res)
			return
		}
		srv.respondError(req, tx, err)
		return
	}
	logger := cc.logger.With(zap.String("manager_id", creds.ManagerID), zap.String("direction", events.Outbound))

	store := cc.cfg.Router.Store
	code := req.Recipient.User
	var client storage.Client
	if masking.ValidClientCode(code) {
		client, err = store.ClientByCode(ctx, code)
	} else {
		err = storage.ErrNotFound
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		logger.Error("client lookup failed", zap.Error(err))
		respond(tx, req, 500, "Server Internal Error", nil)
		return
	}
	if err != nil || !(masking.Assignment{Primary: client.ManagerID, Partners: client.PartnerIDs}).MayReach(creds.ManagerID) {
		// Log the fact, never the dialled string: it may be a number.
		logger.Warn("desk phone dialled a target it may not reach")
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	offer, err := media.ParseOffer(req.Body())
	if err != nil {
		respond(tx, req, 488, "Not Acceptable Here", nil)
		return
	}
	number, err := cc.clientNumber(ctx, client.ID)
	if err != nil {
		logger.Warn("client has no usable number", zap.String("client_id", client.ID), zap.Error(err))
		respond(tx, req, 404, "Not Found", nil)
		return
	}
	if err := cc.limits.begin(creds.ManagerID, time.Now()); err != nil {
		_ = store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + creds.ManagerID, Action: "call.limited",
			Object: "client:" + client.ID, Reason: err.Error()})
		respond(tx, req, 486, "Busy Here", nil)
		return
	}
	defer cc.limits.end(creds.ManagerID)
	if err := store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + creds.ManagerID, Action: "call.dial_code",
		Object: "client:" + client.ID}); err != nil {
		logger.Error("audit failed; call refused", zap.Error(err))
		respond(tx, req, 500, "Server Internal Error", nil)
		return
	}
	respond(tx, req, 100, "Trying", nil)

	c := cc.newCall(newCallID(), events.Outbound, logger)
	defer c.release()
	c.clientID, c.clientCode, c.managerID = client.ID, client.Code, creds.ManagerID
	c.logger = logger.With(zap.String("call_id", c.id), zap.String("client_id", client.ID))
	end := func(disp, side string) {
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = disp, side })
	}
	c.publish(events.Offered, nil)
	for _, side := range []media.Side{media.SideA, media.SideB} {
		p, err := cc.cfg.Ports.Allocate()
		if err != nil {
			respond(tx, req, 503, "Service Unavailable", nil)
			end(DispFailed, "system")
			return
		}
		c.ports[side] = p
	}
	c.ports[media.SideB].SetRemote(offer.Remote)
	// The manager's phone and the client speak one codec: the first the
	// phone offered, plus telephone-event if it offered it.
	codecs := firstAudioAndEvents(offer.Codecs)
	c.codecs = codecs

	phone := cc.newUASLeg(c, media.SideB, req, tx)
	answerPhone := phone.respond
	// The manager hangs up while the client rings: sipgo answers his CANCEL;
	// we stop dialling.
	tx.OnCancel(func(*sip.Request) { c.hangup("manager") })
	if err := cc.dialogs.add(phone.dlg.callID, phone); err != nil {
		respond(tx, req, 500, "Server Internal Error", nil)
		end(DispFailed, "system")
		return
	}
	defer cc.dialogs.remove(phone.dlg.callID)

	c.setState(StateCallingClient)
	earlySent := false
	clientLeg, disp, side := cc.dialClient(c, number, codecs, func(status int, early bool) {
		switch {
		case early && !earlySent:
			earlySent = true
			_ = answerPhone(183, "Session Progress", c.localSDP(media.SideB, codecs, media.SendRecv), contentTypeSDP())
		case !earlySent:
			_ = answerPhone(180, "Ringing", nil)
		}
	})
	if clientLeg == nil {
		code, reason := 480, "Temporarily Unavailable"
		switch disp {
		case DispBusy:
			code, reason = 486, "Busy Here"
		case DispRejected:
			code, reason = 603, "Decline"
		case DispFailed:
			code, reason = 503, "Service Unavailable"
		}
		if disp != DispCancelled {
			_ = answerPhone(code, reason, nil)
		}
		end(disp, side)
		return
	}
	if err := answerPhone(200, "OK", c.localSDP(media.SideB, codecs, media.SendRecv), contentTypeSDP(),
		sip.NewHeader("Allow", dialogAllow)); err != nil {
		clientLeg.hangup()
		end(DispFailed, "system")
		return
	}
	go retransmitUntilAck(tx, phone.final, phone.acked, c, media.SideB)
	cc.talk(c, uasSide{leg: phone}, clientSide{leg: clientLeg}, end)
}

// clientNumber opens the first of a client's numbers that the keyring can.
func (cc *callControl) clientNumber(ctx context.Context, clientID string) (string, error) {
	r := cc.cfg.Router
	phones, err := r.Store.PhonesForCall(ctx, clientID)
	if err != nil {
		return "", err
	}
	for _, p := range phones {
		if n, err := r.Keys.Open(p.Ciphertext, p.EncKeyID); err == nil {
			return n, nil
		}
	}
	return "", fmt.Errorf("pbx: client has no phone number")
}

// firstAudioAndEvents keeps the first audio codec and telephone-event.
func firstAudioAndEvents(offered []media.Codec) []media.Codec {
	var out []media.Codec
	audio := false
	for _, c := range offered {
		if c.IsAudio() {
			if audio {
				continue
			}
			audio = true
		}
		out = append(out, c)
	}
	return out
}
