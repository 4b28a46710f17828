package pbx

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// The routing cache: what routing needs (blind index → client, assignment
// and partners; the managers' status and team), kept in memory so a call in
// still routes and connects while Postgres is down. Postgres stays the
// source of truth: routing reads it while it answers, and the cache only
// answers while it does not (Router.routeManagers, Router.callerClient). It
// is loaded whole at start, follows changes made through any node's API by
// change events on NATS, and is loaded whole again when Postgres comes back
// and every cacheResync, which heals an event core NATS dropped.

// Change events: small messages with ids only, never a number or a name.
// The cache that hears one reads the row again from Postgres, except a
// dismissal, which it applies from the event itself, so a cut-off holds at
// once even while Postgres is down.
const (
	ChangeSubjects       = "changes.>"
	changeClientsPrefix  = "changes.clients."
	changeManagersPrefix = "changes.managers."
	// changeSegmentsPrefix: a segment's rules changed (or it was made or
	// deleted); the cache reads every segment again (there are few).
	changeSegmentsPrefix = "changes.segments."
)

// managerChange is the body of a changes.managers.<id> event.
type managerChange struct {
	Status string `json:"status"`
}

const (
	// cacheProbeInterval is how often Postgres is pinged while it is down.
	cacheProbeInterval = 500 * time.Millisecond
	// cacheResync is how often the whole cache is read again while
	// Postgres is up.
	cacheResync = 10 * time.Minute
	// storeLookupBudget is how long one routing read of Postgres may take
	// before the cache answers instead: a Postgres that hangs rather than
	// refuses must not eat the call's whole routeLookupTimeout.
	storeLookupBudget = time.Second
	// changeReadTimeout bounds reading a changed row again: a Postgres that
	// hangs must not stall the API request or the event handler.
	changeReadTimeout = 5 * time.Second
)

// RouteCache is the routing cache of one node. Its maps are read and
// written under mu; down is the Postgres state routing acts on.
type RouteCache struct {
	store  *storage.Store
	keys   *masking.Keyring
	nc     *nats.Conn // where change events go and come from; nil: this node only
	logger *zap.Logger

	mu       sync.RWMutex
	warm     bool
	byIndex  map[string]string // blind index → client id
	clients  map[string]cachedClient
	managers map[string]storage.Manager // credentials left out
	// segments are the segments' routing rules, by name.
	segments map[string]masking.SegmentRule
	// pending are callers first seen while Postgres was down, by blind
	// index: their client rows are written when it is back.
	pending map[string]pendingCaller
	// refill are the calls of callers written back, whose CDRs are given
	// their client once more a moment later (see writePending).
	refill []cdrRefill
	// spool is the file the pending callers are kept in too; "" none
	// (routespool.go).
	spool string

	down  atomic.Bool
	since atomic.Int64 // unix nanoseconds Postgres has been down since
	// stale says a change could not be read from Postgres: the next
	// recover loads the whole cache again.
	stale atomic.Bool
}

type cachedClient struct {
	client  storage.Client
	indexes []string
}

// pendingCaller is a new caller routed from the cache: his client exists
// only here until Postgres takes the row.
type pendingCaller struct {
	client storage.Client
	phone  masking.SealedPhone
	calls  []string // the ids of his calls so far
}

// cdrRefill is the calls of a caller written back, and when to name their
// client in their CDRs again.
type cdrRefill struct {
	clientID string
	calls    []string
	at       time.Time
}

// refillDelay is how long after a caller is written back his calls' CDRs
// are given their client a second time: the CDR writer may have checked
// for the client just before the row was written and add the CDR just
// after the first fill.
const refillDelay = 2 * time.Second

// NewRouteCache makes an empty cache; Load warms it, Run keeps it current.
func NewRouteCache(store *storage.Store, keys *masking.Keyring, nc *nats.Conn, logger *zap.Logger) *RouteCache {
	return &RouteCache{store: store, keys: keys, nc: nc, logger: logger,
		byIndex: map[string]string{}, clients: map[string]cachedClient{}, managers: map[string]storage.Manager{},
		segments: map[string]masking.SegmentRule{}, pending: map[string]pendingCaller{}}
}

