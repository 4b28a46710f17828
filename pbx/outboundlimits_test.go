package pbx

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// limitsNode is one node's shared call-out gate on the NATS at url, with
// its heartbeat written as a running node's is.
func limitsNode(t *testing.T, url, node string, perMinute int) *clusterLimits {
	t.Helper()
	kv := clusterKV(t, url, node)
	if _, err := kv.Put(context.Background(), HeartbeatKey(node), []byte(node)); err != nil {
		t.Fatal(err)
	}
	return &clusterLimits{kv: kv, node: node, local: newOutboundLimits(perMinute), logger: zaptest.NewLogger(t)}
}

// A manager's limits hold across nodes: his outgoing call on node A keeps
// node B from starting another, his starts on both count towards one
// minute's limit, and a dead node's call or this node's previous run's
// doesn't keep him from calling.
func TestOutboundLimitsSharedAcrossNodes(t *testing.T) {
	url := testenv.NATS(t)
	now := time.Now()
	const manager, other = "7d0f1f8e-5b0e-4c1e-9a53-2b2f6f0c0001", "7d0f1f8e-5b0e-4c1e-9a53-2b2f6f0c0002"
	a, b := limitsNode(t, url, "node-a", 3), limitsNode(t, url, "node-b", 3)

	if err := a.begin(manager, now); err != nil {
		t.Fatalf("first call on A: %v", err)
	}
	if err := b.begin(manager, now.Add(time.Second)); !errors.Is(err, ErrOutboundBusy) {
		t.Fatalf("second call on B while A's is up: %v, want ErrOutboundBusy", err)
	}
	if err := b.begin(other, now.Add(time.Second)); err != nil {
		t.Fatalf("another manager on B: %v", err)
	}
	b.end(other)
	a.end(manager)
	if err := b.begin(manager, now.Add(2*time.Second)); err != nil {
		t.Fatalf("call on B after A's ended: %v", err)
	}
	b.end(manager)
	// Two starts so far; the limit is 3 a minute whichever node counts.
	if err := a.begin(manager, now.Add(3*time.Second)); err != nil {
		t.Fatalf("third start: %v", err)
	}
	a.end(manager)
	if err := b.begin(manager, now.Add(4*time.Second)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("fourth start within a minute: %v, want ErrRateLimited", err)
	}
	// A refused start was not counted on B's own gate either.
	if got := len(b.local.starts[manager]); got != 1 {
		t.Fatalf("B's own gate holds %d starts, want 1", got)
	}
	if err := b.begin(manager, now.Add(61*time.Second)); err != nil {
		t.Fatalf("a start a minute later: %v", err)
	}

	// B dies with the call up: once a survivor has claimed it (its
	// heartbeat deleted), A may start one.
	later := now.Add(2 * time.Minute)
	if err := a.begin(manager, later); !errors.Is(err, ErrOutboundBusy) {
		t.Fatalf("call on A while B lives with one up: %v", err)
	}
	if err := a.kv.Delete(context.Background(), HeartbeatKey("node-b")); err != nil {
		t.Fatal(err)
	}
	if err := a.begin(manager, later.Add(time.Second)); err != nil {
		t.Fatalf("call on A after B was claimed dead: %v", err)
	}

	// A restarts (a fresh gate of its own) with its entry left in the
	// bucket: its previous run's call doesn't count.
	a2 := limitsNode(t, url, "node-a", 3)
	if err := a2.begin(manager, later.Add(2*time.Second)); err != nil {
		t.Fatalf("call on restarted A: %v", err)
	}
}

// Many calls started at once on two nodes for one manager: never two up
// at the same time (compare-and-set, under -race).
func TestOutboundLimitsConcurrentAcrossNodes(t *testing.T) {
	url := testenv.NATS(t)
	const manager = "7d0f1f8e-5b0e-4c1e-9a53-2b2f6f0c0003"
	nodes := []*clusterLimits{limitsNode(t, url, "node-a", 0), limitsNode(t, url, "node-b", 0)}
	var up, maxUp, started atomic.Int32
	var wg sync.WaitGroup
	for w := range 6 {
		g := nodes[w%2]
		wg.Go(func() {
			for range 15 {
				if g.begin(manager, time.Now()) != nil {
					continue
				}
				started.Add(1)
				n := up.Add(1)
				for m := maxUp.Load(); n > m && !maxUp.CompareAndSwap(m, n); m = maxUp.Load() {
				}
				up.Add(-1)
				g.end(manager)
			}
		})
	}
	wg.Wait()
	if maxUp.Load() != 1 || started.Load() == 0 {
		t.Fatalf("at most %d calls up at once (%d started), want 1", maxUp.Load(), started.Load())
	}
}

// With NATS gone, a node's own limits still hold and calls still start.
func TestOutboundLimitsWithoutNATS(t *testing.T) {
	e, users := testenv.NATSServer(t)
	url := testenv.WithCredentials(e.URL(), bus.UserPBX, users.PBX)
	const manager = "7d0f1f8e-5b0e-4c1e-9a53-2b2f6f0c0004"
	a := limitsNode(t, url, "node-a", 2)
	e.Shutdown()
	now := time.Now()
	if err := a.begin(manager, now); err != nil {
		t.Fatalf("call with NATS down: %v", err)
	}
	if err := a.begin(manager, now); !errors.Is(err, ErrOutboundBusy) {
		t.Fatalf("second call with NATS down: %v, want ErrOutboundBusy", err)
	}
	a.end(manager)
	if err := a.begin(manager, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	a.end(manager)
	if err := a.begin(manager, now.Add(2*time.Second)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third start in a minute with NATS down: %v, want ErrRateLimited", err)
	}
}
