package pbx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/storage"
)

// Live listen, whisper and barge: a supervisor's phone rings and, once he
// answers, gets both parties of a connected call mixed (media.Monitor);
// in whisper mode his voice reaches the manager, in barge both parties.
//
// Ownership: Monitor starts one goroutine per session (run), which owns
// the supervisor's leg, its port and its media.Monitor, and ends them when
// the call ends, the supervisor hangs up or the node shuts down. The
// sessions map (under monitors.mu) only finds a call's session for a mode
// change or a refusal; run removes its entry before it returns.

// Monitor modes, as the API names them.
const (
	MonitorListen  = "listen"
	MonitorWhisper = "whisper"
	MonitorBarge   = "barge"
)

// Errors of Monitor, each a reason nothing rang.
var (
	// ErrCallNotLive means no connected call with that id runs on this node.
	ErrCallNotLive = errors.New("pbx: no connected call with that id on this node")
	// ErrMonitored means another supervisor monitors the call already.
	ErrMonitored = errors.New("pbx: another supervisor monitors the call")
	// ErrBadMonitorMode means a mode other than listen, whisper or barge.
	ErrBadMonitorMode = errors.New("pbx: bad monitor mode")
)

// MonitorRequest asks the PBX to ring a supervisor's phones and let him
// listen in on a connected call.
type MonitorRequest struct {
	CallID       string
	SupervisorID string
	// Actor is who asks, as the audit log names him ("supervisor:<id>").
	Actor string
	Mode  string // MonitorListen, MonitorWhisper or MonitorBarge
}

// MonitorResult says where the supervisor is: "ringing" (his phones
// ring) or "active" (he was on the call already; his mode changed).
type MonitorResult struct {
	State string
}

// monitors are the live monitor sessions of this node, by call id.
type monitors struct {
	mu       sync.Mutex
	sessions map[string]*monitorSession
}

// monitorSession is one supervisor on one call.
type monitorSession struct {
	call         *call
	supervisorID string
	actor        string
	mu           sync.Mutex
	mode         string
	media        *media.Monitor // nil while his phone rings
}

var monitorModes = map[string]media.MonitorMode{
	MonitorListen: media.MonitorListen, MonitorWhisper: media.MonitorWhisper, MonitorBarge: media.MonitorBarge,
}

// Monitor rings the supervisor's registered phones and, when one answers,
// joins it to the call's media in the mode asked for. A supervisor already
// on the call has his mode changed instead. Errors mean nothing rang:
// ErrBadMonitorMode, ErrCallNotLive (unknown, not connected yet, ended, or
// on another node), ErrMonitored, ErrNotRegistered, ErrShuttingDown.
func (s *Server) Monitor(ctx context.Context, req MonitorRequest) (MonitorResult, error) {
	cc := s.calls
	mode, ok := monitorModes[req.Mode]
	if !ok {
		return MonitorResult{}, ErrBadMonitorMode
	}
	if cc == nil {
		return MonitorResult{}, ErrCallNotLive
	}
	cc.mu.Lock()
	c := cc.calls[req.CallID]
	cc.mu.Unlock()
	if c == nil || c.liveRelay() == nil {
		return MonitorResult{}, ErrCallNotLive
	}
	if ms, err := cc.monitors.existing(c.id, req.SupervisorID); ms != nil || err != nil {
		if err != nil {
			return MonitorResult{}, err
		}
		state, err := ms.setMode(ctx, cc, req.Mode, mode)
		return MonitorResult{State: state}, err
	}
	regs, err := cc.regs.Contacts(ctx, req.SupervisorID)
	if err != nil {
		return MonitorResult{}, err
	}
	if len(regs) == 0 {
		return MonitorResult{}, ErrNotRegistered
	}
	ms := &monitorSession{call: c, supervisorID: req.SupervisorID, actor: req.Actor, mode: req.Mode}
	if err := cc.monitors.add(ms); err != nil {
		return MonitorResult{}, err
	}
	if !cc.begin() {
		cc.monitors.remove(c.id)
		return MonitorResult{}, ErrShuttingDown
	}
	go func() {
		defer cc.wg.Done()
		defer cc.monitors.remove(c.id)
		cc.runMonitor(ms)
	}()
	return MonitorResult{State: "ringing"}, nil
}

