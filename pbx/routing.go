package pbx

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// Route is the ring plan of one inbound call: who the caller is, as a
// manager may see him, and which managers ring in which order.
type Route struct {
	ClientID   string
	ClientCode string
	ClientName string
	Steps      [][]string // manager ids, rung step by step
	// Mobiles are the corporate mobiles of the managers in Steps that the
	// ring plan rings (policy other than off), by manager id.
	Mobiles map[string]storage.Mobile
}

// Router decides who rings for a call: masking knows the rule, storage the
// clients and managers, the registrations who can ring at all.
type Router struct {
	Store   *storage.Store
	Keys    *masking.Keyring
	Numbers masking.Normalizer
	Regs    *Registrations
	// Cursor is the round-robin cursor for new callers that every node
	// shares; nil keeps one in this node.
	Cursor *Cursor
	// Cache answers routing while Postgres does not (routecache.go); nil:
	// Postgres only.
	Cache *RouteCache

	next atomic.Uint64 // this node's round-robin cursor, without Cursor

	managers managerList
}

// managersTTL is how long one read of the managers is reused across calls:
// under load every call in needs it, and a query per call would queue
// routing behind the pool. A stale list can't ring anyone it must not: only
// managers with registered phones ring, and a dismissed manager's
// registrations are removed at once; the client's assignment is read fresh
// for every call.
const managersTTL = time.Second

// managerList is the managers as last read, shared by concurrent calls; one
// call at a time reloads it (the others wait for that, or their context).
type managerList struct {
	loading chan struct{} // a token: who holds it reads the database
	mu      sync.Mutex
	list    []storage.Manager
	readAt  time.Time
}

