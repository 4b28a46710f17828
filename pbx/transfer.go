package pbx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Transfers inside the team. A manager hands a connected client to a
// colleague: his phone sends REFER in the call's dialog (blind transfer), or
// the console asks (Server.TransferCall). The PBX never passes the REFER on
// to the client: it rings the colleague on a leg of its own, with the
// client's name and code as on any call in, while the client hears
// ringback; when the colleague answers, the client's media moves to him
// and the transferor's leg ends. Each manager's part of the conversation is
// a call of its own (its CDR, its recording); the colleague's part names the
// one before it in transferred_from.
//
// Ownership: the call's owner goroutine (talk) runs the transfer and, when
// it succeeds, goes on as the owner of the colleague's part. The REFER
// handler and the API only check the request and queue it (call.transfers).

// Errors of a transfer that is refused before anything rings.
var (
	// ErrTransferRefused means the colleague may not take the client:
	// unknown, dismissed, the call's own manager, or not allowed for the
	// client's segment.
	ErrTransferRefused = errors.New("pbx: transfer refused")
	// ErrCallNotConnected means the call is not (or no longer) a connected
	// call with a client on this node.
	ErrCallNotConnected = errors.New("pbx: the call is not connected")
	// ErrTransferBusy means a transfer of the call is already under way.
	ErrTransferBusy = errors.New("pbx: a transfer of the call is under way")
)

// Kinds of transfer, as the audit rows name them.
const (
	transferBlind    = "blind"
	transferAttended = "attended"
)

// transferRequest is one transfer the owner goroutine is to carry out.
type transferRequest struct {
	to    storage.Manager // the colleague, checked
	actor string          // who asked, as the audit names him
	kind  string
	// client is how the colleague's phone shows the client.
	clientName, clientCode string
	// refer is the transferor's dialog that sent the REFER, told how the
	// transfer goes (NOTIFY); nil for a transfer the console asked for.
	refer *dialog
	// transferor learns that the transferor hung up: from the moment the
	// transfer is accepted his BYE ends his leg, not the client's call.
	transferor *transferorWatch
	// consult is the consultation call whose colleague leg takes the
	// client (attended transfer); nil for a blind one.
	consult *call
}

// transferorWatch learns that the transferor hung up during a transfer.
type transferorWatch struct {
	once sync.Once
	gone chan struct{}
}

func (w *transferorWatch) hungUp() { w.once.Do(func() { close(w.gone) }) }

// transferRefusal is why a colleague may not take the client; it goes into
// the audit row, never to the phone.
type transferRefusal string

func (r transferRefusal) Error() string { return "transfer refused: " + string(r) }

func (r transferRefusal) Unwrap() error { return ErrTransferRefused }

// checkTransfer decides whether the call's client may go to colleague:
// the call must be connected with a client, the colleague active, not the
// call's manager, and allowed for the client's segment (a restricted
// segment names its managers).
func (cc *callControl) checkTransfer(ctx context.Context, c *call, colleague storage.Manager) (transferRequest, error) {
	st := c.snapshot()
	if st.State != StateConnected || st.ClientID == "" {
		return transferRequest{}, ErrCallNotConnected
	}
	switch {
	case colleague.Status != storage.StatusActive:
		return transferRequest{}, transferRefusal("the colleague is dismissed")
	case colleague.ID == st.ManagerID:
		return transferRequest{}, transferRefusal("the colleague is the call's manager")
	}
	store := cc.cfg.Router.Store
	seg, err := store.SegmentOfClient(ctx, st.ClientID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return transferRequest{}, err
	case !seg.Allows(colleague.ID):
		return transferRequest{}, transferRefusal("the colleague is not allowed for the client's segment")
	}
	client, err := store.Client(ctx, st.ClientID)
	if err != nil {
		return transferRequest{}, err
	}
	return transferRequest{to: colleague, kind: transferBlind, clientName: client.Name, clientCode: client.Code}, nil
}

