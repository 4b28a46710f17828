package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// TestServeProcess is the serve process of TestRestartClosesCallsLeftOpen;
// run on its own it does nothing.
func TestServeProcess(t *testing.T) {
	runChildCommand(t, "MASKPBX_SERVE_PROCESS", serveCommand)
}

// TestRestartClosesCallsLeftOpen: serve, as a process of its own, is killed
// with SIGKILL while a client talks to his manager. Started again (same
// node, database and data dir), it closes that call before taking new ones:
// the CDR ends with hang-up side node_lost, answered, and the calls API says
// ended; a call another node has open is left alone.
func TestRestartClosesCallsLeftOpen(t *testing.T) {
	cfg := systemConfig(t)
	cfg.NodeID = "node-a"
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	t.Setenv("MASKPBX_ADMIN_TOKEN", adminTok)
	child := startChildProcess(t, "TestServeProcess", "MASKPBX_SERVE_PROCESS", httpAddr,
		"--data-dir", cfg.DataDir, "--database-url", cfg.DatabaseURL, "--nats-listen", cfg.NATSListen,
		"--sip-listen", cfg.SIPListen, "--sip-tls-listen", "off", "--sip-domain", cfg.SIPDomain,
		"--rtp-ports", cfg.RTPPorts, "--http-listen", httpAddr, "--trunk", cfg.Trunk,
		"--company-number", cfg.CompanyNumber, "--region", cfg.Region, "--digest-algorithms", cfg.DigestAlgorithms,
		"--node", cfg.NodeID, "--log-format", "console")
	store, err := storage.Open(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	first := &system{t: t, run: running{Store: store}, sipAddr: cfg.SIPListen, api: "http://" + httpAddr}

	anna := first.manager("anna")
	acme := first.client("Acme Trading", acmeNumber, anna.ID)
	first.register("anna", annaIP, 5070)
	phone(t, first, "anna", annaIP, 5070, 41602, false, 1)
	trunkCall(t, first, acmeNumber, 41600, false, 60000)
	callID := answeredCall(t, store, acme.ID).CallID

	// A call another node handles, open in the same database.
	other := "6f1c1d6e-4a55-4d4b-9a8e-2b1f3c4d5e6f"
	if _, err := store.ApplyCallEvent(context.Background(), storage.CallEvent{EventID: "other-offered",
		Kind: storage.CallOffered, At: time.Now(), CallID: other, Direction: "inbound", Node: "node-b"}); err != nil {
		t.Fatal(err)
	}

	child.kill()
	var v struct {
		State string `json:"state"`
	}
	second := startSystemFrom(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	testenv.Eventually(t, 15*time.Second, func() bool {
		c, err := store.CDR(context.Background(), callID)
		return err == nil && c.EndedAt != nil
	}, "the call left open closed after the restart")
	c, _ := store.CDR(context.Background(), callID)
	if c.HangupSide != events.HangupNodeLost || c.Disposition != events.DispositionAnswered || c.ManagerID != anna.ID {
		t.Fatalf("CDR %+v: want answered, hang-up side node_lost, anna's", c)
	}
	if st := second.call("GET", "/api/v1/calls/"+callID, adminTok, nil, &v); st != 200 || v.State != "ended" {
		t.Fatalf("calls API: %d %q, want 200 ended", st, v.State)
	}
	if o, err := store.CDR(context.Background(), other); err != nil || o.EndedAt != nil {
		t.Fatalf("another node's open call: %+v, %v: it must stay open", o, err)
	}
}

// TestSurvivorClosesDeadNodesCalls: two nodes share one NATS and one
// Postgres. Node A, a process of its own, is killed with SIGKILL while a
// client talks to his manager through it; node B, which took no part in the
// call, closes it (node_lost, answered) within 30 s, from A's stopped
// heartbeat, while A stays dead.
func TestSurvivorClosesDeadNodesCalls(t *testing.T) {
	users := bus.NewUsers()
	natsSrv, err := bus.StartEmbedded(t.TempDir(), "127.0.0.1", testenv.FreePort(t, "127.0.0.1"), users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(natsSrv.Shutdown)
	t.Setenv("MASKPBX_NATS_PASSWORD", users.PBX)
	t.Setenv("MASKPBX_ADMIN_TOKEN", adminTok)

	cfgA := systemConfig(t)
	cfgA.NodeID = "node-a"
	httpA := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	nodeA := startChildProcess(t, "TestServeProcess", "MASKPBX_SERVE_PROCESS", httpA,
		"--data-dir", cfgA.DataDir, "--database-url", cfgA.DatabaseURL, "--nats-url", natsSrv.URL(),
		"--nats-user", bus.UserPBX, "--sip-listen", cfgA.SIPListen, "--sip-tls-listen", "off",
		"--sip-domain", cfgA.SIPDomain, "--rtp-ports", cfgA.RTPPorts, "--http-listen", httpA, "--trunk", cfgA.Trunk,
		"--company-number", cfgA.CompanyNumber, "--region", cfgA.Region, "--digest-algorithms", cfgA.DigestAlgorithms,
		"--node", cfgA.NodeID, "--recordings-url", "jetstream:RECORDINGS", "--log-format", "console")

	cfgB := systemConfig(t)
	cfgB.NodeID, cfgB.DatabaseURL = "node-b", cfgA.DatabaseURL
	cfgB.NATSURL, cfgB.NATS = natsSrv.URL(), natsClient{User: bus.UserPBX, Password: users.PBX}
	cfgB.Recordings = recordingsFlags{URL: "jetstream:RECORDINGS"}
	nodeB := startSystemFrom(t, cfgB, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	store := nodeB.run.Store
	a := &system{t: t, run: running{Store: store}, sipAddr: cfgA.SIPListen, api: "http://" + httpA}

	anna := a.manager("anna")
	acme := a.client("Acme Trading", acmeNumber, anna.ID)
	a.register("anna", annaIP, 5070)
	phone(t, a, "anna", annaIP, 5070, 41612, false, 1)
	trunkCall(t, a, acmeNumber, 41610, false, 60000)
	answered := answeredCall(t, store, acme.ID)
	callID, answeredAt := answered.CallID, *answered.AnsweredAt
	// Two parts of the recording (8 s) reach the bucket before A dies.
	testenv.Eventually(t, 20*time.Second, func() bool {
		recs, err := store.Recordings(context.Background(), storage.RecordingFilter{CallID: callID})
		return err == nil && len(recs) == 1 && time.Since(recs[0].StartedAt) > 9*time.Second
	}, "the call recorded for 9 s")

	nodeA.kill()
	killed := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool {
		c, err := store.CDR(context.Background(), callID)
		return err == nil && c.EndedAt != nil
	}, "node B closing node A's call")
	c, _ := store.CDR(context.Background(), callID)
	t.Logf("node A's call closed %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	if c.HangupSide != events.HangupNodeLost || c.Disposition != events.DispositionAnswered {
		t.Fatalf("CDR %+v: want answered, hang-up side node_lost", c)
	}
	var v struct {
		State string `json:"state"`
	}
	if st := nodeB.call("GET", "/api/v1/calls/"+callID, adminTok, nil, &v); st != 200 || v.State != "ended" {
		t.Fatalf("node B's calls API: %d %q, want 200 ended", st, v.State)
	}
	// Its recording, under way in the shared object store when A died, is
	// put together by B from A's parts: partial, playable through B's API,
	// and the CDR says so.
	rec := recordingOf(t, store, callID, 30*time.Second)
	t.Logf("node A's recording recovered: %s, %v", rec.Status, rec.Duration)
	if rec.Status != storage.RecordingPartial || rec.Node != "node-a" || rec.Duration <= 0 || rec.Duration > killed.Sub(answeredAt) {
		t.Fatalf("recording %+v: want partial, of node-a, at most %v", rec, killed.Sub(answeredAt))
	}
	req, _ := http.NewRequest("GET", nodeB.api+"/api/v1/recordings/"+rec.ID+"/audio", nil)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if p, err := recorder.DecodeWAV(raw); resp.StatusCode != 200 || err != nil || int64(len(raw)) != rec.SizeBytes ||
		math.Abs(p.Duration()-rec.Duration.Seconds()) > 0.001 {
		t.Fatalf("node B serves A's recording: %d, %d bytes (row %d): %v", resp.StatusCode, len(raw), rec.SizeBytes, err)
	}
	nodeB.cdrRecording(callID, storage.RecordingPartial)
}

// answeredCall waits for the client's call to be answered in its CDR and
// returns that CDR.
func answeredCall(t *testing.T, store *storage.Store, clientID string) storage.CDR {
	t.Helper()
	var cdr storage.CDR
	testenv.Eventually(t, 15*time.Second, func() bool {
		cdrs, err := store.CDRs(context.Background(), storage.CDRFilter{ClientID: clientID})
		if err != nil || len(cdrs) == 0 || cdrs[0].AnsweredAt == nil {
			return false
		}
		cdr = cdrs[0]
		return true
	}, "the call answered in its CDR")
	return cdr
}
