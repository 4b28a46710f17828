package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
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
	var callID string
	testenv.Eventually(t, 15*time.Second, func() bool {
		cdrs, err := store.CDRs(context.Background(), storage.CDRFilter{ClientID: acme.ID})
		if err != nil || len(cdrs) == 0 || cdrs[0].AnsweredAt == nil {
			return false
		}
		callID = cdrs[0].CallID
		return true
	}, "the call answered in its CDR")

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