// CacheStats is the cache's size and state, for /healthz and the log.
type CacheStats struct {
	Warm           bool
	DatabaseDown   bool
	Clients        int
	Managers       int
	PendingCallers int
}

// Stats returns the cache's size and state.
func (c *RouteCache) Stats() CacheStats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return CacheStats{Warm: c.warm, DatabaseDown: c.down.Load(), Clients: len(c.clients), Managers: len(c.managers),
		PendingCallers: len(c.pending)}
}

// Load reads every client's blind indexes and every manager from Postgres
// and replaces the cache with them (callers still pending stay).
func (c *RouteCache) Load(ctx context.Context) error {
	rows, err := c.store.ClientIndexes(ctx, c.keys.IndexKeyID())
	if err != nil {
		return err
	}
	ms, err := c.store.Managers(ctx)
	if err != nil {
		return err
	}
	segments, err := c.readSegments(ctx)
	if err != nil {
		return err
	}
	byIndex, clients := map[string]string{}, make(map[string]cachedClient, len(rows))
	for _, r := range rows {
		addIndex(byIndex, clients, r)
	}
	managers := make(map[string]storage.Manager, len(ms))
	for _, m := range ms {
		managers[m.ID] = routingManager(m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, m := range c.managers {
		// A dismissal is final: one an event brought while the rows were
		// read must not be undone by the older read.
		if m.Status == storage.StatusDismissed {
			if fresh, ok := managers[id]; ok {
				fresh.Status = storage.StatusDismissed
				managers[id] = fresh
			}
		}
	}
	for index, p := range c.pending {
		byIndex[index] = p.client.ID
		clients[p.client.ID] = cachedClient{client: p.client, indexes: []string{index}}
	}
	c.byIndex, c.clients, c.managers, c.segments, c.warm = byIndex, clients, managers, segments, true
	return nil
}

// readSegments reads every segment's routing rule from Postgres.
func (c *RouteCache) readSegments(ctx context.Context) (map[string]masking.SegmentRule, error) {
	segs, err := c.store.Segments(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]masking.SegmentRule, len(segs))
	for _, sg := range segs {
		out[sg.Name] = segmentRule(sg)
	}
	return out, nil
}

// segmentRule is the cached rule of the segment called name (none if
// there is no such segment).
func (c *RouteCache) segmentRule(name string) masking.SegmentRule {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.segments[name]
}

// SegmentChanged is told by the API that a segment was made, changed or
// deleted: this node's cache reads the segments again, and every other
// node's hears of it.
func (c *RouteCache) SegmentChanged(id string) {
	c.refreshSegments(context.Background())
	c.publish(changeSegmentsPrefix+id, nil)
}

// refreshSegments reads every segment's rule again.
func (c *RouteCache) refreshSegments(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, changeReadTimeout)
	defer cancel()
	segments, err := c.readSegments(ctx)
	if err != nil {
		c.logger.Warn("routing cache: segments not read again; the next load will", zap.Error(err))
		c.stale.Store(true)
		return
	}
	c.mu.Lock()
	c.segments = segments
	c.mu.Unlock()
}

func addIndex(byIndex map[string]string, clients map[string]cachedClient, r storage.ClientIndex) {
	index := string(r.BlindIndex)
	byIndex[index] = r.Client.ID
	cc := clients[r.Client.ID]
	cc.client, cc.indexes = r.Client, append(cc.indexes, index)
	clients[r.Client.ID] = cc
}

// routingManager is what routing needs of a manager: no credentials stay
// in the cache.
func routingManager(m storage.Manager) storage.Manager {
	return storage.Manager{ID: m.ID, Name: m.Name, SIPUsername: m.SIPUsername, Team: m.Team, Role: m.Role,
		Status: m.Status, CreatedAt: m.CreatedAt, DismissedAt: m.DismissedAt}
}

