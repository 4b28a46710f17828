package recorder

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// TestLease: one holder at a time; the holder renews; another takes it
// once it expired or was released, and the old holder then can't.
func TestLease(t *testing.T) {
	ctx := context.Background()
	_, _, js := objectNodes(t)
	kv, err := OpenLeases(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, b := NewLease(kv, "job", "n1", 300*time.Millisecond), NewLease(kv, "job", "n2", 300*time.Millisecond)
	take := func(l *Lease, want bool, what string) {
		t.Helper()
		if got, err := l.Acquire(ctx); err != nil || got != want {
			t.Fatalf("%s: %v %v, want %v", what, got, err, want)
		}
	}
	take(a, true, "first taker")
	take(b, false, "while held")
	take(a, true, "renewal")
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	take(b, false, "after a non-holder's release")
	var got bool
	start := time.Now()
	for !got && time.Since(start) < 5*time.Second {
		got, err = b.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !got || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("taken over after %v (%v), want once the TTL ran out", time.Since(start), got)
	}
	take(a, false, "old holder after expiry")
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	take(a, true, "after release")
}

// deleteLog is a blob store shared by two retention runners (two nodes)
// that records who deleted which key.
type deleteLog struct {
	BlobStore
	mu  *sync.Mutex
	by  map[string][]string // key -> runners that deleted it
	ord *[]string           // runner of each deletion, in order
	who string
}

func (d deleteLog) Delete(key string) error {
	d.mu.Lock()
	d.by[key] = append(d.by[key], d.who)
	*d.ord = append(*d.ord, d.who)
	d.mu.Unlock()
	return d.BlobStore.Delete(key)
}

// TestRetentionLeaseRace: two nodes' retention runs start at the same
// moment on a store they share; the lease lets one sweep: every expired
// recording's audio is deleted once, all by the same node, each round.
func TestRetentionLeaseRace(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	a, b, js := objectNodes(t)
	kv, err := OpenLeases(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	by := map[string][]string{}
	var ord []string
	runner := func(node string, blobs BlobStore) *Retention {
		return &Retention{Catalog: db.store, Blobs: deleteLog{BlobStore: blobs, mu: &mu, by: by, ord: &ord, who: node},
			MaxAge: 24 * time.Hour, Lease: NewLease(kv, "retention", node, time.Minute), Logger: testLogger(t)}
	}
	r1, r2 := runner("n1", a), runner("n2", b)
	for round := range 3 {
		var keys []string
		for i := range 150 {
			rec := storedRecording(t, db, a, db.client, []string{"n1", "n2"}[i%2], storage.RecordingComplete,
				time.Now().Add(-48*time.Hour))
			keys = append(keys, rec.BlobKey)
		}
		mu.Lock()
		ord = ord[:0]
		mu.Unlock()
		var wg sync.WaitGroup
		var n [2]int
		var errs [2]error
		gate := make(chan struct{})
		for i, r := range []*Retention{r1, r2} {
			wg.Go(func() {
				<-gate
				n[i], errs[i] = r.RunOnce(ctx)
			})
		}
		close(gate)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil || n[0]+n[1] != len(keys) {
			t.Fatalf("round %d: deleted %v, errors %v", round, n, errs)
		}
		for _, k := range keys {
			if len(by[k]) != 1 {
				t.Fatalf("round %d: %s deleted by %v", round, k, by[k])
			}
		}
		for _, w := range ord {
			if w != ord[0] {
				t.Fatalf("round %d: both nodes swept: %v", round, ord)
			}
		}
		t.Logf("round %d: %s swept %d (n1 %d, n2 %d)", round, ord[0], len(ord), n[0], n[1])
	}
}
