package recorder

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// BenchmarkCDRWriter measures the CDR writer's pace: b.N answered calls (4
// events each) are published into a real embedded JetStream first, then the
// writer runs against a real Postgres until every call has its finished CDR.
// It reports calls/s and events/s. Use a fixed call count:
//
//	go test -run XXX -bench CDRWriter -benchtime 20000x ./recorder/
//
// The test cluster runs with fsync off; to measure against one with fsync on
// (as `make bench` and production run it), point MASKPBX_TEST_DATABASE_URL
// at such a server. CDR_BENCH_BATCH=n sets the writer's batch limit.
func BenchmarkCDRWriter(b *testing.B) {
	ctx := context.Background()
	url := testenv.Database(b)
	if _, err := storage.Migrate(ctx, url); err != nil {
		b.Fatal(err)
	}
	store, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	anna, err := store.CreateManager(ctx, storage.NewManager{Name: "anna", SIPUsername: "anna", HA1MD5: "x",
		HA1SHA256: "y", Role: storage.RoleManager}, "bench")
	if err != nil {
		b.Fatal(err)
	}
	client, err := store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: anna.ID,
		NewCode: func() (string, error) { return "12345678", nil }}, "bench")
	if err != nil {
		b.Fatal(err)
	}

	natsURL := testenv.NATS(b)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, js, 1); err != nil {
		b.Fatal(err)
	}
	publishBenchCalls(b, js, b.N, client.ID, anna.ID)

	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	w := NewCDRWriter(js, store, zap.NewNop())
	reg := prometheus.NewRegistry()
	if err := w.RegisterMetrics(reg); err != nil {
		b.Fatal(err)
	}
	if v, _ := strconv.Atoi(os.Getenv("CDR_BENCH_BATCH")); v > 0 {
		w.batchMax = v
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	testenv.Eventually(b, 10*time.Minute, func() bool {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM cdrs WHERE ended_at IS NOT NULL AND offered_at IS NOT NULL`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n == b.N
	}, "all %d CDRs finished", b.N)
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(4*b.N)/elapsed.Seconds(), "events/s")
	// On a shared machine the pace depends on what else runs; the CPU this
	// process (writer and embedded NATS, not Postgres) spent per call does not.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/call")
	fams, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range fams {
		if h := f.GetMetric()[0].GetHistogram(); h != nil && h.GetSampleCount() > 0 {
			switch f.GetName() {
			case "maskpbx_cdr_batch_events":
				b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "events/batch")
			case "maskpbx_cdr_batch_seconds":
				b.ReportMetric(1000*h.GetSampleSum()/float64(h.GetSampleCount()), "ms/batch")
			}
		}
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// publishBenchCalls publishes n answered calls the way a busy PBX does:
// calls overlap, so a call's events are spread among other calls' events
// (offered, ringing and answered of a block of calls, then their ends).
func publishBenchCalls(b *testing.B, js jetstream.JetStream, n int, clientID, managerID string) {
	b.Helper()
	t0 := time.Now().UTC().Add(-time.Hour)
	const block = 500
	for first := 0; first < n; first += block {
		calls := make([]string, min(block, n-first))
		for i := range calls {
			calls[i] = newID()
		}
		for _, k := range []events.Kind{events.Offered, events.Ringing, events.Answered, events.Ended} {
			for i, id := range calls {
				e := events.Event{ID: newID(), Kind: k, Time: t0.Add(time.Duration(first+i) * time.Millisecond), CallID: id,
					Direction: events.Inbound, ClientID: clientID, ManagerID: managerID}
				if k == events.Ended {
					e.Disposition, e.HangupSide, e.Recording = events.DispositionAnswered, events.HangupClient, "ok"
				}
				data, err := json.Marshal(e)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := js.PublishMsgAsync(&nats.Msg{Subject: e.Subject(), Data: data}, jetstream.WithMsgID(e.ID)); err != nil {
					b.Fatal(err)
				}
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("publishing stalled")
		}
	}
}
