// Package jsretry retries JetStream API requests that go unanswered. On a
// NATS cluster a request about a stream or bucket another node is just
// creating can get no reply at all (the stream has no leader yet), so nodes
// that start together would each wait for it forever. It knows nothing of
// which streams maskpbx keeps.
package jsretry

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Attempt bounds one request made through Do.
const Attempt = 2 * time.Second

// Do runs op with a context bounded by Attempt, again and again while an
// attempt times out and ctx has not ended, and returns op's last error.
func Do(ctx context.Context, op func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, Attempt)
		err := op(actx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return err
		}
	}
}

// Stream looks up the stream name of a bucket that exists, asking again
// while it is not found: right after another node created the bucket, a
// server may not list its stream yet. Each attempt is bounded as Do's.
func Stream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := Do(ctx, func(ctx context.Context) (err error) {
		for {
			s, err = js.Stream(ctx, name)
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	return s, err
}
