package pbx

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// A manager calls a client from his corporate mobile: he calls the company
// number, the PBX knows his mobile by its blind index (a dismissed
// manager's mobile is a stranger: it routes like any caller), answers,
// asks for the client code and hash, checks the assignment exactly as desk
// dialling does, and dials the client through the trunk with the company
// number as caller ID. Three wrong codes end the call; every attempt is
// audited as call.mobile_dial.

// mobileCodeTries is how many codes a caller may try before goodbye.
const mobileCodeTries = 3

// mobileCodeWait is how long one code may take to type, hash included.
const mobileCodeWait = 20 * time.Second

// maxCodeDigits bounds what is read before the hash: a client code is at
// most 12 digits.
const maxCodeDigits = 16

// mobileCaller finds the active manager whose corporate mobile is calling
// (caller: the E.164 the trunk gave); ok is false for anyone else, and on a
// node that can't answer mobiles (no prompts or no trunk). A dismissed
// manager's mobile is refused and audited here, then routed as any
// stranger calling the company: it reaches none of his former clients.
func (cc *callControl) mobileCaller(ctx context.Context, caller string) (storage.Manager, bool) {
	if caller == "" || cc.cfg.Prompts == nil || cc.trunk == nil || cc.cfg.Router.Cache.DatabaseDown() {
		return storage.Manager{}, false // while Postgres is down, calls in route from the cache
	}
	keys := cc.cfg.Router.Keys
	store := cc.cfg.Router.Store
	m, err := store.ManagerByMobile(ctx, keys.IndexKeyID(), keys.BlindIndex(caller))
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return storage.Manager{}, false
	case err != nil:
		cc.logger.Error("mobile lookup failed; the caller is routed as a client", zap.Error(err))
		return storage.Manager{}, false
	case m.Status != storage.StatusActive:
		cc.logger.Warn("call from a dismissed manager's mobile: routed as a stranger", zap.String("manager_id", m.ID))
		if err := store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + m.ID, Action: "call.mobile_dial",
			Object: "manager:" + m.ID, Reason: "refused: dismissed manager's mobile"}); err != nil {
			cc.logger.Error("audit failed", zap.Error(err))
		}
		return storage.Manager{}, false
	}
	return m, true
}

// fromMobile runs the call of a manager's mobile to the company number: it
// is the call's owner goroutine. called is the number he called: an alias
// of one of his pairs connects straight to its client (alias.go).
func (cc *callControl) fromMobile(req *sip.Request, tx sip.ServerTransaction, offer media.Offer, manager storage.Manager, setup *setupSlot, called string) {
	logger := cc.logger.With(zap.String("manager_id", manager.ID), zap.String("direction", events.Outbound), zap.String("via", ViaMobile))
	c := cc.newCall(newCallID(), events.Outbound, logger)
	defer c.release()
	c.logger = logger.With(zap.String("call_id", c.id))
	c.setManager(manager.ID)
	c.setVia(ViaMobile)
	c.publish(events.Offered, nil)
	mobile := cc.newUASLeg(c, media.SideB, req, tx)
	codec, dtmfPT, ok := whisperCodec(offer.Codecs)
	if !ok {
		respond(tx, req, 488, "Not Acceptable Here", nil)
		c.end(DispFailed, sideSystem)
		return
	}
	if err := c.allocatePorts(); err != nil {
		mobile.reject(DispOverload)
		c.end(DispOverload, sideSystem)
		return
	}
	c.setRemote(media.SideB, offer, mobile.dlg.dest)
	c.codecs = firstAudioAndEvents(g711AndEvents(offer.Codecs))
	tx.OnCancel(func(*sip.Request) { c.hangup(sideManager) })
	if err := cc.dialogs.add(mobile.dlg.callID, mobile); err != nil {
		mobile.reject(DispFailed)
		c.end(DispFailed, sideSystem)
		return
	}
	defer cc.dialogs.remove(mobile.dlg.callID)
	if err := mobile.accept(c.localSDP(media.SideB, c.codecs, media.SendRecv)); err != nil {
		c.end(DispFailed, sideSystem)
		return
	}
	setup.leave()
	sess, err := ivr.Start(c.ports[media.SideB], codec, dtmfPT, c.logger)
	if err != nil {
		c.logger.Error("no prompts on the mobile's leg", zap.Error(err))
		mobile.hangup()
		c.end(DispFailed, sideSystem)
		return
	}
	target, ok, byAlias := cc.aliasTarget(c, sess, manager.ID, called)
	if !byAlias {
		target, ok = cc.askClientCode(c, sess, manager.ID)
	}
	if ok {
		if code, _ := cc.admitDialledCall(c.ctx, manager.ID, target.id, "call.mobile_dial", c.logger); code != 0 {
			ok = false
		} else {
			defer cc.limits.end(manager.ID)
		}
	}
	if !ok {
		if c.ctx.Err() != nil { // he hung up
			sess.Stop()
			c.end(DispCancelled, sideManager)
			return
		}
		_ = sess.Play(c.ctx, cc.cfg.Prompts.Clip(cc.promptLanguage(), ivr.PromptGoodbye))
		sess.Stop()
		mobile.hangup()
		c.end(DispRejected, sideSystem)
		return
	}
	sess.Stop()
	c.setClient(target.id, target.code)
	c.logger = c.logger.With(zap.String("client_id", target.id))
	c.setState(StateCallingClient)
	client, disp, side := cc.dialClient(c, target, c.codecs, nil)
	if client == nil {
		mobile.hangup()
		c.end(disp, side)
		return
	}
	cc.talk(c, mobile, client)
}

