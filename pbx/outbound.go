package pbx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// States of an outbound (click-to-call) call, as GET /api/v1/calls/{id}
// shows them.
const (
	StateCallingManager = "calling_manager"
	StateCallingClient  = "calling_client"
	StateConnected      = "connected"
	StateEnded          = "ended"
)

// Dispositions of outbound calls besides those of inbound ones.
const (
	DispNoAnswer  = "no_answer"
	DispRejected  = "rejected"
	DispCancelled = "cancelled"
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
)

// Originate asks the PBX to connect a manager with a client: the manager's
// phones ring first, then the client is called through the trunk.
type Originate struct {
	CallID     string // the call's id, chosen by the caller
	ManagerID  string
	ClientID   string
	ClientCode string
	ClientName string
	Number     string // the client's E.164 number: goes to the trunk only
}

// CallStatus is what a caller may see of a call: never a number.
type CallStatus struct {
	ID          string
	Direction   string
	State       string
	Disposition string
	ClientID    string
	ManagerID   string
	StartedAt   time.Time
	AnsweredAt  time.Time
	EndedAt     time.Time
}

// outboundLimits enforces "one outgoing call at a time" and "at most N
// starts a minute" per manager, on this node.
type outboundLimits struct {
	mu        sync.Mutex
	perMinute int
	starts    map[string][]time.Time
	active    map[string]bool
}

func newOutboundLimits(perMinute int) *outboundLimits {
	return &outboundLimits{perMinute: perMinute, starts: map[string][]time.Time{}, active: map[string]bool{}}
}

