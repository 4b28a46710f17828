package recorder

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// cdrMetrics is the CDR writer's pace and backlog.
type cdrMetrics struct {
	applied       prometheus.Counter
	duplicates    prometheus.Counter
	dropped       prometheus.Counter
	failedBatches prometheus.Counter
	batchEvents   prometheus.Histogram
	batchSeconds  prometheus.Histogram
	backlog       atomic.Int64
}

func newCDRMetrics() cdrMetrics {
	return cdrMetrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "maskpbx_cdr_events_applied_total",
			Help: "Call events written into CDRs."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "maskpbx_cdr_events_duplicate_total",
			Help: "Call events applied before (redeliveries), acknowledged without a change."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "maskpbx_cdr_events_dropped_total",
			Help: "Malformed or invalid call events dropped."}),
		failedBatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "maskpbx_cdr_batch_failures_total",
			Help: "Batches whose transaction failed; their events are redelivered."}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maskpbx_cdr_batch_events",
			Help:    "Call events per committed CDR batch.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maskpbx_cdr_batch_seconds",
			Help:    "Time to write one committed CDR batch.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
}

// RegisterMetrics adds the CDR writer's pace and backlog to reg.
func (w *CDRWriter) RegisterMetrics(reg prometheus.Registerer) error {
	m := &w.metrics
	for _, c := range []prometheus.Collector{
		m.applied, m.duplicates, m.dropped, m.failedBatches, m.batchEvents, m.batchSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_cdr_backlog_events",
			Help: "Call events waiting for the CDR writer when it took its last batch."},
			func() float64 { return float64(m.backlog.Load()) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
