package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/logging"
	"github.com/maskpbx/maskpbx/pbx"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// recorderConfig is every setting of `maskpbx recorder`: the SIPREC
// recording server on its own, for a node apart from the PBX. Like serve's
// flags, each can be set as MASKPBX_<NAME>.
type recorderConfig struct {
	DataDir     string
	DatabaseURL string
	NATSURL     string
	NATS        natsClient // how to authenticate to --nats-url
	SIPListen   string
	PublicAddr  string
	RTPPorts    string
	HTTPListen  string
	Node        string
	Allow       string
	Secret      string // --siprec-secret
	LogFormat   string
	Retention   int
	CDRWriter   bool
	Sync        time.Duration
	Recordings  recordingsFlags
}

func newRecorderFlagSet(c *recorderConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("recorder", flag.ContinueOnError)
	fs.StringVar(&c.DataDir, "data-dir", "./var", "recordings (<data-dir>/recordings) and the crash journal live here")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres URL (required)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS URL for recording.ready events and the CDR writer; empty sends no events")
	c.NATS.register(fs)
	fs.StringVar(&c.SIPListen, "sip-listen", recorder.DefaultRecorderListen, "SIP UDP+TCP address recording sessions come to")
	fs.StringVar(&c.PublicAddr, "public-addr", "", "IP written into SDP and Contact (default: the listen IP)")
	fs.StringVar(&c.RTPPorts, "rtp-ports", "", "UDP port range for recorded streams, e.g. 30000-39999 (default: any)")
	fs.StringVar(&c.HTTPListen, "http-listen", "", "address for /metrics and /healthz (default: none)")
	fs.StringVar(&c.Node, "node", "", "this recorder's name in recording rows (default: the host name)")
	fs.StringVar(&c.Allow, "siprec-allow", "", "comma-separated IPs/CIDRs allowed to start recordings, e.g. the PBX's address (default: loopback only)")
	fs.StringVar(&c.Secret, "siprec-secret", "", "shared secret SRCs authenticate with (digest, user "+recorder.SRCUser+"; prefer MASKPBX_SIPREC_SECRET); default: <data-dir>/keys/siprec.secret, generated once")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or console")
	fs.IntVar(&c.Retention, "recording-retention", 0, "days to keep recording audio; 0 keeps it forever")
	fs.BoolVar(&c.CDRWriter, "cdr-writer", true, "also write CDRs from call events (needs --nats-url)")
	c.Recordings.register(fs)
	fs.DurationVar(&c.Sync, "sync-interval", recorder.DefaultSyncInterval, "how often recording files are synced to disk (a crash of the machine loses at most this much)")
	return fs
}

// parseRecorderConfig reads flags, falling back to MASKPBX_* variables for
// every flag not given on the command line.
func parseRecorderConfig(args []string) (recorderConfig, error) {
	var c recorderConfig
	fs := newRecorderFlagSet(&c)
	err := parseFlagsAndEnv(fs, args)
	switch {
	case err != nil:
		return c, err
	case c.DatabaseURL == "":
		return c, errors.New("--database-url (or MASKPBX_DATABASE_URL) is required")
	case c.LogFormat != "json" && c.LogFormat != "console":
		return c, errors.New("--log-format must be json or console")
	case c.Retention < 0:
		return c, errors.New("--recording-retention must be 0 (keep) or a number of days")
	}
	if err := c.NATS.checkReplicas(); err != nil {
		return c, err
	}
	if _, bucket, err := c.Recordings.parse(); err != nil {
		return c, err
	} else if bucket != "" && c.NATSURL == "" {
		return c, errors.New("--recordings-url jetstream: needs --nats-url")
	}
	if c.NATSURL != "" {
		if err := c.NATS.check(c.NATSURL); err != nil {
			return c, fmt.Errorf("--nats-url: %w", err)
		}
	}
	return c, nil
}

// recorderCommand is `maskpbx recorder`.
func recorderCommand(ctx context.Context, args []string) error {
	cfg, err := parseRecorderConfig(args)
	if err != nil {
		return err
	}
	logger, err := logging.New(cfg.LogFormat)
	if err != nil {
		return err
	}
	defer logger.Sync() //nolint:errcheck // nothing useful to do on exit
	return runRecorder(ctx, cfg, logger)
}

