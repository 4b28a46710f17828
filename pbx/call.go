package pbx

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// call is one bridged conversation: two legs and the relay between them.
//
// Ownership: the goroutine that runs the call (inbound or click-to-call)
// owns the call and is the only one that ends it; legs and the relay only
// signal it through hangup. end closes both ports exactly once, whatever
// path the call took.
type call struct {
	id         string
	cc         *callControl
	direction  string
	clientCode string // for the recording's metadata
	logger     *zap.Logger
	recording  string // the ended event's recording state (SRC.Outcome)

	ports     [2]*media.Port // [media.SideA] client side, [media.SideB] manager side
	sessionID [2]uint64
	version   [2]atomic.Uint64
	codecs    []media.Codec
	crypto    [2]sideCrypto // SRTP per side (srtp.go); zero = plain RTP

	// statusMu guards status, the parties included: the API reads it
	// (snapshot) while the owner goroutine learns who the call is between.
	statusMu sync.Mutex
	status   CallStatus
	manager  party         // the manager's leg once connected (talk), for transfers
	consult  *consultation // set on a consultation call (consult.go)

	hangupOnce sync.Once
	hangupCh   chan string // "client" / "manager" / "system": who ended it
	// ctx is done once anyone hung the call up or the node shuts down:
	// what waits on the call's behalf (the failure pause, a keep-alive
	// probe) waits on it.
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{} // closed by release
	probing atomic.Bool   // a keep-alive probe is running
	endOnce sync.Once
	relay   *media.Relay
	// ptAB and ptBA are the relay's payload type maps, kept so that a
	// transfer that fails can bridge the same legs again.
	ptAB, ptBA map[uint8]uint8

	// transfers takes the one transfer in progress to the owner goroutine
	// (talk); transferring is set while one is asked for or runs.
	transfers    chan transferRequest
	transferring atomic.Bool
	// transferredFrom is the call id of the part a transfer continues
	// (set by the owner before the part's first event).
	transferredFrom string
}

// newCall registers a call; with a nil logger it gets the call control's,
// naming the call.
func (cc *callControl) newCall(id, direction string, logger *zap.Logger) *call {
	if logger == nil {
		logger = cc.logger.With(zap.String("call_id", id), zap.String("direction", direction))
	}
	c := &call{id: id, cc: cc, direction: direction, logger: logger, hangupCh: make(chan string, 1), done: make(chan struct{}),
		transfers: make(chan transferRequest, 1)}
	c.ctx, c.cancel = context.WithCancel(cc.ctx)
	c.sessionID = [2]uint64{newSessionID(), newSessionID()}
	c.status = CallStatus{ID: id, Direction: direction, StartedAt: time.Now()}
	cc.mu.Lock()
	cc.calls[id] = c
	if cc.closing {
		c.hangup(sideSystem) // begun just before endAll's sweep
	}
	cc.mu.Unlock()
	return c
}

// hangup records who ended the call first; later signals are ignored.
func (c *call) hangup(side string) {
	c.hangupOnce.Do(func() { c.hangupCh <- side })
	c.cancel()
}

// localSDP is our SDP towards one side: our address, that side's port, the
// negotiated codecs. The version rises with every SDP we send on that leg.
// On a secure leg it repeats the a=crypto line in force.
func (c *call) localSDP(side media.Side, codecs []media.Codec, dir media.Direction) []byte {
	addr, version := c.localAddr(side), c.version[side].Add(1)
	if ours := c.crypto[side].ours; ours != nil {
		return media.BuildSDPWith(addr, c.sessionID[side], version, codecs, dir, media.SDPOptions{Crypto: []media.Crypto{*ours}})
	}
	return media.BuildSDP(addr, c.sessionID[side], version, codecs, dir)
}

// release frees whatever the call holds, once.
func (c *call) release() {
	c.endOnce.Do(func() {
		c.cancel()
		close(c.done)
		if c.relay != nil {
			c.relay.Stop()
		}
		for _, p := range c.ports {
			if p != nil {
				_ = p.Close()
			}
		}
		st := c.snapshot()
		if st.State != StateEnded {
			st.State, st.EndedAt = StateEnded, time.Now()
			if st.Disposition == "" {
				st.Disposition = DispFailed
			}
		}
		c.cc.mu.Lock()
		delete(c.cc.calls, c.id)
		c.cc.recent.add(st)
		c.cc.mu.Unlock()
	})
}

