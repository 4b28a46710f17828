package pbx

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/jsretry"
)

// RegistrationsBucket is the JetStream KV bucket holding SIP bindings, so
// that every PBX node sees every phone.
const RegistrationsBucket = "REGISTRATIONS"

const (
	// markerTTL is how long the bucket keeps the marker the server leaves
	// when a binding expires, so a watcher on another node learns of it.
	markerTTL = time.Minute
	// fallbackMaxAge bounds how long a binding lingers in a bucket without
	// per-key TTL (NATS before 2.11); reads filter on ExpiresAt anyway.
	fallbackMaxAge = 24 * time.Hour
)

// managerIDPattern keeps a manager id to one KV key token (UUIDs fit).
var managerIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// errInvalidManagerID: a manager id that cannot be a KV key token.
var errInvalidManagerID = errors.New("pbx: invalid manager id")

// Registration is one binding of a manager's address-of-record to a
// contact URI of one of his phones.
type Registration struct {
	ManagerID string    `json:"manager_id"`
	Username  string    `json:"username"`
	Contact   string    `json:"contact"`   // the Contact URI the phone registered
	Source    string    `json:"source"`    // ip:port the REGISTER came from
	Transport string    `json:"transport"` // UDP or TCP, as received
	ExpiresAt time.Time `json:"expires_at"`
	CallID    string    `json:"call_id"`
	// CSeq of the REGISTER that wrote this binding; with CallID it orders
	// REGISTERs that overtook each other (RFC 3261 10.3 step 7).
	CSeq uint32 `json:"cseq"`
	// Node is the node whose socket the REGISTER came in on, and NodeAddr
	// where other nodes send it SIP (its UDP host:port): a call for this
	// phone taken by another node goes through it (relay.go). Empty for
	// a single node without --node.
	Node     string `json:"node,omitempty"`
	NodeAddr string `json:"node_addr,omitempty"`
}

// Registrations stores bindings in a JetStream KV bucket. Each binding is a
// key <manager_id>.<hash of contact> that the server deletes on its own when
// it expires (per-key TTL); reads also skip anything past ExpiresAt, so an
// expired binding is never returned even if the server has not yet removed it.
//
// Lookups are served from a local copy of the bucket that one long-lived
// watcher per process keeps current: a lookup per call (or per manager in a
// ring plan) must not open a JetStream consumer each time. A watch that
// ends while the Registrations live is logged and started again, and the
// copy rebuilt from it; Stop ends it.
type Registrations struct {
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	stream    jetstream.Stream
	perKeyTTL bool
	now       func() time.Time
	logger    *zap.Logger

	stopWatch context.CancelFunc // ends the watch loop (Stop)
	watchDone chan struct{}      // closed when the watch loop has ended

	mu      sync.RWMutex
	watcher jetstream.KeyWatcher               // the current watch
	cache   map[string]map[string]Registration // manager id -> KV key -> binding
	// fence holds, per manager id or KV key, the stream sequence up to
	// which its bindings were removed: a watcher update of a binding written
	// before the removal that arrives after it must not bring it back (a
	// dismissed manager's phone would ring again).
	fence map[string]uint64
}

