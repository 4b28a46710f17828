package pbx

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Steps shared by every call out to a client (click-to-call, a dialled
// client code, and later a manager's mobile): may this manager reach this
// client, and dialling the client's numbers through the trunk. The client's
// number is opened here, in openClientNumber, at dial time, and nowhere else.

// Errors of reaching a client, each a reason nothing was dialled.
var (
	// ErrNotAssigned means the client is neither the manager's own nor one he
	// is a partner for.
	ErrNotAssigned = errors.New("pbx: the client is not assigned to the manager")
	// ErrNoPhone means the client has no number to call.
	ErrNoPhone = errors.New("pbx: the client has no phone number")
	// ErrOutsideHours means the client's segment has working hours and
	// now is outside them: managers may not start calls to him.
	ErrOutsideHours = errors.New("pbx: outside the working hours of the client's segment")
)

// clientTarget is a client a manager is about to call: how the manager's
// phone shows him, and his numbers, still sealed, in the order to try them.
type clientTarget struct {
	id, code, name string
	phones         []masking.SealedPhone
}

// reachClient checks that the manager may reach the client (invariant 2:
// primary or partner, nobody else) and loads the client's sealed numbers.
func (cc *callControl) reachClient(ctx context.Context, managerID string, client storage.Client) (clientTarget, error) {
	if !(masking.Assignment{Primary: client.ManagerID, Partners: client.PartnerIDs}).MayReach(managerID) {
		return clientTarget{}, ErrNotAssigned
	}
	if err := cc.withinHours(ctx, managerID, client); err != nil {
		return clientTarget{}, err
	}
	phones, err := cc.cfg.Router.Store.PhonesForCall(ctx, client.ID)
	if err != nil {
		return clientTarget{}, err
	}
	if len(phones) == 0 {
		return clientTarget{}, ErrNoPhone
	}
	return clientTarget{id: client.ID, code: client.Code, name: client.Name, phones: phones}, nil
}

// withinHours refuses a call a manager starts to a client of a segment
// outside its working hours (in the company's time zone), and audits the
// refusal (call.outside_hours). Calls in are never limited by hours.
func (cc *callControl) withinHours(ctx context.Context, managerID string, client storage.Client) error {
	if client.Segment == "" {
		return nil
	}
	sg, err := cc.cfg.Router.Store.SegmentByName(ctx, client.Segment)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	loc := cc.cfg.Location
	if loc == nil {
		loc = time.UTC
	}
	if sg.Hours.Open(time.Now(), loc) {
		return nil
	}
	if err := cc.cfg.Router.Store.Audit(ctx, storage.AuditEntry{Actor: "manager:" + managerID, Action: "call.outside_hours",
		Object: "client:" + client.ID, Reason: "refused: outside the working hours of segment:" + sg.ID}); err != nil {
		return err
	}
	return ErrOutsideHours
}

// openClientNumber is the one place the PBX decrypts a client's number: to
// write it into the Request-URI of the INVITE to the trunk.
func (cc *callControl) openClientNumber(p masking.SealedPhone) (string, error) {
	return cc.cfg.Router.Keys.OpenPhone(p)
}

// trunkAuth is the credentials for the trunk's challenges, nil if none.
func (cc *callControl) trunkAuth() *TrunkAuth {
	if !cc.cfg.TrunkAuth.Enabled() {
		return nil
	}
	return &cc.cfg.TrunkAuth
}

// clientRingFactor is how much longer a client's phone may ring than one
// step of the inbound ring plan: he is not at his desk waiting for it.
const clientRingFactor = 3

// dialClient calls the client through the trunk, trying his numbers in
// order while a number itself fails (unknown, gone, unreachable), offering
// the codecs the manager's leg agreed on (the relay does not transcode). The
// relay starts at once so the trunk's early media (ringback) reaches the
// manager. It returns the answered leg, or nil with the disposition and who
// ended the attempt. onProgress, if set, hears of 18x (early: SDP came).
func (cc *callControl) dialClient(c *call, target clientTarget, codecs []media.Codec, onProgress func(status int, early bool)) (*outLeg, string, string) {
	if err := c.bridge(nil, nil); err != nil {
		c.logger.Error("relay failed", zap.Error(err))
		return nil, DispFailed, sideSystem
	}
	for i, p := range target.phones {
		leg, status, side := cc.dialNumber(c, p, codecs, onProgress)
		switch {
		case leg != nil:
			return leg, "", ""
		case side == sideClient && numberUnusable(status) && i+1 < len(target.phones):
			c.logger.Info("the client's number failed; trying his next", zap.Int("number", i+1), zap.Int("status", status))
		case side == sideClient:
			return nil, dispositionOf(status), side
		case status == 487:
			return nil, DispCancelled, side
		case status == 408:
			return nil, DispNoAnswer, side
		default:
			return nil, DispFailed, side
		}
	}
	return nil, DispFailed, sideSystem
}

// dialNumber makes one INVITE to the trunk for one of the client's numbers
// and waits for its outcome: the answered leg, or the final status and who
// ended the attempt (the client's side for a trunk failure, the manager's
// or the system's when we gave up: status 487 cancelled, 408 no answer, 0
// nothing sent).
func (cc *callControl) dialNumber(c *call, phone masking.SealedPhone, codecs []media.Codec, onProgress func(status int, early bool)) (*outLeg, int, string) {
	number, err := cc.openClientNumber(phone)
	if err != nil {
		c.logger.Error("the client's number can't be opened", zap.Error(err))
		return nil, 0, sideSystem
	}
	target, to := cc.trunk.requestURI(number), cc.trunk.choose()
	evs := make(chan legEvent, 8)
	leg, err := cc.startOutLeg(context.Background(), "", outInvite{
		target:    target,
		to:        target,
		from:      sip.Uri{Scheme: "sip", User: cc.cfg.CompanyNumber, Host: cc.publicIP.String()},
		dest:      to.addr,
		transport: to.transport,
		sdp:       c.localSDP(media.SideA, codecs, media.SendRecv),
		auth:      cc.trunkAuth(),
	}, evs)
	if err != nil {
		c.logger.Error("INVITE to the trunk failed", zap.Error(err))
		return nil, 0, sideSystem
	}
	timeout := time.NewTimer(clientRingFactor * cc.cfg.RingTimeout)
	defer timeout.Stop()
	giveUp := func(status int, side string) (*outLeg, int, string) {
		leg.cancel()
		cc.wg.Go(func() { drain(evs, 1) })
		return nil, status, side
	}
	for {
		select {
		case ev := <-evs:
			switch {
			case ev.status < 200:
				if ev.early {
					c.setRemote(media.SideA, ev.answer, leg.dlg.dest)
				}
				if onProgress != nil {
					onProgress(ev.status, ev.early)
				}
			case ev.status == 200:
				c.setRemote(media.SideA, ev.answer, leg.dlg.dest)
				// The trunk refreshes its session timer with re-INVITE or
				// UPDATE; the leg answers them as a leg in does (uasLeg).
				leg.join(func(dir media.Direction) []byte { return c.localSDP(media.SideA, ev.answer.Codecs, dir) },
					func() { c.hangup(sideClient) },
					func(o media.Offer) { c.setRemote(media.SideA, o, leg.dlg.dest) })
				return leg, 200, ""
			case ev.status == 401 || ev.status == 407:
				// The trunk refused our credentials (the leg answered
				// its first challenge): our configuration failed the
				// call, not the client.
				return nil, ev.status, sideSystem
			default:
				return nil, ev.status, sideClient
			}
		case side := <-c.hangupCh:
			// The manager gave up while the client rang.
			return giveUp(487, side)
		case <-c.relayDone():
			// The manager's phone went silent for --media-timeout.
			return giveUp(487, sideSystem)
		case <-timeout.C:
			return giveUp(408, sideSystem)
		}
	}
}