// publish sends a call event; the ended event also ends the call's status.
func (c *call) publish(kind events.Kind, mutate func(*events.Event)) {
	clientID, managerID := c.parties()
	e := events.Event{Kind: kind, CallID: c.id, Direction: c.direction, ClientID: clientID, ManagerID: managerID,
		Node: c.cc.cfg.Node, TransferredFrom: c.transferredFrom}
	if mutate != nil {
		mutate(&e)
	}
	switch kind {
	case events.Answered:
		c.setState(StateConnected)
	case events.Ended:
		c.finish(e.Disposition)
		st := c.snapshot()
		e.Via, e.Mobile = st.Via, st.Mobile
		if e.Recording == "" {
			e.Recording = c.recording
		}
	}
	if c.cc.cfg.Events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.cc.cfg.Events.Publish(ctx, e); err != nil {
		c.logger.Error("call event not published", zap.String("event", string(kind)), zap.Error(err))
	}
}

// bridge starts the relay once both sides' media addresses are known.
func (c *call) bridge(ptAB, ptBA map[uint8]uint8) error {
	r, err := media.Bridge(c.ports[media.SideA], c.ports[media.SideB], media.BridgeOptions{
		MediaTimeout:     c.cc.cfg.MediaTimeout,
		PayloadTypesAToB: ptAB,
		PayloadTypesBToA: ptBA,
		SRTP:             [2]*media.SRTPKeys{c.crypto[media.SideA].keys, c.crypto[media.SideB].keys},
		Logger:           c.logger,
	})
	if err != nil {
		return err
	}
	// Under statusMu: a monitor reads the relay of a connected call
	// (liveRelay), and a transfer bridges one again while connected.
	c.statusMu.Lock()
	c.relay, c.ptAB, c.ptBA = r, ptAB, ptBA
	c.statusMu.Unlock()
	return nil
}

// setRemote points side's port at the media address of the peer's SDP and
// lets RTP and RTCP in only from that IP or from the IP the peer's
// signalling comes from (dest, the dialog's host:port): a phone's
// registration source, i.e. its NAT, or the trunk's address. Nobody else
// can take the leg over while it is silent (hold, before its first packet).
func (c *call) setRemote(side media.Side, sdp media.Offer, dest string) {
	setPortRemote(c.ports[side], sdp, dest)
}

// setPortRemote is setRemote on a port of its own (a mobile's whisper).
func setPortRemote(p *media.Port, sdp media.Offer, dest string) {
	p.SetRemote(sdp.Remote)
	if sdp.RemoteRTCP.IsValid() {
		p.SetRemoteRTCP(sdp.RemoteRTCP)
	}
	var signalling []netip.Addr
	if a, err := netip.ParseAddrPort(dest); err == nil {
		signalling = append(signalling, a.Addr())
	}
	p.SetAllowedSources(signalling...)
}

// detachRelay ends the call's relay but keeps its ports (media.Relay.Detach)
// for a transfer; the owner goroutine calls it.
func (c *call) detachRelay() {
	r := c.relay
	c.statusMu.Lock()
	c.relay = nil
	c.statusMu.Unlock()
	r.Detach()
}

// relayDone is closed when the relay ends by itself (media timeout); nil
// (never ready) before the call is bridged. Whoever waits for a hang-up
// waits for this too, so no goroutine per call has to watch the relay.
func (c *call) relayDone() <-chan struct{} {
	if c.relay == nil {
		return nil
	}
	return c.relay.Done()
}

// end publishes the call's ended event with how and by whom it ended.
func (c *call) end(disp, side string) {
	c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = disp, side })
}

// allocatePorts takes a relay port for each side of the call.
func (c *call) allocatePorts() error {
	for side, p := range c.ports {
		if p != nil {
			continue
		}
		np, err := c.cc.cfg.Ports.Allocate()
		if err != nil {
			return err
		}
		c.ports[side] = np
	}
	return nil
}
