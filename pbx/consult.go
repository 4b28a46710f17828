package pbx

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Consultation calls: a manager dials a colleague's SIP username from his
// phone (INVITE sip:<username>@<domain>, digest challenged like any desk
// call) to talk to him before handing a client over (attended transfer:
// his phone then sends REFER with Replaces naming this call). It is a call
// between two managers: no client, no call events, no CDR, no recording;
// each one is audited as call.consult.

// directionInternal is the Direction of a consultation call in its status.
const directionInternal = "internal"

// consultLeg is what a consultation call hands to an attended transfer:
// the colleague's answered leg with its port and the SDP session we keep
// with him.
type consultLeg struct {
	leg       *outLeg
	port      *media.Port
	sessionID uint64
	version   uint64
	crypto    sideCrypto
	codecs    []media.Codec
}

// handover asks a consultation call's owner for its colleague's leg; the
// reply is nil when the colleague's codec is not the client's (the relay
// does not transcode).
type handover struct {
	clientCodecs []media.Codec
	reply        chan *consultLeg
}

// consultation is what a call knows of itself when it is a consultation.
type consultation struct {
	caller    *uasLeg // the consulting manager's leg
	colleague string  // the colleague's manager id
	handovers chan handover
}

// colleagueDialled is the active colleague a desk phone dialled by his SIP
// username; a client code is never a username here.
func (cc *callControl) colleagueDialled(ctx context.Context, managerID, user string) (storage.Manager, bool) {
	if user == "" || masking.ValidClientCode(user) {
		return storage.Manager{}, false
	}
	m, err := cc.cfg.Router.Store.ManagerBySIPUsername(ctx, user)
	if err != nil || m.Status != storage.StatusActive || m.ID == managerID {
		return storage.Manager{}, false
	}
	return m, true
}

// consult runs a consultation call from a manager's desk phone to a
// colleague's phones, until one of them hangs up or an attended transfer
// takes the colleague's leg. It is the call's owner goroutine.
func (cc *callControl) consult(req *sip.Request, tx sip.ServerTransaction, creds SIPCredentials, colleague storage.Manager, logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	offer, crypto, ok := phoneOffer(req, tx)
	if !ok {
		return
	}
	caller, err := cc.cfg.Router.Store.Manager(ctx, creds.ManagerID)
	if err == nil {
		err = cc.cfg.Router.Store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + creds.ManagerID, Action: "call.consult",
			Object: "manager:" + colleague.ID})
	}
	if err != nil {
		logger.Error("consultation call not admitted", zap.Error(err))
		respond(tx, req, 500, "Server Internal Error", nil)
		return
	}
	respond(tx, req, 100, "Trying", nil)

	c := cc.newCall(newCallID(), directionInternal, logger)
	defer c.release()
	c.setManager(creds.ManagerID)
	c.logger = logger.With(zap.String("call_id", c.id), zap.String("colleague_id", colleague.ID))
	leg := cc.newUASLeg(c, media.SideA, req, tx)
	if err := c.allocatePorts(); err != nil {
		leg.reject(DispOverload)
		return
	}
	c.crypto[media.SideA] = crypto
	c.setRemote(media.SideA, offer, leg.dlg.dest)
	c.codecs = firstAudioAndEvents(offer.Codecs)
	tx.OnCancel(func(*sip.Request) { c.hangup(sideManager) })
	if err := cc.dialogs.add(leg.dlg.callID, leg); err != nil {
		leg.reject(DispFailed)
		return
	}
	defer cc.dialogs.remove(leg.dlg.callID)
	cons := &consultation{caller: leg, colleague: colleague.ID, handovers: make(chan handover)}
	c.setConsultation(cons)

	rang := false
	winner, answer, status := cc.ring(c.ctx, [][]string{{colleague.ID}}, outInvite{
		from:        sip.Uri{Scheme: "sip", User: caller.SIPUsername, Host: cc.domain},
		displayName: caller.Name,
		sdp:         c.localSDP(media.SideB, c.codecs, media.SendRecv),
		secureSDP:   c.secureOfferSDP(media.SideB, c.codecs),
	}, func() {
		if !rang {
			rang = true
			leg.progress(180, false)
		}
	}, nil, c.logger)
	if winner == nil {
		leg.reject(dispositionOf(status))
		return
	}
	err = c.acceptAnswer(media.SideB, answer, winner.secureOffer)
	if err == nil {
		c.setRemote(media.SideB, answer, winner.dlg.dest)
		err = c.bridge(media.PayloadTypeMap(c.codecs, answer.Codecs), media.PayloadTypeMap(answer.Codecs, c.codecs))
	}
	if err == nil {
		winner.moveTo(c, media.SideB)
		err = leg.accept(c.localSDP(media.SideA, c.codecs, media.SendRecv))
	}
	if err != nil {
		c.logger.Warn("consultation call not connected", zap.Error(err))
		winner.hangup()
		leg.reject(DispFailed)
		return
	}
	c.setState(StateConnected)
	for {
		select {
		case side := <-c.hangupCh:
			// The caller's leg is side A (its BYE says "client"), the
			// colleague's side B ("manager").
			switch side {
			case sideClient:
				winner.hangup()
			case sideManager:
				leg.hangup()
			default:
				winner.hangup()
				leg.hangup()
			}
			return
		case <-c.relayDone():
			winner.hangup()
			leg.hangup()
			return
		case h := <-cons.handovers:
			if !sameAudio(h.clientCodecs, answer.Codecs) {
				h.reply <- nil
				continue
			}
			c.detachRelay()
			h.reply <- &consultLeg{leg: winner, port: c.ports[media.SideB], sessionID: c.sessionID[media.SideB],
				version: c.version[media.SideB].Load(), crypto: c.crypto[media.SideB], codecs: answer.Codecs}
			c.ports[media.SideB] = nil
			leg.hangup() // the consulting manager's leg: the transfer is done
			return
		}
	}
}

