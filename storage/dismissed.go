package storage

import (
	"context"
	"sync"
	"time"
)

// DismissedTries audits the tries of a dismissed manager's credentials
// (action "<channel>.dismissed_…", e.g. sip.dismissed_auth,
// api.dismissed_token) at most once per manager and channel every Every,
// so whoever replays them cannot flood the audit log. The limit is per
// process; the count of keys it remembers is bounded by the dismissed
// managers.
type DismissedTries struct {
	store *Store
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex // guards last
	last map[string]time.Time
}

// DismissedTriesEvery is the default spacing of the audit rows of one
// manager's tries on one channel.
const DismissedTriesEvery = time.Minute

// NewDismissedTries audits through s, one row per manager and channel
// every every (DismissedTriesEvery if zero).
func NewDismissedTries(s *Store, every time.Duration) *DismissedTries {
	if every <= 0 {
		every = DismissedTriesEvery
	}
	return &DismissedTries{store: s, every: every, now: time.Now, last: map[string]time.Time{}}
}

// Record audits action by the source address source (the actor, e.g.
// "sip:203.0.113.5") against managerID unless one was audited for them less
// than every ago. It reports whether a row was written.
func (d *DismissedTries) Record(ctx context.Context, action, managerID, source string) (bool, error) {
	key := action + "|" + managerID
	now := d.now()
	d.mu.Lock()
	if at, ok := d.last[key]; ok && now.Sub(at) < d.every {
		d.mu.Unlock()
		return false, nil
	}
	for k, at := range d.last {
		if now.Sub(at) >= d.every {
			delete(d.last, k)
		}
	}
	d.last[key] = now
	d.mu.Unlock()
	return true, d.store.Audit(ctx, AuditEntry{Actor: clip(source, 80), Action: action, Object: "manager:" + managerID})
}
