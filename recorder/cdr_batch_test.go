package recorder

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// TestCDRWriterBatches: a backlog of many calls' events in random order
// (ends before offers), with redeliveries under new message ids, malformed
// and invalid messages and one event Postgres cannot store mixed in. The
// writer takes them in batches, and every CDR comes out right; the event
// Postgres refuses holds up only itself.
func TestCDRWriterBatches(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	js := connectAs(t, testenv.NATS(t), "recorder", bus.Auth{})
	if _, err := events.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Now().UTC().Add(-time.Hour)

	const calls, copies = 400, 300
	var good []events.Event
	var answered [][]events.Event
	for range calls {
		c := answeredCall(db, t0)
		answered = append(answered, c)
		good = append(good, c...)
	}
	// The call whose end Postgres refuses: its other events still count.
	poison := answeredCall(db, t0)
	poison[3].Recording = "ok\x00"
	good = append(good, poison...)

	var msgs [][]byte
	for _, e := range good {
		msgs = append(msgs, mustJSON(t, e))
	}
	for range copies { // new message ids get them past the stream's duplicate window
		msgs = append(msgs, mustJSON(t, good[rng.IntN(len(good))]))
	}
	bad := answeredCall(db, t0)[0]
	bad.CallID = "not-a-uuid"
	dropped := [][]byte{[]byte("{not json"), []byte(`{"event":1}`), mustJSON(t, bad)}
	msgs = append(msgs, dropped...)
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	for _, data := range msgs {
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: "calls." + newID() + ".x", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing stalled")
	}

	// The whole backlog is in the stream before the writer starts, so it
	// has whole batches to take.
	w := NewCDRWriter(js, db.store, testLogger(t))
	w.retryMin, w.retryMax = 50*time.Millisecond, 500*time.Millisecond
	reg := prometheus.NewRegistry()
	if err := w.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	wantEvents := len(good) - 1 // all but the poisoned end
	testenv.Eventually(t, 60*time.Second, func() bool {
		var n int
		return conn.QueryRow(ctx, `SELECT count(*) FROM cdr_events`).Scan(&n) == nil && n == wantEvents
	}, "every storable event applied")

	for _, c := range answered {
		got, err := db.store.CDR(ctx, c[0].CallID)
		if err != nil || got.EndedAt == nil {
			t.Fatalf("CDR %+v %v", got, err)
		}
		checkAnswered(t, db, got, c)
	}
	p, err := db.store.CDR(ctx, poison[0].CallID)
	if err != nil || p.OfferedAt == nil || p.AnsweredAt == nil || p.EndedAt != nil {
		t.Fatalf("poisoned call's CDR %+v %v", p, err)
	}

	m := gather(t, reg)
	if got := m["maskpbx_cdr_events_applied_total"].GetCounter().GetValue(); got != float64(wantEvents) {
		t.Errorf("applied_total %v, want %d", got, wantEvents)
	}
	if got := m["maskpbx_cdr_events_dropped_total"].GetCounter().GetValue(); got != float64(len(dropped)) {
		t.Errorf("dropped_total %v, want %d", got, len(dropped))
	}
	// A copy of the poisoned end is refused like the original.
	if got := m["maskpbx_cdr_events_duplicate_total"].GetCounter().GetValue(); got < copies-3 || got > copies {
		t.Errorf("duplicate_total %v, want about %d", got, copies)
	}
	h := m["maskpbx_cdr_batch_events"].GetHistogram()
	if batches, events := h.GetSampleCount(), h.GetSampleSum(); batches == 0 || events/float64(batches) < 20 {
		t.Errorf("%d batches for %v events: not batched", batches, events)
	}
	if m["maskpbx_cdr_batch_failures_total"].GetCounter().GetValue() == 0 {
		t.Error("the poisoned event was never retried")
	}
	t.Logf("%d batches, %.0f events each on average", h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()))
}

// gather reads reg's metrics by name (the first series of each).
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.Metric{}
	for _, f := range fams {
		if len(f.GetMetric()) > 0 {
			out[f.GetName()] = f.GetMetric()[0]
		}
	}
	return out
}
