package pbx

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// CursorBucket is the JetStream KV bucket of the counters every node
// shares: today the round-robin cursor that gives each new caller to the
// next manager, whichever node takes his call.
const CursorBucket = "ROUTING"

// newCallersKey is the round-robin cursor's key in CursorBucket.
const newCallersKey = "new-callers"

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

// NewCursor opens the ROUTING bucket, creating it if needed (an existing
// bucket is used as the operator configured it: replicas, storage).
func NewCursor(ctx context.Context, js jetstream.JetStream, logger *zap.Logger) (*Cursor, error) {
	kv, err := js.KeyValue(ctx, CursorBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: CursorBucket, Description: "maskpbx: counters shared by the nodes", History: 1,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("pbx: open %s bucket: %w", CursorBucket, err)
	}
	return &Cursor{kv: kv, logger: logger}, nil
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