// get returns the managers, read at most managersTTL ago.
func (l *managerList) get(ctx context.Context, store *storage.Store) ([]storage.Manager, error) {
	l.mu.Lock()
	if l.loading == nil {
		l.loading = make(chan struct{}, 1)
	}
	list, fresh, loading := l.list, time.Since(l.readAt) < managersTTL, l.loading
	l.mu.Unlock()
	if fresh {
		return list, nil
	}
	select {
	case loading <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-loading }()
	l.mu.Lock()
	list, fresh = l.list, time.Since(l.readAt) < managersTTL
	l.mu.Unlock()
	if fresh { // another call read them while this one waited
		return list, nil
	}
	list, err := store.Managers(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.list, l.readAt = list, time.Now()
	l.mu.Unlock()
	return list, nil
}

// unknownCaller is how a caller with no usable caller id is shown.
const unknownCaller = "Unknown caller"

// InboundRoute resolves the caller's number to a client (creating and
// assigning a client for a number never seen before) and returns his ring
// plan. An empty or anonymous number rings the fallback group only.
func (r *Router) InboundRoute(ctx context.Context, callerNumber string) (Route, error) {
	return r.InboundRouteForTeam(ctx, callerNumber, "")
}

// InboundRouteForTeam is InboundRoute for a call to a company number of one
// team: a new or anonymous caller rings that team (everyone, while nobody
// of it has a registered phone), and a client rings his own managers first,
// then that team. team "" is InboundRoute: a client's fallback is his
// manager's team.
func (r *Router) InboundRouteForTeam(ctx context.Context, callerNumber, team string) (Route, error) {
	managers, err := r.routeManagers(ctx)
	if err != nil {
		return Route{}, err
	}
	mobiles, err := r.routeMobiles(ctx, managers)
	if err != nil {
		return Route{}, err
	}
	registered := map[string]bool{}
	var eligible []storage.Manager
	for _, m := range managers {
		if m.Status != storage.StatusActive {
			continue
		}
		contacts, err := r.Regs.Contacts(ctx, m.ID)
		if err != nil {
			return Route{}, err
		}
		// A manager rings if a phone of his is registered or his mobile
		// rings (with policy "only" it is all he has).
		if _, mobile := mobiles[m.ID]; len(contacts) > 0 || mobile {
			registered[m.ID] = true
			eligible = append(eligible, m)
		}
	}
	isEligible := func(id string) bool { return registered[id] }
	newCallers := eligible
	if team != "" {
		var ofTeam []storage.Manager
		for _, m := range eligible {
			if m.Team == team {
				ofTeam = append(ofTeam, m)
			}
		}
		if len(ofTeam) > 0 {
			newCallers = ofTeam
		}
	}

	e164, err := r.Numbers.Normalize(callerNumber)
	if err != nil {
		// Anonymous, withheld or garbage: nobody owns this caller.
		return Route{ClientName: unknownCaller, Steps: masking.RingOrder(masking.Assignment{}, ids(newCallers), isEligible), Mobiles: mobiles}, nil
	}
	client, err := r.callerClient(ctx, e164, newCallers)
	if err != nil {
		return Route{}, err
	}
	if team == "" {
		for _, m := range managers {
			if m.ID == client.ManagerID {
				team = m.Team
			}
		}
	}
	var fallback []string
	for _, m := range eligible {
		if m.Team == team {
			fallback = append(fallback, m.ID)
		}
	}
	rule, err := r.routeSegment(ctx, client.Segment)
	if err != nil {
		return Route{}, err
	}
	a := masking.Assignment{Primary: client.ManagerID, Partners: client.PartnerIDs}
	return Route{
		ClientID: client.ID, ClientCode: client.Code, ClientName: client.Name,
		Steps: masking.RingOrderInSegment(a, fallback, rule, isEligible), Mobiles: mobiles,
	}, nil
}

// A first-time caller's client, until someone names him.
const (
	newCallerName    = "New client"
	newCallerSegment = "new"
)

// createCaller makes a client of a first-time caller and gives him to the
// next registered manager in turn. Two calls from one new number at once
// race on the blind index; the loser finds the winner's client.
func (r *Router) createCaller(ctx context.Context, e164 string, eligible []storage.Manager) (storage.Client, error) {
	rule, err := r.routeSegment(ctx, newCallerSegment)
	if err != nil {
		return storage.Client{}, err
	}
	owner, err := r.nextOwner(ctx, permittedOnly(eligible, rule))
	if err != nil {
		return storage.Client{}, err
	}
	phone, err := r.Keys.Seal(e164)
	if err != nil {
		return storage.Client{}, err
	}
	c, err := r.Store.CreateClient(ctx, storage.NewClient{
		Name: newCallerName, Segment: newCallerSegment, ManagerID: owner.ID,
		Phones:  []masking.SealedPhone{phone},
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err },
	}, "system:pbx")
	if errors.Is(err, storage.ErrDuplicatePhone) {
		return r.Store.ClientByBlindIndex(ctx, r.Keys.IndexKeyID(), r.Keys.BlindIndex(e164))
	}
	return c, err
}

// nextOwner is the manager a new caller goes to: the next of eligible in
// turn (the shared cursor).
func (r *Router) nextOwner(ctx context.Context, eligible []storage.Manager) (storage.Manager, error) {
	if len(eligible) == 0 {
		return storage.Manager{}, ErrNobodyToRing
	}
	sort.Slice(eligible, func(i, j int) bool { return eligible[i].ID < eligible[j].ID })
	return eligible[r.turn(ctx)%uint64(len(eligible))], nil
}

// permittedOnly is the managers a segment's rule lets hold its clients:
// a new caller's segment may be restricted too.
func permittedOnly(ms []storage.Manager, rule masking.SegmentRule) []storage.Manager {
	if !rule.Restricted {
		return ms
	}
	var out []storage.Manager
	for _, m := range ms {
		if slices.Contains(rule.Allowed, m.ID) {
			out = append(out, m)
		}
	}
	return out
}

// turn is the round-robin cursor's next value.
func (r *Router) turn(ctx context.Context) uint64 {
	if r.Cursor != nil {
		return r.Cursor.Next(ctx)
	}
	return r.next.Add(1) - 1
}

func ids(ms []storage.Manager) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}