// NewRegistrations opens the REGISTRATIONS bucket, creating it with
// replicas replicas if needed, and starts watching it; whoever creates it
// calls Stop when done. An existing bucket is used as configured (replicas,
// storage are the operator's choice); per-key TTL is used when the bucket allows it, else
// bindings live until the bucket's max age and reads filter on ExpiresAt.
func NewRegistrations(ctx context.Context, js jetstream.JetStream, replicas int, logger *zap.Logger) (*Registrations, error) {
	var kv jetstream.KeyValue
	err := jsretry.Do(ctx, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, RegistrationsBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = createRegistrationsBucket(ctx, js, replicas)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pbx: open %s bucket: %w", RegistrationsBucket, err)
	}
	stream, err := jsretry.Stream(ctx, js, "KV_"+RegistrationsBucket)
	if err != nil {
		return nil, fmt.Errorf("pbx: %s bucket stream: %w", RegistrationsBucket, err)
	}
	r := &Registrations{
		js:        js,
		kv:        kv,
		stream:    stream,
		perKeyTTL: stream.CachedInfo().Config.AllowMsgTTL,
		now:       time.Now,
		logger:    logger,
		cache:     map[string]map[string]Registration{},
		fence:     map[string]uint64{},
	}
	if err := r.watch(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Back-off between attempts to start the watch again.
const (
	rewatchMin = 100 * time.Millisecond
	rewatchMax = 10 * time.Second
)

// watch starts the loop that mirrors the bucket into r.cache and waits
// until it has delivered the bucket's current contents.
func (r *Registrations) watch(ctx context.Context) error {
	loopCtx, stop := context.WithCancel(context.Background())
	w, err := r.kv.WatchAll(loopCtx)
	if err != nil {
		stop()
		return fmt.Errorf("pbx: watch %s bucket: %w", RegistrationsBucket, err)
	}
	r.stopWatch, r.watchDone = stop, make(chan struct{})
	synced := make(chan struct{})
	go r.runWatch(loopCtx, w, synced)
	select {
	case <-synced:
		return nil
	case <-ctx.Done():
		r.Stop()
		return fmt.Errorf("pbx: watch %s bucket: %w", RegistrationsBucket, ctx.Err())
	}
}

// Stop ends the watch; lookups then answer from the last copy. Call it
// once, after the PBX stopped serving.
func (r *Registrations) Stop() {
	r.stopWatch()
	<-r.watchDone
}

// runWatch follows watches until ctx is done. A watch that ends before
// that (the NATS connection, the consumer or the server went away) is
// logged and started again with back-off: lookups must not go on silently
// from a copy nobody updates.
func (r *Registrations) runWatch(ctx context.Context, w jetstream.KeyWatcher, synced chan struct{}) {
	defer close(r.watchDone)
	var once sync.Once
	for {
		r.mu.Lock()
		r.watcher = w
		r.mu.Unlock()
		r.follow(ctx, w, func() { once.Do(func() { close(synced) }) })
		_ = w.Stop()
		if ctx.Err() != nil {
			return
		}
		r.logger.Error("registrations watch ended; starting it again")
		if w = r.rewatch(ctx); w == nil {
			return
		}
	}
}

// rewatch starts a new watch, retrying with back-off; nil once ctx is done.
func (r *Registrations) rewatch(ctx context.Context) jetstream.KeyWatcher {
	wait := rewatchMin
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		w, err := r.kv.WatchAll(ctx)
		if err == nil {
			return w
		}
		r.logger.Error("registrations watch not started again; retrying", zap.Error(err), zap.Duration("retry_in", wait))
		wait = min(2*wait, rewatchMax)
	}
}

// follow applies one watch's updates until it ends. Its first delivery
// (up to the nil marker) builds a fresh copy that then replaces r.cache
// whole: bindings removed while no watch ran must not linger.
func (r *Registrations) follow(ctx context.Context, w jetstream.KeyWatcher, synced func()) {
	cache := map[string]map[string]Registration{}
	for {
		select {
		case <-ctx.Done():
			return
		case entry, ok := <-w.Updates():
			if !ok {
				return
			}
			if entry != nil {
				r.apply(cache, entry)
				continue
			}
			r.mu.Lock()
			r.cache = cache // from now on, updates go to the live copy
			r.mu.Unlock()
			synced()
		}
	}
}

// apply folds one KV update into cache (r.cache, or the copy a new watch
// is building).
func (r *Registrations) apply(cache map[string]map[string]Registration, entry jetstream.KeyValueEntry) {
	managerID, _, _ := strings.Cut(entry.Key(), ".")
	r.mu.Lock()
	defer r.mu.Unlock()
	if entry.Operation() != jetstream.KeyValuePut {
		forgetIn(cache, managerID, entry.Key())
		return
	}
	var reg Registration
	if err := json.Unmarshal(entry.Value(), &reg); err != nil {
		return // not ours to interpret; never fail over one bad value
	}
	if entry.Revision() <= max(r.fence[managerID], r.fence[entry.Key()]) {
		return
	}
	rememberIn(cache, entry.Key(), reg)
}

// fenceOff marks everything written under name (a manager id or a key) up
// to now as removed, for apply.
func (r *Registrations) fenceOff(ctx context.Context, name string) error {
	info, err := r.stream.Info(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.fence[name] = info.State.LastSeq
	r.mu.Unlock()
	return nil
}

func (r *Registrations) remember(key string, reg Registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rememberIn(r.cache, key, reg)
}

func (r *Registrations) forget(managerID, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	forgetIn(r.cache, managerID, key)
}

func rememberIn(cache map[string]map[string]Registration, key string, reg Registration) {
	m := cache[reg.ManagerID]
	if m == nil {
		m = map[string]Registration{}
		cache[reg.ManagerID] = m
	}
	m[key] = reg
}

func forgetIn(cache map[string]map[string]Registration, managerID, key string) {
	delete(cache[managerID], key)
	if len(cache[managerID]) == 0 {
		delete(cache, managerID)
	}
}

func createRegistrationsBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket:         RegistrationsBucket,
		Replicas:       max(replicas, 1),
		Description:    "SIP bindings of managers' phones; keys expire with the binding",
		History:        1,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: markerTTL,
	}
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		cfg.LimitMarkerTTL = 0
		cfg.TTL = fallbackMaxAge
		kv, err = js.CreateKeyValue(ctx, cfg)
	}
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another node created it first.
		return js.KeyValue(ctx, RegistrationsBucket)
	}
	return kv, err
}

