package pbx

import (
	"cmp"
	"context"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// Session timers (RFC 4028), per leg: a provider refreshes a long call with
// re-INVITE or UPDATE every half Session-Expires and drops a call whose
// refresh goes unanswered. Each leg keeps its own timer, negotiated with its
// own peer; a refresh on one leg never reaches the other (answerMidDialog).
// When we are the refresher we send the refresh (UPDATE if the peer allows
// it, else re-INVITE with our SDP unchanged) before half the interval; a
// refresh that times out or gets 481/408 ends the call. When the peer is
// the refresher and stops refreshing, the call ends at the expiry.

// defaultMinSE is our Min-SE (RFC 4028 4: at least 90 s).
const defaultMinSE = 90 * time.Second

// minSE is the smallest Session-Expires we accept; tests lower it.
func (cc *callControl) minSE() time.Duration {
	return cmp.Or(cc.cfg.minSessionExpires, defaultMinSE)
}

// sessionTimer is one leg's session timer. Its owner is the leg; the call's
// timer goroutine (runSessionTimer) reads it, sipgo's goroutines answering
// the peer's refreshes write it: all under mu.
type sessionTimer struct {
	mu        sync.Mutex
	interval  time.Duration // Session-Expires in force; 0: no timer
	weRefresh bool
	minSE     time.Duration // the larger of ours and the peer's Min-SE
	// peerUpdate: the peer allows UPDATE, which refreshes without SDP.
	peerUpdate bool
	// peerTimer: the peer supports timer (Supported: timer); our 2xx then
	// carries Require: timer.
	peerTimer bool
	// changed wakes the timer goroutine: the peer refreshed or the terms
	// changed.
	changed chan struct{}
}

func newSessionTimer(minSE time.Duration) *sessionTimer {
	return &sessionTimer{minSE: minSE, changed: make(chan struct{}, 1)}
}

// state is the interval in force and whether we refresh.
func (st *sessionTimer) state() (time.Duration, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.interval, st.weRefresh
}

func (st *sessionTimer) wake() {
	select {
	case st.changed <- struct{}{}:
	default:
	}
}

// headerReader is a request or a response.
type headerReader interface {
	GetHeader(name string) sip.Header
	GetHeaders(name string) []sip.Header
}

// sessionExpires reads Session-Expires (or its compact form x): the
// interval and the refresher parameter ("uac", "uas" or ""). ok is false
// when there is none or it doesn't parse.
func sessionExpires(m headerReader) (interval time.Duration, refresher string, ok bool) {
	h := m.GetHeader("Session-Expires")
	if h == nil {
		h = m.GetHeader("x")
	}
	if h == nil {
		return 0, "", false
	}
	parts := strings.Split(h.Value(), ";")
	secs, err := strconv.ParseUint(strings.TrimSpace(parts[0]), 10, 32)
	if err != nil || secs == 0 {
		return 0, "", false
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "refresher") {
			refresher = strings.ToLower(strings.TrimSpace(v))
		}
	}
	return time.Duration(secs) * time.Second, refresher, true
}

