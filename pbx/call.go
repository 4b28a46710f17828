package pbx

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
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
	clientID   string
	clientCode string // for the recording's metadata
	managerID  string
	logger     *zap.Logger
	recording  string // the ended event's recording state (SRC.Outcome)

	ports     [2]*media.Port // [media.SideA] client side, [media.SideB] manager side
	sessionID [2]uint64
	version   [2]atomic.Uint64
	codecs    []media.Codec

	statusMu sync.Mutex
	status   CallStatus

	hangupOnce sync.Once
	hangupCh   chan string   // "client" / "manager" / "system": who ended it
	done       chan struct{} // closed by release
	probing    atomic.Bool   // a keep-alive probe is running
	endOnce    sync.Once
	relay      *media.Relay
}

func (cc *callControl) newCall(id, direction string, logger *zap.Logger) *call {
	c := &call{id: id, cc: cc, direction: direction, logger: logger, hangupCh: make(chan string, 1), done: make(chan struct{})}
	c.sessionID = [2]uint64{newSessionID(), newSessionID()}
	c.status = CallStatus{ID: id, Direction: direction, StartedAt: time.Now()}
	cc.mu.Lock()
	cc.calls[id] = c
	cc.mu.Unlock()
	return c
}

// hangup records who ended the call first; later signals are ignored.
func (c *call) hangup(side string) {
	c.hangupOnce.Do(func() { c.hangupCh <- side })
}

// localSDP is our SDP towards one side: our address, that side's port, the
// negotiated codecs. The version rises with every SDP we send on that leg.
func (c *call) localSDP(side media.Side, codecs []media.Codec, dir media.Direction) []byte {
	p := c.ports[side]
	addr := netip.AddrPortFrom(c.cc.publicIP, p.LocalAddr().Port())
	return media.BuildSDP(addr, c.sessionID[side], c.version[side].Add(1), codecs, dir)
}

// release frees whatever the call holds, once.
func (c *call) release() {
	c.endOnce.Do(func() {
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

// setState moves the call to a new state (see the State constants).
func (c *call) setState(state string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.State = state
	if state == StateConnected && c.status.AnsweredAt.IsZero() {
		c.status.AnsweredAt = time.Now()
	}
}

// finish marks the call ended with a disposition.
func (c *call) finish(disposition string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.status.State == StateEnded {
		return
	}
	c.status.State, c.status.Disposition, c.status.EndedAt = StateEnded, disposition, time.Now()
}

func (c *call) snapshot() CallStatus {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	st := c.status
	st.ClientID, st.ManagerID = c.clientID, c.managerID
	return st
}

// publish sends a call event; the ended event also ends the call's status.
func (c *call) publish(kind events.Kind, mutate func(*events.Event)) {
	e := events.Event{Kind: kind, CallID: c.id, Direction: c.direction, ClientID: c.clientID, ManagerID: c.managerID}
	if mutate != nil {
		mutate(&e)
	}
	switch kind {
	case events.Answered:
		c.setState(StateConnected)
	case events.Ended:
		c.finish(e.Disposition)
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
		Logger:           c.logger,
	})
	if err != nil {
		return err
	}
	c.relay = r
	return nil
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

// uasLeg is the leg whose INVITE we received: the trunk's (inbound) or a
// desk phone's (dialling a client code).
type uasLeg struct {
	dlg    *dialog
	call   *call
	side   media.Side
	acked  chan struct{}
	ackOne sync.Once

	invite *sip.Request
	tx     sip.ServerTransaction
	final  *sip.Response // the last response sent, for 2xx retransmission
}

// newUASLeg makes the dialog of a received INVITE; req must have From, To
// and Call-ID.
func (cc *callControl) newUASLeg(c *call, side media.Side, req *sip.Request, tx sip.ServerTransaction) *uasLeg {
	target := req.Recipient
	if h := req.Contact(); h != nil {
		target = h.Address
	}
	return &uasLeg{call: c, side: side, acked: make(chan struct{}), invite: req, tx: tx, dlg: &dialog{
		callID:    req.CallID().Value(),
		localTag:  sip.GenerateTagN(16),
		remoteTag: tagOf(req.From().Params),
		local:     req.To().Address,
		remote:    req.From().Address,
		target:    target,
		dest:      req.Source(),
		transport: req.Transport(),
	}}
}

// respond answers the INVITE; every response carries our To tag and
// Contact, and nothing of the other leg.
func (l *uasLeg) respond(code int, reason string, body []byte, hdrs ...sip.Header) error {
	res := sip.NewResponseFromRequest(l.invite, code, reason, body)
	res.To().Params.Add("tag", l.dlg.localTag)
	res.AppendHeader(&sip.ContactHeader{Address: l.call.cc.contact})
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	l.final = res
	return l.tx.Respond(res)
}

func (l *uasLeg) matches(req *sip.Request) bool {
	from, to := req.From(), req.To()
	return from != nil && to != nil && tagOf(from.Params) == l.dlg.remoteTag && tagOf(to.Params) == l.dlg.localTag
}

func (l *uasLeg) handleInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.ACK:
		l.ackOne.Do(func() { close(l.acked) })
	case sip.BYE:
		respond(tx, req, 200, "OK", nil)
		l.call.cc.dialogs.remove(l.dlg.callID)
		l.call.hangup(sideName(l.side))
	default:
		l.call.cc.answerMidDialog(req, tx, l.dlg, func(dir media.Direction) []byte {
			return l.call.localSDP(l.side, l.call.codecs, dir)
		})
	}
}

func sideName(s media.Side) string {
	if s == media.SideA {
		return "client"
	}
	return "manager"
}

// recentCalls keeps the status of ended calls for a while, so a client
// polling GET /api/v1/calls/{id} sees how its call ended.
type recentCalls struct {
	byID  map[string]CallStatus
	order []string
}

const recentCallsKept = 10000

func (r *recentCalls) add(st CallStatus) {
	if r.byID == nil {
		r.byID = map[string]CallStatus{}
	}
	if _, seen := r.byID[st.ID]; !seen {
		r.order = append(r.order, st.ID)
	}
	r.byID[st.ID] = st
	for len(r.order) > recentCallsKept {
		delete(r.byID, r.order[0])
		r.order = r.order[1:]
	}
}

func (cc *callControl) status(id string) (CallStatus, bool) {
	cc.mu.Lock()
	c, live := cc.calls[id]
	st, recent := cc.recent.byID[id]
	cc.mu.Unlock()
	if live {
		return c.snapshot(), true
	}
	return st, recent
}