// registrationKey is <manager_id>.<first 16 hex of sha256(contact)>.
func registrationKey(managerID, contact string) (string, error) {
	if !managerIDPattern.MatchString(managerID) {
		return "", fmt.Errorf("%w: %q", errInvalidManagerID, managerID)
	}
	sum := sha256.Sum256([]byte(contact))
	return managerID + "." + hex.EncodeToString(sum[:])[:16], nil
}

// Put writes or refreshes a binding; it disappears at reg.ExpiresAt.
func (r *Registrations) Put(ctx context.Context, reg Registration) error {
	key, err := registrationKey(reg.ManagerID, reg.Contact)
	if err != nil {
		return err
	}
	ttl := reg.ExpiresAt.Sub(r.now())
	if ttl <= 0 {
		return r.Remove(ctx, reg.ManagerID, reg.Contact)
	}
	value, err := json.Marshal(reg)
	if err != nil {
		return fmt.Errorf("pbx: encode registration: %w", err)
	}
	if !r.perKeyTTL {
		if _, err := r.kv.Put(ctx, key, value); err != nil {
			return fmt.Errorf("pbx: put registration: %w", err)
		}
		r.remember(key, reg)
		return nil
	}
	// KeyValue.Put takes no TTL and Create refuses an existing key, so a
	// refresh publishes the KV message itself: same subject, new value, new
	// Nats-TTL, replacing the old binding in one step.
	msg := &nats.Msg{Subject: "$KV." + RegistrationsBucket + "." + key, Data: value}
	if _, err := r.js.PublishMsg(ctx, msg,
		jetstream.WithMsgTTL(ceilSeconds(ttl)), jetstream.WithExpectStream("KV_"+RegistrationsBucket)); err != nil {
		return fmt.Errorf("pbx: put registration: %w", err)
	}
	r.remember(key, reg)
	return nil
}

// Remove deletes one binding of a manager.
func (r *Registrations) Remove(ctx context.Context, managerID, contact string) error {
	key, err := registrationKey(managerID, contact)
	if err != nil {
		return err
	}
	var opts []jetstream.KVDeleteOpt
	if r.perKeyTTL {
		opts = append(opts, jetstream.PurgeTTL(markerTTL))
	}
	if err := r.kv.Purge(ctx, key, opts...); err != nil {
		return fmt.Errorf("pbx: remove registration: %w", err)
	}
	if err := r.fenceOff(ctx, key); err != nil {
		return fmt.Errorf("pbx: remove registration: %w", err)
	}
	r.forget(managerID, key)
	return nil
}

// RemoveManager deletes all bindings of a manager at once, so a dismissed
// manager's phones stop ringing. One stream purge removes every binding
// (also any this node has not seen yet); then a purge marker per known key
// tells the other nodes' watchers. Deactivate his SIP credentials first, or
// a phone may register again right after.
func (r *Registrations) RemoveManager(ctx context.Context, managerID string) error {
	if !managerIDPattern.MatchString(managerID) {
		return fmt.Errorf("%w: %q", errInvalidManagerID, managerID)
	}
	r.mu.Lock()
	keys := make([]string, 0, len(r.cache[managerID]))
	for k := range r.cache[managerID] {
		keys = append(keys, k)
	}
	delete(r.cache, managerID)
	r.mu.Unlock()
	subject := "$KV." + RegistrationsBucket + "." + managerID + ".*"
	if err := r.stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("pbx: remove registrations of manager: %w", err)
	}
	var opts []jetstream.KVDeleteOpt
	if r.perKeyTTL {
		opts = append(opts, jetstream.PurgeTTL(markerTTL))
	}
	for _, k := range keys {
		if err := r.kv.Purge(ctx, k, opts...); err != nil {
			return fmt.Errorf("pbx: remove registrations of manager: %w", err)
		}
	}
	if err := r.fenceOff(ctx, managerID); err != nil {
		return fmt.Errorf("pbx: remove registrations of manager: %w", err)
	}
	r.mu.Lock()
	delete(r.cache, managerID) // what the watcher brought back meanwhile
	r.mu.Unlock()
	return nil
}

// Contacts returns the unexpired bindings of a manager, ordered by contact.
func (r *Registrations) Contacts(ctx context.Context, managerID string) ([]Registration, error) {
	if !managerIDPattern.MatchString(managerID) {
		return nil, fmt.Errorf("%w: %q", errInvalidManagerID, managerID)
	}
	now := r.now()
	r.mu.RLock()
	regs := make([]Registration, 0, len(r.cache[managerID]))
	for _, reg := range r.cache[managerID] {
		if reg.ExpiresAt.After(now) {
			regs = append(regs, reg)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(regs, func(a, b Registration) int { return strings.Compare(a.Contact, b.Contact) })
	return regs, nil
}

// ceilSeconds rounds up to whole seconds, the resolution of Nats-TTL.
func ceilSeconds(d time.Duration) time.Duration {
	s := (d + time.Second - 1) / time.Second * time.Second
	return max(s, time.Second)
}
