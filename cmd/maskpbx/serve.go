package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/console"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/logging"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// running is what a started serve tells whoever waits for it (tests, the
// start-up banner).
type running struct {
	HTTPAddr string
	NATSURL  string
	Store    *storage.Store
	Regs     *pbx.Registrations
	SIP      *pbx.Server
	Ports    *media.PortPool
}

// serve runs every component in one process until ctx ends. If started is
// not nil it is called once everything listens.
func serve(ctx context.Context, cfg Config, logger *zap.Logger, started func(running)) error {
	// Flags and ports first: nothing slow starts before they are known good
	// (preflight.go).
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.NodeID == "" {
		cfg.NodeID = defaultNodeID()
	}
	// No line of any component carries a phone number, in any spelling.
	logger = logging.Redacted(logger)
	ports, err := bindPorts(cfg)
	if err != nil {
		return err
	}
	defer ports.close()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return err
	}
	keys, err := loadKeys(cfg.DataDir)
	if err != nil {
		return err
	}
	audit, err := loadAudit(cfg.DataDir)
	if err != nil {
		return err
	}
	numbers := masking.NewNormalizer(cfg.Region)
	if _, err := parseCompanyNumbers(cfg.CompanyNumber, numbers); err != nil {
		return fmt.Errorf("--company-number: %w", err)
	}

	applied, err := storage.Migrate(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	logger.Info("database migrated", zap.Int64s("applied", applied))
	store, err := storage.Open(ctx, cfg.DatabaseURL, audit)
	if err != nil {
		return err
	}
	defer store.Close()

	natsURL, natsAuth := cfg.NATSURL, cfg.NATS.auth()
	if natsURL == "" {
		host, port, err := splitHostPort(cfg.NATSListen)
		if err != nil {
			return fmt.Errorf("--nats-listen: %w", err)
		}
		if port == 0 {
			port = -1 // nats-server's "any free port"
		}
		// The embedded server's users: the PBX (this process and any other
		// node joining it) and recorders, passwords generated once.
		users, err := bus.LoadUsers(filepath.Join(cfg.DataDir, "keys"))
		if err != nil {
			return err
		}
		ports.releaseNATS()
		embedded, err := bus.StartEmbedded(filepath.Join(cfg.DataDir, "nats"), host, port, users)
		if err != nil {
			return err
		}
		natsAuth = users.PBXAuth()
		defer embedded.Shutdown()
		natsURL = embedded.URL()
		logger.Info("embedded NATS started", zap.String("url", natsURL))
	}
	nc, js, err := bus.Connect(ctx, natsURL, "maskpbx", natsAuth)
	if err != nil {
		return err
	}
	defer nc.Close()
	regs, err := pbx.NewRegistrations(ctx, js, cfg.NATS.Replicas, logger.Named("registrations"))
	if err != nil {
		return err
	}
	defer regs.Stop() // after the SIP server and the API have stopped, before NATS

	if cfg.Demo {
		if err := seedDemo(ctx, store, keys, numbers, cfg.SIPDomain, logger); err != nil {
			return fmt.Errorf("demo data: %w", err)
		}
	}

	publisher, stopPublisher, err := startPublisher(ctx, js, events.EnsureStream, cfg.NATS.Replicas, logger,
		"call events not flushed; they are sent at the next start", filepath.Join(cfg.DataDir, "events.spool"))
	if err != nil {
		return err
	}
	defer stopPublisher()

	listenHost, _, err := net.SplitHostPort(cfg.SIPListen)
	if err != nil {
		return fmt.Errorf("--sip-listen: %w", err)
	}
	publicAddr := cfg.PublicAddr
	if publicAddr == "" {
		publicAddr = defaultPublicAddr(listenHost)
	}
	tlsListen, tlsConfig, err := sipTLS(cfg, publicAddr, logger)
	if err != nil {
		return err
	}
	cluster, err := pbx.OpenCluster(ctx, js, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	nonceKey, err := pbx.NonceKey(ctx, cluster)
	if err != nil {
		return err
	}
	sip, err := pbx.NewServer(pbx.Config{
		NonceKey:         nonceKey,
		Listen:           cfg.SIPListen,
		TLSListen:        tlsListen,
		TLS:              tlsConfig,
		Domain:           cfg.SIPDomain,
		PublicAddr:       publicAddr,
		DigestAlgorithms: cfg.digestAlgorithms(),
		StrangerRate:     noLimitIfZero(cfg.SIPRateLimit),
		PhoneRate:        noLimitIfZero(cfg.SIPRateLimitPhone),
		TrunkRate:        noLimitIfZero(cfg.SIPRateLimitTrunk),
		SourceBlockFor:   cfg.SIPRateLimitBlock,
		UDP:              ports.sipUDP,
		TCP:              ports.sipTCP,
		TLSListener:      ports.sipTLS,
		DismissedTry:     dismissedTries(store, logger.Named("pbx")),
	}, credentials{store}, regs, logger.Named("pbx"))
	if err != nil {
		return err
	}
	callCfg, err := cfg.callConfig(numbers, listenHost)
	if err != nil {
		return err
	}
	// What routing needs, in memory, so calls route while Postgres is down.
	routeCache := pbx.NewRouteCache(store, keys, nc, logger.Named("routing"))
	if err := routeCache.SpoolPending(filepath.Join(cfg.DataDir, "pending-callers.json")); err != nil {
		return err
	}
	loadStart := time.Now()
	if err := routeCache.Load(ctx); err != nil {
		return fmt.Errorf("routing cache: %w", err)
	}
	st := routeCache.Stats()
	logger.Info("routing cache loaded", zap.Int("clients", st.Clients), zap.Int("managers", st.Managers),
		zap.Duration("took", time.Since(loadStart).Round(time.Millisecond)))
	callCfg.Router = &pbx.Router{Store: store, Keys: keys, Numbers: numbers, Regs: regs,
		Cursor: pbx.NewCursor(cluster, logger.Named("routing")), Cache: routeCache}
	if err := store.AddAliasNumbers(ctx, callCfg.AliasNumbers); err != nil {
		return fmt.Errorf("--alias-numbers: %w", err)
	}
	callCfg.Events = publisher
	callCfg.Numbers = numbers
	callCfg.Language = cfg.DefaultLanguage
	callCfg.Node = cfg.NodeID
	callCfg.Cluster = cluster
	recs, err := openRecordingStorage(ctx, cfg.Recordings, cfg.DataDir, cfg.NodeID, js, logger)
	if err != nil {
		return err
	}
	rec, err := setupRecording(cfg.Recorder, cfg.RecorderSecret, cfg.RecordingRetention, cfg.DataDir, recs, sip, store,
		publisher, logger)
	if err != nil {
		return err
	}
	callCfg.Recorder = rec.SRC
	if err := sip.EnableCalls(callCfg); err != nil {
		return err
	}
	metrics := newMetrics(sip, callCfg.Ports)
	registerRouteCacheMetrics(metrics, routeCache)
	if err := rec.registerMetrics(metrics); err != nil {
		return err
	}
	// The CDR writer has a connection of its own: under load, call handling
	// queues for the shared pool, and CDRs must not queue behind it.
	cdrStore, err := storage.OpenConns(ctx, cfg.DatabaseURL, 1, audit)
	if err != nil {
		return err
	}
	defer cdrStore.Close()
	cdrs := recorder.NewCDRWriter(js, cdrStore, logger)
	cdrs.Replicas = cfg.NATS.Replicas
	if err := cdrs.RegisterMetrics(metrics); err != nil {
		return err
	}
	alertEval, stopAlerts, err := startAlerts(ctx, cfg, store, keys, nc, js, logger.Named("alerts"))
	if err != nil {
		return err
	}
	defer stopAlerts()
	adminToken := os.Getenv("MASKPBX_ADMIN_TOKEN")
	// The console's sessions authenticate both its pages and the API calls
	// its pages make from the browser.
	sessions := console.NewSessions(store, adminToken, false, logger.Named("console"))
	apiServer := api.New(api.Config{
		Store: store, Keys: keys, Numbers: numbers, Registrations: registered{regs}, Dialer: dialer{sip},
		SIPDomain: cfg.SIPDomain, AdminToken: adminToken, Sessions: sessions,
		Metrics: metrics, Logger: logger.Named("api"), Recordings: rec.Audio, Trunk: trunkStatus{sip},
		Changes:         routeCache,
		DefaultLanguage: cfg.DefaultLanguage,
		AudioErasure:    rec.audioErasure(),
		Monitors:        monitors{sip},
		TaskOverdue:     cfg.TaskOverdue,
	})
	imports, err := openImportReports(ctx, js, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	if err := ensureReplicas(ctx, js, cfg.NATS.Replicas, logger); err != nil {
		return err
	}
	web, err := console.New(console.Config{Store: store, Sessions: sessions, API: apiServer, SIPDomain: cfg.SIPDomain,
		TimeZone: cfg.TimeZone, DefaultLanguage: cfg.DefaultLanguage, ImportReports: imports, Logger: logger.Named("console")})
	if err != nil {
		return err
	}
	routes := http.NewServeMux()
	routes.Handle("/api/", apiServer)
	routes.Handle("/healthz", apiServer)
	routes.Handle("/metrics", apiServer)
	routes.Handle("/", web)
	httpLn := ports.http
	httpServer := &http.Server{Handler: routes, ReadHeaderTimeout: 10 * time.Second}

	// Before the node takes a call: whatever it left open died with it.
	closeOrphanedCalls(ctx, store, publisher, cfg.NodeID, true, logger)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sip.Serve(gctx) })
	g.Go(func() error { return cdrs.Run(gctx) })
	g.Go(func() error { return routeCache.Run(gctx) })
	g.Go(func() error {
		return runRotationSchedules(gctx, store, routeCache.ClientChanged, cfg.rotationCheck, logger.Named("rotation"))
	})
	watch := &nodeWatch{kv: cluster, self: cfg.NodeID, logger: logger.Named("nodes"), now: time.Now,
		closer: func(ctx context.Context, node string) {
			closeOrphanedCalls(ctx, store, publisher, node, false, logger)
			recs.recoverRecordings(ctx, store, publisher, node, logger)
		}}
	g.Go(func() error { return watch.run(gctx) })
	if w := recs.recorderWatch(store, publisher, logger); w != nil {
		g.Go(func() error { return w.run(gctx) })
	}
	g.Go(func() error { return rec.run(gctx) })
	g.Go(func() error { return alertEval.Run(gctx) })
	serveHTTP(g, gctx, httpServer, httpLn)
	if ports.pprof != nil {
		logger.Info("serving Go profiles", zap.String("pprof", ports.pprof.Addr().String()))
		serveHTTP(g, gctx, pprofServer(), ports.pprof)
	}
	g.Go(func() error {
		select {
		case <-sip.Ready():
		case <-gctx.Done():
			return nil
		}
		logger.Info("maskpbx is up", zap.String("http", httpLn.Addr().String()), zap.String("sip", cfg.SIPListen),
			zap.String("sip_domain", cfg.SIPDomain))
		if started != nil {
			started(running{HTTPAddr: httpLn.Addr().String(), NATSURL: natsURL, Store: store, Regs: regs, SIP: sip, Ports: callCfg.Ports})
		}
		return nil
	})
	return g.Wait()
}

