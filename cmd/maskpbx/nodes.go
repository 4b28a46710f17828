package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx"
)

// How nodes watch each other through the CLUSTER bucket: each writes its
// heartbeat every heartbeatEvery; a node whose heartbeat has not changed for
// nodeDeadAfter (on the watcher's own clock: no two clocks are compared) is
// dead, and the first survivor to claim it closes its calls. A call on a
// dead node is closed within nodeDeadAfter + heartbeatEvery.
const (
	heartbeatEvery = 2 * time.Second
	nodeDeadAfter  = 12 * time.Second
	heartbeatKey   = "node." // pbx.HeartbeatKey's prefix
	// recorderHeartbeatKey prefixes an external recorder's heartbeat in
	// the LEASES bucket (a recorder may not write CLUSTER).
	recorderHeartbeatKey = "recorder."
)

// nodeWatch keeps this node's heartbeat and closes the calls of dead nodes.
// The same watch, on the LEASES bucket under recorderHeartbeatKey, keeps an
// external recorder's heartbeat (beatOnly: a recorder may not list keys)
// and lets serve nodes (self empty: they only watch) recover a dead
// recorder's recordings.
type nodeWatch struct {
	kv       jetstream.KeyValue
	self     string                                 // "": watch only, no heartbeat
	prefix   string                                 // the heartbeat keys' prefix; "" is heartbeatKey
	beatOnly bool                                   // beat, never sweep
	closer   func(ctx context.Context, node string) // closes the calls node left open
	logger   *zap.Logger
	now      func() time.Time

	seen map[string]heartbeat // by key: what this node last saw
}

// heartbeat is a node's heartbeat as a watcher saw it: the KV revision and
// when the watcher first saw that revision.
type heartbeat struct {
	rev   uint64
	since time.Time
}

// key is node's heartbeat key in this watch's bucket: a serve node's is
// pbx.HeartbeatKey (the call-out limits look for it too).
func (w *nodeWatch) key(node string) string {
	if w.prefix == "" {
		return pbx.HeartbeatKey(node)
	}
	return w.prefix + hex.EncodeToString([]byte(node))
}

func (w *nodeWatch) keyPrefix() string { return cmp.Or(w.prefix, heartbeatKey) }

// run beats and sweeps until ctx ends, then takes this node's heartbeat
// away: a node that stops in order is not dead.
func (w *nodeWatch) run(ctx context.Context) error {
	if w.seen == nil {
		w.seen = map[string]heartbeat{}
	}
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		if w.self != "" {
			w.beat(ctx)
		}
		if !w.beatOnly {
			w.sweep(ctx)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if w.self != "" {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				defer cancel()
				_ = w.kv.Delete(dctx, w.key(w.self))
			}
			return nil
		}
	}
}

func (w *nodeWatch) beat(ctx context.Context) {
	bctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
	defer cancel()
	if _, err := w.kv.Put(bctx, w.key(w.self), []byte(w.self)); err != nil && ctx.Err() == nil {
		w.logger.Warn("node heartbeat not written", zap.Error(err))
	}
}

// sweep looks at every other node's heartbeat and claims the dead ones.
func (w *nodeWatch) sweep(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
	defer cancel()
	lister, err := w.kv.ListKeysFiltered(sctx, w.keyPrefix()+"*")
	if err != nil {
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	now := w.now()
	alive := map[string]bool{}
	for _, key := range keys {
		if (w.self != "" && key == w.key(w.self)) || !strings.HasPrefix(key, w.keyPrefix()) {
			continue
		}
		e, err := w.kv.Get(sctx, key)
		if err != nil {
			continue
		}
		alive[key] = true
		last, ok := w.seen[key]
		if !ok || last.rev != e.Revision() {
			w.seen[key] = heartbeat{rev: e.Revision(), since: now}
			continue
		}
		if now.Sub(last.since) < nodeDeadAfter {
			continue
		}
		// Dead. Claim it by deleting the heartbeat it last wrote: of several
		// survivors one wins; if it beat again meanwhile, nobody does.
		if err := w.kv.Delete(sctx, key, jetstream.LastRevision(e.Revision())); err != nil {
			if !errors.Is(err, context.Canceled) {
				w.logger.Debug("dead node claimed elsewhere", zap.String("node", string(e.Value())), zap.Error(err))
			}
			continue
		}
		delete(w.seen, key)
		node := string(e.Value())
		w.logger.Warn("a node stopped beating: finishing what it left", zap.String("node", node),
			zap.Duration("silent", now.Sub(last.since).Round(time.Millisecond)))
		w.closer(ctx, node)
	}
	for key := range w.seen {
		if !alive[key] {
			delete(w.seen, key)
		}
	}
}
