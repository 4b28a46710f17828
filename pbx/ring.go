package pbx

import (
	"context"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

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
				inv := in
				inv.target, inv.to = target, sip.Uri{Scheme: "sip", User: username, Host: cc.domain}
				inv.dest, inv.transport = r.Source, transportOf(r.Transport)
				inv = inv.forTransport(r.Transport)
				leg, err := cc.startOutLeg(ctx, managerID, inv, events)
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

func (cc *callControl) waitStep(ctx context.Context, legs []*outLeg, events chan legEvent, onRinging func()) (*outLeg, media.Offer, int) {
	timer := time.NewTimer(cc.cfg.RingTimeout)
	defer timer.Stop()
	pending := len(legs)
	busy := 0
	cancelAll := func(except *outLeg) {
		for _, l := range legs {
			if l != except {
				cc.wg.Go(l.cancel)
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
				cc.wg.Go(func() { drain(events, pending-1) })
				return ev.leg, ev.answer, 200
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
		case <-timer.C:
			cancelAll(nil)
			cc.wg.Go(func() { drain(events, pending) })
			return nil, media.Offer{}, 480
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
