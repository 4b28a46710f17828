package main

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/console"
	"github.com/maskpbx/maskpbx/internal/logging"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx/ha1"
	"github.com/maskpbx/maskpbx/storage"
)

// Demo accounts, printed by make run. They exist only with --demo. The
// password is both the SIP and the web console password. The token is a
// fixed API token (a real one is random and shown once), so that make run
// and the README can print a manager's token for click-to-call; the admin
// uses the bootstrap token.
var demoManagers = []struct{ user, name, password, role, token string }{
	{"anna", "Anna Petrova", "anna-demo-1", storage.RoleManager, "demo-anna-token"},
	{"boris", "Boris Ivanov", "boris-demo-1", storage.RoleManager, "demo-boris-token"},
	{"sveta", "Svetlana Orlova", "sveta-demo-1", storage.RoleSupervisor, "demo-sveta-token"},
	{"admin", "Alexey Smirnov", "admin-demo-1", storage.RoleAdmin, ""},
}

var demoClients = []struct {
	name, segment, phone string
	manager              int
	partners             []int
}{
	{"Romashka LLC", "vip", "+7 916 555-01-01", 0, []int{1}},
	{"Vasily Kuznetsov", "retail", "+7 903 555-02-02", 0, nil},
	{"Severstal Trading", "wholesale", "+7 925 555-03-03", 1, nil},
}

// seedDemo creates the demo managers and clients once; a second start finds
// them and changes nothing.
func seedDemo(ctx context.Context, store *storage.Store, keys *masking.Keyring, numbers masking.Normalizer, realm string, logger *zap.Logger) error {
	ids := make([]string, len(demoManagers))
	for i, dm := range demoManagers {
		m, err := store.ManagerBySIPUsername(ctx, dm.user)
		if errors.Is(err, storage.ErrNotFound) {
			// Only managers form the sales team that a call falls back to.
			team := "sales"
			if dm.role != storage.RoleManager {
				team = "management"
			}
			m, err = store.CreateManager(ctx, storage.NewManager{
				Name: dm.name, SIPUsername: dm.user, Team: team, Role: dm.role,
				HA1MD5: ha1.MD5(dm.user, realm, dm.password), HA1SHA256: ha1.SHA256(dm.user, realm, dm.password),
			}, "system:demo")
		}
		if err != nil {
			return err
		}
		ids[i] = m.ID
		if err := seedDemoToken(ctx, store, m, dm.token); err != nil {
			return err
		}
		if _, err := store.WebAccountByUsername(ctx, dm.user); errors.Is(err, storage.ErrNotFound) && m.Status == storage.StatusActive {
			hash, err := console.HashPassword(dm.password)
			if err != nil {
				return err
			}
			if err := store.SetWebPassword(ctx, m.ID, hash, nil, "system:demo"); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	for _, dc := range demoClients {
		e164, err := numbers.Normalize(dc.phone)
		if err != nil {
			return err
		}
		if _, err := store.ClientByBlindIndex(ctx, keys.IndexKeyID(), keys.BlindIndex(e164)); err == nil {
			continue
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		phone, err := keys.Seal(e164)
		if err != nil {
			return err
		}
		var partners []string
		for _, p := range dc.partners {
			partners = append(partners, ids[p])
		}
		c, err := store.CreateClient(ctx, storage.NewClient{
			Name: dc.name, Segment: dc.segment, ManagerID: ids[dc.manager], PartnerIDs: partners,
			Phones:  []masking.SealedPhone{phone},
			NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err },
		}, "system:demo")
		if err != nil {
			return err
		}
		logger.Info("demo client created", zap.String("client", fmt.Sprintf("%s #%s", c.Name, c.Code)), logging.Phone("phone", e164))
	}
	return nil
}

// seedDemoToken gives an active demo manager his fixed API token unless he
// has it already (a data dir seeded before demo tokens existed gets it on
// the next start).
func seedDemoToken(ctx context.Context, store *storage.Store, m storage.Manager, token string) error {
	if token == "" || m.Status != storage.StatusActive {
		return nil
	}
	hash := api.HashToken(token)
	if _, err := store.ManagerByToken(ctx, hash); !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return store.AddToken(ctx, m.ID, hash)
}
