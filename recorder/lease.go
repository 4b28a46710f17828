package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maskpbx/maskpbx/internal/jsretry"
)

// LeasesBucket is the JetStream KV bucket of the leases that make a job run
// on one node of the cluster at a time (retention and erasure of recordings
// in the shared object store). The PBX's and the recorder's NATS users may
// use it; it holds no secret.
const LeasesBucket = "LEASES"

// OpenLeases opens the LEASES bucket, creating it if needed.
func OpenLeases(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := jsretry.Do(ctx, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, LeasesBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: LeasesBucket,
				Description: "maskpbx: which node runs a cluster-wide job", History: 1, Replicas: max(replicas, 1)})
			if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				kv, err = js.KeyValue(ctx, LeasesBucket)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recorder: open %s bucket: %w", LeasesBucket, err)
	}
	return kv, nil
}

// Lease is one key of the LEASES bucket held by one holder at a time until
// it expires: taking and renewing it are compare-and-set on the key's
// revision, so of two nodes racing exactly one wins. A holder that dies
// loses it TTL later.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string // node name and a random instance id
	ttl    time.Duration
}

// leaseValue is what the key holds.
type leaseValue struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// NewLease is the lease key of kv for node, held for ttl at a time.
func NewLease(kv jetstream.KeyValue, key, node string, ttl time.Duration) *Lease {
	return &Lease{kv: kv, key: key, holder: node + "/" + uuid.NewString()[:8], ttl: ttl}
}

// Acquire takes the lease, or renews it if this holder has it; it reports
// false when another holder's lease has not expired or another holder won
// the race.
func (l *Lease) Acquire(ctx context.Context) (bool, error) {
	val, err := json.Marshal(leaseValue{Holder: l.holder, Until: time.Now().Add(l.ttl)})
	if err != nil {
		return false, err
	}
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		_, err = l.kv.Create(ctx, l.key, val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return err == nil, err
	}
	if err != nil {
		return false, err
	}
	var cur leaseValue
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder != l.holder && time.Now().Before(cur.Until) {
		return false, nil
	}
	_, err = l.kv.Update(ctx, l.key, val, e.Revision())
	if lostRace(err) {
		return false, nil
	}
	return err == nil, err
}

// Release gives the lease up if this holder has it.
func (l *Lease) Release(ctx context.Context) error {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var cur leaseValue
	if json.Unmarshal(e.Value(), &cur) != nil || cur.Holder != l.holder {
		return nil
	}
	err = l.kv.Delete(ctx, l.key, jetstream.LastRevision(e.Revision()))
	if lostRace(err) {
		return nil
	}
	return err
}

// lostRace reports whether a write by revision found the key moved on.
func lostRace(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
