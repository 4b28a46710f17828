package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/pbx"
)

// Heartbeats in the CLUSTER bucket: a node that keeps beating is never
// taken for dead however long the watchers wait; once it stops, of two
// survivors exactly one closes its calls, once.
func TestNodeWatch(t *testing.T) {
	ctx := context.Background()
	url := testenv.NATS(t)
	clock := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	var closed []string
	watcher := func(name string) *nodeWatch {
		_, js, err := bus.Connect(ctx, url, name, bus.Auth{})
		if err != nil {
			t.Fatal(err)
		}
		kv, err := pbx.OpenCluster(ctx, js, 1)
		if err != nil {
			t.Fatal(err)
		}
		return &nodeWatch{kv: kv, self: name, logger: zaptest.NewLogger(t), seen: map[string]heartbeat{},
			now: func() time.Time { return clock },
			closer: func(_ context.Context, node string) {
				mu.Lock()
				closed = append(closed, name+" closed "+node)
				mu.Unlock()
			}}
	}
	dying, b, c := watcher("node a:1"), watcher("node-b"), watcher("node-c")
	for range 5 {
		for _, w := range []*nodeWatch{dying, b, c} {
			w.beat(ctx)
		}
		b.sweep(ctx)
		c.sweep(ctx)
		clock = clock.Add(nodeDeadAfter + time.Second)
	}
	if len(closed) != 0 {
		t.Fatalf("nodes that beat were taken for dead: %v", closed)
	}
	// node a stops beating; the others go on.
	for range 3 {
		b.beat(ctx)
		c.beat(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { b.sweep(ctx) })
		wg.Go(func() { c.sweep(ctx) })
		wg.Wait()
		clock = clock.Add(nodeDeadAfter / 2)
	}
	if len(closed) != 1 || (closed[0] != "node-b closed node a:1" && closed[0] != "node-c closed node a:1") {
		t.Fatalf("closings: %v, want node a's calls closed once", closed)
	}
}