// runRecorder runs the recording server (and the CDR writer and retention)
// until ctx ends. A recording that was under way when this process last
// died is repaired before the first new session is taken.
func runRecorder(ctx context.Context, cfg recorderConfig, logger *zap.Logger) error {
	logger = logging.Redacted(logger) // as serve: no number in any spelling in a line
	allow, err := parsePrefixes(cfg.Allow)
	if err != nil {
		return fmt.Errorf("--siprec-allow: %w", err)
	}
	if len(allow) == 0 {
		allow = loopback
	}
	secret, err := loadSIPRECSecret(cfg.Secret, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("--siprec-secret: %w", err)
	}
	if _, err := storage.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	// Retention audits what it deletes: the recorder keys and anchors the
	// chain like serve (the same key on every node).
	audit, err := loadAudit(cfg.DataDir)
	if err != nil {
		return err
	}
	store, err := storage.Open(ctx, cfg.DatabaseURL, audit)
	if err != nil {
		return err
	}
	defer store.Close()

	var sink recorder.EventSink
	var cdr *recorder.CDRWriter
	var js jetstream.JetStream
	if cfg.NATSURL != "" {
		auth := cfg.NATS.auth()
		// Replies under the recorder's own prefix: the only subjects its
		// user on the embedded server may subscribe to.
		auth.InboxPrefix = bus.RecorderInboxPrefix
		var nc *nats.Conn
		nc, js, err = bus.Connect(ctx, cfg.NATSURL, "maskpbx-recorder", auth)
		if err != nil {
			return err
		}
		defer nc.Close()
		// The recorder's user may not change the PBX's stream: open it only.
		publisher, stopPublisher, err := startPublisher(ctx, js, events.OpenStream, cfg.NATS.Replicas, logger,
			"recording events not flushed; the journal repeats them at the next start", "")
		if err != nil {
			return err
		}
		defer stopPublisher()
		sink = publisher
		if cfg.CDRWriter {
			// A connection of its own, not queued behind recording saves.
			cdrStore, err := storage.OpenConns(ctx, cfg.DatabaseURL, 1, audit)
			if err != nil {
				return err
			}
			defer cdrStore.Close()
			cdr = recorder.NewCDRWriter(js, cdrStore, logger)
			cdr.Replicas = cfg.NATS.Replicas
		}
	} else {
		logger.Warn("no --nats-url: recordings send no recording.ready events and no CDRs are written here")
	}

	node := cfg.Node
	if node == "" {
		node = defaultNodeID()
	}
	recs, err := openRecordingStorage(ctx, cfg.Recordings, cfg.DataDir, node, js, logger)
	if err != nil {
		return err
	}
	blobs := recs.Blobs
	rs, err := recorder.NewServer(recorder.ServerConfig{
		Listen: cfg.SIPListen, PublicAddr: cfg.PublicAddr, RTPPorts: cfg.RTPPorts, Node: cfg.Node, Allow: allow, Secret: secret,
		JournalDir: filepath.Join(cfg.DataDir, "recorder-journal"), SyncInterval: cfg.Sync,
	}, blobs, store, sink, logger.Named("recorder"))
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rs.Serve(gctx) })
	if beat := recs.recorderBeat(rs.Node(), logger); beat != nil {
		g.Go(func() error { return beat.run(gctx) })
	}
	if cdr != nil {
		g.Go(func() error { return cdr.Run(gctx) })
	}
	if r := recs.retention(store, rs.Node(), cfg.Retention, logger); r != nil {
		g.Go(func() error { return r.Run(gctx) })
	}
	// Erased clients' audio on this node (or in the shared store): deleted
	// here, retried each minute.
	erasure := recs.erasure(store, rs.Node(), logger)
	g.Go(func() error { return erasure.Run(gctx) })
	if cfg.HTTPListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if err := rs.RegisterMetrics(reg); err != nil {
			return err
		}
		if cdr != nil {
			if err := cdr.RegisterMetrics(reg); err != nil {
				return err
			}
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if store.Ping(pctx) != nil || rs.Addr() == "" {
				http.Error(w, `{"status":"unavailable"}`, http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
		})
		ln, err := net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			return fmt.Errorf("--http-listen: %w", err)
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		serveHTTP(g, gctx, hs, ln)
	}
	return g.Wait()
}

// loopback is the default SIPREC allow-list: this host only.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// RecorderOff is the --recorder value that records nothing.
const RecorderOff = "off"

// recording is serve's part of call recording: the PBX's SIPREC client,
// the in-process recorder (unless --recorder names another one), its
// retention, and the recordings' audio for the replay API.
type recording struct {
	SRC   *pbx.SRC       // nil when recording is off
	Audio recordingStore // --recordings-url, for the replay API

	server    *recorder.Server // nil when the recorder runs elsewhere
	retention *recorder.Retention
	erasure   *recorder.Erasure // with server or a shared store: erased clients' audio
	logger    *zap.Logger
}

