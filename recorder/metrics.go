package recorder

import "github.com/prometheus/client_golang/prometheus"

// RegisterMetrics adds the recording server's counters to reg.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	counter := func(name, help string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(s.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_recorder_sessions_active",
			Help: "Recording sessions being written."}, func() float64 { return float64(s.Stats().Active) }),
		counter("maskpbx_recorder_sessions_started_total", "Recording sessions accepted.", func(st Stats) uint64 { return st.Started }),
		counter("maskpbx_recorder_sessions_refused_total", "Recording INVITEs refused.", func(st Stats) uint64 { return st.Refused }),
		counter("maskpbx_recorder_recordings_complete_total", "Recordings ended in order.", func(st Stats) uint64 { return st.Complete }),
		counter("maskpbx_recorder_recordings_partial_total", "Recordings ended without BYE or repaired after a crash.",
			func(st Stats) uint64 { return st.Partial }),
		counter("maskpbx_recorder_recordings_missing_total", "Recordings whose audio did not survive.",
			func(st Stats) uint64 { return st.Missing }),
		counter("maskpbx_recorder_recovered_total", "Journal entries finished after a restart or a failed save.",
			func(st Stats) uint64 { return st.Recovered }),
		counter("maskpbx_recorder_write_errors_total", "Recording file writes or syncs that failed.",
			func(st Stats) uint64 { return st.WriteErrors }),
		counter("maskpbx_recorder_save_errors_total", "Recording rows that could not be saved (retried).",
			func(st Stats) uint64 { return st.SaveErrors }),
		counter("maskpbx_recorder_rtp_packets_total", "RTP packets recorded.", func(st Stats) uint64 { return st.Packets }),
		counter("maskpbx_recorder_rtp_late_total", "RTP packets too late for the jitter buffer.", func(st Stats) uint64 { return st.Late }),
		counter("maskpbx_recorder_rtp_lost_total", "RTP packets that never arrived.", func(st Stats) uint64 { return st.Lost }),
		counter("maskpbx_recorder_rtp_overruns_total", "RTP packets dropped because the writer fell behind.",
			func(st Stats) uint64 { return st.Overruns }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
