package storage_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func newStore(t *testing.T) (*storage.Store, string) {
	t.Helper()
	ctx := context.Background()
	url := testenv.Database(t)
	applied, err := storage.Migrate(ctx, url)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if len(applied) == 0 {
		t.Fatal("migrate applied nothing on an empty database")
	}
	if again, err := storage.Migrate(ctx, url); err != nil || len(again) != 0 {
		t.Fatalf("second migrate: %v %v", again, err)
	}
	s, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, url
}

var codeSeq int

func nextCode() (string, error) { codeSeq++; return fmt.Sprintf("%08d", 10000000+codeSeq), nil }

func mkManager(t *testing.T, s *storage.Store, user string) storage.Manager {
	t.Helper()
	m, err := s.CreateManager(context.Background(), storage.NewManager{
		Name: user, SIPUsername: user, HA1MD5: "x", HA1SHA256: "y", Role: storage.RoleManager,
		TokenHash: []byte("hash-" + user),
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func phone(idx string) masking.SealedPhone {
	ct := make([]byte, 28)
	_, _ = rand.Read(ct)
	return masking.SealedPhone{Ciphertext: ct, EncKeyID: "k1", BlindIndex: []byte(idx), IndexKeyID: "i1"}
}

func TestClientsAssignmentsAndDismissal(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob, carl := mkManager(t, s, "anna"), mkManager(t, s, "bob"), mkManager(t, s, "carl")

	c1, err := s.CreateClient(ctx, storage.NewClient{Name: "Acme", Phones: []masking.SealedPhone{phone("p1")},
		ManagerID: anna.ID, PartnerIDs: []string{bob.ID}, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if c1.ManagerID != anna.ID || len(c1.PartnerIDs) != 1 || c1.PartnerIDs[0] != bob.ID {
		t.Fatalf("assignment not stored: %+v", c1)
	}
	c2, err := s.CreateClient(ctx, storage.NewClient{Name: "Bolt", Phones: []masking.SealedPhone{phone("p2")},
		ManagerID: bob.ID, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("duplicate phone writes nothing", func(t *testing.T) {
		_, err := s.CreateClient(ctx, storage.NewClient{Name: "Dup", Phones: []masking.SealedPhone{phone("p9"), phone("p1")},
			ManagerID: anna.ID, NewCode: nextCode}, "test")
		if !errors.Is(err, storage.ErrDuplicatePhone) {
			t.Fatalf("err = %v, want ErrDuplicatePhone", err)
		}
		all, _ := s.Clients(ctx, "")
		if len(all) != 2 {
			t.Fatalf("half-written client: %d clients", len(all))
		}
		if _, err := s.ClientByBlindIndex(ctx, "i1", []byte("p9")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("phone of failed client was kept: %v", err)
		}
	})
	t.Run("unknown manager", func(t *testing.T) {
		for _, id := range []string{"not-a-uuid", "00000000-0000-0000-0000-000000000000"} {
			_, err := s.CreateClient(ctx, storage.NewClient{Name: "X", ManagerID: id, NewCode: nextCode}, "test")
			if !errors.Is(err, storage.ErrUnknownManager) {
				t.Fatalf("%s: err = %v", id, err)
			}
		}
	})
	t.Run("a manager lists his clients only", func(t *testing.T) {
		got, err := s.Clients(ctx, anna.ID)
		if err != nil || len(got) != 1 || got[0].ID != c1.ID {
			t.Fatalf("anna sees %+v %v", got, err)
		}
		got, _ = s.Clients(ctx, bob.ID) // partner of c1, primary of c2
		if len(got) != 2 {
			t.Fatalf("bob sees %d clients", len(got))
		}
		got, _ = s.Clients(ctx, carl.ID)
		if len(got) != 0 {
			t.Fatalf("carl sees %d clients", len(got))
		}
	})
	t.Run("blind index lookup", func(t *testing.T) {
		got, err := s.ClientByBlindIndex(ctx, "i1", []byte("p2"))
		if err != nil || got.ID != c2.ID {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("reassign keeps history", func(t *testing.T) {
		got, err := s.Reassign(ctx, c2.ID, carl.ID, []string{bob.ID}, "test")
		if err != nil || got.ManagerID != carl.ID || len(got.PartnerIDs) != 1 {
			t.Fatalf("%+v %v", got, err)
		}
		h, _ := s.AssignmentHistory(ctx, c2.ID)
		if len(h) != 3 || h[0].ValidUntil == nil || h[0].ManagerID != bob.ID {
			t.Fatalf("history %+v", h)
		}
	})
	t.Run("dismiss hands over and revokes", func(t *testing.T) {
		if _, err := s.ManagerByToken(ctx, []byte("hash-anna")); err != nil {
			t.Fatalf("token before dismissal: %v", err)
		}
		d, err := s.DismissManager(ctx, anna.ID, carl.ID, "test")
		if err != nil || d.MovedClients != 1 {
			t.Fatalf("%+v %v", d, err)
		}
		if _, err := s.ManagerByToken(ctx, []byte("hash-anna")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("dismissed token still works: %v", err)
		}
		got, _ := s.Client(ctx, c1.ID)
		if got.ManagerID != carl.ID {
			t.Fatalf("client not handed over: %+v", got)
		}
		if mine, _ := s.Clients(ctx, anna.ID); len(mine) != 0 {
			t.Fatalf("dismissed manager still has %d clients", len(mine))
		}
		h, _ := s.AssignmentHistory(ctx, c1.ID)
		if h[0].ManagerID != anna.ID || h[0].ValidUntil == nil {
			t.Fatalf("history lost the old row: %+v", h)
		}
		if _, err := s.DismissManager(ctx, anna.ID, carl.ID, "test"); !errors.Is(err, storage.ErrManagerDismissed) {
			t.Fatalf("second dismissal: %v", err)
		}
		if _, err := s.Reassign(ctx, c1.ID, anna.ID, nil, "test"); !errors.Is(err, storage.ErrUnknownManager) {
			t.Fatalf("assigned to a dismissed manager: %v", err)
		}
	})
}

func TestAuditChain(t *testing.T) {
	ctx := context.Background()
	s, url := newStore(t)
	for i := 0; i < 5; i++ {
		if err := s.Audit(ctx, storage.AuditEntry{Actor: "admin:x", Action: "client.reveal", Object: fmt.Sprint("client:", i), Reason: "why"}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.VerifyAudit(ctx)
	if err != nil || n != 5 {
		t.Fatalf("verify: %d %v", n, err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE audit_log SET reason = 'x' WHERE seq = 3`); err == nil {
		t.Fatal("audit_log accepted an UPDATE")
	}
	if _, err := conn.Exec(ctx, `DELETE FROM audit_log WHERE seq = 3`); err == nil {
		t.Fatal("audit_log accepted a DELETE")
	}
	// Someone with superuser access disables the guard and edits a row.
	if _, err := conn.Exec(ctx, `ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;
		UPDATE audit_log SET reason = 'innocent' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAudit(ctx); !errors.Is(err, storage.ErrAuditTampered) {
		t.Fatalf("tampered chain verified: %v", err)
	}
}