// requestTransfer checks a transfer and queues it for the call's owner; a
// refusal is audited as call.transfer_refused.
func (cc *callControl) requestTransfer(ctx context.Context, c *call, colleague storage.Manager, actor string, refer *dialog, consult *call) (transferRequest, error) {
	kind := transferBlind
	if consult != nil {
		kind = transferAttended
	}
	t, err := cc.checkTransfer(ctx, c, colleague)
	if errors.Is(err, ErrTransferRefused) {
		cc.auditTransfer(ctx, c, "call.transfer_refused", actor, colleague.ID, kind, err.Error())
		return t, err
	}
	if err != nil {
		return t, err
	}
	if !c.transferring.CompareAndSwap(false, true) {
		return t, ErrTransferBusy
	}
	t.actor, t.refer, t.kind, t.consult = actor, refer, kind, consult
	// Many phones hang up right after the 202 of a blind transfer, before
	// the owner has taken the request: from now on that BYE is the
	// transferor's own.
	t.transferor = &transferorWatch{gone: make(chan struct{})}
	if m := c.managerLeg(); m != nil {
		m.onHangup(t.transferor.hungUp)
	}
	return t, nil
}

// auditTransfer writes one audit row of a transfer: who asked, the call,
// from which manager to which, blind or attended, and why it was refused.
func (cc *callControl) auditTransfer(ctx context.Context, c *call, action, actor, to, kind, why string) {
	_, from := c.parties()
	reason := kind + " manager:" + from + " -> manager:" + to
	if why != "" {
		reason += ": " + why
	}
	if err := cc.cfg.Router.Store.Audit(ctx, storage.AuditEntry{Actor: actor, Action: action,
		Object: "call:" + c.id, Reason: reason}); err != nil {
		c.logger.Error("transfer not audited", zap.String("action", action), zap.Error(err))
	}
}

// onRefer answers a REFER the manager's phone sent in the call's dialog d:
// 202 and the transfer queued, or 403 (a target that is no colleague, or a
// colleague who may not take the client), 400, 491 (one under way).
// Refer-To names the colleague by his SIP username at our domain, with
// Replaces naming the consultation call with him for an attended
// transfer; nothing else is dialled, so a REFER can't reach a number.
func (cc *callControl) onRefer(c *call, d *dialog, req *sip.Request, tx sip.ServerTransaction) {
	// In-dialog requests are trusted by their tags; a REFER, which makes
	// the PBX ring someone, must also come from where the phone is.
	src, err1 := netip.ParseAddrPort(req.Source())
	dst, err2 := netip.ParseAddrPort(d.dest)
	if err1 != nil || err2 != nil || src.Addr().Unmap() != dst.Addr().Unmap() {
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	h := req.GetHeader("Refer-To")
	if h == nil {
		h = req.GetHeader("r")
	}
	var target sip.Uri
	if h == nil || sip.ParseUri(trimAngles(h.Value()), &target) != nil {
		respond(tx, req, 400, "Bad Request", nil)
		return
	}
	_, managerID := c.parties()
	actor := "manager:" + managerID
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var colleague storage.Manager
	var consult *call
	kind := transferBlind
	var err error
	replaces, attended := target.Headers.Get("Replaces")
	if attended {
		kind = transferAttended
	}
	if !cc.srv.servesHost(target.Host) || target.User == "" {
		err = storage.ErrNotFound // any host but ours is no colleague
	} else {
		colleague, err = cc.cfg.Router.Store.ManagerBySIPUsername(ctx, target.User)
	}
	if err == nil && attended {
		// The consultation call the phone made to this colleague.
		if consult = cc.replacedConsultation(replaces, managerID); consult == nil || consult.consult.colleague != colleague.ID {
			err = errNoConsultation
		}
	}
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, errNoConsultation) {
		c.logger.Info("REFER to a target that is no colleague refused", zap.Error(err))
		cc.auditTransfer(ctx, c, "call.transfer_refused", actor, "", kind, "the target is no colleague's SIP username or consultation")
		respond(tx, req, 403, "Forbidden", nil)
		return
	}
	var t transferRequest
	if err == nil {
		t, err = cc.requestTransfer(ctx, c, colleague, actor, d, consult)
	}
	switch {
	case err == nil:
		respond(tx, req, 202, "Accepted", nil)
		// The first NOTIFY goes out before the transfer starts, so the
		// phone hears of it before the last one (RFC 3515 2.4.4).
		cc.notifyRefer(d, 100, "Trying", false, c.logger)
		c.transfers <- t // room for one: transferring guards it
	case errors.Is(err, ErrTransferRefused), errors.Is(err, ErrCallNotConnected):
		c.logger.Info("REFER refused", zap.Error(err))
		respond(tx, req, 403, "Forbidden", nil)
	case errors.Is(err, ErrTransferBusy):
		respond(tx, req, 491, "Request Pending", nil)
	default:
		c.logger.Error("REFER not checked", zap.Error(err))
		respond(tx, req, 500, "Server Internal Error", nil)
	}
}

