package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// newRecordingEnv is newEnv with recording audio served from a real blob
// store in a temporary directory: the blobs of node "n1", whose erased
// clients' audio the API deletes.
func newRecordingEnv(t *testing.T, withAudio bool) (*env, *recorder.FSBlobs) {
	t.Helper()
	dbURL := newEnv(t).dbURL // migrated database
	st, err := storage.Open(context.Background(), dbURL, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	blobs, err := recorder.NewFSBlobs(filepath.Join(t.TempDir(), "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := masking.GenerateKey()
	idx, _ := masking.GenerateKey()
	keys, _ := masking.NewKeyring(enc, idx)
	cfg := api.Config{Store: st, Keys: keys, Numbers: masking.NewNormalizer("RU"), SIPDomain: "pbx.test", AdminToken: adminToken}
	if withAudio {
		cfg.Recordings = blobs
		cfg.AudioErasure = &recorder.Erasure{Catalog: st, Blobs: blobs, Node: "n1", Logger: zap.NewNop()}
	}
	srv := api.New(cfg)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &env{t: t, url: hs.URL, dbURL: dbURL, store: st, srv: srv}, blobs
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// get does a GET with extra headers and returns the response and body.
func (e *env) get(path, token string, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	return e.send("GET", path, token, nil, hdr)
}

// send does a request, with body (if not nil) as JSON and extra headers,
// and returns the response and raw body (which may not be JSON: a WAV, a
// ZIP).
func (e *env) send(method, path, token string, body any, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

func TestRecordingsReplay(t *testing.T) {
	ctx := context.Background()
	e, blobs := newRecordingEnv(t, true)
	anna := e.manager("anna", "manager")
	sue := e.manager("sue", "supervisor")
	var acme client
	e.must(201, "POST", "/api/v1/clients", adminToken, map[string]any{"name": "Acme", "phones": []string{"+79161234567"},
		"manager_id": anna.ID}, &acme)

	// A finished recording with its file, one still being written, one
	// whose audio retention deleted.
	audio := make([]byte, 44+8000*4)
	_, _ = rand.Read(audio)
	mk := func(status string, offset time.Duration) storage.Recording {
		r := storage.Recording{ID: newUUID(), CallID: newUUID(), ClientID: acme.ID, ManagerID: anna.ID, Direction: "inbound",
			Source: storage.SourceMaskPBX, Node: "n1", Codec: "PCMU", Status: status, StartedAt: time.Now().Add(offset),
			Duration: time.Second, SizeBytes: int64(len(audio)), SHA256: "abc123",
			DTMF: []storage.DTMFEvent{{Digit: "5", Side: "client", AtMS: 300, DurationMS: 100}}}
		r.BlobKey = acme.ID + "/2026/01/" + r.CallID + ".wav"
		if err := e.store.SaveRecording(ctx, r); err != nil {
			t.Fatal(err)
		}
		// A recording is listed once the PBX announced its call.
		if _, err := e.store.ApplyCallEvent(ctx, storage.CallEvent{EventID: newUUID(), Kind: storage.CallOffered,
			At: r.StartedAt, CallID: r.CallID, Direction: "inbound", ClientID: acme.ID, ManagerID: anna.ID}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	done := mk(storage.RecordingComplete, -time.Minute)
	f, err := blobs.Create(done.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write(audio)
	f.Close()
	active := mk(storage.RecordingActive, 0)
	deleted := mk(storage.RecordingPartial, -time.Hour)
	if err := e.store.MarkAudioDeleted(ctx, deleted.ID, "system:retention", "test"); err != nil {
		t.Fatal(err)
	}
	auditCount := func() int {
		log, _ := e.store.AuditLog(ctx, 1000)
		n := 0
		for _, a := range log {
			if a.Action == "recording.audio" || a.Action == "recording.listen" {
				n++
			}
		}
		return n
	}

	t.Run("list and get", func(t *testing.T) {
		var list []map[string]any
		e.must(200, "GET", "/api/v1/recordings?client_id="+acme.ID, sue.APIToken, nil, &list)
		if len(list) != 3 || list[0]["id"] != active.ID || list[2]["id"] != deleted.ID {
			t.Fatalf("list %v", list)
		}
		var one map[string]any
		raw := e.must(200, "GET", "/api/v1/recordings/"+done.ID, adminToken, nil, &one)
		if one["call_id"] != done.CallID || one["status"] != "complete" || one["duration_ms"] != 1000.0 ||
			one["audio_available"] != true || one["codec"] != "PCMU" || one["client_id"] != acme.ID {
			t.Fatalf("recording %s", raw)
		}
		if strings.Contains(string(raw), done.BlobKey) || strings.Contains(string(raw), "n1") {
			t.Fatalf("the view shows where the file lives: %s", raw)
		}
		if dtmf := one["dtmf"].([]any); len(dtmf) != 1 || dtmf[0].(map[string]any)["digit"] != "5" {
			t.Fatalf("dtmf %v", one["dtmf"])
		}
		e.must(200, "GET", "/api/v1/recordings/"+deleted.ID, sue.APIToken, nil, &one)
		if one["audio_available"] != false || one["audio_deleted_at"] == nil {
			t.Fatalf("deleted recording %v", one)
		}
		e.must(200, "GET", "/api/v1/recordings?client_id="+acme.ID+"&limit=1", sue.APIToken, nil, &list)
		if len(list) != 1 {
			t.Fatalf("limit 1 gave %d", len(list))
		}
	})

	t.Run("full file and ranges, each access audited", func(t *testing.T) {
		before := auditCount()
		var listen map[string]string
		e.must(200, "POST", "/api/v1/recordings/"+done.ID+"/listen", sue.APIToken,
			map[string]string{"reason": "quality check of the call"}, &listen)
		if listen["audio_url"] != "/api/v1/recordings/"+done.ID+"/audio" {
			t.Fatalf("listen: %v", listen)
		}
		resp, body := e.get(listen["audio_url"], sue.APIToken, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/wav" || !bytes.Equal(body, audio) ||
			resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Fatalf("full: %d %v, %d bytes", resp.StatusCode, resp.Header, len(body))
		}
		resp, body = e.get("/api/v1/recordings/"+done.ID+"/audio", adminToken, map[string]string{"Range": "bytes=1000-1999"})
		if resp.StatusCode != 206 || !bytes.Equal(body, audio[1000:2000]) ||
			resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(audio)) {
			t.Fatalf("range: %d %v, %d bytes", resp.StatusCode, resp.Header, len(body))
		}
		resp, body = e.get("/api/v1/recordings/"+done.ID+"/audio", adminToken, map[string]string{"Range": "bytes=-44"})
		if resp.StatusCode != 206 || !bytes.Equal(body, audio[len(audio)-44:]) {
			t.Fatalf("suffix range: %d, %d bytes", resp.StatusCode, len(body))
		}
		// A player resuming with If-Range and the ETag gets the range.
		resp, body = e.get("/api/v1/recordings/"+done.ID+"/audio", adminToken,
			map[string]string{"Range": "bytes=0-9", "If-Range": `"abc123"`})
		if resp.StatusCode != 206 || len(body) != 10 {
			t.Fatalf("if-range: %d, %d bytes", resp.StatusCode, len(body))
		}
		if n := auditCount() - before; n != 5 {
			t.Fatalf("%d audit rows for a reason and 4 accesses", n)
		}
		log, _ := e.store.AuditLog(ctx, 10)
		var why, first, ranged *storage.AuditEntry
		for i := range log {
			if log[i].Action == "recording.listen" {
				why = &log[i]
			}
			if log[i].Action == "recording.audio" && strings.HasPrefix(log[i].Actor, "supervisor:") {
				first = &log[i]
			}
			if log[i].Action == "recording.audio" && strings.Contains(log[i].Reason, "bytes=1000-1999") {
				ranged = &log[i]
			}
		}
		if why == nil || why.Actor != "supervisor:"+sue.ID || why.Object != "recording:"+done.ID || why.Reason != "quality check of the call" {
			t.Fatalf("audit row of the supervisor's reason: %+v", why)
		}
		if first == nil || first.Actor != "supervisor:"+sue.ID || first.Object != "recording:"+done.ID || first.Reason != "" {
			t.Fatalf("audit row of the supervisor's access: %+v", first)
		}
		if ranged == nil || ranged.Actor != "admin:bootstrap" {
			t.Fatalf("audit row of the ranged access: %+v", ranged)
		}
		if n, err := e.store.VerifyAudit(ctx); err != nil || n == 0 {
			t.Fatalf("audit chain %d %v", n, err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		before := auditCount()
		for _, tc := range []struct {
			name, path, token string
			hdr               map[string]string
			status            int
			code              string
		}{
			{"manager lists", "/api/v1/recordings?client_id=" + acme.ID, anna.APIToken, nil, 403, "forbidden"},
			{"manager gets", "/api/v1/recordings/" + done.ID, anna.APIToken, nil, 403, "forbidden"},
			{"manager listens", "/api/v1/recordings/" + done.ID + "/audio", anna.APIToken, nil, 403, "forbidden"},
			{"no token", "/api/v1/recordings/" + done.ID + "/audio", "", nil, 401, "unauthorized"},
			{"bad client id", "/api/v1/recordings?client_id=+79161234567", sue.APIToken, nil, 400, "bad_request"},
			{"bad limit", "/api/v1/recordings?limit=all", sue.APIToken, nil, 400, "bad_request"},
			{"unknown recording", "/api/v1/recordings/" + newUUID(), sue.APIToken, nil, 404, "not_found"},
			{"unknown audio", "/api/v1/recordings/" + newUUID() + "/audio", sue.APIToken, nil, 404, "not_found"},
			{"malformed id", "/api/v1/recordings/..%2f..%2fetc/audio", sue.APIToken, nil, 404, "not_found"},
			{"still recording", "/api/v1/recordings/" + active.ID + "/audio", sue.APIToken, nil, 409, "recording_in_progress"},
			{"deleted by retention", "/api/v1/recordings/" + deleted.ID + "/audio", sue.APIToken, nil, 410, "audio_deleted"},
			{"reason in the link", "/api/v1/recordings/" + done.ID + "/audio?reason=" + strings.Repeat("x", 20), sue.APIToken, nil, 400, "bad_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, raw := e.get(tc.path, tc.token, tc.hdr)
				var body struct {
					Error struct{ Code, Message string }
				}
				if resp.StatusCode != tc.status || json.Unmarshal(raw, &body) != nil || body.Error.Code != tc.code {
					t.Fatalf("got %d %s, want %d %s", resp.StatusCode, raw, tc.status, tc.code)
				}
			})
		}
		if n := auditCount() - before; n != 0 {
			t.Fatalf("refused accesses wrote %d audit rows", n)
		}
		// A range outside the file is refused with a JSON error, after the
		// access was audited (the file was opened for it).
		resp, raw := e.get("/api/v1/recordings/"+done.ID+"/audio", sue.APIToken, map[string]string{"Range": "bytes=99999999-"})
		var body struct{ Error struct{ Code string } }
		if resp.StatusCode != 416 || json.Unmarshal(raw, &body) != nil || body.Error.Code != "bad_range" {
			t.Fatalf("unsatisfiable range: %d %s", resp.StatusCode, raw)
		}
	})

	// The attack: a page the supervisor visits links to the audio with a
	// reason of the attacker's choosing. No audit row may carry it.
	t.Run("a reason in the audio link is never audited", func(t *testing.T) {
		planted := "approved by the CEO, ticket 4711"
		resp, _ := e.get("/api/v1/recordings/"+done.ID+"/audio?reason="+url.QueryEscape(planted), sue.APIToken,
			map[string]string{"Range": "bytes=0-9"})
		if resp.StatusCode != 400 {
			t.Errorf("audio with ?reason=: %d, want 400", resp.StatusCode)
		}
		log, _ := e.store.AuditLog(ctx, 1000)
		for _, a := range log {
			if strings.Contains(a.Reason, "CEO") {
				t.Fatalf("a GET planted an audit reason: %+v", a)
			}
		}
		for _, bad := range []string{"", "why", "\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b",
			"quality\u0000check of the call", "quality check \u202eof the call"} {
			status, raw := e.call("POST", "/api/v1/recordings/"+done.ID+"/listen", sue.APIToken, json.RawMessage(`{"reason":"`+bad+`"}`))
			if status != 400 {
				t.Errorf("listen with reason %q: %d %s, want 400", bad, status, raw)
			}
		}
		e.must(404, "POST", "/api/v1/recordings/"+newUUID()+"/listen", sue.APIToken,
			map[string]string{"reason": "quality check of the call"}, nil)
		e.must(403, "POST", "/api/v1/recordings/"+done.ID+"/listen", anna.APIToken,
			map[string]string{"reason": "quality check of the call"}, nil)
	})

	t.Run("a node without audio answers 503", func(t *testing.T) {
		e2, _ := newRecordingEnv(t, false)
		resp, raw := e2.get("/api/v1/recordings/"+newUUID()+"/audio", adminToken, nil)
		if resp.StatusCode != 503 || !strings.Contains(string(raw), "audio_unavailable") {
			t.Fatalf("%d %s", resp.StatusCode, raw)
		}
	})
}
