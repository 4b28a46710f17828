package pbx

import (
	"context"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// ring runs the ring plan: each step rings every registered contact of its
// managers in parallel for RingTimeout; the first to answer wins and the
// rest get CANCEL. A manager's mobile (mr, nil for none) rings through the
// trunk with his phones, after them or instead of them, by his policy, and
// wins only once it pressed 1 (mobile.go). It returns the winner and his
// SDP, or nil and the most telling failure status (486 if everyone was
// busy).
func (cc *callControl) ring(ctx context.Context, steps [][]string, in outInvite, onRinging func(), mr *mobileRing, logger *zap.Logger) (*outLeg, media.Offer, int) {
	status := 480
	for _, step := range steps {
		if ctx.Err() != nil {
			return nil, media.Offer{}, 487
		}
		events := make(chan legEvent, 64)
		var legs []*outLeg
		var delayed []delayedMobile
		for _, managerID := range step {
			mob, hasMobile := mr.mobile(managerID)
			phones := 0
			if !hasMobile || mob.Policy != storage.MobileOnly {
				phones = cc.ringPhones(ctx, managerID, in, events, &legs, logger)
			}
			switch {
			case !hasMobile:
			case mob.Policy == storage.MobileAfter && phones > 0:
				delayed = append(delayed, delayedMobile{managerID, time.Duration(mob.AfterS) * time.Second})
			default: // together, only, or after with no phone to wait for
				if leg := cc.startMobileLeg(ctx, mr, managerID, events); leg != nil {
					legs = append(legs, leg)
				}
			}
		}
		if len(legs) == 0 {
			continue
		}
		winner, answer, st := cc.waitStep(ctx, legs, events, onRinging, mr, delayed)
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

// ringPhones starts a leg to every registered contact of a manager and
// says how many it started.
func (cc *callControl) ringPhones(ctx context.Context, managerID string, in outInvite, events chan legEvent, legs *[]*outLeg, logger *zap.Logger) int {
	regs, err := cc.regs.Contacts(ctx, managerID)
	if err != nil {
		logger.Warn("registrations unavailable", zap.Error(err))
		return 0
	}
	n := 0
	for _, r := range regs {
		target, err := parseContactURI(r.Contact)
		if err != nil {
			continue
		}
		inv := in
		inv.target, inv.to = target, sip.Uri{Scheme: "sip", User: r.Username, Host: cc.domain}
		if viaNode, ok := cc.viaNode(inv, r); ok {
			inv = viaNode
		} else {
			inv.dest, inv.transport = r.Source, transportOf(r.Transport)
			inv = inv.forTransport(r.Transport)
		}
		leg, err := cc.startOutLeg(ctx, managerID, inv, events)
		if err != nil {
			logger.Warn("INVITE to a phone failed", zap.String("manager_id", managerID), zap.Error(err))
			continue
		}
		*legs = append(*legs, leg)
		n++
	}
	return n
}

// waitStep waits for the first phone to answer, or mobile to accept, among
// one step's legs, starting the delayed mobiles when they are due. When the
// step's time is up, legs still ringing are cancelled, but a mobile already
// hearing its whisper may still accept.
func (cc *callControl) waitStep(ctx context.Context, legs []*outLeg, events chan legEvent, onRinging func(), mr *mobileRing, delayed []delayedMobile) (*outLeg, media.Offer, int) {
	// stepCtx ends the whispers of mobiles that lost.
	stepCtx, stopStep := context.WithCancel(ctx)
	defer stopStep()
	timer := time.NewTimer(cc.cfg.RingTimeout)
	defer timer.Stop()
	timeUp := timer.C
	stepStart := time.Now()
	var due <-chan time.Time
	armDelayed := func() {
		due = nil
		if len(delayed) > 0 {
			next := delayed[0].after
			for _, d := range delayed[1:] {
				next = min(next, d.after)
			}
			due = time.After(max(time.Until(stepStart.Add(next)), 0))
		}
	}
	armDelayed()
	pending := len(legs)
	busy := 0
	over := false // the step's time is up: nothing ringing may win now
	whispering := map[*outLeg]bool{}
	cancelAll := func(except *outLeg) {
		stopStep()
		for _, l := range legs {
			if l != except {
				cc.wg.Go(l.cancel)
			}
		}
	}
	won := func(ev legEvent) (*outLeg, media.Offer, int) {
		cancelAll(ev.leg)
		// Late answers from the others are hung up by cancel().
		cc.wg.Go(func() { drain(events, pending-1) })
		return ev.leg, ev.answer, 200
	}
	// startDue starts the delayed mobiles due by now (all of them: every
	// phone already failed).
	startDue := func(all bool) {
		elapsed := time.Since(stepStart)
		rest := delayed[:0]
		for _, d := range delayed {
			if !all && d.after > elapsed {
				rest = append(rest, d)
			} else if leg := cc.startMobileLeg(ctx, mr, d.managerID, events); leg != nil {
				legs = append(legs, leg)
				pending++
			}
		}
		delayed = rest
		armDelayed()
	}
	for {
		if pending == 0 {
			if over || len(delayed) == 0 {
				break
			}
			startDue(true)
			continue
		}
		select {
		case ev := <-events:
			switch {
			case ev.whispered:
				delete(whispering, ev.leg)
				mr.c.setMobileOutcome(ev.outcome)
				if ev.status == 200 {
					return won(ev)
				}
				pending--
			case ev.status < 200:
				onRinging()
			case ev.status == 200 && over:
				ev.leg.hangup()
				pending--
			case ev.status == 200 && ev.leg.mobile:
				// Answered: the whisper decides (its event is the leg's last).
				whispering[ev.leg] = true
				cc.startWhisper(stepCtx, mr, ev, events)
			case ev.status == 200:
				return won(ev)
			case refusesSRTP(ev):
				// A phone on TLS that can't do SRTP: ring it again with
				// plain RTP. One leg ended, one began: pending stays.
				l, err := cc.startOutLeg(ctx, ev.leg.managerID, *ev.leg.plain, events)
				if err != nil {
					pending--
					continue
				}
				legs = append(legs, l)
			default:
				pending--
				if ev.status == 486 || ev.status == 600 {
					busy++
				}
			}
		case <-due:
			startDue(false)
		case <-timeUp:
			if len(whispering) == 0 {
				cancelAll(nil)
				cc.wg.Go(func() { drain(events, pending) })
				return nil, media.Offer{}, 480
			}
			over, timeUp, due, delayed = true, nil, nil, nil
			for _, l := range legs {
				if !whispering[l] {
					cc.wg.Go(l.cancel)
				}
			}
		case <-ctx.Done():
			cancelAll(nil)
			cc.wg.Go(func() { drain(events, pending) })
			return nil, media.Offer{}, 487
		}
	}
	if busy == len(legs) {
		return nil, media.Offer{}, 486
	}
	return nil, media.Offer{}, 480
}

// drain consumes the reports of n legs we no longer wait for until each
// has sent its final one (watch always does, at the latest cancelGiveUp
// after our CANCEL), so no watcher blocks on a full channel; a late 200
// among them is hung up.
func drain(events <-chan legEvent, n int) {
	for n > 0 {
		ev := <-events
		if ev.status >= 200 {
			n--
			if ev.status == 200 {
				ev.leg.hangup()
				if ev.whispered {
					_ = ev.port.Close() // a mobile that accepted too late
				}
			}
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