// noLimitIfZero maps a rate flag (0: no limit) to pbx.Config (0: the
// default, negative: no limit).
func noLimitIfZero(rate int) int {
	if rate == 0 {
		return -1
	}
	return rate
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

// credentials gives the registrar the SIP digests of managers from storage.
type credentials struct{ store *storage.Store }

func (c credentials) SIPCredentials(ctx context.Context, username string) (pbx.SIPCredentials, error) {
	m, err := c.store.ManagerBySIPUsername(ctx, username)
	if errors.Is(err, storage.ErrNotFound) {
		return pbx.SIPCredentials{}, pbx.ErrUnknownUser
	}
	if err != nil {
		return pbx.SIPCredentials{}, err
	}
	return pbx.SIPCredentials{ManagerID: m.ID, Username: m.SIPUsername, HA1MD5: m.HA1MD5, HA1SHA256: m.HA1SHA256,
		Active: m.Status == storage.StatusActive}, nil
}

// registered answers the API's "is he registered" from the registrar's KV.
type registered struct{ regs *pbx.Registrations }

func (r registered) Registered(ctx context.Context, managerID string) (bool, error) {
	cs, err := r.regs.Contacts(ctx, managerID)
	return len(cs) > 0, err
}

func (r registered) RemoveManager(ctx context.Context, managerID string) error {
	return r.regs.RemoveManager(ctx, managerID)
}

// pprofServer serves net/http/pprof on a server of its own, apart from the
// API (whose mux must not grow debug routes).
func pprofServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// serveHTTP runs hs on ln in g and shuts it down gracefully when ctx ends.
func serveHTTP(g *errgroup.Group, ctx context.Context, hs *http.Server, ln net.Listener) {
	g.Go(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(shutdown)
	})
}