// setupRecording prepares recording for serve. uri is --recorder: empty
// runs a recorder in this process on a loopback port, "off" records
// nothing, anything else is the SIP URI of a recorder elsewhere.
// retentionDays is --recording-retention (0 keeps audio forever); the
// in-process recorder applies it. Call it after pbx.NewServer and before
// EnableCalls (CallConfig.Recorder = the returned SRC).
func setupRecording(uri, secretFlag string, retentionDays int, dataDir string, recs recordingStorage, sip *pbx.Server,
	store *storage.Store, sink recorder.EventSink, logger *zap.Logger) (*recording, error) {
	if retentionDays < 0 {
		return nil, errors.New("--recording-retention must be 0 (keep) or a number of days")
	}
	secret, err := loadSIPRECSecret(secretFlag, dataDir)
	if err != nil {
		return nil, fmt.Errorf("--recorder-secret: %w", err)
	}
	blobs := recs.Blobs
	r := &recording{Audio: blobs, logger: logger}
	if uri == RecorderOff {
		logger.Warn("call recording is off (--recorder off)")
		return r, nil
	}
	if uri == "" {
		// The PBX hands it packets directly (localRecorder); its SIP port
		// takes sessions from this host only, with the secret.
		r.server, err = recorder.NewServer(recorder.ServerConfig{
			Listen: "127.0.0.1:0", JournalDir: filepath.Join(dataDir, "recorder-journal"), Allow: loopback, Secret: secret,
			Node: recs.node,
		}, blobs, store, sink, logger.Named("recorder"))
		if err != nil {
			return nil, err
		}
		if err := r.server.Listen(); err != nil {
			return nil, err
		}
		uri = r.server.URI()
		r.retention = recs.retention(store, r.server.Node(), retentionDays, logger)
		r.erasure = recs.erasure(store, r.server.Node(), logger)
	}
	if r.erasure == nil && recs.Shared {
		// The store is every node's: this one deletes erased clients'
		// audio at once too, wherever it was recorded.
		r.erasure = recs.erasure(store, "", logger)
	}
	cfg := pbx.RecorderConfig{URI: uri, User: recorder.SRCUser, Secret: secret}
	if r.server != nil {
		// The relay hands packets straight to the recorder: no SIPREC
		// dialog or UDP inside one process.
		cfg.Local = localRecorder{r.server}
	}
	if r.SRC, err = pbx.NewSRC(sip, cfg); err != nil {
		return nil, fmt.Errorf("--recorder: %w", err)
	}
	logger.Info("calls are recorded", zap.String("recorder", uri), zap.Bool("in_process", r.server != nil))
	return r, nil
}

// audioErasure is what the API deletes erased clients' audio with: the
// in-process recorder's, the shared store's, or none when the audio lives
// on recorder nodes' disks (their own runs delete it).
func (r *recording) audioErasure() api.AudioErasure {
	if r.erasure == nil {
		return nil
	}
	return r.erasure
}

// localRecorder gives the PBX the in-process recorder's direct path.
type localRecorder struct{ server *recorder.Server }

func (l localRecorder) StartRecording(info pbx.RecordingInfo, codec string) (pbx.LocalRecording, error) {
	return l.server.StartLocal(recorder.Metadata{CallID: info.CallID, Direction: info.Direction, ClientID: info.ClientID,
		ClientCode: info.ClientCode, ManagerID: info.ManagerID}, codec)
}

// registerMetrics adds the recording counters: calls that went unrecorded
// (the recorder was down or refused), sessions, and the in-process
// recorder's own.
func (r *recording) registerMetrics(reg prometheus.Registerer) error {
	src := r.SRC
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_recording_failures_total",
			Help: "Answered calls that went unrecorded because the recorder was down, slow or refused."},
			func() float64 { return float64(src.Stats().Failed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "maskpbx_recording_sessions_total",
			Help: "Recording sessions the recorder accepted."}, func() float64 { return float64(src.Stats().Started) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maskpbx_recording_sessions_active",
			Help: "Calls being recorded."}, func() float64 { return float64(src.Stats().Active) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if r.server != nil {
		return r.server.RegisterMetrics(reg)
	}
	return nil
}

// run runs the in-process recorder and retention until ctx ends, then
// lets the last BYEs to the recorder go out.
func (r *recording) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	if r.server != nil {
		g.Go(func() error { return r.server.Serve(gctx) })
	}
	if r.retention != nil {
		g.Go(func() error { return r.retention.Run(gctx) })
	}
	if r.erasure != nil {
		g.Go(func() error { return r.erasure.Run(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	<-ctx.Done()
	r.SRC.Wait(3 * time.Second)
	return nil
}
