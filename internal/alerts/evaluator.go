package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Thresholds are the rules' parameters (flags --alert-*).
type Thresholds struct {
	// client_quiet: a client with at least QuietMinCalls calls in
	// QuietWindow and no call for longer than QuietFactor times his median
	// gap between calls, while his primary manager is active.
	QuietMinCalls int
	QuietWindow   time.Duration
	QuietFactor   float64
	// manager_drop: a manager's calls with clients in the last 7 days fell
	// by more than DropPercent against the 7 days before, which had at
	// least DropMinCalls.
	DropPercent  int
	DropMinCalls int
	// access_burst: BurstCount or more card views, exports or reveals by
	// one actor within BurstWindow.
	BurstCount  int
	BurstWindow time.Duration
}

// DefaultThresholds are the flags' defaults.
var DefaultThresholds = Thresholds{QuietMinCalls: 4, QuietWindow: 60 * 24 * time.Hour, QuietFactor: 3,
	DropPercent: 50, DropMinCalls: 10, BurstCount: 20, BurstWindow: 10 * time.Minute}

// Audit actions the access rules read.
var (
	// BurstActions: a client card opened, an export, a reveal.
	BurstActions = []string{"client.view", "client.export", "client.reveal", "client.data_export", "client.data_export_audio"}
	// OffHoursActions: a call refused because it was started outside the
	// segment's working hours.
	OffHoursActions = []string{"call.outside_hours"}
	// DismissedActions: a dismissed manager's credentials tried (web
	// sign-in failures count when their reason is "dismissed").
	DismissedActions = []string{"sip.dismissed_auth", "api.dismissed_token"}
)

// withDefaults fills every zero field from DefaultThresholds.
func (t Thresholds) withDefaults() Thresholds {
	d := DefaultThresholds
	orInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	orDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	orInt(&t.QuietMinCalls, d.QuietMinCalls)
	orInt(&t.DropPercent, d.DropPercent)
	orInt(&t.DropMinCalls, d.DropMinCalls)
	orInt(&t.BurstCount, d.BurstCount)
	orDur(&t.QuietWindow, d.QuietWindow)
	orDur(&t.BurstWindow, d.BurstWindow)
	if t.QuietFactor == 0 {
		t.QuietFactor = d.QuietFactor
	}
	return t
}

// Lease makes one node of a cluster evaluate at a time (recorder.Lease).
type Lease interface {
	Acquire(ctx context.Context) (bool, error)
	Release(ctx context.Context) error
}

// Config wires an Evaluator.
type Config struct {
	Store *storage.Store
	// Keys opens the webhooks' signing secrets.
	Keys *masking.Keyring
	// Publish sends an alert on NATS; nil publishes nothing.
	Publish func(subject string, data []byte) error
	// Lease, if set, is taken before every pass; nil: this process alone.
	Lease Lease
	// Location is the company's time zone for segments' working hours.
	Location   *time.Location
	Thresholds Thresholds
	// Interval between passes (default 15s); SweepEvery between runs of the
	// client_quiet and manager_drop rules (default 15m).
	Interval, SweepEvery time.Duration
	Webhooks             WebhookPolicy
	// Now is the clock of the rules (default time.Now).
	Now    func() time.Time
	Logger *zap.Logger
}

// WebhookPolicy bounds the POSTs of alerts to webhooks.
type WebhookPolicy struct {
	// Tries before a delivery becomes a dead letter (default 5).
	Tries int
	// Backoff is the wait after the first failure, doubled after each next
	// one (default 30s: 30s, 1m, 2m, 4m).
	Backoff time.Duration
	// Timeout of one POST (default 10s).
	Timeout time.Duration
	Client  *http.Client
}

// cursorName is the evaluator's row in alert_cursors.
const cursorName = "evaluator"

// Evaluator runs the rules over new audit rows and CDRs, and delivers.
type Evaluator struct {
	cfg    Config
	store  *storage.Store
	logger *zap.Logger
	// leader is set while this process held the lease at its last pass.
	leader atomic.Bool

	mu        sync.Mutex // guards lastSweep
	lastSweep time.Time
}

