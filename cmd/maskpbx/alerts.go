package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// alertFlags are the --alert-* and --webhook-* flags: the rules'
// thresholds and the webhooks' retries.
type alertFlags struct {
	th       alerts.Thresholds
	interval time.Duration
	hooks    alerts.WebhookPolicy
}

func (a *alertFlags) register(fs *flag.FlagSet) {
	d := alerts.DefaultThresholds
	fs.IntVar(&a.th.QuietMinCalls, "alert-quiet-min-calls", d.QuietMinCalls, "client_quiet: a client needs this many calls in --alert-quiet-window to have a regular history")
	a.th.QuietWindow = d.QuietWindow
	fs.Var((*daysOrDuration)(&a.th.QuietWindow), "alert-quiet-window", "client_quiet: the history looked at (60d, or a duration such as 720h)")
	fs.Float64Var(&a.th.QuietFactor, "alert-quiet-factor", d.QuietFactor, "client_quiet: alert when a client's silence exceeds his median gap between calls times this")
	fs.IntVar(&a.th.DropPercent, "alert-drop-percent", d.DropPercent, "manager_drop: alert when a manager's calls with clients fall by more than this percent week over week")
	fs.IntVar(&a.th.DropMinCalls, "alert-drop-min-calls", d.DropMinCalls, "manager_drop: only for a manager with at least this many calls in the earlier week")
	fs.IntVar(&a.th.BurstCount, "alert-burst-count", d.BurstCount, "access_burst: card views, exports and reveals by one person within --alert-burst-window that raise an alert")
	fs.DurationVar(&a.th.BurstWindow, "alert-burst-window", d.BurstWindow, "access_burst: the window --alert-burst-count is counted in")
	fs.DurationVar(&a.interval, "alert-interval", 15*time.Second, "how often the alert rules read new audit rows and calls (a missed call's event alerts at once)")
	fs.IntVar(&a.hooks.Tries, "webhook-tries", 5, "POSTs of an alert to a webhook before it becomes a dead letter")
	fs.DurationVar(&a.hooks.Backoff, "webhook-backoff", 30*time.Second, "wait after a webhook's first failure, doubled after each next one")
}

// check validates the flags (preflight); a zero value takes the default.
func (a *alertFlags) check(bad func(flag, format string, args ...any)) {
	negative := func(flag string, v float64) {
		if v < 0 {
			bad(flag, "must not be negative")
		}
	}
	negative("alert-quiet-min-calls", float64(a.th.QuietMinCalls))
	negative("alert-quiet-window", float64(a.th.QuietWindow))
	negative("alert-drop-min-calls", float64(a.th.DropMinCalls))
	negative("alert-burst-count", float64(a.th.BurstCount))
	negative("alert-burst-window", float64(a.th.BurstWindow))
	negative("alert-interval", float64(a.interval))
	negative("webhook-backoff", float64(a.hooks.Backoff))
	if a.th.QuietFactor != 0 && a.th.QuietFactor < 1 {
		bad("alert-quiet-factor", "must be 1 or more")
	}
	if a.th.DropPercent < 0 || a.th.DropPercent > 100 {
		bad("alert-drop-percent", "must be 1 to 100")
	}
	if a.hooks.Tries < 0 || a.hooks.Tries > 20 {
		bad("webhook-tries", "must be 1 to 20")
	}
}

// daysOrDuration is a duration flag that also takes whole days: 60d.
type daysOrDuration time.Duration

func (d *daysOrDuration) String() string { return time.Duration(*d).String() }

func (d *daysOrDuration) Set(v string) error {
	v = strings.TrimSpace(v)
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("%q: want days (60d) or a duration (720h)", v)
		}
		*d = daysOrDuration(time.Duration(days) * 24 * time.Hour)
		return nil
	}
	p, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q: want days (60d) or a duration (720h)", v)
	}
	*d = daysOrDuration(p)
	return nil
}

// alertLeaseTTL is how long the alerts lease outlives its holder (at least;
// two --alert-interval if that is longer).
const alertLeaseTTL = 30 * time.Second

// startAlerts builds the alert evaluator of this node: it runs on the node
// holding the "alerts" lease, publishes on alerts.<rule>, and hears of
// ended calls on calls.*.ended to pass at once. stop ends the subscription.
func startAlerts(ctx context.Context, cfg Config, store *storage.Store, keys *masking.Keyring, nc *nats.Conn,
	js jetstream.JetStream, logger *zap.Logger) (ev *alerts.Evaluator, stop func(), err error) {
	loc := time.UTC
	if cfg.TimeZone != "" {
		if loc, err = time.LoadLocation(cfg.TimeZone); err != nil {
			return nil, nil, fmt.Errorf("--timezone: %w", err)
		}
	}
	kv, err := recorder.OpenLeases(ctx, js, cfg.Recordings.Replicas)
	if err != nil {
		return nil, nil, err
	}
	ev = alerts.New(alerts.Config{Store: store, Keys: keys, Location: loc, Thresholds: cfg.Alerts.th,
		Interval: cfg.Alerts.interval, Webhooks: cfg.Alerts.hooks, Logger: logger,
		// Renewed every pass: it outlives two intervals.
		Lease:   recorder.NewLease(kv, "alerts", cfg.NodeID, max(alertLeaseTTL, 2*cfg.Alerts.interval)),
		Publish: func(subject string, data []byte) error { return nc.Publish(subject, data) }})
	// A missed call alerts its segment's supervisor at once: from the
	// event, not when its CDR is read at the next pass.
	sub, err := nc.Subscribe("calls.*."+string(events.Ended), func(m *nats.Msg) {
		var e events.Event
		if json.Unmarshal(m.Data, &e) != nil || e.Direction != events.Inbound || e.Disposition == events.DispositionAnswered {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := ev.CallEndedIfLeader(cctx, storage.CDR{CallID: e.CallID, Direction: e.Direction, ClientID: e.ClientID,
			ManagerID: e.ManagerID, Disposition: e.Disposition})
		if err != nil {
			logger.Warn("alert of a missed call failed; the next pass retries", zap.String("call_id", e.CallID), zap.Error(err))
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("alerts: subscribe to call events: %w", err)
	}
	return ev, func() { _ = sub.Unsubscribe() }, nil
}

// dismissedTries audits a dismissed manager's SIP credentials tried
// (sip.dismissed_auth), rate-limited; the alert rules read the rows.
func dismissedTries(store *storage.Store, logger *zap.Logger) func(ctx context.Context, method, managerID, source string) {
	tries := storage.NewDismissedTries(store, 0)
	return func(ctx context.Context, method, managerID, source string) {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := tries.Record(actx, "sip.dismissed_auth", managerID, "sip:"+source); err != nil && !errors.Is(err, context.Canceled) {
			logger.Warn("dismissed manager's SIP try not audited", zap.String("manager_id", managerID),
				zap.String("method", method), zap.Error(err))
		}
	}
}
