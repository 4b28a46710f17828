package api_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/storage"
)

// A client's data-subject export and his erasure: everything held about him
// comes out (to an admin, with a reason, audited); after erasure his numbers'
// rows are gone, his name is a pseudonym, his audio is deleted (kept under
// legal hold), his CDRs and recording rows stay, and the audit chain
// verifies.
func TestClientExportAndErasure(t *testing.T) {
	ctx := context.Background()
	e, blobs := newRecordingEnv(t, true)
	anna := e.manager("anna", "manager")
	sue := e.manager("sue", "supervisor")
	const number = "+79161234567"
	var acme, bolt client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "Acme Ivanov", "phones": []string{number, "+79161110000"},
		"manager_id": anna.ID}, &acme)
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "Bolt", "phones": []string{"+74957654321"},
		"manager_id": anna.ID}, &bolt)

	audio := make([]byte, 44+8000)
	_, _ = rand.Read(audio)
	// record makes a finished recording of c on node, with its CDR, and its
	// file when node is this API's ("n1").
	record := func(c client, node string) storage.Recording {
		r := storage.Recording{ID: newUUID(), CallID: newUUID(), ClientID: c.ID, ManagerID: anna.ID, Direction: "inbound",
			Source: storage.SourceMaskPBX, Node: node, Codec: "PCMU", Status: storage.RecordingComplete,
			StartedAt: time.Now().Add(-time.Hour), Duration: time.Second, SizeBytes: int64(len(audio)),
			DTMF: []storage.DTMFEvent{{Digit: "7", Side: "client", AtMS: 10, DurationMS: 100}}}
		r.BlobKey = c.ID + "/2026/01/" + r.CallID + ".wav"
		if err := e.store.SaveRecording(ctx, r); err != nil {
			t.Fatal(err)
		}
		for _, ev := range []storage.CallEvent{
			{EventID: newUUID(), Kind: storage.CallOffered, At: r.StartedAt, CallID: r.CallID, Direction: "inbound", ClientID: c.ID, ManagerID: anna.ID},
			{EventID: newUUID(), Kind: storage.CallEnded, At: r.StartedAt.Add(time.Second), CallID: r.CallID, Disposition: "answered", HangupSide: "client"},
		} {
			if _, err := e.store.ApplyCallEvent(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		if node == "n1" {
			f, err := blobs.Create(r.BlobKey)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.Write(audio)
			f.Close()
		}
		return r
	}
	here, elsewhere := record(acme, "n1"), record(acme, "n2")
	boltRec := record(bolt, "n1")
	e.must(200, "POST", "/api/v1/clients/"+acme.ID+"/reveal", adminToken, map[string]string{"reason": "customer asked by phone"}, nil)
	fileThere := func(r storage.Recording) bool {
		_, err := os.Stat(filepath.Join(blobs.Root(), r.BlobKey))
		return err == nil
	}

	t.Run("export refused without an admin and a reason", func(t *testing.T) {
		for _, tc := range []struct {
			token  string
			body   any
			status int
		}{
			{sue.APIToken, map[string]any{"reason": "data subject request 1"}, 403},
			{anna.APIToken, map[string]any{"reason": "data subject request 1"}, 403},
			{adminToken, map[string]any{}, 400},
			{adminToken, map[string]any{"reason": "short"}, 400},
			{adminToken, map[string]any{"reason": "data subject request 1", "format": "xml"}, 400},
			{adminToken, map[string]any{"reason": "data subject request 1", "audio": true}, 400},
			{adminToken, map[string]any{"reason": "data subject request 1", "extra": 1}, 400},
		} {
			resp, raw := e.send("POST", "/api/v1/clients/"+acme.ID+"/export", tc.token, tc.body, nil)
			if resp.StatusCode != tc.status || !strings.Contains(string(raw), `"error"`) || strings.Contains(string(raw), "1234567") {
				t.Errorf("export %v: %d %s, want %d", tc.body, resp.StatusCode, raw, tc.status)
			}
		}
		e.must(404, "POST", "/api/v1/clients/"+newUUID()+"/export", adminToken, map[string]any{"reason": "data subject request 1"}, nil)
	})

	t.Run("export as JSON", func(t *testing.T) {
		var ex struct {
			Client struct {
				ID, Name string
			}
			Phones      []string
			Assignments []map[string]any
			Calls       []map[string]any
			Recordings  []map[string]any
			Audit       []storage.AuditEntry
		}
		resp, raw := e.send("POST", "/api/v1/clients/"+acme.ID+"/export", adminToken, map[string]any{"reason": "data subject request 17"}, nil)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Disposition"), "client-"+acme.ID+".json") {
			t.Fatalf("export: %d %v %s", resp.StatusCode, resp.Header, raw)
		}
		if err := json.Unmarshal(raw, &ex); err != nil {
			t.Fatal(err)
		}
		if ex.Client.ID != acme.ID || ex.Client.Name != "Acme Ivanov" || len(ex.Phones) != 2 || !strings.Contains(strings.Join(ex.Phones, ","), number) ||
			len(ex.Assignments) != 1 || len(ex.Calls) != 2 || len(ex.Recordings) != 2 {
			t.Fatalf("export: %s", raw)
		}
		actions := map[string]string{}
		for _, a := range ex.Audit {
			actions[a.Action] = a.Reason
		}
		if _, ok := actions["client.create"]; !ok || actions["client.reveal"] != "customer asked by phone" ||
			actions["client.data_export"] != "data subject request 17" {
			t.Fatalf("export's audit rows: %v", actions)
		}
		if strings.Contains(string(raw), boltRec.ID) || strings.Contains(string(raw), bolt.ID) {
			t.Fatal("the export holds another client's data")
		}
	})

	t.Run("export as ZIP with audio", func(t *testing.T) {
		resp, raw := e.send("POST", "/api/v1/clients/"+acme.ID+"/export", adminToken,
			map[string]any{"reason": "data subject request 18", "format": "zip", "audio": true}, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/zip" {
			t.Fatalf("zip export: %d %v", resp.StatusCode, resp.Header)
		}
		z, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatalf("%v: %d bytes %q", err, len(raw), raw[:min(len(raw), 300)])
		}
		files := map[string][]byte{}
		for _, f := range z.File {
			rc, _ := f.Open()
			files[f.Name], _ = io.ReadAll(rc)
			rc.Close()
		}
		if !bytes.Equal(files["recordings/"+here.ID+".wav"], audio) || !bytes.Contains(files["client-"+acme.ID+".json"], []byte(number)) ||
			!bytes.Contains(files["client-"+acme.ID+".json"], []byte(`"audio_files": [
    "recordings/`+here.ID+`.wav"
  ]`)) ||
			len(files) != 2 {
			names := []string{}
			for n := range files {
				names = append(names, n)
			}
			t.Fatalf("zip holds %v", names)
		}
		log, _ := e.store.AuditLog(ctx, 5)
		if log[0].Action != "client.data_export_audio" || log[0].Object != "client:"+acme.ID || log[0].Reason != "data subject request 18" {
			t.Fatalf("newest audit row %+v", log[0])
		}
	})

	t.Run("erasure refused without an admin and a reason", func(t *testing.T) {
		for _, tc := range []struct {
			token  string
			body   any
			status int
		}{
			{sue.APIToken, map[string]any{"reason": "right to erasure, ticket 9"}, 403},
			{adminToken, map[string]any{}, 400},
			{adminToken, "", 400},
			{adminToken, map[string]any{"reason": "   "}, 400},
		} {
			resp, raw := e.send("DELETE", "/api/v1/clients/"+acme.ID, tc.token, tc.body, nil)
			if resp.StatusCode != tc.status || !strings.Contains(string(raw), `"error"`) {
				t.Errorf("erase %v: %d %s, want %d", tc.body, resp.StatusCode, raw, tc.status)
			}
		}
		e.must(404, "DELETE", "/api/v1/clients/"+newUUID(), adminToken, map[string]any{"reason": "right to erasure, ticket 9"}, nil)
		e.must(404, "DELETE", "/api/v1/clients/not-a-uuid", adminToken, map[string]any{"reason": "right to erasure, ticket 9"}, nil)
		var c map[string]any
		e.must(200, "GET", "/api/v1/clients/"+acme.ID, adminToken, nil, &c)
		if c["name"] != "Acme Ivanov" || c["erased_at"] != nil {
			t.Fatalf("a refused erasure changed the client: %v", c)
		}
	})

	t.Run("erasure", func(t *testing.T) {
		var er map[string]any
		e.must(200, "DELETE", "/api/v1/clients/"+acme.ID, adminToken, map[string]any{"reason": "right to erasure, ticket 9"}, &er)
		if er["name"] != "erased-"+acme.ID[:8] || er["erased_at"] == nil || er["phones_deleted"] != 2.0 ||
			er["audio_deleted"] != 1.0 || er["audio_pending"] != 1.0 || er["audio_held"] != 0.0 || er["code"] != acme.Code {
			t.Fatalf("erasure answered %v", er)
		}
		if fileThere(here) {
			t.Fatal("the erased client's recording file is still there")
		}
		conn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var phones int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM client_phones WHERE client_id = $1`, acme.ID).Scan(&phones); err != nil || phones != 0 {
			t.Fatalf("phone rows left: %d %v", phones, err)
		}
		var names int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM clients WHERE name LIKE '%Ivanov%'`).Scan(&names); err != nil || names != 0 {
			t.Fatalf("the name is still stored: %d %v", names, err)
		}
		if _, err := e.srv.ClientByNumber(&http.Request{}, number); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("his number still finds a client: %v", err)
		}
		// CDRs and recording rows stay, pointing at the pseudonymised client.
		for _, r := range []storage.Recording{here, elsewhere} {
			cdr, err := e.store.CDR(ctx, r.CallID)
			if err != nil || cdr.ClientID != acme.ID || cdr.Disposition != "answered" {
				t.Fatalf("CDR after erasure: %+v %v", cdr, err)
			}
			rec, err := e.store.Recording(ctx, r.ID)
			if err != nil || rec.ClientID != acme.ID || len(rec.DTMF) != 0 {
				t.Fatalf("recording row after erasure: %+v %v", rec, err)
			}
		}
		if rec, _ := e.store.Recording(ctx, here.ID); rec.AudioDeletedAt == nil {
			t.Fatal("the deleted audio's row is not marked")
		}
		// Node n2 holds the other file: its own run deletes it.
		if pending, _ := e.store.ErasableRecordings(ctx, "n2", 10); len(pending) != 1 || pending[0].ID != elsewhere.ID {
			t.Fatalf("pending on n2: %v", pending)
		}
		// A manager no longer sees him; nobody can give him back a manager.
		var list []client
		e.must(200, "GET", "/api/v1/clients", anna.APIToken, nil, &list)
		if len(list) != 1 || list[0].ID != bolt.ID {
			t.Fatalf("anna's clients after erasure: %v", list)
		}
		e.must(404, "GET", "/api/v1/clients/"+acme.ID, anna.APIToken, nil, nil)
		e.must(409, "PUT", "/api/v1/clients/"+acme.ID+"/assignment", adminToken, map[string]any{"manager_id": anna.ID}, nil)
		e.must(409, "DELETE", "/api/v1/clients/"+acme.ID, adminToken, map[string]any{"reason": "right to erasure, again"}, nil)
		// His number is free: it makes a new client.
		var again client
		e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "New", "phones": []string{number}, "manager_id": anna.ID}, &again)
		if again.ID == acme.ID {
			t.Fatal("the number found the erased client")
		}
		log, _ := e.store.AuditLog(ctx, 50)
		found := false
		for _, a := range log {
			found = found || (a.Action == "client.erase" && a.Object == "client:"+acme.ID && a.Reason == "right to erasure, ticket 9" &&
				a.Actor == "admin:bootstrap")
		}
		if !found {
			t.Fatal("no client.erase audit row")
		}
		if _, err := e.store.VerifyAudit(ctx); err != nil {
			t.Fatalf("audit chain after erasure: %v", err)
		}
	})

	t.Run("legal hold keeps the audio", func(t *testing.T) {
		e.must(400, "PUT", "/api/v1/clients/"+bolt.ID+"/legal-hold", adminToken, map[string]any{"reason": "litigation 2026-14"}, nil)
		e.must(400, "PUT", "/api/v1/clients/"+bolt.ID+"/legal-hold", adminToken, map[string]any{"hold": true}, nil)
		e.must(403, "PUT", "/api/v1/clients/"+bolt.ID+"/legal-hold", sue.APIToken, map[string]any{"hold": true, "reason": "litigation 2026-14"}, nil)
		var c map[string]any
		e.must(200, "PUT", "/api/v1/clients/"+bolt.ID+"/legal-hold", adminToken, map[string]any{"hold": true, "reason": "litigation 2026-14"}, &c)
		if c["legal_hold"] != true {
			t.Fatalf("hold: %v", c)
		}
		// Retention passes him by.
		if old, _ := e.store.ExpiredRecordings(ctx, "n1", time.Now(), 10); len(old) != 0 {
			t.Fatalf("retention would delete held audio: %v", old)
		}
		var er map[string]any
		e.must(200, "DELETE", "/api/v1/clients/"+bolt.ID, adminToken, map[string]any{"reason": "right to erasure, ticket 10"}, &er)
		if er["audio_held"] != 1.0 || er["audio_pending"] != 0.0 || !fileThere(boltRec) {
			t.Fatalf("held erasure: %v, file there %v", er, fileThere(boltRec))
		}
		if rec, _ := e.store.Recording(ctx, boltRec.ID); len(rec.DTMF) != 1 {
			t.Fatal("the held recording lost its digits")
		}
		e.must(200, "PUT", "/api/v1/clients/"+bolt.ID+"/legal-hold", adminToken, map[string]any{"hold": false, "reason": "litigation 2026-14 closed"}, &c)
		if c["legal_hold"] != false || fileThere(boltRec) {
			t.Fatalf("release: %v, file there %v", c, fileThere(boltRec))
		}
		log, _ := e.store.AuditLog(ctx, 10)
		var actions []string
		for _, a := range log {
			actions = append(actions, a.Action)
		}
		if !strings.Contains(strings.Join(actions, " "), "client.legal_hold_release recording.delete_audio") &&
			!strings.Contains(strings.Join(actions, " "), "recording.delete_audio client.legal_hold_release") {
			t.Fatalf("audit: %v", actions)
		}
		if _, err := e.store.VerifyAudit(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
