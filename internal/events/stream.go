package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamName is the JetStream stream that holds every call event.
const StreamName = "CALLS"

// SubjectAll matches every call event.
const SubjectAll = "calls.>"

// DuplicateWindow is how long JetStream remembers an event id: a publish
// retried within it (the outbox after a reconnect) is stored once.
const DuplicateWindow = 2 * time.Minute

// MaxAge is how long events stay in the stream; consumers that are down
// longer than this lose events.
const MaxAge = 30 * 24 * time.Hour

// EnsureStream creates the CALLS stream with replicas replicas (one NATS
// server each) or brings an existing one to the current configuration,
// never with fewer replicas than it has (an operator may keep more). pbx and
// recorder both call it at start, so neither depends on the other having
// run first.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	cfg := streamConfig(replicas)
	if existing, err := js.Stream(ctx, StreamName); err == nil {
		cfg.Replicas = max(cfg.Replicas, existing.CachedInfo().Config.Replicas)
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", StreamName, err)
	}
	return s, nil
}

// OpenStream finds the CALLS stream, creating it with replicas replicas if
// there is none, but never changes an existing one: it is what a recorder
// calls, whose NATS user may not update the stream (only the PBX's may).
func OpenStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, streamConfig(replicas))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another node was quicker
			s, err = js.Stream(ctx, StreamName)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", StreamName, err)
	}
	return s, nil
}

func streamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Replicas:    max(replicas, 1),
		Name:        StreamName,
		Description: "maskpbx call events (offered, ringing, answered, ended, recording.ready)",
		Subjects:    []string{SubjectAll},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  DuplicateWindow,
		MaxAge:      MaxAge,
	}
}
