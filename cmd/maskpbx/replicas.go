package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/pbx"
)

// replicatedStreams are the streams --nats-replicas keeps: the call events
// and the buckets of the registrations, the cluster state and the import
// reports. (RECORDINGS and LEASES have --recordings-replicas.)
var replicatedStreams = []string{events.StreamName, "KV_" + pbx.RegistrationsBucket, "KV_" + pbx.ClusterBucket,
	"KV_" + importsBucket}

// ensureReplicas raises each of replicatedStreams to want replicas where it
// has fewer (a stream is created with one, whichever node or recorder
// creates it first). It never lowers them: an operator may keep more.
func ensureReplicas(ctx context.Context, js jetstream.JetStream, want int, logger *zap.Logger) error {
	for _, name := range replicatedStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("--nats-replicas: stream %s: %w", name, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Replicas >= want {
			continue
		}
		have := max(cfg.Replicas, 1)
		cfg.Replicas = want
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("--nats-replicas %d: stream %s: %w", want, name, err)
		}
		logger.Info("stream replicated", zap.String("stream", name), zap.Int("from", have), zap.Int("replicas", want))
	}
	return nil
}
