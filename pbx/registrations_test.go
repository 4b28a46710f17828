package pbx

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// openRegistrations is NewRegistrations for a test: stopped when it ends.
func openRegistrations(t testing.TB, ctx context.Context, js jetstream.JetStream, logger *zap.Logger) (*Registrations, error) {
	t.Helper()
	r, err := NewRegistrations(ctx, js, 1, logger)
	if err == nil {
		t.Cleanup(r.Stop)
	}
	return r, err
}

func TestRegistrationsStore(t *testing.T) {
	js := runNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	regs, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if !regs.perKeyTTL {
		t.Fatal("embedded NATS supports per-key TTL, but the bucket has none")
	}
	if again, err := openRegistrations(t, ctx, js, zap.NewNop()); err != nil || !again.perKeyTTL {
		t.Fatalf("reopening the bucket: %v", err)
	}

	const other = "5d0c2a9e-0000-4000-8000-000000000099"
	hour := time.Now().Add(time.Hour)
	for _, reg := range []Registration{
		{ManagerID: aliceID, Username: "alice", Contact: "sip:b@10.0.0.2", ExpiresAt: hour},
		{ManagerID: aliceID, Username: "alice", Contact: "sip:a@10.0.0.1", ExpiresAt: hour},
		{ManagerID: other, Username: "carol", Contact: "sip:c@10.0.0.3", ExpiresAt: hour},
	} {
		if err := regs.Put(ctx, reg); err != nil {
			t.Fatalf("Put %v: %v", reg, err)
		}
	}
	contacts := func(managerID string) []string {
		t.Helper()
		list, err := regs.Contacts(ctx, managerID)
		if err != nil {
			t.Fatalf("Contacts: %v", err)
		}
		var out []string
		for _, r := range list {
			out = append(out, r.Contact)
		}
		return out
	}
	if got := contacts(aliceID); len(got) != 2 || got[0] != "sip:a@10.0.0.1" || got[1] != "sip:b@10.0.0.2" {
		t.Fatalf("Contacts = %v, want a then b", got)
	}

	// An expired binding is never returned, whether or not the server has
	// removed it yet.
	regs.now = func() time.Time { return hour.Add(time.Second) }
	if got := contacts(aliceID); len(got) != 0 {
		t.Fatalf("Contacts past ExpiresAt = %v", got)
	}
	regs.now = time.Now

	if err := regs.Remove(ctx, aliceID, "sip:b@10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	if got := contacts(aliceID); len(got) != 1 {
		t.Fatalf("after Remove: %v", got)
	}
	// Putting an already expired binding removes it.
	if err := regs.Put(ctx, Registration{ManagerID: aliceID, Contact: "sip:a@10.0.0.1", ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if got := contacts(aliceID); len(got) != 0 {
		t.Fatalf("after expired Put: %v", got)
	}

	if err := regs.RemoveManager(ctx, other); err != nil {
		t.Fatal(err)
	}
	if got := contacts(other); len(got) != 0 {
		t.Fatalf("after RemoveManager: %v", got)
	}

	for _, bad := range []string{"", "a.b", "*", ">", "a b"} {
		if err := regs.Put(ctx, Registration{ManagerID: bad, Contact: "sip:x@y", ExpiresAt: hour}); !errors.Is(err, errInvalidManagerID) {
			t.Errorf("Put with manager id %q: %v", bad, err)
		}
		if _, err := regs.Contacts(ctx, bad); !errors.Is(err, errInvalidManagerID) {
			t.Errorf("Contacts(%q): %v", bad, err)
		}
		if err := regs.RemoveManager(ctx, bad); !errors.Is(err, errInvalidManagerID) {
			t.Errorf("RemoveManager(%q): %v", bad, err)
		}
	}
}

// A refresh replaces the binding's TTL: the key outlives the first expiry.
func TestRegistrationsRefreshExtendsTTL(t *testing.T) {
	js := runNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	regs, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	reg := Registration{ManagerID: aliceID, Username: "alice", Contact: "sip:a@10.0.0.1", ExpiresAt: time.Now().Add(time.Second)}
	if err := regs.Put(ctx, reg); err != nil {
		t.Fatal(err)
	}
	reg.ExpiresAt = time.Now().Add(time.Hour)
	if err := regs.Put(ctx, reg); err != nil {
		t.Fatal(err)
	}
	// What is tested is that the first TTL passes without the key going:
	// wait it out (1 s, and the server's expiry sweep after it).
	time.Sleep(2500 * time.Millisecond)
	if keys := kvBindings(t, js, aliceID); len(keys) != 1 {
		t.Fatalf("refreshed binding gone from the bucket: %v", keys)
	}
}

func TestRegistrationKey(t *testing.T) {
	key, err := registrationKey(aliceID, "sip:alice@10.0.0.1:5060")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^` + aliceID + `\.[0-9a-f]{16}$`).MatchString(key) {
		t.Fatalf("key %q", key)
	}
	other, _ := registrationKey(aliceID, "sip:alice@10.0.0.1:5062")
	if key == other {
		t.Fatal("two contacts share a key")
	}
}

// A bucket without per-key TTL (made by an older NATS, or by hand) still
// works: reads filter on ExpiresAt.
func TestRegistrationsWithoutPerKeyTTL(t *testing.T) {
	js := runNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: RegistrationsBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	regs, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if regs.perKeyTTL {
		t.Fatal("per-key TTL on a bucket without it")
	}
	reg := Registration{ManagerID: aliceID, Contact: "sip:a@10.0.0.1", ExpiresAt: time.Now().Add(time.Minute)}
	if err := regs.Put(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if got, _ := regs.Contacts(ctx, aliceID); len(got) != 1 {
		t.Fatalf("Contacts = %v", got)
	}
	regs.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if got, _ := regs.Contacts(ctx, aliceID); len(got) != 0 {
		t.Fatalf("expired binding returned: %v", got)
	}
	regs.now = time.Now
	if err := regs.Remove(ctx, aliceID, reg.Contact); err != nil {
		t.Fatal(err)
	}
	if err := regs.Put(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if err := regs.RemoveManager(ctx, aliceID); err != nil {
		t.Fatal(err)
	}
	if keys := kvBindings(t, js, aliceID); len(keys) != 0 {
		t.Fatalf("keys left: %v", keys)
	}
}

// TestRegistrationsSeenByAnotherNode: a second node (its own Registrations
// on the same bucket) learns of bindings and of a dismissal's cut-off
// through its watcher, without a consumer per lookup.
func TestRegistrationsSeenByAnotherNode(t *testing.T) {
	js := runNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	nodeA, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	nodeB, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Now().Add(time.Hour)
	for _, c := range []string{"sip:a@10.0.0.1", "sip:b@10.0.0.2"} {
		if err := nodeA.Put(ctx, Registration{ManagerID: aliceID, Username: "alice", Contact: c, ExpiresAt: hour}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		regs, _ := nodeB.Contacts(ctx, aliceID)
		return len(regs) == 2
	}, "node B to see both bindings")
	info, err := nodeB.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := nodeB.Contacts(ctx, aliceID); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := nodeB.stream.Info(ctx); after.State.Consumers != info.State.Consumers {
		t.Fatalf("lookups opened consumers: %d -> %d", info.State.Consumers, after.State.Consumers)
	}
	if err := nodeA.RemoveManager(ctx, aliceID); err != nil {
		t.Fatal(err)
	}
	if regs, _ := nodeA.Contacts(ctx, aliceID); len(regs) != 0 {
		t.Fatalf("node A still has %d bindings right after the cut-off", len(regs))
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		regs, _ := nodeB.Contacts(ctx, aliceID)
		return len(regs) == 0
	}, "node B to drop the dismissed manager's bindings")
}

// A watch that ends under a node's feet (the NATS connection, the consumer
// or the server went away) is logged and started again, and the node's
// copy is rebuilt from it: bindings added and removed meanwhile show. Stop
// ends the watch for good.
func TestRegistrationsWatchRestarts(t *testing.T) {
	js := runNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	core, logs := observer.New(zap.InfoLevel)
	nodeA, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	nodeB, err := NewRegistrations(ctx, js, 1, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Now().Add(time.Hour)
	old := Registration{ManagerID: aliceID, Username: "alice", Contact: "sip:a@10.0.0.1", ExpiresAt: hour}
	if err := nodeA.Put(ctx, old); err != nil {
		t.Fatal(err)
	}
	contacts := func() []string {
		regs, _ := nodeB.Contacts(ctx, aliceID)
		var cs []string
		for _, r := range regs {
			cs = append(cs, r.Contact)
		}
		return cs
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(contacts()) == 1 }, "node B to see the binding")

	for range 2 { // a restarted watch survives breaking again
		nodeB.mu.RLock()
		w := nodeB.watcher
		nodeB.mu.RUnlock()
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		fresh := Registration{ManagerID: aliceID, Username: "alice", Contact: "sip:" + randomToken() + "@10.0.0.2", ExpiresAt: hour}
		if err := nodeA.Put(ctx, fresh); err != nil {
			t.Fatal(err)
		}
		if err := nodeA.Remove(ctx, aliceID, old.Contact); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, func() bool {
			cs := contacts()
			return len(cs) == 1 && cs[0] == fresh.Contact
		}, "node B to see the new binding and lose the removed one after its watch broke")
		old = fresh
	}
	ended := logs.FilterMessage("registrations watch ended; starting it again")
	if n := ended.Len(); n != 2 || ended.All()[0].Level != zap.ErrorLevel {
		t.Fatalf("%d errors logged for 2 broken watches", n)
	}

	info, err := nodeB.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodeB.Stop()
	testenv.Eventually(t, 10*time.Second, func() bool {
		after, err := nodeB.stream.Info(ctx)
		return err == nil && after.State.Consumers == info.State.Consumers-1
	}, "node B's consumer to go with Stop")
	if n := logs.FilterMessage("registrations watch ended; starting it again").Len(); n != 2 {
		t.Fatalf("Stop was taken for a broken watch (%d errors)", n)
	}
}
