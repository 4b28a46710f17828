package main

import (
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// The demo's manager tokens (printed by make run, used by the README's
// click-to-call) name their manager, and seeding again (every make run)
// changes nothing.
func TestDemoTokens(t *testing.T) {
	ctx := context.Background()
	url := testenv.Database(t)
	if _, err := storage.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	store, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	keys, err := loadKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	numbers := masking.NewNormalizer("RU")
	for range 2 {
		if err := seedDemo(ctx, store, keys, numbers, domain, zap.NewNop()); err != nil {
			t.Fatal(err)
		}
	}
	for _, dm := range demoManagers {
		if dm.token == "" {
			continue
		}
		m, err := store.ManagerByToken(ctx, api.HashToken(dm.token))
		if err != nil || m.SIPUsername != dm.user || m.Role != dm.role {
			t.Errorf("token %s: %+v, %v; want %s (%s)", dm.token, m, err, dm.user, dm.role)
		}
	}
	managers, err := store.Managers(ctx)
	if err != nil || len(managers) != len(demoManagers) {
		t.Fatalf("%d managers after seeding twice (%v), want %d", len(managers), err, len(demoManagers))
	}
	clients, err := store.Clients(ctx, "")
	if err != nil || len(clients) != len(demoClients) {
		t.Fatalf("%d clients after seeding twice (%v), want %d", len(clients), err, len(demoClients))
	}
}