// begin reserves an outgoing call for a manager or says why not.
func (l *outboundLimits) begin(managerID string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[managerID] {
		return ErrOutboundBusy
	}
	recent := l.starts[managerID][:0]
	for _, t := range l.starts[managerID] {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	if l.perMinute > 0 && len(recent) >= l.perMinute {
		l.starts[managerID] = recent
		return ErrRateLimited
	}
	l.starts[managerID] = append(recent, now)
	l.active[managerID] = true
	return nil
}

func (l *outboundLimits) end(managerID string) {
	l.mu.Lock()
	delete(l.active, managerID)
	l.mu.Unlock()
}

// Originate starts a click-to-call in the background. Errors mean nothing
// rang: no trunk, no registered phone, or a limit.
func (s *Server) Originate(ctx context.Context, o Originate) error {
	cc := s.calls
	if cc == nil || cc.cfg.Trunk == "" {
		return ErrNoTrunk
	}
	regs, err := cc.regs.Contacts(ctx, o.ManagerID)
	if err != nil {
		return err
	}
	if len(regs) == 0 {
		return ErrNotRegistered
	}
	if err := cc.limits.begin(o.ManagerID, time.Now()); err != nil {
		return err
	}
	logger := cc.logger.With(zap.String("call_id", o.CallID), zap.String("direction", events.Outbound),
		zap.String("client_id", o.ClientID), zap.String("manager_id", o.ManagerID))
	c := cc.newCall(o.CallID, events.Outbound, logger)
	c.clientID, c.managerID = o.ClientID, o.ManagerID
	cc.wg.Add(1)
	go func() {
		defer cc.wg.Done()
		defer cc.limits.end(o.ManagerID)
		cc.clickToCall(c, o)
	}()
	return nil
}

// CallStatus returns a call's status while it runs and for a while after.
func (s *Server) CallStatus(id string) (CallStatus, bool) {
	if s.calls == nil {
		return CallStatus{}, false
	}
	return s.calls.status(id)
}

// clickToCall rings the manager, then dials the client and bridges them.
// It is the call's owner goroutine.
func (cc *callControl) clickToCall(c *call, o Originate) {
	defer c.release()
	c.clientCode = o.ClientCode
	c.setState(StateCallingManager)
	c.publish(events.Offered, nil)
	end := func(disp, side string) {
		c.finish(disp)
		c.publish(events.Ended, func(e *events.Event) { e.Disposition, e.HangupSide = disp, side })
	}
	for _, side := range []media.Side{media.SideA, media.SideB} {
		p, err := cc.cfg.Ports.Allocate()
		if err != nil {
			c.logger.Error("no RTP port for a click-to-call", zap.Error(err))
			end(DispFailed, "system")
			return
		}
		c.ports[side] = p
	}

	ringCtx, stopRinging := context.WithCancel(context.Background())
	defer stopRinging()
	rang := false
	winner, answer, status := cc.ring(ringCtx, [][]string{{o.ManagerID}}, outInvite{
		from:        sip.Uri{Scheme: "sip", User: o.ClientCode, Host: cc.domain},
		displayName: fmt.Sprintf("Calling %s #%s", o.ClientName, o.ClientCode),
		sdp:         c.localSDP(media.SideB, media.DefaultCodecs(), media.SendRecv),
	}, func() {
		if !rang {
			rang = true
			c.publish(events.Ringing, nil)
		}
	}, c.logger)
	if winner == nil {
		disp := DispNoAnswer
		if status == 486 {
			disp = DispBusy
		}
		end(disp, "manager")
		return
	}
	managerLeg := managerSide{leg: winner}
	c.ports[media.SideB].SetRemote(answer.Remote)
	if answer.RemoteRTCP.IsValid() {
		c.ports[media.SideB].SetRemoteRTCP(answer.RemoteRTCP)
	}
	winner.localSDP = func(dir media.Direction) []byte { return c.localSDP(media.SideB, answer.Codecs, dir) }
	winner.setOnBye(func() { c.hangup("manager") })
	c.codecs = answer.Codecs

	c.setState(StateCallingClient)
	client, disp, side := cc.dialClient(c, o.Number, answer.Codecs, nil)
	if client == nil {
		if side != "manager" {
			// Let the manager hear that it failed instead of a sudden click.
			time.Sleep(time.Second)
			managerLeg.hangup(cc)
		}
		end(disp, side)
		return
	}
	cc.talk(c, managerLeg, clientSide{leg: client}, end)
}

// party is one answered leg of a call, whichever way it was set up.
type party interface {
	hangup(cc *callControl)
	dialog() *dialog
}

type managerSide struct{ leg *outLeg }

func (m managerSide) hangup(*callControl) { m.leg.hangup() }
func (m managerSide) dialog() *dialog     { return m.leg.dlg }

type clientSide struct{ leg *outLeg }

func (c clientSide) hangup(*callControl) { c.leg.hangup() }
func (c clientSide) dialog() *dialog     { return c.leg.dlg }

type uasSide struct{ leg *uasLeg }

func (u uasSide) hangup(cc *callControl) { cc.sendBye(u.leg.dlg, u.leg.call.logger) }
func (u uasSide) dialog() *dialog        { return u.leg.dlg }

// probe checks each leg of a connected call with an in-dialog OPTIONS (see
// CallConfig.KeepAlive). A leg that answers 481 or 408, or nothing at all,
// has lost its peer (a rebooted phone, a vanished trunk): the call ends.
func (cc *callControl) probe(c *call, parties map[string]party) {
	if !c.probing.CompareAndSwap(false, true) {
		return
	}
	defer c.probing.Store(false)
	for side, p := range parties {
		if !cc.alive(p.dialog()) {
			c.logger.Warn("a leg stopped answering in-dialog requests; ending the call", zap.String("leg", side))
			c.hangup(side + "-lost")
			return
		}
	}
}

// alive sends one in-dialog OPTIONS and says whether the peer still knows
// the dialog.
func (cc *callControl) alive(d *dialog) bool {
	ctx, cancel := context.WithTimeout(context.Background(), keepAliveWait)
	defer cancel()
	tx, err := cc.client.TransactionRequest(ctx, d.request(sip.OPTIONS, cc.contact))
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
func (cc *callControl) talk(c *call, manager, client party, end func(disp, side string)) {
	c.setState(StateConnected)
	c.publish(events.Answered, nil)
	c.logger.Info("call connected")
	rec := cc.cfg.Recorder.record(c, c.clientCode)
	defer rec.Stop()
	var keepAlive <-chan time.Time
	if cc.cfg.KeepAlive > 0 {
		t := time.NewTicker(cc.cfg.KeepAlive)
		defer t.Stop()
		keepAlive = t.C
	}
	parties := map[string]party{"manager": manager, "client": client}
	side := ""
	for side == "" {
		select {
		case side = <-c.hangupCh:
		case <-c.relayDone():
			side = "system"
		case <-keepAlive:
			go cc.probe(c, parties)
		}
	}
	rec.Stop() // the recording ends with the call, not after the legs' BYEs
	c.recording = cc.cfg.Recorder.Outcome(rec)
	switch side {
	case "client", "client-lost":
		manager.hangup(cc)
	case "manager", "manager-lost":
		client.hangup(cc)
	default:
		manager.hangup(cc)
		client.hangup(cc)
	}
	if side == "manager-lost" || side == "client-lost" {
		side = "system"
	}
	c.logger.Info("call ended", zap.String("hangup_side", side))
	end(DispAnswered, side)
}

// clientRingFactor is how much longer a client's phone may ring than one
// step of the inbound ring plan: he is not at his desk waiting for it.
const clientRingFactor = 3

// dialClient calls the client's number through the trunk, offering the
// codecs the manager's leg agreed on (the relay does not transcode). The
// relay starts at once so the trunk's early media (ringback) reaches the
// manager. It returns the answered leg, or nil with the disposition and who
// ended the attempt. onProgress, if set, hears of 18x (early: SDP came).
func (cc *callControl) dialClient(c *call, number string, codecs []media.Codec, onProgress func(status int, early bool)) (*outLeg, string, string) {
	if err := c.bridge(nil, nil); err != nil {
		c.logger.Error("relay failed", zap.Error(err))
		return nil, DispFailed, "system"
	}
	host, portStr, err := net.SplitHostPort(cc.cfg.Trunk)
	if err != nil {
		c.logger.Error("bad trunk address", zap.Error(err))
		return nil, DispFailed, "system"
	}
	port, _ := strconv.Atoi(portStr)
	target := sip.Uri{Scheme: "sip", User: number, Host: host, Port: port}
	evs := make(chan legEvent, 64)
	leg, err := cc.startOutLeg(context.Background(), "", outInvite{
		target:    target,
		to:        target,
		from:      sip.Uri{Scheme: "sip", User: cc.cfg.CompanyNumber, Host: cc.publicIP.String()},
		dest:      cc.cfg.Trunk,
		transport: "UDP",
		sdp:       c.localSDP(media.SideA, codecs, media.SendRecv),
	}, evs)
	if err != nil {
		c.logger.Error("INVITE to the trunk failed", zap.Error(err))
		return nil, DispFailed, "system"
	}
	timeout := time.NewTimer(clientRingFactor * cc.cfg.RingTimeout)
	defer timeout.Stop()
	for {
		select {
		case ev := <-evs:
			switch {
			case ev.status < 200:
				if ev.early {
					c.ports[media.SideA].SetRemote(ev.answer.Remote)
				}
				if onProgress != nil {
					onProgress(ev.status, ev.early)
				}
			case ev.status == 200:
				c.ports[media.SideA].SetRemote(ev.answer.Remote)
				if ev.answer.RemoteRTCP.IsValid() {
					c.ports[media.SideA].SetRemoteRTCP(ev.answer.RemoteRTCP)
				}
				leg.setOnBye(func() { c.hangup("client") })
				return leg, "", ""
			default:
				return nil, clientFailure(ev.status), "client"
			}
		case side := <-c.hangupCh:
			// The manager gave up while the client rang.
			leg.cancel()
			go drain(evs, 1)
			return nil, DispCancelled, side
		case <-c.relayDone():
			// The manager's phone went silent for --media-timeout.
			leg.cancel()
			go drain(evs, 1)
			return nil, DispCancelled, "system"
		case <-timeout.C:
			leg.cancel()
			go drain(evs, 1)
			return nil, DispNoAnswer, "system"
		}
	}
}

// clientFailure names the disposition of a final failure from the trunk.
func clientFailure(status int) string {
	switch status {
	case 486, 600:
		return DispBusy
	case 408, 480, 487:
		return DispNoAnswer
	case 403, 603:
		return DispRejected
	}
	return DispFailed
}