// Warm reports whether the cache has been loaded.
func (c *RouteCache) Warm() bool {
	if c == nil {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.warm
}

// DatabaseDown reports whether routing runs from the cache because
// Postgres does not answer.
func (c *RouteCache) DatabaseDown() bool { return c != nil && c.down.Load() }

// fallback reports whether routing should answer from the cache after
// Postgres failed it with err (a caller who hung up, a client who is not
// there, nobody to ring: those are answers, not failures), and marks
// Postgres down if so.
func (c *RouteCache) fallback(ctx context.Context, err error) bool {
	if !c.Warm() || ctx.Err() != nil || errors.Is(err, storage.ErrNotFound) || errors.Is(err, ErrNobodyToRing) {
		return false
	}
	if !c.down.Swap(true) {
		c.since.Store(time.Now().UnixNano())
		c.logger.Warn("Postgres does not answer; routing from the cache until it is back", zap.Error(err))
	}
	return true
}

// managerList is the cached managers in the order storage lists them.
func (c *RouteCache) managerList() []storage.Manager {
	c.mu.RLock()
	out := make([]storage.Manager, 0, len(c.managers))
	for _, m := range c.managers {
		out = append(out, m)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].SIPUsername < out[j].SIPUsername
	})
	return out
}

// caller returns the cached client who owns a blind index, and notes
// callID (if not "") as a call of his if he is still pending.
func (c *RouteCache) caller(index []byte, callID string) (storage.Client, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pending[string(index)]; ok && callID != "" {
		p.calls = appendCall(p.calls, callID)
		c.pending[string(index)] = p
		c.savePending()
	}
	cc, ok := c.clients[c.byIndex[string(index)]]
	return cc.client, ok
}

// addPending routes a caller nobody knows while Postgres is down: his
// client lives in the cache (a second call of his sticks to the same
// manager) until recover writes the row. A caller another call of his
// added first is that one. callID is the call being routed, "" if unknown.
func (c *RouteCache) addPending(index []byte, p pendingCaller, callID string) storage.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if first, ok := c.pending[string(index)]; ok {
		first.calls = appendCall(first.calls, callID)
		c.pending[string(index)] = first
		c.savePending()
		return first.client
	}
	if cc, ok := c.clients[c.byIndex[string(index)]]; ok {
		return cc.client // known after all: a change event came in meanwhile
	}
	p.calls = appendCall(nil, callID)
	c.pending[string(index)] = p
	c.byIndex[string(index)] = p.client.ID
	c.clients[p.client.ID] = cachedClient{client: p.client, indexes: []string{string(index)}}
	c.savePending()
	return p.client
}

func appendCall(calls []string, id string) []string {
	if id == "" {
		return calls
	}
	return append(calls, id)
}

// ClientChanged is told by the API that a client was created, reassigned,
// had his partners changed or was erased: this node's cache reads him
// again, and every other node's hears of it.
func (c *RouteCache) ClientChanged(id string) {
	c.refreshClients(context.Background(), id)
	c.publish(changeClientsPrefix+id, nil)
}

// ManagerChanged is told by the API that a manager was created, changed or
// dismissed (status his status now). A dismissal is applied at once, from
// the event itself, everywhere.
func (c *RouteCache) ManagerChanged(id, status string) {
	c.applyManager(context.Background(), id, status)
	body, _ := json.Marshal(managerChange{Status: status})
	c.publish(changeManagersPrefix+id, body)
}

func (c *RouteCache) publish(subject string, body []byte) {
	if c.nc == nil {
		return
	}
	// Core NATS, at most once: a lost event is healed by the resync and by
	// Postgres, which routing reads first while it answers.
	if err := c.nc.Publish(subject, body); err != nil {
		c.logger.Warn("change event not sent", zap.String("subject", subject), zap.Error(err))
	}
}

