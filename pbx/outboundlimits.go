package pbx

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// outboundGate holds a manager's call-out limits: "one outgoing call at a
// time" and "at most N starts a minute". begin reserves an outgoing call
// or says why not (ErrOutboundBusy, ErrRateLimited); end gives it back.
type outboundGate interface {
	begin(managerID string, now time.Time) error
	end(managerID string)
}

// newOutboundGate is the gate cfg asks for: shared through cfg.Cluster, or
// this node's own.
func newOutboundGate(cfg CallConfig, logger *zap.Logger) outboundGate {
	local := newOutboundLimits(cmp.Or(cfg.CallsPerMinute, 10))
	if cfg.Cluster == nil || cfg.Node == "" {
		return local
	}
	return &clusterLimits{kv: cfg.Cluster, node: cfg.Node, local: local, logger: logger}
}

// outboundLimits is the gate of one node: its own memory.
type outboundLimits struct {
	mu        sync.Mutex
	perMinute int
	starts    map[string][]time.Time
	active    map[string]bool
}

func newOutboundLimits(perMinute int) *outboundLimits {
	return &outboundLimits{perMinute: perMinute, starts: map[string][]time.Time{}, active: map[string]bool{}}
}

func (l *outboundLimits) begin(managerID string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[managerID] {
		return ErrOutboundBusy
	}
	recent := l.starts[managerID][:0]
	for _, t := range l.starts[managerID] {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	if l.perMinute > 0 && len(recent) >= l.perMinute {
		l.starts[managerID] = recent
		return ErrRateLimited
	}
	l.starts[managerID] = append(recent, now)
	l.active[managerID] = true
	return nil
}

func (l *outboundLimits) end(managerID string) {
	l.mu.Lock()
	delete(l.active, managerID)
	l.mu.Unlock()
}

// undo takes back a begin at now that another gate refused.
func (l *outboundLimits) undo(managerID string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.active, managerID)
	if i := slices.Index(l.starts[managerID], now); i >= 0 {
		l.starts[managerID] = slices.Delete(l.starts[managerID], i, i+1)
	}
}

// clusterLimits is the gate shared by every node: a manager's limits hold
// whichever nodes his calls go through. His state is one key of the
// CLUSTER bucket (outboundKey), changed by compare-and-set: the node his
// outgoing call is on, and his starts in the last minute. The node's own
// gate is asked first (it orders this node's calls without a round trip);
// when NATS does not answer, the node's own gate is all there is, as with
// the round-robin cursor.
//
// An active call whose node's heartbeat is gone (the node stopped, or a
// survivor claimed it dead) no longer counts: a dead node doesn't keep its
// managers from calling out. Nor does this node's own entry when its own
// gate has none: it was left by this node's previous run.
type clusterLimits struct {
	kv     jetstream.KeyValue
	node   string
	local  *outboundLimits
	logger *zap.Logger
}

// outboundState is a manager's value under outboundKey.
type outboundState struct {
	Node   string  `json:"node,omitempty"` // the node of his outgoing call; "" for none
	Starts []int64 `json:"starts"`         // Unix ms of his starts within a minute
}

// limitsTimeout bounds the round trips of one begin or end.
const limitsTimeout = time.Second

// outboundKey is a manager's key in the CLUSTER bucket.
func outboundKey(managerID string) string { return "outbound." + hex.EncodeToString([]byte(managerID)) }

// HeartbeatKey is node's heartbeat key in the CLUSTER bucket: its name in
// hex, since a name may hold characters a key may not. A node writes it
// while it runs and deletes it when it stops; a survivor deletes it when it
// claims the node dead.
func HeartbeatKey(node string) string { return "node." + hex.EncodeToString([]byte(node)) }

func (l *clusterLimits) begin(managerID string, now time.Time) error {
	if err := l.local.begin(managerID, now); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limitsTimeout)
	defer cancel()
	err := l.reserve(ctx, managerID, now)
	switch {
	case errors.Is(err, ErrOutboundBusy) || errors.Is(err, ErrRateLimited):
		l.local.undo(managerID, now)
		return err
	case err != nil:
		l.logger.Warn("shared call-out limits unavailable; this node's own used",
			zap.String("manager_id", managerID), zap.Error(err))
	}
	return nil
}

func (l *clusterLimits) end(managerID string) {
	l.local.end(managerID)
	ctx, cancel := context.WithTimeout(context.Background(), limitsTimeout)
	defer cancel()
	err := l.change(ctx, managerID, func(st *outboundState) (bool, error) {
		if st.Node != l.node {
			return false, nil // not ours (or already cleared)
		}
		st.Node = ""
		return true, nil
	})
	if err != nil {
		l.logger.Warn("shared call-out limit not released", zap.String("manager_id", managerID), zap.Error(err))
	}
}

// reserve marks managerID's outgoing call as this node's, or says why not.
func (l *clusterLimits) reserve(ctx context.Context, managerID string, now time.Time) error {
	return l.change(ctx, managerID, func(st *outboundState) (bool, error) {
		if st.Node != "" && st.Node != l.node && l.alive(ctx, st.Node) {
			return false, ErrOutboundBusy
		}
		minuteAgo := now.Add(-time.Minute).UnixMilli()
		st.Starts = slices.DeleteFunc(st.Starts, func(ms int64) bool { return ms <= minuteAgo })
		if l.local.perMinute > 0 && len(st.Starts) >= l.local.perMinute {
			return false, ErrRateLimited
		}
		st.Node, st.Starts = l.node, append(st.Starts, now.UnixMilli())
		return true, nil
	})
}

// alive reports whether node's heartbeat is in the bucket. When the bucket
// does not answer the node counts as alive: a limit is not lifted on doubt.
func (l *clusterLimits) alive(ctx context.Context, node string) bool {
	_, err := l.kv.Get(ctx, HeartbeatKey(node))
	return !errors.Is(err, jetstream.ErrKeyNotFound)
}

// change applies edit to managerID's state by compare-and-set, reading
// again when another node changed it first. edit says whether it changed
// anything; its error is returned as it is.
func (l *clusterLimits) change(ctx context.Context, managerID string, edit func(*outboundState) (bool, error)) error {
	key := outboundKey(managerID)
	for range cursorAttempts {
		var st outboundState
		var rev uint64
		e, err := l.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
		}
		changed, err := edit(&st)
		if err != nil || !changed {
			return err
		}
		value, _ := json.Marshal(st)
		if rev == 0 {
			_, err = l.kv.Create(ctx, key, value)
		} else {
			_, err = l.kv.Update(ctx, key, value, rev)
		}
		if err == nil {
			return nil
		}
		if !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	}
	return errors.New("too many nodes raced for a manager's call-out limits")
}