// minSEOf reads Min-SE; 0 when there is none.
func minSEOf(m headerReader) time.Duration {
	h := m.GetHeader("Min-SE")
	if h == nil {
		return 0
	}
	v, _, _ := strings.Cut(h.Value(), ";")
	secs, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// hasOption reports whether a list header (Supported, Require, Allow; name
// and its compact form) names option.
func hasOption(m headerReader, option string, names ...string) bool {
	for _, name := range names {
		for _, h := range m.GetHeaders(name) {
			for _, v := range strings.Split(h.Value(), ",") {
				if strings.EqualFold(strings.TrimSpace(v), option) {
					return true
				}
			}
		}
	}
	return false
}

func supportsTimer(m headerReader) bool { return hasOption(m, "timer", "Supported", "k") }
func allowsUpdate(m headerReader) bool  { return hasOption(m, "UPDATE", "Allow") }

func seconds(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

// tooSmall answers a request whose Session-Expires is below our minimum:
// 422 with our Min-SE (RFC 4028 6). It reports whether it did.
func (cc *callControl) tooSmall(req *sip.Request, tx sip.ServerTransaction) bool {
	interval, _, ok := sessionExpires(req)
	if !ok || interval >= cc.minSE() {
		return false
	}
	respond(tx, req, 422, "Session Interval Too Small", nil, sip.NewHeader("Min-SE", seconds(cc.minSE())))
	return true
}

// admitSessionTimer refuses an INVITE whose session interval is too small;
// false means it was answered 422.
func (cc *callControl) admitSessionTimer(req *sip.Request, tx sip.ServerTransaction) bool {
	return !cc.tooSmall(req, tx)
}

// onRequest takes the peer's terms from a request we answer (an INVITE,
// re-INVITE or UPDATE, RFC 4028 9) and returns the headers of our 2xx. A
// request with Session-Expires sets the interval; its refresher is the
// peer ("uac") unless it names us or the peer doesn't support timers. A
// request without one ends a timer the peer refreshed; one we refresh
// stays, and our answer says so.
func (st *sessionTimer) onRequest(req *sip.Request) []sip.Header {
	st.mu.Lock()
	defer st.mu.Unlock()
	defer st.wake()
	st.peerTimer = supportsTimer(req)
	if req.Method == sip.INVITE && req.GetHeader("Allow") != nil {
		st.peerUpdate = allowsUpdate(req)
	}
	st.minSE = max(st.minSE, minSEOf(req))
	interval, refresher, ok := sessionExpires(req)
	switch {
	case ok:
		st.interval = max(interval, st.minSE)
		st.weRefresh = refresher == "uas" || (refresher == "" && !st.peerTimer)
	case st.weRefresh && st.interval > 0:
	default:
		st.interval, st.weRefresh = 0, false
	}
	return st.responseHeaders()
}

// responseHeaders are the headers of our 2xx to a request: the interval
// and who refreshes, seen from the peer (it sent the request: it is the
// uac); call with mu held.
func (st *sessionTimer) responseHeaders() []sip.Header {
	if st.interval == 0 {
		return []sip.Header{sip.NewHeader("Supported", "timer")}
	}
	refresher := "uac"
	if st.weRefresh {
		refresher = "uas"
	}
	hdrs := []sip.Header{
		sip.NewHeader("Supported", "timer"),
		sip.NewHeader("Session-Expires", seconds(st.interval)+";refresher="+refresher),
	}
	if st.peerTimer {
		hdrs = append(hdrs, sip.NewHeader("Require", "timer"))
	}
	return hdrs
}

// onAnswer takes the terms from the 2xx to an INVITE or refresh we sent
// (RFC 4028 7.2): with Session-Expires the named refresher refreshes
// (without a name, we: we sent the request); without one, a timer we
// started keeps running (the peer simply doesn't do timers) and none starts.
func (st *sessionTimer) onAnswer(res *sip.Response, invite bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	defer st.wake()
	if invite && res.GetHeader("Allow") != nil {
		st.peerUpdate = allowsUpdate(res)
	}
	interval, refresher, ok := sessionExpires(res)
	if !ok {
		return
	}
	st.interval = max(interval, st.minSE)
	st.weRefresh = refresher != "uas"
}

// refreshHeaders are the headers of a refresh we send.
func (st *sessionTimer) refreshHeaders() (hdrs []sip.Header, update bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return []sip.Header{
		sip.NewHeader("Supported", "timer"),
		sip.NewHeader("Session-Expires", seconds(st.interval)+";refresher=uac"),
		sip.NewHeader("Min-SE", seconds(st.minSE)),
	}, st.peerUpdate
}

// refreshable is a leg whose session timer the call runs.
type refreshable interface {
	party
	timer() *sessionTimer
	// refreshOffer is our SDP for a re-INVITE refresh: what the peer has.
	refreshOffer() []byte
}

// refreshOutcome is how one refresh we sent ended.
type refreshOutcome int

const (
	refreshed    refreshOutcome = iota
	refreshLost                 // timeout, 481, 408: the peer lost the dialog
	refreshRetry                // refused for now (491, 5xx): try again soon
)

// retryPause is the wait before a refresh the peer refused for now (491,
// 5xx) is sent again: random in 2.1–4 s, as RFC 3261 §14.1 has for a 491.
func retryPause() time.Duration {
	return 2100*time.Millisecond + time.Duration(mrand.Int64N(int64(1900*time.Millisecond)))
}

// refreshWait bounds one refresh transaction (64*T1, as any transaction).
var refreshWait = 64 * sip.T1

// runSessionTimer keeps one leg's session timer while the call is up: it
// sends our refreshes, and ends the call when a refresh fails or the peer
// stops refreshing. It is started by talk and returns when the call ends.
func (cc *callControl) runSessionTimer(c *call, side string, leg refreshable) {
	st := leg.timer()
	last := time.Now() // the last refresh, either way
	retrying := false
	var retryAt time.Time // with retrying: when to try again
	for {
		interval, weRefresh := st.state()
		var fire <-chan time.Time
		var t *time.Timer
		if interval > 0 {
			wait := interval - min(32*time.Second, interval/3) - time.Since(last) // RFC 4028 10
			if weRefresh {
				wait = interval/2 - time.Since(last)
				if retrying {
					wait = time.Until(retryAt)
				}
			}
			t = time.NewTimer(max(wait, 0))
			fire = t.C
		}
		stop := func() {
			if t != nil {
				t.Stop()
			}
		}
		select {
		case <-c.ctx.Done():
			stop()
			return
		case <-st.changed:
			stop()
			last, retrying = time.Now(), false
			continue
		case <-fire:
		}
		if !weRefresh {
			c.logger.Warn("the peer stopped refreshing the session; ending the call", zap.String("leg", side))
			c.hangup(side + lostSuffix)
			return
		}
		switch cc.sendRefresh(c.ctx, leg, c.logger) {
		case refreshed:
			last, retrying = time.Now(), false
		case refreshRetry:
			// Measured from the refusal, not from the last refresh (that
			// one is past half the interval by now): a peer answering 491
			// or 503 at once is not asked again at once.
			retrying, retryAt = true, time.Now().Add(min(interval/8, retryPause()))
			if time.Since(last) < interval-min(32*time.Second, interval/3) {
				continue
			}
			fallthrough
		case refreshLost:
			if c.ctx.Err() != nil {
				return
			}
			c.logger.Warn("a session refresh failed; ending the call", zap.String("leg", side))
			c.hangup(side + lostSuffix)
			return
		}
	}
}

// sendRefresh sends one refresh on a leg and waits for its outcome. A peer
// that refuses UPDATE (405, 501) gets a re-INVITE at once; a 422 raises the
// interval to the peer's Min-SE and tries again.
func (cc *callControl) sendRefresh(ctx context.Context, leg refreshable, logger *zap.Logger) refreshOutcome {
	st, d := leg.timer(), leg.dialog()
	for range 3 {
		hdrs, update := st.refreshHeaders()
		method := sip.INVITE
		if update {
			method = sip.UPDATE
		}
		req := d.request(method, cc.contactFor(d.transport))
		for _, h := range hdrs {
			req.AppendHeader(h)
		}
		if method == sip.INVITE {
			req.AppendHeader(sip.NewHeader("Allow", dialogAllow))
			req.AppendHeader(contentTypeSDP())
			req.SetBody(leg.refreshOffer())
		}
		res := cc.transact(ctx, req, d)
		switch {
		case res == nil:
			return refreshLost
		case res.IsSuccess():
			st.onAnswer(res, method == sip.INVITE)
			return refreshed
		case res.StatusCode == 481 || res.StatusCode == 408:
			return refreshLost
		case method == sip.UPDATE && (res.StatusCode == 405 || res.StatusCode == 501):
			st.mu.Lock()
			st.peerUpdate = false
			st.mu.Unlock()
		case res.StatusCode == 422:
			st.mu.Lock()
			st.minSE = max(st.minSE, minSEOf(res))
			st.interval = max(st.interval, st.minSE)
			st.mu.Unlock()
		default:
			logger.Info("a session refresh was refused; trying again", zap.String("method", string(method)), zap.Int("status", res.StatusCode))
			return refreshRetry
		}
	}
	return refreshRetry
}

// transact sends an in-dialog request and returns its final response (ACKed
// if it is a 2xx to an INVITE), or nil if none came in time.
func (cc *callControl) transact(ctx context.Context, req *sip.Request, d *dialog) *sip.Response {
	ctx, cancel := context.WithTimeout(ctx, refreshWait)
	defer cancel()
	// A dialog with the trunk answers its digest challenge once, as every
	// request to the trunk does (trunkauth.go).
	for tries := 0; ; tries++ {
		res := cc.transactOnce(ctx, req, d)
		if res == nil || d.auth == nil || (res.StatusCode != 401 && res.StatusCode != 407) {
			return res
		}
		answer, err := d.auth.answerChallenge(req, res)
		if err != nil || !mayRetry(tries, answer.stale) {
			cc.trunkAuthRefused(cc.logger, req.Method, res.StatusCode, err)
			return res
		}
		req = withCredentials(req, d.nextSeq(), answer.header)
	}
}

// transactOnce sends req and returns its final response (nil on none),
// acknowledging a 2xx to an INVITE.
func (cc *callControl) transactOnce(ctx context.Context, req *sip.Request, d *dialog) *sip.Response {
	tx, err := cc.clientFor(req.Transport()).TransactionRequest(ctx, req)
	if err != nil {
		return nil
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res == nil {
				return nil
			}
			if res.IsProvisional() {
				continue
			}
			if req.Method == sip.INVITE && res.IsSuccess() {
				ack := d.requestSeq(sip.ACK, req.CSeq().SeqNo, cc.contactFor(d.transport))
				_ = cc.clientFor(ack.Transport()).WriteRequest(ack)
			}
			return res
		case <-tx.Done():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// refreshSDP is our SDP towards a side as the peer last had it, for a
// refresh: same version, sendrecv.
func (c *call) refreshSDP(side media.Side, codecs []media.Codec) []byte {
	addr, version := c.localAddr(side), c.version[side].Load()
	if ours := c.crypto[side].ours; ours != nil {
		return media.BuildSDPWith(addr, c.sessionID[side], version, codecs, media.SendRecv, media.SDPOptions{Crypto: []media.Crypto{*ours}})
	}
	return media.BuildSDP(addr, c.sessionID[side], version, codecs, media.SendRecv)
}
