package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// A client's erasure on a real serve: a recorded call from the trunk, then
// DELETE /api/v1/clients/{id}. A pg_dump of the database then holds neither
// his numbers' ciphertext nor their blind index nor his name, his recording
// file is gone, his CDR remains (pointing at the pseudonym), the audit
// chain verifies, and his next call from the same number is an unknown
// caller's: a new client.
func TestClientErasure(t *testing.T) {
	ctx := context.Background()
	s, cfg := startRecordedSystem(t)
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)

	cdr, rec := recordedCall(t, s, acme.ID, 42000, 50, 1500, impairment{})
	file := filepath.Join(cfg.DataDir, "recordings", rec.BlobKey)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no recording file before erasure: %v", err)
	}
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ciphertext, blindIndex []byte
	if err := conn.QueryRow(ctx, `SELECT ciphertext, blind_index FROM client_phones WHERE client_id = $1`, acme.ID).
		Scan(&ciphertext, &blindIndex); err != nil {
		t.Fatal(err)
	}
	// What the dump must not hold: bytea is dumped as hex.
	secrets := map[string][]byte{"ciphertext": []byte(hex.EncodeToString(ciphertext)),
		"blind index": []byte(hex.EncodeToString(blindIndex)), "name": []byte("Acme Trading")}
	before := testenv.PGDump(t, cfg.DatabaseURL)
	for what, b := range secrets {
		if !bytes.Contains(before, b) {
			t.Fatalf("the dump before erasure has no %s: the check below would prove nothing", what)
		}
	}

	if st := s.call("DELETE", "/api/v1/clients/"+acme.ID, adminTok, map[string]string{}, nil); st != 400 {
		t.Fatalf("erasure without a reason: %d, want 400", st)
	}
	var erased struct {
		Name          string `json:"name"`
		PhonesDeleted int    `json:"phones_deleted"`
		AudioDeleted  int    `json:"audio_deleted"`
		AudioPending  int    `json:"audio_pending"`
	}
	if st := s.call("DELETE", "/api/v1/clients/"+acme.ID, adminTok, map[string]string{"reason": "GDPR erasure request 2026-31"}, &erased); st != 200 {
		t.Fatalf("erasure: %d", st)
	}
	if erased.Name != "erased-"+acme.ID[:8] || erased.PhonesDeleted != 1 || erased.AudioDeleted != 1 || erased.AudioPending != 0 {
		t.Fatalf("erasure answered %+v", erased)
	}
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the recording file survived the erasure: %v", err)
	}
	after := testenv.PGDump(t, cfg.DatabaseURL)
	for what, b := range secrets {
		if bytes.Contains(after, b) {
			t.Errorf("the dump after erasure still holds his %s", what)
		}
	}
	if c, err := s.run.Store.CDR(ctx, cdr.CallID); err != nil || c.ClientID != acme.ID || c.Disposition != "answered" {
		t.Errorf("his CDR after erasure: %+v %v", c, err)
	}
	if r, err := s.run.Store.Recording(ctx, rec.ID); err != nil || r.AudioDeletedAt == nil || r.ClientID != acme.ID {
		t.Errorf("his recording row after erasure: %+v %v", r, err)
	}
	if _, err := s.run.Store.VerifyAudit(ctx); err != nil {
		t.Errorf("the audit chain after erasure: %v", err)
	}

	// His next call: an unknown caller, who becomes a new client.
	ph := phone(t, s, "anna", annaIP, 5070, 42012, false, 1)
	tr := trunkCall(t, s, acmeNumber, 42010, true, 1000)
	tr.Wait()
	ph.Wait()
	shown, _ := ph.LogValue("SHOWN_FROM", time.Second)
	if !strings.Contains(shown, "New client #") || strings.Contains(shown, "erased") {
		t.Errorf("the phone was shown %q, want a new client", shown)
	}
	var fresh storage.Client
	testenv.Eventually(t, 10*time.Second, func() bool {
		cs, err := s.run.Store.Clients(ctx, anna.ID)
		if err != nil || len(cs) != 1 {
			return false
		}
		fresh = cs[0]
		return true
	}, "the caller made a new client of anna's")
	if fresh.ID == acme.ID || fresh.Name != "New client" {
		t.Fatalf("the next call went to %+v", fresh)
	}
	if next := s.cdr(storage.CDRFilter{ClientID: fresh.ID}); next.CallID == cdr.CallID {
		t.Fatal("no CDR of the new client's call")
	}
	if cdrs, _ := s.run.Store.CDRs(ctx, storage.CDRFilter{ClientID: acme.ID}); len(cdrs) != 1 {
		t.Errorf("the erased client has %d CDRs, want his one", len(cdrs))
	}
}