// sameAudio reports whether two legs speak the same audio codec (the first
// audio codec of each).
func sameAudio(a, b []media.Codec) bool {
	first := func(cs []media.Codec) string {
		for _, c := range cs {
			if c.IsAudio() {
				return c.Name
			}
		}
		return ""
	}
	return first(a) != "" && first(a) == first(b)
}

func (c *call) setConsultation(cons *consultation) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.consult = cons
}

// replacedConsultation finds the consultation call that a Replaces value
// (RFC 3891: "call-id;to-tag=…;from-tag=…", as the phone sees its dialog)
// names, made by managerID; nil if none.
func (cc *callControl) replacedConsultation(replaces, managerID string) *call {
	callID, toTag, fromTag, ok := parseReplaces(replaces)
	if !ok {
		return nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, c := range cc.calls {
		c.statusMu.Lock()
		cons, manager, connected := c.consult, c.status.ManagerID, c.status.State == StateConnected
		c.statusMu.Unlock()
		// The phone dialled the consultation: our tag is its to-tag. Only a
		// connected one: its owner then takes handovers at once.
		if cons != nil && connected && manager == managerID && cons.caller.dlg.callID == callID &&
			cons.caller.dlg.localTag == toTag && cons.caller.dlg.remoteTag == fromTag {
			return c
		}
	}
	return nil
}

// parseReplaces reads a Replaces value as a Refer-To URI carries it
// (escaped): "call-id;to-tag=…;from-tag=…" (RFC 3891 6.1); ok is false
// unless all three are there.
func parseReplaces(escaped string) (callID, toTag, fromTag string, ok bool) {
	v, err := url.QueryUnescape(escaped)
	if err != nil {
		return "", "", "", false
	}
	parts := strings.Split(v, ";")
	callID = strings.TrimSpace(parts[0])
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "to-tag":
			toTag = strings.TrimSpace(val)
		case "from-tag":
			fromTag = strings.TrimSpace(val)
		}
	}
	return callID, toTag, fromTag, callID != "" && toTag != "" && fromTag != ""
}

// takeConsultLeg asks consultation call cons for its colleague's leg; nil
// if the call ended, or the colleague's codec is not the client's.
func takeConsultLeg(consult *call, clientCodecs []media.Codec) *consultLeg {
	consult.statusMu.Lock()
	cons := consult.consult
	consult.statusMu.Unlock()
	reply := make(chan *consultLeg, 1)
	select {
	case cons.handovers <- handover{clientCodecs: clientCodecs, reply: reply}:
	case <-consult.ctx.Done():
		return nil
	}
	return <-reply
}

// errNoConsultation: a REFER with Replaces names no consultation call of
// the transferring manager with that colleague.
var errNoConsultation = errors.New("pbx: Replaces names no consultation call")
