package pbx

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// Two nodes' cursors on one NATS, taken from concurrently: every value is
// handed out exactly once (compare-and-set), none skipped.
func TestCursorSharedAcrossNodes(t *testing.T) {
	ctx := context.Background()
	url := testenv.NATS(t)
	node := func(name string) *Cursor {
		nc, js, err := bus.Connect(ctx, url, name, bus.Auth{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		c, err := NewCursor(ctx, js, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := node("node-a"), node("node-b")
	const perWorker, workers = 50, 4
	var mu sync.Mutex
	seen := map[uint64]int{}
	var wg sync.WaitGroup
	for w := range workers {
		c := a
		if w%2 == 1 {
			c = b
		}
		wg.Go(func() {
			for range perWorker {
				v := c.Next(ctx)
				mu.Lock()
				seen[v]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for v := range uint64(perWorker * workers) {
		if seen[v] != 1 {
			t.Fatalf("value %d handed out %d times (of %d values seen)", v, seen[v], len(seen))
		}
	}
	if a.local.Load() != 0 || b.local.Load() != 0 {
		t.Fatalf("a cursor fell back to its node's own counter (%d, %d)", a.local.Load(), b.local.Load())
	}
}
