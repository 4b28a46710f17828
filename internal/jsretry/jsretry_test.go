package jsretry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDoRetriesUnansweredRequests(t *testing.T) {
	calls := 0
	err := Do(context.Background(), func(ctx context.Context) error {
		calls++
		if calls < 3 {
			<-ctx.Done() // no answer: the attempt's time runs out
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Do: %v after %d calls, want nil after 3", err, calls)
	}
	wrong := errors.New("stream config wrong")
	calls = 0
	if err := Do(context.Background(), func(context.Context) error { calls++; return wrong }); err != wrong || calls != 1 {
		t.Fatalf("an answered error: %v after %d calls, want it after 1", err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Attempt/2)
	defer cancel()
	start := time.Now()
	err = Do(ctx, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > Attempt {
		t.Fatalf("the caller's deadline: %v after %v", err, time.Since(start))
	}
}
