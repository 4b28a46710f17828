package alerts_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// Two nodes run the evaluator on one database and one NATS: the alerts
// lease lets one of them evaluate and deliver at a time (and a delivery is
// claimed in Postgres before its POST), so each alert reaches a webhook
// once; when that node stops, the other takes over.
func TestTwoNodesOneLease(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	anna := w.manager("anna")
	nc, js, err := bus.Connect(ctx, testenv.NATS(t), "alerts-test", bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	kv, err := recorder.OpenLeases(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	var posts atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { posts.Add(1) }))
	defer hook.Close()
	sealed, keyID, err := w.keys.SealSecret([]byte(alerts.NewSecret()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.CreateWebhook(ctx, storage.Webhook{URL: hook.URL, SecretCiphertext: sealed, EncKeyID: keyID}, "test"); err != nil {
		t.Fatal(err)
	}

	node := func(name string) (stop func()) {
		ev := w.evaluator(time.Now, func(c *alerts.Config) {
			c.Interval = 50 * time.Millisecond
			c.Lease = recorder.NewLease(kv, "alerts", name, 5*time.Second)
		})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = ev.Run(rctx) }()
		return func() { cancel(); <-done }
	}
	stopA := node("a")
	stopB := node("b")
	defer stopB()
	// Let both start their cursors before the rows come.
	testenv.Eventually(t, 5*time.Second, func() bool {
		c, err := w.store.AlertCursor(ctx, "evaluator")
		return err == nil && c.AuditSeq > 0
	}, "an evaluator started its cursor")

	tries := storage.NewDismissedTries(w.store, time.Millisecond)
	if _, err := tries.Record(ctx, "sip.dismissed_auth", anna.ID, "sip:192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return posts.Load() >= 1 }, "the first alert delivered")
	stopA() // releases the lease if it held it
	// Another manager's try: a new alert, delivered by whichever node holds
	// the lease now.
	bob := w.manager("bob")
	if _, err := tries.Record(ctx, "api.dismissed_token", bob.ID, "api:192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return posts.Load() >= 2 }, "the second alert delivered after node a stopped")
	// Passes go on for a while: nothing is delivered twice.
	deadline := time.Now().Add(500 * time.Millisecond)
	testenv.Eventually(t, time.Second, func() bool { return time.Now().After(deadline) }, "a few more passes")
	if n := posts.Load(); n != 2 {
		t.Fatalf("%d POSTs for 2 alerts", n)
	}
	if n := len(w.alerts(alerts.RuleDismissedLogin)); n != 2 {
		t.Fatalf("%d dismissed_login alerts, want 2", n)
	}
}
