package pbx

import (
	"context"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
)

// party is one answered leg of a connected call, whichever way it was set
// up: an INVITE we sent (outLeg) or one we received (uasLeg).
type party interface {
	hangup()
	dialog() *dialog
}

// probe checks each leg of a connected call with an in-dialog OPTIONS (see
// CallConfig.KeepAlive). A leg that answers 481 or 408, or nothing at all,
// has lost its peer (a rebooted phone, a vanished trunk): the call ends.
func (cc *callControl) probe(c *call, parties map[string]party) {
	if !c.probing.CompareAndSwap(false, true) {
		return
	}
	defer c.probing.Store(false)
	for side, p := range parties {
		if !cc.alive(c.ctx, p.dialog()) {
			if c.ctx.Err() != nil {
				return // the call ended meanwhile: nobody to tell
			}
			c.logger.Warn("a leg stopped answering in-dialog requests; ending the call", zap.String("leg", side))
			c.hangup(side + lostSuffix)
			return
		}
	}
}

// alive sends one in-dialog OPTIONS and says whether the peer still knows
// the dialog.
func (cc *callControl) alive(ctx context.Context, d *dialog) bool {
	ctx, cancel := context.WithTimeout(ctx, keepAliveWait)
	defer cancel()
	tx, err := cc.clientFor(d.transport).TransactionRequest(ctx, d.request(sip.OPTIONS, cc.contactFor(d.transport)))
	if err != nil {
		return true // our side failed to send: not the peer's fault
	}
	defer tx.Terminate()
	select {
	case res := <-tx.Responses():
		return res != nil && res.StatusCode != 481 && res.StatusCode != 408
	case <-tx.Done():
		return false
	case <-ctx.Done():
		return false
	}
}

// keepAliveWait is how long a keep-alive OPTIONS waits for its answer.
const keepAliveWait = 5 * time.Second

// talk runs a connected call until one side hangs up, then hangs up the
// other and records the end.
func (cc *callControl) talk(c *call, manager, client party) {
	answeredAt := time.Now()
	c.setState(StateConnected)
	c.publish(events.Answered, nil)
	c.logger.Info("call connected")
	rec := cc.cfg.Recorder.record(c, c.clientCode)
	defer rec.Stop()
	side := cc.awaitHangup(c, map[string]party{sideManager: manager, sideClient: client})
	rec.Stop() // the recording ends with the call, not after the legs' BYEs
	c.recording = cc.cfg.Recorder.Outcome(rec)
	side = hangUpOther(side, manager, client)
	c.logger.Info("call ended", zap.String("hangup_side", side), zap.Duration("talk", time.Since(answeredAt)))
	c.end(DispAnswered, side)
}

// awaitHangup keeps a connected call's legs alive (keep-alive probes,
// session timers) until one side hangs up or the media stops, and says
// which side it was.
func (cc *callControl) awaitHangup(c *call, parties map[string]party) string {
	var keepAlive <-chan time.Time
	if cc.cfg.KeepAlive > 0 {
		t := time.NewTicker(cc.cfg.KeepAlive)
		defer t.Stop()
		keepAlive = t.C
	}
	for side, p := range parties {
		if leg, ok := p.(refreshable); ok {
			cc.wg.Go(func() { cc.runSessionTimer(c, side, leg) })
		}
	}
	for {
		select {
		case side := <-c.hangupCh:
			return side
		case <-c.relayDone():
			return sideSystem
		case <-keepAlive:
			cc.wg.Go(func() { cc.probe(c, parties) })
		}
	}
}

// hangUpOther hangs up the legs the side that ended the call did not, and
// returns the side for the call's end (a lost leg's end is the system's).
func hangUpOther(side string, manager, client party) string {
	switch side {
	case sideClient, sideClient + lostSuffix:
		manager.hangup()
	case sideManager, sideManager + lostSuffix:
		client.hangup()
	default:
		manager.hangup()
		client.hangup()
	}
	if side == sideManager+lostSuffix || side == sideClient+lostSuffix {
		return sideSystem
	}
	return side
}

// lostSuffix marks a side whose leg stopped answering keep-alives: the
// other side is hung up and the end is the system's.
const lostSuffix = "-lost"