// Run follows change events from every node, pings Postgres while it is
// down (and on its return writes the pending callers and reloads), and
// reloads every cacheResync, until ctx ends.
func (c *RouteCache) Run(ctx context.Context) error {
	if c.nc != nil {
		sub, err := c.nc.Subscribe(ChangeSubjects, func(m *nats.Msg) { c.onChange(ctx, m.Subject, m.Data) })
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	probe := time.NewTicker(cacheProbeInterval)
	defer probe.Stop()
	lastLoad := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-probe.C:
		}
		c.refillDue(ctx)
		switch {
		case c.down.Load():
			if c.recover(ctx) {
				lastLoad = time.Now()
			}
		case c.Stats().PendingCallers > 0:
			c.writePending(ctx) // what failed at recover, again
		case time.Since(lastLoad) > cacheResync:
			if err := c.Load(ctx); err != nil {
				c.logger.Warn("routing cache: resync failed", zap.Error(err))
				continue
			}
			lastLoad = time.Now()
		}
	}
}

// onChange applies a change event another node (or this one) published.
func (c *RouteCache) onChange(ctx context.Context, subject string, body []byte) {
	switch {
	case strings.HasPrefix(subject, changeClientsPrefix):
		c.refreshClients(ctx, strings.TrimPrefix(subject, changeClientsPrefix))
	case strings.HasPrefix(subject, changeSegmentsPrefix):
		c.refreshSegments(ctx)
	case strings.HasPrefix(subject, changeManagersPrefix):
		var ch managerChange
		_ = json.Unmarshal(body, &ch)
		c.applyManager(ctx, strings.TrimPrefix(subject, changeManagersPrefix), ch.Status)
	}
}

