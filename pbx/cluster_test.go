package pbx

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// Two nodes' cursors on one NATS, taken from concurrently: every value is
// handed out exactly once (compare-and-set), none skipped.
func TestCursorSharedAcrossNodes(t *testing.T) {
	ctx := context.Background()
	url := testenv.NATS(t)
	node := func(name string) *Cursor { return NewCursor(clusterKV(t, url, name), zaptest.NewLogger(t)) }
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

// clusterKV is one node's handle on the CLUSTER bucket of the NATS at url,
// over a connection of its own.
func clusterKV(t *testing.T, url, name string) jetstream.KeyValue {
	t.Helper()
	nc, js, err := bus.Connect(context.Background(), url, name, bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	kv, err := OpenCluster(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Two nodes starting at once get the same nonce key, so a nonce node A put
// in a 401 is good when the phone's answer reaches node B; a node with a key
// of its own refuses it.
func TestNonceKeySharedAcrossNodes(t *testing.T) {
	ctx := context.Background()
	url := testenv.NATS(t)
	keys := make([][]byte, 2)
	var wg sync.WaitGroup
	for i := range keys {
		kv := clusterKV(t, url, fmt.Sprint("node-", i))
		wg.Go(func() {
			k, err := NonceKey(ctx, kv)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	if len(keys[0]) != 32 || !bytes.Equal(keys[0], keys[1]) {
		t.Fatalf("nodes got nonce keys %x and %x", keys[0], keys[1])
	}
	auth := func(key []byte) *digestAuth {
		a, err := newDigestAuth(testDomain, []string{"MD5"}, time.Minute, &memCredentials{}, time.Now, key)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	nodeA, nodeB, alone := auth(keys[0]), auth(keys[1]), auth(nil)
	n := nodeA.newNonce()
	if _, ok := nodeB.nonceFresh(n); !ok {
		t.Fatal("node B refuses node A's nonce")
	}
	if _, ok := alone.nonceFresh(n); ok {
		t.Fatal("a node with its own key takes node A's nonce")
	}
}
