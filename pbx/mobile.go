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
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Ringing a manager's corporate mobile through the trunk. The INVITE goes
// out with the company number as the caller and nothing of the client in
// any header; the SDP is ours, on a port of the mobile leg's own. When the
// mobile answers, the PBX whispers to it alone ("client code 1 2 3 4 5 6 7
// 8, press 1 to accept") and only a 1 (RFC 4733 event or in-band tone)
// makes it the call's manager leg; nothing within the accept timeout, or a
// hang-up, drops the leg and the ring plan goes on. The client's side hears
// ringback meanwhile: his leg is not bridged (and not recorded) yet.

// Mobile outcomes, for the CDR.
const (
	MobileAccepted = events.MobileAccepted // pressed 1 and was bridged
	MobileDeclined = events.MobileDeclined // answered, then hung up or failed
	MobileTimedOut = events.MobileTimedOut // answered and pressed no 1 in time
)

// defaultMobileAccept is how long an answered mobile has, after the
// whisper, to press 1.
const defaultMobileAccept = 10 * time.Second

// mobileRing is what a ring plan needs to ring managers' mobiles: whose
// mobile rings how, what the whisper says, and the mobile legs it started.
// Only the call's owner goroutine touches it.
type mobileRing struct {
	c       *call
	mobiles map[string]storage.Mobile
	codecs  []media.Codec   // offered to the mobile: what the other side offered
	company string          // the From user, unless the pair has an alias
	client  *storage.Client // the caller, if he is a client (for aliases)
	whisper [][]int16
	legs    map[*outLeg]*mobileLeg
}

// mobileLeg is the media side of one INVITE to a mobile.
type mobileLeg struct {
	port      *media.Port
	sessionID uint64
	// whispered: the whisper took the leg over; it closes the port unless
	// the leg is accepted.
	whispered bool
}

// delayedMobile is a mobile with policy "after", due that long into its step.
type delayedMobile struct {
	managerID string
	after     time.Duration
}

// newMobileRing prepares ringing the mobiles of route for call c, whose
// other side offered codecs; nil if mobiles can't ring on this node (no
// trunk, no prompts) or none would.
func (cc *callControl) newMobileRing(c *call, mobiles map[string]storage.Mobile, codecs []media.Codec, company, clientCode string) *mobileRing {
	if len(mobiles) == 0 {
		return nil
	}
	if cc.trunk == nil || cc.cfg.Prompts == nil {
		c.logger.Warn("a manager's mobile is to ring, but this node has no trunk or no prompts")
		return nil
	}
	lang := cc.promptLanguage()
	var whisper [][]int16
	if clientCode != "" {
		whisper = append(whisper, cc.cfg.Prompts.Clip(lang, ivr.PromptClientCode))
		whisper = append(whisper, cc.cfg.Prompts.Digits(lang, clientCode)...)
	}
	whisper = append(whisper, cc.cfg.Prompts.Clip(lang, ivr.PromptPress1))
	mr := &mobileRing{c: c, mobiles: mobiles, codecs: g711AndEvents(codecs), company: company, whisper: whisper,
		legs: map[*outLeg]*mobileLeg{}}
	if clientID, _ := c.parties(); clientID != "" && len(cc.aliases) > 0 {
		client, err := cc.cfg.Router.Store.Client(c.ctx, clientID)
		if err != nil {
			c.logger.Warn("client unavailable; mobiles ring from the company number", zap.Error(err))
		} else {
			mr.client = &client
		}
	}
	return mr
}

// promptLanguage is the language of the prompts the PBX plays.
func (cc *callControl) promptLanguage() string {
	return cmp.Or(cc.cfg.PromptLanguage, ivr.DefaultLanguage)
}

// mobile is the manager's mobile if it rings in this plan.
func (mr *mobileRing) mobile(managerID string) (storage.Mobile, bool) {
	if mr == nil {
		return storage.Mobile{}, false
	}
	m, ok := mr.mobiles[managerID]
	return m, ok && m.Policy != storage.MobileOff
}

// g711AndEvents keeps what a whisper can be played in and a 1 pressed with:
// PCMU, PCMA and telephone-event.
func g711AndEvents(codecs []media.Codec) []media.Codec {
	var out []media.Codec
	for _, c := range codecs {
		if c.Name == media.PCMU.Name || c.Name == media.PCMA.Name || c.Name == media.TelephoneEvent.Name {
			out = append(out, c)
		}
	}
	return out
}