// existing is the call's session if it is this supervisor's, or
// ErrMonitored if it is someone else's; nil, nil if there is none.
func (m *monitors) existing(callID, supervisorID string) (*monitorSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms := m.sessions[callID]
	switch {
	case ms == nil:
		return nil, nil
	case ms.supervisorID != supervisorID:
		return nil, ErrMonitored
	}
	return ms, nil
}

// add takes the call for a new session, unless another (or the same
// supervisor's, asked twice at once) took it meanwhile.
func (m *monitors) add(ms *monitorSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[ms.call.id] != nil {
		return ErrMonitored
	}
	if m.sessions == nil {
		m.sessions = map[string]*monitorSession{}
	}
	m.sessions[ms.call.id] = ms
	return nil
}

func (m *monitors) remove(callID string) {
	m.mu.Lock()
	delete(m.sessions, callID)
	m.mu.Unlock()
}

// liveRelay is the call's relay while it is connected, else nil. The owner
// goroutine sets relay before it sets the state connected, both before
// anyone reads them under statusMu here.
func (c *call) liveRelay() *media.Relay {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.status.State != StateConnected {
		return nil
	}
	return c.relay
}

// setMode changes a session's mode, audited once his leg runs; a session
// whose phone still rings takes the mode when it answers. It returns the
// session's state: "ringing" or "active".
func (ms *monitorSession) setMode(ctx context.Context, cc *callControl, name string, mode media.MonitorMode) (string, error) {
	ms.mu.Lock()
	old := ms.mode
	ms.mode = name
	running := ms.media != nil
	if running {
		ms.media.SetMode(mode)
	}
	ms.mu.Unlock()
	if !running {
		return "ringing", nil
	}
	if old == name {
		return "active", nil
	}
	return "active", cc.cfg.Router.Store.Audit(ctx, storage.AuditEntry{Actor: ms.actor, Action: "call.monitor_mode",
		Object: "call:" + ms.call.id, Reason: "mode=" + name})
}

