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