// notifyRefer tells the transferor how the transfer goes (RFC 3515 2.4.4):
// a NOTIFY of the REFER's implicit subscription whose body is the status
// line of the colleague's leg, and nothing else of it. final ends the
// subscription.
func (cc *callControl) notifyRefer(d *dialog, status int, reason string, final bool, logger *zap.Logger) {
	req := d.request(sip.NOTIFY, cc.contactFor(d.transport))
	req.AppendHeader(sip.NewHeader("Event", "refer"))
	state := "active;expires=60"
	if final {
		state = "terminated;reason=noresource"
	}
	req.AppendHeader(sip.NewHeader("Subscription-State", state))
	req.AppendHeader(sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	req.SetBody(fmt.Appendf(nil, "SIP/2.0 %d %s\r\n", status, reason))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res := cc.transact(ctx, req, d); res == nil || !res.IsSuccess() {
		logger.Debug("NOTIFY of a transfer not accepted")
	}
}

// Server-side entry for the console.

// TransferCall hands call callID's client to the colleague toManagerID (a
// blind transfer the console asked for, actor naming who asked, e.g.
// "manager:<id>"). It returns once the transfer is queued: ErrCallNotConnected
// (no such connected call on this node), ErrTransferRefused (audited),
// ErrTransferBusy, or a store error.
func (s *Server) TransferCall(ctx context.Context, callID, toManagerID, actor string) error {
	if s.calls == nil {
		return ErrCallNotConnected
	}
	cc := s.calls
	cc.mu.Lock()
	c := cc.calls[callID]
	cc.mu.Unlock()
	if c == nil {
		return ErrCallNotConnected
	}
	colleague, err := cc.cfg.Router.Store.Manager(ctx, toManagerID)
	if errors.Is(err, storage.ErrNotFound) {
		named := ""
		if _, perr := uuid.Parse(toManagerID); perr == nil {
			named = toManagerID // never free text into the audit: it could be a number
		}
		cc.auditTransfer(ctx, c, "call.transfer_refused", actor, named, transferBlind, "no such colleague")
		return transferRefusal("no such colleague")
	}
	if err != nil {
		return err
	}
	t, err := cc.requestTransfer(ctx, c, colleague, actor, nil, nil)
	if err == nil {
		c.transfers <- t // room for one: transferring guards it
	}
	return err
}

// The owner's side.

// ringResult is how ringing the colleague ended.
type ringResult struct {
	leg    *outLeg
	answer media.Offer
	status int
}

// transfer carries out t for call c, whose owner runs it from talk with
// the call's legs and recording. It reports whether talk is over: true once
// the client went on to the colleague (and that part has ended too), or
// the client is gone; false when the client is back with the transferor.
func (cc *callControl) transfer(c *call, t transferRequest, manager, client party, rec *RecordingSession) bool {
	defer c.transferring.Store(false)
	logger := c.logger.With(zap.String("to_manager_id", t.to.ID), zap.String("kind", t.kind))
	logger.Info("transfer to a colleague begins")
	if t.consult != nil {
		return cc.attendedTransfer(c, t, manager, client, rec, logger)
	}
	part := cc.newPart(c, t, client)
	codecs := part.codecs

	fail := func(status int, reason string) bool {
		part.release()
		return cc.transferFailed(c, t, manager, client, rec, status, reason)
	}
	port, err := cc.cfg.Ports.Allocate()
	if err != nil {
		logger.Error("no RTP port for the colleague's leg", zap.Error(err))
		part.publish(events.Offered, nil)
		part.end(DispOverload, sideSystem)
		return fail(503, "Service Unavailable")
	}
	part.ports[media.SideB] = port

	// The client hears ringback on his own port while the colleague rings.
	c.detachRelay()
	stopRingback := cc.playRingback(c, codecs, logger)

	part.publish(events.Offered, nil)
	ringing := make(chan ringResult, 1)
	cc.wg.Go(func() {
		rang := false
		leg, answer, status := cc.ring(part.ctx, [][]string{{t.to.ID}}, outInvite{
			from:        sip.Uri{Scheme: "sip", User: t.clientCode, Host: cc.domain},
			displayName: clientDisplayName(nil, t.clientName, t.clientCode),
			sdp:         part.localSDP(media.SideB, codecs, media.SendRecv),
			secureSDP:   part.secureOfferSDP(media.SideB, codecs),
		}, func() {
			if !rang {
				rang = true
				part.publish(events.Ringing, nil)
			}
		}, nil, part.logger)
		ringing <- ringResult{leg, answer, status}
	})

	var res ringResult
	select {
	case res = <-ringing:
	case side := <-c.hangupCh:
		// The client hung up (or his leg was lost), or the node shuts
		// down: stop ringing.
		if side != sideClient {
			side = sideSystem
		}
		part.cancel()
		res = <-ringing
		if res.leg != nil {
			res.leg.hangup()
		}
		stopRingback()
		part.end(DispMissed, side)
		part.release()
		cc.endTransferor(c, t, manager, rec, 487, "Request Terminated")
		c.end(DispAnswered, side)
		return true
	}
	if res.leg == nil {
		stopRingback()
		disp := DispMissed
		if res.status == 486 || res.status == 600 {
			disp = DispBusy
		}
		part.end(disp, sideSystem)
		code, reason, _, _ := failureResponse(disp)
		return fail(code, reason)
	}

	// The colleague answered: the client's port and the SDP session we keep
	// with him move to the colleague's part.
	part.takeClientPort(c, stopRingback())
	colleague := res.leg
	err = part.acceptAnswer(media.SideB, res.answer, colleague.secureOffer)
	if err == nil {
		part.setRemote(media.SideB, res.answer, colleague.dlg.dest)
	}
	return cc.goOnWithColleague(c, t, part, colleague, res.answer.Codecs, manager, client, rec, err)
}

// newPart is the colleague's part of call c, which transfer t begins: the
// same client, with the codecs agreed with him, the colleague named from
// the start (a CDR of an attempt he did not answer says whom the client
// was sent to), linked to c.
func (cc *callControl) newPart(c *call, t transferRequest, client party) *call {
	part := cc.newCall(newCallID(), c.direction, nil)
	part.transferredFrom = c.id
	part.logger = part.logger.With(zap.String("transferred_from", c.id), zap.String("manager_id", t.to.ID))
	clientID, _ := c.parties()
	part.setClient(clientID, t.clientCode)
	part.setManager(t.to.ID)
	part.setTransferredFrom(c.id)
	part.codecs = clientCodecs(c, client)
	return part
}

// takeClientPort moves the client's port, and the SDP session we keep with
// him, from call c to its next part.
func (part *call) takeClientPort(c *call, port *media.Port) {
	part.ports[media.SideA], c.ports[media.SideA] = port, nil
	part.sessionID[media.SideA] = c.sessionID[media.SideA]
	part.version[media.SideA].Store(c.version[media.SideA].Load())
	part.crypto[media.SideA] = c.crypto[media.SideA]
}

// goOnWithColleague bridges the client to the colleague's answered leg in
// the part (err: the colleague's answer was unusable), ends the
// transferor's part, and runs the colleague's part until it ends.
func (cc *callControl) goOnWithColleague(c *call, t transferRequest, part *call, colleague *outLeg, colleagueCodecs []media.Codec, manager, client party, rec *RecordingSession, err error) bool {
	codecs := part.codecs
	if err == nil {
		err = part.bridge(media.PayloadTypeMap(codecs, colleagueCodecs), media.PayloadTypeMap(colleagueCodecs, codecs))
	}
	if err != nil {
		c.logger.Error("the colleague's leg can't be bridged", zap.Error(err))
		colleague.hangup()
		part.end(DispFailed, sideSystem)
		part.release()
		cc.endTransferor(c, t, manager, rec, 500, "Server Internal Error")
		client.hangup()
		c.end(DispAnswered, sideSystem)
		return true
	}
	colleague.moveTo(part, media.SideB)
	client.moveTo(part, media.SideA)
	// A BYE the client sent before his leg moved is the new part's.
	select {
	case side := <-c.hangupCh:
		part.hangup(side)
	default:
	}
	cc.endTransferor(c, t, manager, rec, 200, "OK")
	cc.auditTransfer(context.Background(), c, "call.transfer", t.actor, t.to.ID, t.kind, "")
	c.end(DispAnswered, sideManager)
	c.release()
	c.logger.Info("call transferred", zap.String("new_call_id", part.id), zap.String("kind", t.kind))
	defer part.release()
	cc.talk(part, colleague, client)
	return true
}

// attendedTransfer joins the client to the colleague of the consultation
// call the transferor's phone made (REFER with Replaces): the colleague's
// leg, already talking, moves into the client's next part; both of the
// transferor's legs end.
func (cc *callControl) attendedTransfer(c *call, t transferRequest, manager, client party, rec *RecordingSession, logger *zap.Logger) bool {
	part := cc.newPart(c, t, client)
	cl := takeConsultLeg(t.consult, part.codecs)
	if cl == nil {
		logger.Info("the consultation call can't be taken over (ended, or another codec)")
		part.publish(events.Offered, nil)
		part.end(DispFailed, sideSystem)
		part.release()
		return cc.transferFailed(c, t, manager, client, rec, 488, "Not Acceptable Here")
	}
	c.detachRelay()
	part.takeClientPort(c, c.ports[media.SideA])
	part.ports[media.SideB] = cl.port
	part.sessionID[media.SideB] = cl.sessionID
	part.version[media.SideB].Store(cl.version)
	part.crypto[media.SideB] = cl.crypto
	part.publish(events.Offered, nil)
	return cc.goOnWithColleague(c, t, part, cl.leg, cl.codecs, manager, client, rec, nil)
}

// transferFailed ends a transfer whose colleague did not take the call:
// back to the transferor if his leg is still up (false: talk goes on),
// else the client is hung up and the call ends (true).
func (cc *callControl) transferFailed(c *call, t transferRequest, manager, client party, rec *RecordingSession, status int, reason string) bool {
	c.logger.Info("transfer failed", zap.Int("status", status))
	if c.relay == nil {
		if err := c.bridge(c.ptAB, c.ptBA); err != nil {
			c.logger.Error("relay failed after a transfer", zap.Error(err))
			cc.endTransferor(c, t, manager, rec, status, reason)
			client.hangup()
			c.end(DispAnswered, sideSystem)
			return true
		}
		if rec != nil {
			c.relay.SetTap(rec.Tap)
		}
	}
	manager.onHangup(func() { c.hangup(sideManager) })
	select {
	case <-t.transferor.gone:
		cc.endTransferor(c, t, manager, rec, status, reason)
		client.hangup()
		c.end(DispAnswered, sideManager)
		return true
	default:
	}
	if t.refer != nil {
		cc.notifyRefer(t.refer, status, reason, true, c.logger)
	}
	return false
}

// endTransferor ends the transferor's part: the REFER's last NOTIFY, the
// recording, and his leg (unless he hung up already).
func (cc *callControl) endTransferor(c *call, t transferRequest, manager party, rec *RecordingSession, status int, reason string) {
	select {
	case <-t.transferor.gone:
	default:
		if t.refer != nil {
			cc.notifyRefer(t.refer, status, reason, true, c.logger)
		}
		manager.hangup()
	}
	rec.Stop()
	c.recording = cc.cfg.Recorder.Outcome(rec)
}

// playRingback plays ringing tone to the client on his port (the call's
// relay detached) until the returned stop, which gives the port back.
func (cc *callControl) playRingback(c *call, codecs []media.Codec, logger *zap.Logger) (stop func() *media.Port) {
	port := c.ports[media.SideA]
	codec, dtmfPT, ok := whisperCodec(codecs)
	var sess *ivr.Session
	if ok {
		var err error
		if sess, err = ivr.Start(port, codec, dtmfPT, logger); err != nil {
			logger.Warn("no ringback for the client during a transfer", zap.Error(err))
			sess = nil
		}
	}
	if sess == nil {
		return func() *media.Port { return port }
	}
	ctx, cancel := context.WithCancel(c.ctx)
	cc.wg.Go(func() {
		for ctx.Err() == nil {
			if sess.Play(ctx, ivr.Ringback(5*time.Second)) != nil {
				return
			}
		}
	})
	return sync.OnceValue(func() *media.Port {
		cancel()
		return sess.Stop()
	})
}

// clientCodecs are the codecs agreed with the client's side: what the
// colleague is offered, so the relay needs no transcoding.
func clientCodecs(c *call, client party) []media.Codec {
	if l, ok := client.(*outLeg); ok {
		if codecs := l.codecs(); len(codecs) > 0 {
			return codecs
		}
	}
	return c.codecs
}

// setManagerLeg names the manager's leg of the connected call, for a
// transfer to take his BYE (talk sets it).
func (c *call) setManagerLeg(p party) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.manager = p
}

func (c *call) managerLeg() party {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	return c.manager
}

// setTransferredFrom records the part before this one in the call's status.
func (c *call) setTransferredFrom(id string) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	c.status.TransferredFrom = id
}
