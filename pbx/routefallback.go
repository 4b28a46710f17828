package pbx

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Routing's two reads, each from Postgres while it answers and from the
// routing cache (routecache.go) while it does not.

// routeManagers returns every manager: from Postgres (read at most
// managersTTL ago), from the cache while Postgres is down.
func (r *Router) routeManagers(ctx context.Context) ([]storage.Manager, error) {
	if r.Cache.DatabaseDown() {
		return r.Cache.managerList(), nil
	}
	storeCtx, cancel := r.storeContext(ctx)
	defer cancel()
	ms, err := r.managers.get(storeCtx, r.Store)
	if err != nil && r.Cache.fallback(ctx, err) {
		return r.Cache.managerList(), nil
	}
	return ms, err
}

// routeMobiles returns the managers' mobiles the ring plan rings, read
// fresh for every call (a dismissed manager's mobile is gone at once; the
// managers' list may be a second old). While Postgres is down no mobile
// rings: the cache does not hold them, and phones still do.
func (r *Router) routeMobiles(ctx context.Context, managers []storage.Manager) (map[string]storage.Mobile, error) {
	if r.Cache.DatabaseDown() {
		return nil, nil
	}
	storeCtx, cancel := r.storeContext(ctx)
	defer cancel()
	mobiles, err := r.Store.RingableMobiles(storeCtx, ids(managers))
	if err != nil && r.Cache.fallback(ctx, err) {
		return nil, nil
	}
	return mobiles, err
}

// callerClient returns the client who owns the caller's number, making a
// client of a caller never seen before (given to the next of newCallers in
// turn). While Postgres is down the cache answers, and a new caller's
// client is made in the cache, to be written when Postgres is back.
func (r *Router) callerClient(ctx context.Context, e164 string, newCallers []storage.Manager) (storage.Client, error) {
	if r.Cache.DatabaseDown() {
		return r.cachedCaller(ctx, e164, newCallers)
	}
	storeCtx, cancel := r.storeContext(ctx)
	defer cancel()
	client, err := r.Store.ClientByBlindIndex(storeCtx, r.Keys.IndexKeyID(), r.Keys.BlindIndex(e164))
	if errors.Is(err, storage.ErrNotFound) {
		client, err = r.createCaller(storeCtx, e164, newCallers)
	}
	if err != nil && r.Cache.fallback(ctx, err) {
		return r.cachedCaller(ctx, e164, newCallers)
	}
	return client, err
}

// routeSegment returns the rule of the client's segment: from Postgres,
// from the cache while Postgres is down. A client with no segment (or one
// nobody made) has no rule.
func (r *Router) routeSegment(ctx context.Context, name string) (masking.SegmentRule, error) {
	if name == "" {
		return masking.SegmentRule{}, nil
	}
	if r.Cache.DatabaseDown() {
		return r.Cache.segmentRule(name), nil
	}
	storeCtx, cancel := r.storeContext(ctx)
	defer cancel()
	sg, err := r.Store.SegmentByName(storeCtx, name)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return masking.SegmentRule{}, nil
	case err != nil && r.Cache.fallback(ctx, err):
		return r.Cache.segmentRule(name), nil
	case err != nil:
		return masking.SegmentRule{}, err
	}
	return segmentRule(sg), nil
}

// segmentRule is what routing needs of a segment.
func segmentRule(sg storage.Segment) masking.SegmentRule {
	rule := masking.SegmentRule{Restricted: sg.Restricted, Allowed: sg.AllowedManagers}
	if sg.OverflowToSupervisor {
		rule.Overflow = sg.SupervisorID
	}
	return rule
}

// storeContext bounds a routing read of Postgres when the cache could
// answer instead (see storeLookupBudget).
func (r *Router) storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if !r.Cache.Warm() {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, storeLookupBudget)
}

// cachedCaller is callerClient from the cache.
func (r *Router) cachedCaller(ctx context.Context, e164 string, newCallers []storage.Manager) (storage.Client, error) {
	index := r.Keys.BlindIndex(e164)
	if c, ok := r.Cache.caller(index, routedCallID(ctx)); ok {
		return c, nil
	}
	owner, err := r.nextOwner(ctx, permittedOnly(newCallers, r.Cache.segmentRule(newCallerSegment)))
	if err != nil {
		return storage.Client{}, err
	}
	phone, err := r.Keys.Seal(e164)
	if err != nil {
		return storage.Client{}, err
	}
	code, err := masking.NewClientCode()
	if err != nil {
		return storage.Client{}, err
	}
	return r.Cache.addPending(index, pendingCaller{phone: phone, client: storage.Client{
		ID: uuid.NewString(), Code: string(code), Name: newCallerName, Segment: newCallerSegment, ManagerID: owner.ID,
	}}, routedCallID(ctx)), nil
}

type routedCallKey struct{}

// withRoutedCall names the call a routing lookup is for: a caller routed
// while Postgres is down keeps his calls' ids, so their CDRs get his client
// once his row is written.
func withRoutedCall(ctx context.Context, callID string) context.Context {
	return context.WithValue(ctx, routedCallKey{}, callID)
}

func routedCallID(ctx context.Context) string {
	id, _ := ctx.Value(routedCallKey{}).(string)
	return id
}