// New builds an Evaluator, filling defaults.
func New(cfg Config) *Evaluator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 15 * time.Second
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 15 * time.Minute
	}
	cfg.Thresholds = cfg.Thresholds.withDefaults()
	w := &cfg.Webhooks
	if w.Tries <= 0 {
		w.Tries = 5
	}
	if w.Backoff <= 0 {
		w.Backoff = 30 * time.Second
	}
	if w.Timeout <= 0 {
		w.Timeout = 10 * time.Second
	}
	if w.Client == nil {
		w.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Evaluator{cfg: cfg, store: cfg.Store, logger: cfg.Logger}
}

// Run evaluates and delivers until ctx ends, on the node holding the lease.
func (e *Evaluator) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	defer func() {
		if e.cfg.Lease != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = e.cfg.Lease.Release(rctx)
		}
	}()
	for {
		if e.holdsLease(ctx) {
			if err := e.Evaluate(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("alert evaluation failed", zap.Error(err))
			}
			if err := e.Deliver(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("webhook delivery failed", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (e *Evaluator) holdsLease(ctx context.Context) bool {
	ok := true
	if e.cfg.Lease != nil {
		var err error
		if ok, err = e.cfg.Lease.Acquire(ctx); err != nil && ctx.Err() == nil {
			e.logger.Warn("alert lease", zap.Error(err))
		}
	}
	e.leader.Store(ok)
	return ok
}

// CallEndedIfLeader is CallEnded on the node that evaluates (it held the
// lease at its last pass); elsewhere it does nothing.
func (e *Evaluator) CallEndedIfLeader(ctx context.Context, c storage.CDR) error {
	if !e.leader.Load() {
		return nil
	}
	return e.CallEnded(ctx, c)
}

// Evaluate runs one pass: the audit rows and ended calls since the cursor,
// and, every SweepEvery, the rules over call history. A new cursor starts
// at the present: history before the first start raises nothing but the
// sweep rules.
func (e *Evaluator) Evaluate(ctx context.Context) error {
	cur, err := e.store.AlertCursor(ctx, cursorName)
	if err != nil {
		return err
	}
	if cur == (storage.AlertCursor{}) {
		if cur, err = e.startCursor(ctx); err != nil {
			return err
		}
	}
	if cur.AuditSeq, err = e.auditRules(ctx, cur.AuditSeq); err != nil {
		return err
	}
	if cur.CDRAt, err = e.callRules(ctx, cur.CDRAt); err != nil {
		return err
	}
	if err := e.store.SetAlertCursor(ctx, cursorName, cur); err != nil {
		return err
	}
	now := e.cfg.Now()
	e.mu.Lock()
	due := e.lastSweep.IsZero() || now.Sub(e.lastSweep) >= e.cfg.SweepEvery
	if due {
		e.lastSweep = now
	}
	e.mu.Unlock()
	if !due {
		return nil
	}
	if err := e.quietClients(ctx, now); err != nil {
		return err
	}
	return e.managerDrops(ctx, now)
}

func (e *Evaluator) startCursor(ctx context.Context) (storage.AlertCursor, error) {
	head, err := e.store.AuditLog(ctx, 1)
	if err != nil {
		return storage.AlertCursor{}, err
	}
	cur := storage.AlertCursor{CDRAt: time.Now()}
	if len(head) > 0 {
		cur.AuditSeq = head[0].Seq
	}
	return cur, nil
}

// raise stores an alert and, if it is new, publishes it.
func (e *Evaluator) raise(ctx context.Context, na storage.NewAlert) error {
	if na.At.IsZero() {
		na.At = e.cfg.Now()
	}
	a, raised, err := e.store.RaiseAlert(ctx, na)
	if err != nil || !raised {
		return err
	}
	e.logger.Info("alert raised", zap.String("alert_id", a.ID), zap.String("rule", a.Rule),
		zap.String("client_id", a.ClientID), zap.String("manager_id", a.ManagerID))
	if e.cfg.Publish != nil {
		body, err := json.Marshal(MessageOf(a))
		if err != nil {
			return err
		}
		if err := e.cfg.Publish(SubjectPrefix+a.Rule, body); err != nil {
			e.logger.Warn("alert not published", zap.String("alert_id", a.ID), zap.Error(err))
		}
	}
	return nil
}

// managerOfActor is the manager id in an audit actor ("manager:<id>",
// "supervisor:<id>"), or "".
func managerOfActor(actor string) string {
	_, id, _ := strings.Cut(actor, ":")
	if len(id) == 36 && strings.Count(id, "-") == 4 {
		return id
	}
	return ""
}

// auditPage is how many audit rows one query reads.
const auditPage = 500

// auditRules runs the access rules over the audit rows after seq and
// returns the new cursor.
func (e *Evaluator) auditRules(ctx context.Context, seq int64) (int64, error) {
	for {
		rows, err := e.store.AuditSince(ctx, seq, auditPage)
		if err != nil || len(rows) == 0 {
			return seq, err
		}
		bursts := map[string]time.Time{} // actor -> his newest row of a burst action
		for _, r := range rows {
			switch {
			case contains(BurstActions, r.Action):
				bursts[r.Actor] = r.At
			case contains(OffHoursActions, r.Action):
				err = e.raise(ctx, storage.NewAlert{Rule: RuleOffHours, DedupKey: RuleOffHours + "|audit:" + itoa(r.Seq),
					ManagerID: managerOfActor(r.Actor), ClientID: clientOfObject(r.Object), Actor: r.Actor,
					Evidence: storage.AlertEvidence{AuditSeqs: []int64{r.Seq}}})
			case contains(DismissedActions, r.Action) || (strings.HasPrefix(r.Action, "web.signin_") && r.Reason == "dismissed"):
				err = e.dismissedLogin(ctx, r)
			}
			if err != nil {
				return seq, err
			}
			seq = r.Seq
		}
		for actor, last := range bursts {
			if err := e.accessBurst(ctx, actor, last); err != nil {
				return seq, err
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func clientOfObject(object string) string {
	if id, ok := strings.CutPrefix(object, "client:"); ok && managerOfActor("x:"+id) != "" {
		return id
	}
	return ""
}

// accessBurst raises access_burst when actor has BurstCount or more burst
// actions in the window ending at last, unless an alert about him covers
// that window already.
func (e *Evaluator) accessBurst(ctx context.Context, actor string, last time.Time) error {
	th := e.cfg.Thresholds
	from := last.Add(-th.BurstWindow)
	seqs, err := e.store.AuditSeqsOf(ctx, actor, BurstActions, from, last)
	if err != nil || len(seqs) < th.BurstCount {
		return err
	}
	prev, err := e.store.LastAlertAt(ctx, RuleAccessBurst, actor)
	if err != nil || prev.After(from) {
		return err
	}
	return e.raise(ctx, storage.NewAlert{Rule: RuleAccessBurst, DedupKey: RuleAccessBurst + "|" + actor + "|" + itoa(seqs[0]),
		ManagerID: managerOfActor(actor), Actor: actor, At: last,
		Evidence: storage.AlertEvidence{AuditSeqs: seqs,
			Figures: map[string]int64{"count": int64(len(seqs)), "window_seconds": int64(th.BurstWindow / time.Second)}}})
}

// dismissedLogin raises dismissed_login for an audited try of a dismissed
// manager's credentials, once per manager (or web username) an hour.
func (e *Evaluator) dismissedLogin(ctx context.Context, r storage.AuditEntry) error {
	managerID := ""
	if id, ok := strings.CutPrefix(r.Object, "manager:"); ok {
		managerID = managerOfActor("x:" + id)
	} else if user, ok := strings.CutPrefix(r.Object, "web_account:"); ok {
		acc, err := e.store.WebAccountByUsername(ctx, user)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		managerID = acc.Manager.ID
	}
	hour := r.At.UTC().Truncate(time.Hour).Format("2006-01-02T15")
	return e.raise(ctx, storage.NewAlert{Rule: RuleDismissedLogin, DedupKey: RuleDismissedLogin + "|" + r.Object + "|" + hour,
		ManagerID: managerID, Actor: r.Actor, At: r.At, Evidence: storage.AlertEvidence{AuditSeqs: []int64{r.Seq}}})
}
