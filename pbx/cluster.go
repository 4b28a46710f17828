package pbx

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// ClusterBucket is the JetStream KV bucket of the state every node shares:
// the round-robin cursor that gives each new caller to the next manager
// whichever node takes his call, and the digest nonce key, so a nonce one
// node issued is good at another.
const ClusterBucket = "CLUSTER"

// Keys of ClusterBucket.
const (
	newCallersKey = "new-callers"      // the round-robin cursor
	nonceKeyKey   = "digest-nonce-key" // 32 random bytes, made by the first node
)

// OpenCluster opens the CLUSTER bucket, creating it with replicas replicas
// if needed (an existing bucket is used as the operator configured it:
// replicas, storage).
func OpenCluster(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, ClusterBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: ClusterBucket, Description: "maskpbx: state shared by the nodes", History: 1,
			Replicas: max(replicas, 1),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("pbx: open %s bucket: %w", ClusterBucket, err)
	}
	return kv, nil
}

// NonceKey is the digest nonce key every node signs and checks nonces with
// (Config.NonceKey): the first node to ask makes it, the others read it.
func NonceKey(ctx context.Context, kv jetstream.KeyValue) ([]byte, error) {
	for range 3 {
		e, err := kv.Get(ctx, nonceKeyKey)
		if err == nil {
			if len(e.Value()) != 32 {
				return nil, fmt.Errorf("pbx: %s.%s holds %d bytes, want 32", ClusterBucket, nonceKeyKey, len(e.Value()))
			}
			return e.Value(), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("pbx: nonce key: %w", err)
		}
		key := make([]byte, 32)
		_, _ = crand.Read(key)
		if _, err := kv.Create(ctx, nonceKeyKey, key); err == nil {
			return key, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("pbx: nonce key: %w", err)
		}
		// Another node made it first: read that one.
	}
	return nil, errors.New("pbx: nonce key: not readable after it was made")
}

// Cursor is the shared round-robin cursor: Next hands out 0, 1, 2, ...
// across all nodes, each value once, by compare-and-set on a KV key. When
// NATS does not answer it falls back to a counter of this node's own, so a
// new caller still gets a manager (the turn is then only per node).
type Cursor struct {
	kv     jetstream.KeyValue
	local  atomic.Uint64
	logger *zap.Logger
}

// cursorAttempts bounds the compare-and-set retries of one Next: each lost
// race means another node took a turn, so a few suffice.
const cursorAttempts = 32

// NewCursor is the round-robin cursor in kv, the CLUSTER bucket.
func NewCursor(kv jetstream.KeyValue, logger *zap.Logger) *Cursor {
	return &Cursor{kv: kv, logger: logger}
}

// Next returns the cursor's next value.
func (c *Cursor) Next(ctx context.Context) uint64 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for attempt := range cursorAttempts {
		e, err := c.kv.Get(ctx, newCallersKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err = c.kv.Create(ctx, newCallersKey, []byte("1")); err == nil {
				return 0
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another node created it first
			}
		}
		if err != nil {
			return c.fallback(err)
		}
		v, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return c.fallback(fmt.Errorf("cursor value %q: %w", e.Value(), err))
		}
		_, err = c.kv.Update(ctx, newCallersKey, []byte(strconv.FormatUint(v+1, 10)), e.Revision())
		if err == nil {
			return v
		}
		if !isWrongRevision(err) {
			return c.fallback(err)
		}
		// Lost to another node: step aside a random moment, so racers that
		// read in lockstep don't collide again and again.
		t := time.NewTimer(rand.N(time.Duration(attempt+1) * time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return c.fallback(ctx.Err())
		}
	}
	return c.fallback(errors.New("too many nodes raced for the cursor"))
}

func (c *Cursor) fallback(err error) uint64 {
	c.logger.Warn("shared round-robin cursor unavailable; this node's own turn used", zap.Error(err))
	return c.local.Add(1) - 1
}

// isWrongRevision reports whether an Update lost a race: the key moved on
// since it was read.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
