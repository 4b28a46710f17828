package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maskpbx/maskpbx/internal/jsretry"
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
// run first. A stream already as wanted is left alone: on a NATS cluster an
// update racing the stream's creation by another node stalls both.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, created, err := findOrCreate(ctx, js, replicas)
	if err != nil || created {
		return s, err
	}
	have, want := s.CachedInfo().Config, streamConfig(replicas)
	want.Replicas = max(want.Replicas, have.Replicas)
	if sameConfig(have, want) {
		return s, nil
	}
	if s, err = js.UpdateStream(ctx, want); err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", StreamName, err)
	}
	return s, nil
}

// OpenStream finds the CALLS stream, creating it with replicas replicas if
// there is none, but never changes an existing one: it is what a recorder
// calls, whose NATS user may not update the stream (only the PBX's may).
func OpenStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, _, err := findOrCreate(ctx, js, replicas)
	return s, err
}

// findOrCreate finds the CALLS stream or creates it, saying which (each
// request retried by jsretry.Do: nodes start together).
func findOrCreate(ctx context.Context, js jetstream.JetStream, replicas int) (s jetstream.Stream, created bool, err error) {
	err = jsretry.Do(ctx, func(ctx context.Context) error {
		s, err = js.Stream(ctx, StreamName)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		s, err = js.CreateStream(ctx, streamConfig(replicas))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another node was quicker
			s, err = js.Stream(ctx, StreamName)
			return err
		}
		created = err == nil
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("events: stream %s: %w", StreamName, err)
	}
	return s, created, nil
}

// sameConfig reports whether an existing stream has every setting of want
// that EnsureStream sets (the server fills in the others).
func sameConfig(have, want jetstream.StreamConfig) bool {
	return have.Replicas == want.Replicas && have.Description == want.Description &&
		slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.Duplicates == want.Duplicates && have.MaxAge == want.MaxAge
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
