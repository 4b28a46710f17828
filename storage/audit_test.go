package storage_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// anchoredStore is a Store on a fresh database whose audit chain is keyed
// and anchored in a file, as serve runs it; url is the superuser's.
func anchoredStore(t *testing.T, anchor storage.AuditAnchor) (*storage.Store, string) {
	t.Helper()
	ctx := context.Background()
	url := testenv.Database(t)
	if _, err := storage.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), anchor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for i := 1; i <= 6; i++ {
		if err := s.Audit(ctx, storage.AuditEntry{Actor: "admin:x", Action: "client.reveal",
			Object: fmt.Sprint("client:", i), Reason: "customer asked for a callback"}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 6 {
		t.Fatalf("verify before the attack: %d %v", n, err)
	}
	return s, url
}

// superuser connects as the cluster's superuser, who can switch the
// append-only trigger off.
func superuser(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(context.Background(), `ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change`); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestAuditTruncationDetected: a superuser deletes the newest rows of the
// chain. What is left is a valid chain, so only the head anchored outside
// the database shows the cut.
func TestAuditTruncationDetected(t *testing.T) {
	ctx := context.Background()
	anchor := storage.NewFileAnchor(filepath.Join(t.TempDir(), "keys", "audit.head"))
	s, url := anchoredStore(t, anchor)
	conn := superuser(t, url)
	if _, err := conn.Exec(ctx, `DELETE FROM audit_log WHERE seq > 4`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.VerifyAudit(ctx); !errors.Is(err, storage.ErrAuditTampered) {
		t.Fatalf("a chain cut from 6 to %d rows verified: %v", n, err)
	}
	// A restarted node (a new Store on the same anchor) sees it too.
	again, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), anchor))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.VerifyAudit(ctx); !errors.Is(err, storage.ErrAuditTampered) {
		t.Fatalf("truncation verified after a restart: %v", err)
	}
}

// TestAuditRecomputationDetected: a superuser edits a reveal's reason and
// recomputes every hash from there on with a formula he can compute from
// the database alone. The HMAC key is not in the database, so the chain
// fails even with no anchor to compare against; with the anchor, the head
// differs too.
func TestAuditRecomputationDetected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		anchor bool
		hash   func(prev []byte, fields []string) []byte
	}{
		{"old unkeyed formula", false, func(prev []byte, f []string) []byte { return sha(prev, append([]string{"v1"}, f...)) }},
		{"current layout without the key", false, func(prev []byte, f []string) []byte {
			return sha(prev, append([]string{"v2"}, f...))
		}},
		{"old unkeyed formula, anchored", true, func(prev []byte, f []string) []byte { return sha(prev, append([]string{"v1"}, f...)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var anchor storage.AuditAnchor
			if tc.anchor {
				anchor = storage.NewFileAnchor(filepath.Join(t.TempDir(), "audit.head"))
			}
			s, url := anchoredStore(t, anchor)
			conn := superuser(t, url)
			if _, err := conn.Exec(ctx, `UPDATE audit_log SET reason = 'routine check' WHERE seq = 3`); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(ctx, `SELECT seq, at, actor, action, object, reason, prev_hash FROM audit_log ORDER BY seq`)
			if err != nil {
				t.Fatal(err)
			}
			type row struct {
				seq  int64
				f    []string
				prev []byte
			}
			var all []row
			for rows.Next() {
				var r row
				var at time.Time
				var actor, action, object, reason string
				if err := rows.Scan(&r.seq, &at, &actor, &action, &object, &reason, &r.prev); err != nil {
					t.Fatal(err)
				}
				r.f = []string{strconv.FormatInt(r.seq, 10), at.UTC().Format(time.RFC3339Nano), actor, action, object, reason}
				all = append(all, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			prev := make([]byte, sha256.Size)
			for _, r := range all {
				h := tc.hash(prev, r.f)
				if _, err := conn.Exec(ctx, `UPDATE audit_log SET prev_hash = $1, hash = $2 WHERE seq = $3`, prev, h, r.seq); err != nil {
					t.Fatal(err)
				}
				prev = h
			}
			if n, err := s.VerifyAudit(ctx); !errors.Is(err, storage.ErrAuditTampered) {
				t.Fatalf("a recomputed chain verified (%d rows): %v", n, err)
			}
		})
	}
}

func sha(prev []byte, fields []string) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write([]byte(strings.Join(fields, "\x1f")))
	return h.Sum(nil)
}

// TestAuditNeedsKey: a Store opened without a key writes no unkeyed rows.
func TestAuditNeedsKey(t *testing.T) {
	ctx := context.Background()
	url := testenv.Database(t)
	if _, err := storage.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Audit(ctx, storage.AuditEntry{Actor: "a", Action: "b", Object: "c"}); !errors.Is(err, storage.ErrNoAuditKey) {
		t.Fatalf("audit without a key: %v", err)
	}
	if _, err := s.VerifyAudit(ctx); !errors.Is(err, storage.ErrNoAuditKey) {
		t.Fatalf("verify without a key: %v", err)
	}
}
