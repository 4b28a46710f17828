package pbx

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Errors of Originate, each a reason nothing rang.
var (
	// ErrNotRegistered means the manager has no registered phone to ring.
	ErrNotRegistered = errors.New("pbx: the manager has no registered phone")
	// ErrOutboundBusy means the manager already has an outgoing call.
	ErrOutboundBusy = errors.New("pbx: the manager already has an outgoing call")
	// ErrRateLimited means the manager started too many calls this minute.
	ErrRateLimited = errors.New("pbx: too many calls started in the last minute")
	// ErrNoTrunk means no trunk is configured for calls out.
	ErrNoTrunk = errors.New("pbx: no trunk configured for calls out")
	// ErrShuttingDown means the node is shutting down and takes no call.
	ErrShuttingDown = errors.New("pbx: shutting down")
	// ErrNoMobile means a call via the mobile was asked of a manager who has
	// none, or of a node that can't ring one (no prompts).
	ErrNoMobile = errors.New("pbx: the manager has no mobile to ring")
)

// Originate asks the PBX to connect a manager with a client: the manager's
// phones ring first, then the client is called through the trunk. It names
// the client by id only: the PBX opens his number itself, at dial time.
type Originate struct {
	CallID    string // the call's id, chosen by the caller
	ManagerID string
	ClientID  string
	// Via is ViaMobile to ring the manager's corporate mobile (with the
	// press-1 whisper) instead of his phones; "" rings his phones.
	Via string
}

// Originate starts a click-to-call in the background. Errors mean nothing
// rang: no trunk, an unknown client (storage.ErrNotFound) or one the manager
// may not reach, a client without a number, no registered phone, or a limit.
func (s *Server) Originate(ctx context.Context, o Originate) error {
	cc := s.calls
	if cc == nil || cc.cfg.Trunk == "" {
		return ErrNoTrunk
	}
	client, err := cc.cfg.Router.Store.Client(ctx, o.ClientID)
	if err != nil {
		return err
	}
	target, err := cc.reachClient(ctx, o.ManagerID, client)
	if err != nil {
		return err
	}
	var mobile *storage.Mobile
	if o.Via == ViaMobile {
		m, err := cc.cfg.Router.Store.MobilePolicy(ctx, o.ManagerID)
		if err != nil {
			return err
		}
		if m.Phone.Ciphertext == nil || cc.cfg.Prompts == nil {
			return ErrNoMobile
		}
		mobile = &m
	} else {
		regs, err := cc.regs.Contacts(ctx, o.ManagerID)
		if err != nil {
			return err
		}
		if len(regs) == 0 {
			return ErrNotRegistered
		}
	}
	if err := cc.limits.begin(o.ManagerID, time.Now()); err != nil {
		return err
	}
	if !cc.begin() {
		cc.limits.end(o.ManagerID)
		return ErrShuttingDown
	}
	logger := cc.logger.With(zap.String("call_id", o.CallID), zap.String("direction", events.Outbound),
		zap.String("client_id", o.ClientID), zap.String("manager_id", o.ManagerID))
	c := cc.newCall(o.CallID, events.Outbound, logger)
	c.setClient(target.id, target.code)
	c.setManager(o.ManagerID)
	// Set before the call is handed on: the API shows the state at once.
	c.setState(StateCallingManager)
	go func() {
		defer cc.wg.Done()
		defer cc.limits.end(o.ManagerID)
		cc.clickToCall(c, target, mobile)
	}()
	return nil
}

// clickToCall rings the manager (his phones, or his mobile if set), then
// dials the client and bridges them. It is the call's owner goroutine.
func (cc *callControl) clickToCall(c *call, target clientTarget, mobile *storage.Mobile) {
	defer c.release()
	c.publish(events.Offered, nil)
	if err := c.allocatePorts(); err != nil {
		c.logger.Error("no RTP port for a click-to-call", zap.Error(err))
		c.end(DispFailed, sideSystem)
		return
	}

	manager, codecs, disp := cc.ringManager(c, target, mobile)
	if manager == nil {
		c.end(disp, sideManager)
		return
	}

	c.setState(StateCallingClient)
	client, disp, side := cc.dialClient(c, target, codecs, nil)
	if client == nil {
		if side != sideManager {
			// Let the manager hear that it failed instead of a sudden
			// click, unless he hangs up or the node shuts down meanwhile.
			pause := time.NewTimer(cmp.Or(cc.cfg.failurePause, defaultFailurePause))
			select {
			case <-pause.C:
			case <-c.ctx.Done():
			}
			pause.Stop()
			manager.hangup()
		}
		c.end(disp, side)
		return
	}
	cc.talk(c, manager, client)
}

// ringManager rings every registered phone of the click-to-call's manager
// with the client's name and code as the caller, or, with mobile, his
// mobile through the trunk with the press-1 whisper; it returns the leg
// that answered and the codecs it chose, or nil and the disposition.
func (cc *callControl) ringManager(c *call, target clientTarget, mobile *storage.Mobile) (*outLeg, []media.Codec, string) {
	ringCtx, stopRinging := context.WithCancel(context.Background())
	defer stopRinging()
	_, managerID := c.parties()
	var mr *mobileRing
	if mobile != nil {
		m := *mobile
		m.Policy = storage.MobileOnly
		if mr = cc.newMobileRing(c, map[string]storage.Mobile{managerID: m}, media.DefaultCodecs(), cc.cfg.CompanyNumber, target.code); mr == nil {
			return nil, nil, DispFailed
		}
	}
	rang := false
	winner, answer, status := cc.ring(ringCtx, [][]string{{managerID}}, outInvite{
		from:        sip.Uri{Scheme: "sip", User: target.code, Host: cc.domain},
		displayName: clientDisplayName(cc.callingWording(ringCtx, managerID), target.name, target.code),
		sdp:         c.localSDP(media.SideB, media.DefaultCodecs(), media.SendRecv),
		secureSDP:   c.secureOfferSDP(media.SideB, media.DefaultCodecs()),
	}, func() {
		if !rang {
			rang = true
			c.publish(events.Ringing, nil)
		}
	}, mr, c.logger)
	mr.release(winner)
	if winner != nil && winner.mobile {
		mr.take(winner)
	}
	if winner == nil {
		if status == 486 {
			return nil, nil, DispBusy
		}
		return nil, nil, DispNoAnswer
	}
	if err := c.acceptAnswer(media.SideB, answer, winner.secureOffer); err != nil {
		c.logger.Warn("the phone's SRTP answer is unusable", zap.Error(err))
		winner.hangup()
		return nil, nil, DispFailed
	}
	c.setRemote(media.SideB, answer, winner.dlg.dest)
	c.codecs = answer.Codecs
	winner.join(func(dir media.Direction) []byte { return c.localSDP(media.SideB, answer.Codecs, dir) },
		func() { c.hangup(sideManager) },
		func(o media.Offer) { c.setRemote(media.SideB, o, winner.dlg.dest) })
	return winner, answer.Codecs, ""
}

// callingWording is how a click-to-call's manager's phone words the
// client it is about to call: "Calling <name>" in his language (his own
// setting, else the company's).
func (cc *callControl) callingWording(ctx context.Context, managerID string) func(string) string {
	lang := cc.cfg.Language
	if ps, err := cc.cfg.Router.Store.Settings(ctx, managerID); err == nil && i18n.Supported(ps.Language) {
		lang = ps.Language
	}
	l := i18n.Get(lang)
	return func(client string) string { return l.T("phone.calling", "Client", client) }
}