// startMobileLeg sends the INVITE to a manager's mobile through the trunk;
// nil if it could not be sent (logged).
func (cc *callControl) startMobileLeg(ctx context.Context, mr *mobileRing, managerID string, events chan legEvent) *outLeg {
	mob := mr.mobiles[managerID]
	logger := mr.c.logger.With(zap.String("manager_id", managerID))
	if len(mr.codecs) == 0 {
		logger.Warn("the caller's codecs can't be whispered in; the mobile is not rung")
		return nil
	}
	number, err := cc.cfg.Router.Keys.OpenPhone(mob.Phone)
	if err != nil {
		logger.Error("the manager's mobile can't be opened", zap.Error(err))
		return nil
	}
	port, err := cc.cfg.Ports.Allocate()
	if err != nil {
		logger.Error("no RTP port for a mobile leg", zap.Error(err))
		return nil
	}
	ml := &mobileLeg{port: port, sessionID: newSessionID()}
	caller := cc.mobileCallerID(ctx, managerID, mr.client, mr.company, logger)
	target, to := cc.trunk.requestURI(number), cc.trunk.choose()
	leg, err := cc.startOutLeg(ctx, managerID, outInvite{
		target:    target,
		to:        target,
		from:      sip.Uri{Scheme: "sip", User: caller, Host: cc.publicIP.String()},
		dest:      to.addr,
		transport: to.transport,
		sdp:       media.BuildSDP(mr.c.localAddrOf(port), ml.sessionID, 1, mr.codecs, media.SendRecv),
		auth:      cc.trunkAuth(),
	}, events)
	if err != nil {
		_ = port.Close()
		logger.Error("INVITE to the manager's mobile failed", zap.Error(err))
		return nil
	}
	leg.mobile = true
	mr.legs[leg] = ml
	return leg
}

// startWhisper hands an answered mobile leg to its whisper.
func (cc *callControl) startWhisper(ctx context.Context, mr *mobileRing, ev legEvent, events chan<- legEvent) {
	ml := mr.legs[ev.leg]
	ml.whispered = true
	accept := cmp.Or(cc.cfg.mobileAccept, defaultMobileAccept)
	cc.wg.Go(func() { cc.whisper(ctx, mr.whisper, accept, ml.port, ev, events, mr.c.logger) })
}

// whisper plays the whisper to an answered mobile and waits for its 1. It
// sends exactly one event for the leg (whispered): 200 accepted, the port
// free for the bridge; anything else declined or timed out, the leg hung up
// and its port closed.
func (cc *callControl) whisper(ctx context.Context, clips [][]int16, accept time.Duration, port *media.Port, ev legEvent, events chan<- legEvent, logger *zap.Logger) {
	leg := ev.leg
	result := legEvent{leg: leg, status: 603, answer: ev.answer, whispered: true, outcome: MobileDeclined, port: port}
	defer func() { events <- result }()
	defer func() {
		if result.status != 200 {
			leg.hangup()
			_ = port.Close()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The mobile hangs up during the whisper: stop it.
	leg.join(nil, cancel, nil)
	codec, dtmfPT, ok := whisperCodec(ev.answer.Codecs)
	if !ok {
		logger.Warn("the mobile answered with no codec to whisper in")
		return
	}
	setPortRemote(port, ev.answer, leg.dlg.dest)
	sess, err := ivr.Start(port, codec, dtmfPT, logger)
	if err != nil {
		logger.Warn("no whisper on the mobile's leg", zap.Error(err))
		return
	}
	defer sess.Stop()
	wait, stopWait := context.WithTimeout(ctx, clipsDuration(clips)+accept)
	defer stopWait()
	cc.wg.Go(func() { _ = sess.Play(wait, clips...) })
	for {
		d, err := sess.Digit(wait)
		switch {
		case err == nil && d == '1':
			result.status, result.outcome = 200, MobileAccepted
			return
		case err == nil:
			continue // another key: only 1 accepts
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			result.outcome = MobileTimedOut
			return
		default:
			return
		}
	}
}

// whisperCodec is the first G.711 codec of a mobile's answer and its
// telephone-event payload type (0 without one).
func whisperCodec(codecs []media.Codec) (media.Codec, uint8, bool) {
	var audio media.Codec
	found := false
	var dtmf uint8
	for _, c := range codecs {
		switch {
		case c.Name == media.TelephoneEvent.Name:
			dtmf = c.PayloadType
		case !found && (c.Name == media.PCMU.Name || c.Name == media.PCMA.Name):
			audio, found = c, true
		}
	}
	return audio, dtmf, found
}

// clipsDuration is how long clips take to play.
func clipsDuration(clips [][]int16) time.Duration {
	n := 0
	for _, c := range clips {
		n += len(c)
	}
	return time.Duration(n) * time.Second / 8000
}

// take makes the accepted mobile leg the call's manager side: its port and
// SDP session replace the ones the phones were offered.
func (mr *mobileRing) take(winner *outLeg) {
	ml := mr.legs[winner]
	c := mr.c
	if old := c.ports[media.SideB]; old != nil {
		_ = old.Close()
	}
	c.ports[media.SideB] = ml.port
	c.sessionID[media.SideB] = ml.sessionID
	c.version[media.SideB].Store(1)
	c.setVia(ViaMobile)
}

// release closes the ports of the mobile legs that did not win and that no
// whisper holds (a whisper closes its own).
func (mr *mobileRing) release(winner *outLeg) {
	if mr == nil {
		return
	}
	for leg, ml := range mr.legs {
		if leg != winner && !ml.whispered {
			_ = ml.port.Close()
		}
	}
}

// localAddrOf is our address on a port, as written into SDP.
func (c *call) localAddrOf(p *media.Port) netip.AddrPort {
	return netip.AddrPortFrom(c.cc.publicIP, p.LocalAddr().Port())
}