// applyManager applies a manager's change: a dismissal at once, then (and
// for any other change) the manager and the clients assigned to him read
// again. An event may only restrict without a read: a status other than
// dismissed is taken from Postgres, never from the event.
func (c *RouteCache) applyManager(ctx context.Context, id, status string) {
	var assigned []string
	c.mu.Lock()
	if m, ok := c.managers[id]; ok && status == storage.StatusDismissed {
		m.Status = storage.StatusDismissed
		c.managers[id] = m
	}
	for cid, cc := range c.clients {
		a := masking.Assignment{Primary: cc.client.ManagerID, Partners: cc.client.PartnerIDs}
		if a.MayReach(id) {
			assigned = append(assigned, cid)
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, changeReadTimeout)
	defer cancel()
	m, err := c.store.Manager(ctx, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return // not a manager id: nothing to follow
	case err != nil:
		c.logger.Warn("routing cache: manager not read again; the next load will", zap.String("manager_id", id), zap.Error(err))
		c.stale.Store(true)
		return
	}
	c.mu.Lock()
	c.managers[id] = routingManager(m)
	c.mu.Unlock()
	if len(assigned) > 0 {
		c.refreshClients(ctx, assigned...)
	}
}

// refreshClients reads clients again from Postgres and replaces what the
// cache holds of them; a client Postgres no longer has (erased) goes.
func (c *RouteCache) refreshClients(ctx context.Context, ids ...string) {
	ctx, cancel := context.WithTimeout(ctx, changeReadTimeout)
	defer cancel()
	rows, err := c.store.ClientIndexes(ctx, c.keys.IndexKeyID(), ids...)
	if err != nil {
		c.logger.Warn("routing cache: clients not read again; the next load will", zap.Int("clients", len(ids)), zap.Error(err))
		c.stale.Store(true)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		for _, index := range c.clients[id].indexes {
			if c.byIndex[index] == id {
				delete(c.byIndex, index)
			}
		}
		delete(c.clients, id)
	}
	for _, r := range rows {
		addIndex(c.byIndex, c.clients, r)
	}
}

// recover pings Postgres; once it answers it writes the callers routed
// while it was down, reloads the cache and lets routing read Postgres again.
func (c *RouteCache) recover(ctx context.Context) bool {
	ping, cancel := context.WithTimeout(ctx, storeLookupBudget)
	defer cancel()
	if err := c.store.Ping(ping); err != nil {
		return false
	}
	c.writePending(ctx)
	// Nothing changes through the API while Postgres is down, so the cache
	// is only behind if a change event could not be read (a short blip
	// under load costs no reload).
	if c.stale.Swap(false) {
		if err := c.Load(ctx); err != nil {
			c.stale.Store(true)
			c.logger.Warn("routing cache: reload after the outage failed", zap.Error(err))
			return false
		}
	}
	c.down.Store(false)
	c.logger.Info("Postgres is back; routing reads it again",
		zap.Duration("outage", time.Since(time.Unix(0, c.since.Load())).Round(time.Millisecond)))
	return true
}

// writePending writes the client rows of the callers routed while Postgres
// was down, with the ids and codes their calls already used. It is
// idempotent on the blind index: a number Postgres already knows (another
// node wrote him, or an earlier try got through) is left as it is.
func (c *RouteCache) writePending(ctx context.Context) {
	c.mu.RLock()
	pending := make(map[string]pendingCaller, len(c.pending))
	for k, p := range c.pending {
		pending[k] = p
	}
	c.mu.RUnlock()
	for index, p := range pending {
		stored, err := c.writeCaller(ctx, p)
		if err != nil && !errors.Is(err, storage.ErrUnknownManager) {
			c.logger.Warn("new caller not written yet; retried", zap.String("client_id", p.client.ID), zap.Error(err))
			continue
		}
		if err != nil {
			// His manager was dismissed meanwhile: the next call of his
			// makes him a client anew.
			c.logger.Warn("new caller dropped: his manager is gone", zap.String("client_id", p.client.ID))
		}
		c.mu.Lock()
		calls := c.pending[index].calls // with those routed since the copy
		delete(c.pending, index)
		c.savePending()
		if stored != "" && len(calls) > 0 {
			c.refill = append(c.refill, cdrRefill{clientID: stored, calls: calls, at: time.Now().Add(refillDelay)})
		}
		c.mu.Unlock()
		if stored != "" && len(calls) > 0 {
			// The CDR writer may have written his calls already, without
			// the client the database did not have then.
			if err := c.store.FillCDRClient(ctx, stored, calls); err != nil {
				c.logger.Warn("new caller's CDRs not given their client yet", zap.String("client_id", stored), zap.Error(err))
			}
		}
		c.refreshClients(ctx, p.client.ID)
		c.publish(changeClientsPrefix+p.client.ID, nil)
	}
}

// writeCaller writes a pending caller's client row unless his number has
// one already, and returns the id of the client who owns it now.
func (c *RouteCache) writeCaller(ctx context.Context, p pendingCaller) (string, error) {
	owner, err := c.store.ClientByBlindIndex(ctx, p.phone.IndexKeyID, p.phone.BlindIndex)
	if err == nil {
		return owner.ID, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	first := true
	created, err := c.store.CreateClient(ctx, storage.NewClient{
		ID: p.client.ID, Name: p.client.Name, Segment: p.client.Segment, ManagerID: p.client.ManagerID,
		Phones: []masking.SealedPhone{p.phone},
		NewCode: func() (string, error) {
			if first { // the code his call showed, unless it was taken meanwhile
				first = false
				return p.client.Code, nil
			}
			code, err := masking.NewClientCode()
			return string(code), err
		},
	}, "system:pbx")
	if errors.Is(err, storage.ErrDuplicatePhone) { // another node wrote him just now
		owner, err = c.store.ClientByBlindIndex(ctx, p.phone.IndexKeyID, p.phone.BlindIndex)
		return owner.ID, err
	}
	return created.ID, err
}

// refillDue names the client in the CDRs of written-back callers' calls a
// second time, once refillDelay has passed.
func (c *RouteCache) refillDue(ctx context.Context) {
	c.mu.Lock()
	var due []cdrRefill
	keep := c.refill[:0]
	for _, r := range c.refill {
		if time.Now().After(r.at) {
			due = append(due, r)
		} else {
			keep = append(keep, r)
		}
	}
	c.refill = keep
	c.mu.Unlock()
	for _, r := range due {
		if err := c.store.FillCDRClient(ctx, r.clientID, r.calls); err != nil {
			c.logger.Warn("new caller's CDRs not given their client", zap.String("client_id", r.clientID), zap.Error(err))
		}
	}
}

// RoutingFromCache reports whether the cache is loaded, and whether calls
// route from it now because Postgres does not answer.
func (c *RouteCache) RoutingFromCache() (warm, fromCache bool) {
	return c.Warm(), c.DatabaseDown()
}