// askClientCode prompts for a client code until one names a client the
// manager may reach, at most mobileCodeTries times; every attempt is
// audited. ok is false after the last wrong code, or when the caller hung
// up.
func (cc *callControl) askClientCode(c *call, sess *ivr.Session, managerID string) (clientTarget, bool) {
	lang := cc.promptLanguage()
	store := cc.cfg.Router.Store
	for try := 0; try < mobileCodeTries; try++ {
		if try > 0 {
			_ = sess.Play(c.ctx, cc.cfg.Prompts.Clip(lang, ivr.PromptWrongCode))
		}
		if err := sess.Play(c.ctx, cc.cfg.Prompts.Clip(lang, ivr.PromptEnterCode)); err != nil {
			return clientTarget{}, false
		}
		code, err := readCode(c.ctx, sess)
		if err != nil && c.ctx.Err() != nil {
			return clientTarget{}, false
		}
		target, err := cc.resolveDialledCode(c.ctx, managerID, code)
		if err == nil {
			return target, true
		}
		// The typed code is never logged nor audited: it may be a number.
		object, reason := "manager:"+managerID, "unknown code"
		switch {
		case errors.Is(err, ErrNotAssigned):
			reason = "client not assigned to the manager"
		case errors.Is(err, ErrNoPhone):
			reason = "client has no phone"
		case errors.Is(err, ErrOutsideHours):
			reason = "outside the working hours of the client's segment"
		case !errors.Is(err, storage.ErrNotFound):
			c.logger.Error("client lookup failed", zap.Error(err))
			reason = "lookup failed"
		}
		if aerr := store.Audit(c.ctx, storage.AuditEntry{Actor: "manager:" + managerID, Action: "call.mobile_dial",
			Object: object, Reason: "refused: " + reason}); aerr != nil {
			c.logger.Error("audit failed; call refused", zap.Error(aerr))
			return clientTarget{}, false
		}
		c.logger.Warn("mobile dialled a code it may not reach", zap.String("reason", reason))
	}
	return clientTarget{}, false
}

// readCode reads digits up to the hash (or the most a code may have); the
// time to type it is bounded.
func readCode(ctx context.Context, sess *ivr.Session) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, mobileCodeWait)
	defer cancel()
	var code []rune
	for len(code) < maxCodeDigits {
		d, err := sess.Digit(ctx)
		if err != nil {
			return string(code), err
		}
		if d == '#' {
			break
		}
		code = append(code, d)
	}
	return string(code), nil
}
