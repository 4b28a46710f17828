package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// TestRecordingsInObjectStore: serve and a recorder process (its own data
// dir: another machine) store recordings in the RECORDINGS bucket of the
// NATS they share (--recordings-url jetstream:RECORDINGS). A recorded call
// is played with Range through serve's API and through a second API
// server (node B: its own connection and local directory) that never had
// the file; the bytes are those of the bucket. Then the recorder is killed
// with SIGKILL mid-call and never comes back: another node puts the
// recording together from the parts it stored as the call went, playable
// and marked partial, missing at most the last seconds.
func TestRecordingsInObjectStore(t *testing.T) {
	ctx := context.Background()
	recPort := testenv.FreePort(t, "127.0.0.1")
	recAddr := fmt.Sprintf("127.0.0.1:%d", recPort)
	s, cfg := startRecordedSystem(t, "--recorder", "sip:recorder@"+recAddr+";transport=tcp",
		"--recordings-url", "jetstream:RECORDINGS")
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)
	key := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(cfg.DataDir, "keys", name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(raw))
	}
	recorderDir := t.TempDir()
	args := []string{"--data-dir", recorderDir, "--database-url", cfg.DatabaseURL, "--nats-url", s.run.NATSURL,
		"--nats-user", bus.UserRecorder, "--nats-password", key(bus.RecorderPasswordFile),
		"--siprec-secret", key("siprec.secret"), "--recordings-url", "jetstream:RECORDINGS",
		"--sip-listen", recAddr, "--node", "recorder-1", "--log-format", "console"}
	rp := startRecorderProcess(t, recAddr, args...)

	// Node B: its own NATS connection (the PBX's user) and local directory.
	nc, js, err := bus.Connect(ctx, s.run.NATSURL, "node-b", bus.Auth{User: bus.UserPBX, Password: key(bus.PBXPasswordFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nodeB, err := recorder.OpenObjectBlobs(ctx, js, recorder.RecordingsBucket, 1, t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	apiB := httptest.NewServer(api.New(api.Config{Store: s.run.Store, AdminToken: adminTok, Recordings: nodeB}))
	defer apiB.Close()
	obs, err := js.ObjectStore(ctx, recorder.RecordingsBucket)
	if err != nil {
		t.Fatal(err)
	}
	stored := func(key string) []byte {
		t.Helper()
		raw, err := obs.GetBytes(ctx, key)
		if err != nil {
			t.Fatalf("%s in the bucket: %v", key, err)
		}
		return raw
	}
	fetch := func(base, id, rng string) (int, []byte, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/api/v1/recordings/"+id+"/audio", nil)
		req.Header.Set("Authorization", "Bearer "+adminTok)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		t.Logf("%s %s: %d, %d bytes in %v", base, rng, resp.StatusCode, len(body), time.Since(start))
		return resp.StatusCode, body, resp.Header.Get("Content-Range")
	}

	t.Run("replay with Range from other nodes", func(t *testing.T) {
		_, rec := recordedCall(t, s, acme.ID, 41800, 150, 3500, impairment{})
		if rec.Status != storage.RecordingComplete || rec.Node != "recorder-1" {
			t.Fatalf("recording %+v", rec)
		}
		raw := stored(rec.BlobKey)
		p, err := recorder.DecodeWAV(raw)
		if err != nil || int64(len(raw)) != rec.SizeBytes {
			t.Fatalf("stored WAV of %d bytes (row %d): %v", len(raw), rec.SizeBytes, err)
		}
		checkChannels(t, p)
		for _, dir := range []string{recorderDir, cfg.DataDir} {
			if _, err := os.Stat(filepath.Join(dir, "recordings", rec.BlobKey)); !os.IsNotExist(err) {
				t.Errorf("a local file of the stored recording in %s: %v", dir, err)
			}
		}
		if _, err := obs.GetInfo(ctx, rec.BlobKey+".part-0000"); err != jetstream.ErrObjectNotFound {
			t.Errorf("a part is left after the recording closed: %v", err)
		}
		last := len(raw) - 16000 // the last second: 8000 frames of 2 channels, 16 bits
		for _, base := range []string{s.api, apiB.URL} {
			for _, r := range [][2]int{{44, 16043}, {last, len(raw) - 1}} {
				st, body, cr := fetch(base, rec.ID, fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
				if st != http.StatusPartialContent || !bytes.Equal(body, raw[r[0]:r[1]+1]) ||
					cr != fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], len(raw)) {
					t.Fatalf("%s range %v: %d %q, %d bytes", base, r, st, cr, len(body))
				}
			}
			if st, body, _ := fetch(base, rec.ID, ""); st != 200 || !bytes.Equal(body, raw) {
				t.Fatalf("%s whole recording: %d, %d bytes", base, st, len(body))
			}
			if st, _, _ := fetch(base, rec.ID, fmt.Sprintf("bytes=%d-", len(raw)+10)); st != http.StatusRequestedRangeNotSatisfiable {
				t.Fatalf("%s range past the end: %d", base, st)
			}
		}
	})

	t.Run("recorder killed mid-call, recovered by a serve node", func(t *testing.T) {
		call := startTonedCall(t, s, 41820, 500, 11000, impairment{})
		var rec storage.Recording
		testenv.Eventually(t, 15*time.Second, func() bool {
			recs, err := s.run.Store.Recordings(ctx, storage.RecordingFilter{ClientID: acme.ID})
			if err != nil {
				return false
			}
			for _, r := range recs {
				if r.Status == storage.RecordingActive {
					rec = r
				}
			}
			if rec.ID == "" {
				return false
			}
			_, err = obs.GetInfo(ctx, rec.BlobKey+".part-0001")
			return err == nil
		}, "two parts of the recording under way in the bucket")
		rp.kill()
		killed := time.Now()
		killedAfter := killed.Sub(call.answered)
		call.wait()

		// The recorder stays dead: serve finds its heartbeat stopped and
		// puts the recording together from its parts.
		got := recordingOf(t, s.run.Store, rec.CallID, 40*time.Second)
		t.Logf("killed %v after the answer; recovered %v from the parts %v after the kill", killedAfter, got.Duration,
			time.Since(killed).Round(time.Millisecond))
		if got.Status != storage.RecordingPartial || got.Duration > killedAfter ||
			got.Duration < killedAfter-recorder.DefaultPartInterval-recorder.DefaultSyncInterval-time.Second {
			t.Fatalf("recovered %s of %v; the recorder died %v into the call", got.Status, got.Duration, killedAfter)
		}
		raw := stored(rec.BlobKey)
		p, err := recorder.DecodeWAV(raw)
		if err != nil || int64(len(raw)) != got.SizeBytes {
			t.Fatalf("recovered WAV of %d bytes (row %d): %v", len(raw), got.SizeBytes, err)
		}
		checkChannels(t, p)
		if _, err := obs.GetInfo(ctx, rec.BlobKey+".part-0000"); err != jetstream.ErrObjectNotFound {
			t.Errorf("parts left after the recovery: %v", err)
		}
		if st, body, _ := fetch(apiB.URL, rec.ID, "bytes=0-99"); st != http.StatusPartialContent || !bytes.Equal(body, raw[:100]) {
			t.Fatalf("the recovered recording through the API: %d", st)
		}
	})

	t.Run("erasure deletes the audio from the bucket", func(t *testing.T) {
		recs, err := s.run.Store.Recordings(ctx, storage.RecordingFilter{ClientID: acme.ID})
		if err != nil || len(recs) != 2 {
			t.Fatalf("recordings of the client: %d %v", len(recs), err)
		}
		// serve did not record them (the recorder process did, and is
		// dead): it deletes them from the bucket all the same.
		if st := s.call("DELETE", "/api/v1/clients/"+acme.ID, adminTok, map[string]string{"reason": "GDPR erasure request 2026-32"}, nil); st != 200 {
			t.Fatalf("erase: %d", st)
		}
		for _, r := range recs {
			testenv.Eventually(t, 10*time.Second, func() bool {
				_, err := obs.GetInfo(ctx, r.BlobKey)
				return err == jetstream.ErrObjectNotFound
			}, "the erased client's recording %s gone from the bucket", r.ID)
		}
	})
}

// TestRecordingsURLFlag: serve and recorder take the storage flags and
// refuse what they can't use, naming the flag.
func TestRecordingsURLFlag(t *testing.T) {
	base := []string{"--database-url", "postgres://x"}
	for _, tc := range []struct {
		args       []string
		dir, bkt   string
		wantErrSub string
	}{
		{args: nil},
		{args: []string{"--recordings-url", "file:///srv/rec/"}, dir: "/srv/rec"},
		{args: []string{"--recordings-url", "jetstream:RECORDINGS", "--recordings-replicas", "3"}, bkt: "RECORDINGS"},
		{args: []string{"--recordings-url", "jetstream:"}, bkt: "RECORDINGS"},
		{args: []string{"--recordings-url", "s3://bucket"}, wantErrSub: "--recordings-url"},
		{args: []string{"--recordings-url", "jetstream:A.B"}, wantErrSub: "--recordings-url"},
		{args: []string{"--recordings-url", "file://"}, wantErrSub: "--recordings-url"},
		{args: []string{"--recordings-replicas", "-1"}, wantErrSub: "--recordings-replicas"},
		{args: []string{"--recordings-replicas", "6"}, wantErrSub: "--recordings-replicas"},
	} {
		c, err := parseConfig("serve", append(base, tc.args...))
		if tc.wantErrSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
				t.Errorf("serve %v: %v, want an error naming %s", tc.args, err, tc.wantErrSub)
			}
			continue
		}
		if err != nil {
			t.Fatalf("serve %v: %v", tc.args, err)
		}
		if dir, bkt, err := c.Recordings.parse(); err != nil || dir != tc.dir || bkt != tc.bkt {
			t.Errorf("serve %v: %q %q %v", tc.args, dir, bkt, err)
		}
		rc, err := parseRecorderConfig(append(base, append(tc.args, "--nats-url", "nats://127.0.0.1:4222", "--nats-user", "u")...))
		if err != nil || rc.Recordings != c.Recordings {
			t.Errorf("recorder %v: %+v %v", tc.args, rc.Recordings, err)
		}
	}
	if _, err := parseRecorderConfig(append(base, "--recordings-url", "jetstream:RECORDINGS")); err == nil ||
		!strings.Contains(err.Error(), "--nats-url") {
		t.Errorf("recorder with the object store and no NATS: %v", err)
	}
}
