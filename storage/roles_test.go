package storage_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

func asRole(t *testing.T, dbURL, role string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

// TestServiceRoleCannotRewriteAudit sets the database up with the README's
// deploy/db-roles.sql: migrations run as maskpbx_owner, the service runs as
// maskpbx_app, and the service's role can neither switch the append-only
// trigger off nor remove audit rows any other way.
func TestServiceRoleCannotRewriteAudit(t *testing.T) {
	ctx := context.Background()
	super := testenv.Database(t)
	script, err := os.ReadFile(filepath.Join(testenv.Root(), "deploy", "db-roles.sql"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, super)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, string(script)); err != nil {
		t.Fatalf("db-roles.sql: %v", err)
	}
	if _, err := storage.Migrate(ctx, asRole(t, super, "maskpbx_owner")); err != nil {
		t.Fatalf("migrate as the owner: %v", err)
	}
	appURL := asRole(t, super, "maskpbx_app")
	// serve migrates at start: with nothing to apply that works as the app.
	if _, err := storage.Migrate(ctx, appURL); err != nil {
		t.Fatalf("migrate (nothing to do) as the app: %v", err)
	}
	s, err := storage.Open(ctx, appURL, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mkManager(t, s, "anna")
	if err := s.Audit(ctx, storage.AuditEntry{Actor: "admin:x", Action: "client.reveal", Object: "client:1",
		Reason: "customer asked for a callback"}); err != nil {
		t.Fatal(err)
	}

	app, err := pgx.Connect(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	for _, attack := range []string{
		`ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change`,
		`ALTER TABLE audit_log DISABLE TRIGGER ALL`,
		`DROP TRIGGER audit_log_no_change ON audit_log`,
		`SET session_replication_role = replica`,
		`TRUNCATE audit_log`,
		`DELETE FROM audit_log`,
		`UPDATE audit_log SET reason = 'routine check'`,
		`DROP TABLE audit_log`,
		`ALTER TABLE audit_log RENAME TO audit_log_old`,
	} {
		if _, err := app.Exec(ctx, attack); err == nil {
			t.Errorf("the service's role could: %s", attack)
		}
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 2 {
		t.Fatalf("verify: %d %v", n, err)
	}
}