// runMonitor rings the supervisor, joins his leg to the call's media and
// keeps it until the call ends, he hangs up or the node stops. Audited at
// the start (when he answers) and the end, with how long he was on.
func (cc *callControl) runMonitor(ms *monitorSession) {
	c := ms.call
	logger := c.logger.With(zap.String("supervisor_id", ms.supervisorID))
	port, err := cc.cfg.Ports.Allocate()
	if err != nil {
		logger.Error("no RTP port for a supervisor's leg", zap.Error(err))
		return
	}
	defer func() { _ = port.Close() }()
	addr, sessionID := netip.AddrPortFrom(cc.publicIP, port.LocalAddr().Port()), newSessionID()
	// sdp is our SDP towards his phone; re-INVITEs (sipgo's goroutines)
	// build it too.
	var version atomic.Uint64
	sdp := func(dir media.Direction) []byte {
		return media.BuildSDP(addr, sessionID, version.Add(1), []media.Codec{media.PCMU, media.PCMA}, dir)
	}

	// The ring ends with the call: a supervisor never answers into nothing.
	ringCtx, stopRinging := context.WithCancel(c.ctx)
	defer stopRinging()
	winner, answer, _ := cc.ring(ringCtx, [][]string{{ms.supervisorID}}, outInvite{
		from:        sip.Uri{Scheme: "sip", User: "monitor", Host: cc.domain},
		displayName: clientDisplayName(cc.monitorWording(ringCtx, ms.supervisorID), "", c.clientCode),
		sdp:         sdp(media.SendRecv),
	}, func() {}, nil, logger)
	if winner == nil {
		logger.Info("the supervisor did not answer the monitor call")
		return
	}
	defer winner.hangup()
	setPortRemote(port, answer, winner.dlg.dest)
	codec, ok := g711Of(answer.Codecs)
	relay := c.liveRelay()
	if !ok || relay == nil {
		return
	}
	// Audited before he hears anything; under ms.mu, so the mode audited
	// is the one he starts in (it may have changed while his phone rang).
	store := cc.cfg.Router.Store
	ms.mu.Lock()
	startMode := ms.mode
	if err := store.Audit(c.ctx, storage.AuditEntry{Actor: ms.actor, Action: "call.monitor",
		Object: "call:" + c.id, Reason: "mode=" + startMode}); err != nil {
		ms.mu.Unlock()
		logger.Error("monitor start not audited; the supervisor is hung up", zap.Error(err))
		return
	}
	started := time.Now()
	mon, err := relay.Monitor(port, codec, media.MonitorOptions{Mode: monitorModes[startMode], Notice: cc.cfg.MonitorNotice, Logger: logger})
	if err == nil {
		ms.media = mon
		defer mon.Stop()
		logger.Info("supervisor joined the call", zap.String("mode", startMode))
		gone := make(chan struct{})
		var goneOnce sync.Once
		winner.join(sdp, func() { goneOnce.Do(func() { close(gone) }) }, func(o media.Offer) { setPortRemote(port, o, winner.dlg.dest) })
		ms.mu.Unlock()
		cc.monitorUntilGone(ms, gone)
		mon.Stop()
	} else {
		ms.mu.Unlock()
		logger.Info("the call's media can't be monitored", zap.Error(err))
	}
	ms.mu.Lock()
	endMode := ms.mode
	ms.mu.Unlock()
	took := time.Since(started)
	// The call's context may be done: the end row must still be written.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := store.Audit(ctx, storage.AuditEntry{Actor: ms.actor, Action: "call.monitor_end",
		Object: "call:" + c.id, Reason: fmt.Sprintf("mode=%s duration_s=%.1f", endMode, took.Seconds())}); err != nil {
		logger.Error("monitor end not audited", zap.Error(err))
	}
	logger.Info("supervisor left the call", zap.Duration("monitored", took.Round(time.Millisecond)))
}

// registrationCheck is how often a supervisor on a call must still have a
// registered phone: a dismissal removes his registrations at once
// (Registrations.RemoveManager, on any node), and so ends his listening.
const registrationCheck = 2 * time.Second

// monitorUntilGone waits until the supervisor hangs up (gone), the call
// ends, the node stops, or he no longer has a registered phone.
func (cc *callControl) monitorUntilGone(ms *monitorSession, gone <-chan struct{}) {
	c := ms.call
	t := time.NewTicker(registrationCheck)
	defer t.Stop()
	for {
		select {
		case <-gone:
			return
		case <-c.done:
			return
		case <-c.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(c.ctx, registrationCheck)
			regs, err := cc.regs.Contacts(ctx, ms.supervisorID)
			cancel()
			// An error (NATS away) keeps him on: the check is for a
			// cut-off, which empties his registrations.
			if err == nil && len(regs) == 0 {
				c.logger.Info("the supervisor has no registered phone any more (dismissed?); his leg ends",
					zap.String("supervisor_id", ms.supervisorID))
				return
			}
		}
	}
}

// g711Of is the first G.711 codec of an answer.
func g711Of(codecs []media.Codec) (media.Codec, bool) {
	for _, c := range codecs {
		if c.Name == media.PCMU.Name || c.Name == media.PCMA.Name {
			return c, true
		}
	}
	return media.Codec{}, false
}

// monitorWording is what a supervisor's phone shows for the call he is
// about to listen in on, in his language.
func (cc *callControl) monitorWording(ctx context.Context, supervisorID string) func(string) string {
	lang := cc.cfg.Language
	if ps, err := cc.cfg.Router.Store.Settings(ctx, supervisorID); err == nil && i18n.Supported(ps.Language) {
		lang = ps.Language
	}
	l := i18n.Get(lang)
	return func(client string) string { return l.T("monitor.phone", "Client", client) }
}
