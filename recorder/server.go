package recorder

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/sipnet"
	"github.com/maskpbx/maskpbx/storage"
)

// Goroutines and ownership of the recording server
//
//   - sipgo calls the handlers below on its own goroutines. onInvite builds
//     a session completely (ports, file, journal entry) before it answers
//     200 and begins it; until then nothing else can reach the session.
//     StartLocal does the same for the PBX in this process, without SIP.
//   - A SIPREC session has one reader goroutine per recorded stream (the
//     only reader of that socket; it calls timeline.place). A local session
//     has none: the PBX's relay calls place through LocalSession.Packet.
//   - No session has a goroutine of its own while it records: a few flush
//     workers (flushLoop) tick every running session each FlushInterval,
//     writing its final frames and queueing its syncs under its flushMu.
//     end starts finish on a goroutine of its own once the session has
//     begun; finish takes the file from the workers (finishing), closes
//     the sockets, waits for the readers and commits the recording.
//   - Rows go to the catalog through one rowWriter goroutine, in batches.
//   - A session stays in s.sessions until finish has committed it (row
//     saved, event published, journal entry gone), so the journal sweeper
//     never touches the file of a live or finishing session.
//   - Server.mu guards sessions and closing; never hold it while doing I/O.

// ServerConfig configures the recording server. Zero fields take defaults.
type ServerConfig struct {
	// Listen is the SIP UDP+TCP address; port 0 picks one free for both.
	Listen string
	// PublicAddr is the IP written into SDP and Contact; default the listen
	// IP, which must then be concrete.
	PublicAddr string
	// RTPPorts is "min-max" for the recorded streams' sockets; empty lets
	// the OS choose.
	RTPPorts string
	// Node names this recorder in recordings rows (the blob store holding a
	// file); default the host name.
	Node string
	// Allow lists the sources that may start a recording; empty allows any
	// (maskpbx's commands always set it: loopback by default).
	Allow []netip.Prefix
	// Secret, if set, is the shared secret an SRC proves with digest
	// authentication (user SRCUser, realm SRCRealm, MD5, qop=auth) on each
	// INVITE that starts a session; empty asks for none (maskpbx's
	// commands always set one).
	Secret string
	// JournalDir keeps the crash journal; it must be on a disk that
	// survives a restart. Required.
	JournalDir string

	FlushInterval time.Duration // how often final frames go to the file; default 250ms
	SyncInterval  time.Duration // how often the file is synced to disk; default 2s
	IdleTimeout   time.Duration // no RTP on any stream this long ends a session (partial); default 5m
}

// Sync workers: how many files are synced at once, and how many sessions
// may wait for their turn (one entry per session at most).
const (
	syncWorkers  = 4
	syncQueueLen = 8192
	// flushWorkers tick the running sessions; each tick of a session is a
	// copy out of its jitter buffer and one write.
	flushWorkers = 4
)

// Defaults of ServerConfig.
const (
	DefaultRecorderListen = "0.0.0.0:5090"
	DefaultFlushInterval  = 250 * time.Millisecond
	DefaultSyncInterval   = 2 * time.Second
	DefaultIdleTimeout    = 5 * time.Minute
)

// Catalog is where recordings are listed (storage.Store).
type Catalog interface {
	SaveRecording(ctx context.Context, r storage.Recording) error
}

// EventSink takes recording.ready events (events.Publisher).
type EventSink interface {
	Publish(ctx context.Context, e events.Event) error
}

// Stats are the recorder's counters.
type Stats struct {
	Active      int    // sessions being recorded
	Started     uint64 // sessions accepted
	Refused     uint64 // INVITEs answered with an error
	Complete    uint64 // recordings ended in order
	Partial     uint64 // recordings ended without BYE, or repaired after a crash
	Missing     uint64 // recordings whose audio did not survive
	Recovered   uint64 // journal entries finished after a restart or a failed save
	WriteErrors uint64 // file writes or syncs that failed
	SaveErrors  uint64 // database saves that failed (retried from the journal)
	Packets     uint64 // RTP packets recorded (of finished sessions)
	Late        uint64 // packets dropped as too late for the jitter buffer
	Lost        uint64 // packets that never arrived, by sequence number
	Overruns    uint64 // packets dropped because the file writer fell behind
}

// Server is the SIPREC recording server (RFC 7866 SRS): it answers
// recording sessions from our PBX or any SRC, writes each as a stereo WAV
// into a BlobStore, lists it in the Catalog and announces it on the CALLS
// stream. Create it with NewServer and run it with Serve, once.
type Server struct {
	cfg     ServerConfig
	blobs   BlobStore
	catalog Catalog
	events  EventSink
	logger  *zap.Logger
	journal *journal
	ports   *udpPorts
	public  netip.Addr

	ua  *sipgo.UserAgent
	sip *sipgo.Server

	ready chan struct{} // closed by Listen
	addr  string
	udp   net.PacketConn
	tcp   net.Listener

	mu       sync.Mutex
	sessions map[string]*session // by Call-ID
	closing  bool
	wg       sync.WaitGroup // session goroutines

	sweepMu sync.Mutex // one journal sweep at a time

	// syncQueue feeds the sync workers: sessions hand them their file
	// every SyncInterval and go on flushing, so a slow disk stretches the
	// time between syncs instead of stalling the recordings, and a
	// thousand sessions do not tie up a thousand OS threads in fsync.
	syncQueue chan *session

	rows *rowWriter
	auth *srcAuth // nil: SRCs are not authenticated

	stats struct {
		started, refused, complete, partial, missing, recovered atomic.Uint64
		writeErrors, saveErrors, packets, late, lost, overruns  atomic.Uint64
	}
}

// NewServer builds a recording server; nothing listens until Serve. events
// may be nil (no recording.ready events).
func NewServer(cfg ServerConfig, blobs BlobStore, catalog Catalog, sink EventSink, logger *zap.Logger) (*Server, error) {
	if blobs == nil || catalog == nil || logger == nil {
		return nil, errors.New("recorder: NewServer needs a BlobStore, a Catalog and a logger")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultRecorderListen
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.JournalDir == "" {
		return nil, errors.New("recorder: ServerConfig.JournalDir is required")
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
		if cfg.Node == "" {
			cfg.Node = "recorder"
		}
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("recorder: listen %q: %w", cfg.Listen, err)
	}
	listenIP, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("recorder: listen address must be an IP (got %q)", host)
	}
	if cfg.PublicAddr == "" {
		cfg.PublicAddr = host
	}
	public, err := netip.ParseAddr(cfg.PublicAddr)
	if err != nil || public.IsUnspecified() {
		return nil, fmt.Errorf("recorder: needs a concrete public address IP (got %q)", cfg.PublicAddr)
	}
	lo, hi, err := parsePortRange(cfg.RTPPorts)
	if err != nil {
		return nil, err
	}
	j, err := newJournal(cfg.JournalDir)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, blobs: blobs, catalog: catalog, events: sink, logger: logger, journal: j,
		ports: newUDPPorts(listenIP, lo, hi), public: public.Unmap(),
		ready: make(chan struct{}), sessions: map[string]*session{},
		syncQueue: make(chan *session, syncQueueLen), rows: newRowWriter(catalog),
	}
	if cfg.Secret != "" {
		s.auth = newSRCAuth(cfg.Secret)
	}
	slogger := sipLogger(logger)
	s.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent("maskpbx-recorder"),
		sipgo.WithUserAgentHostname(s.public.String()),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slogger)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slogger)),
	)
	if err != nil {
		return nil, fmt.Errorf("recorder: sip user agent: %w", err)
	}
	s.sip, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(slogger))
	if err != nil {
		return nil, fmt.Errorf("recorder: sip server: %w", err)
	}
	s.sip.OnInvite(s.onInvite)
	s.sip.OnAck(s.onInDialog)
	s.sip.OnBye(s.onInDialog)
	s.sip.OnUpdate(s.onInDialog)
	s.sip.OnInfo(s.onInDialog)
	s.sip.OnOptions(s.onOptions)
	s.sip.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
	})
	s.sip.OnNoRoute(func(req *sip.Request, tx sip.ServerTransaction) {
		s.reply(req, tx, 405, "Method Not Allowed", sip.NewHeader("Allow", allow))
	})
	return s, nil
}

const allow = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"

// Node is this recorder's node name.
func (s *Server) Node() string { return s.cfg.Node }

// Ready is closed once the server listens (Listen or Serve).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the bound SIP host:port once Ready is closed, "" before.
func (s *Server) Addr() string {
	select {
	case <-s.ready:
		return s.addr
	default:
		return ""
	}
}

// URI is where an SRC sends recording sessions, once Ready is closed. It
// names TCP: a recording INVITE carries SDP and metadata, more than the
// 1300 bytes RFC 3261 §18.1.1 allows over UDP.
func (s *Server) URI() string {
	_, port, _ := net.SplitHostPort(s.Addr())
	return "sip:recorder@" + netip.AddrPortFrom(s.public, uint16(atoi(port))).String() + ";transport=tcp"
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := len(s.sessions)
	s.mu.Unlock()
	return Stats{
		Active:      active,
		Started:     s.stats.started.Load(),
		Refused:     s.stats.refused.Load(),
		Complete:    s.stats.complete.Load(),
		Partial:     s.stats.partial.Load(),
		Missing:     s.stats.missing.Load(),
		Recovered:   s.stats.recovered.Load(),
		WriteErrors: s.stats.writeErrors.Load(),
		SaveErrors:  s.stats.saveErrors.Load(),
		Packets:     s.stats.packets.Load(),
		Late:        s.stats.late.Load(),
		Lost:        s.stats.lost.Load(),
		Overruns:    s.stats.overruns.Load(),
	}
}

// sweepInterval is how often journal entries left by failed saves are
// retried.
const sweepInterval = 30 * time.Second

// Listen binds the SIP sockets, so that Addr and URI are known before
// Serve (serve needs the in-process recorder's URI to configure the PBX).
// Serve calls it if nobody did.
func (s *Server) Listen() error {
	if s.udp != nil {
		return nil
	}
	udp, tcp, err := sipnet.ListenUDPAndTCP(s.cfg.Listen)
	if err != nil {
		return err
	}
	s.udp, s.tcp = udp, tcp
	s.addr = udp.LocalAddr().String()
	close(s.ready)
	return nil
}

// Serve finishes what the journal holds from before (recordings of a
// process that died are repaired and marked partial), then answers
// recording sessions until ctx ends. On the way out every live recording
// is closed in order and marked partial. It returns an error only if it
// cannot listen or a listener fails. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	udp, tcp := s.udp, s.tcp
	defer s.ua.Close()
	// Deferred first, so they stop last: sessions finishing at shutdown
	// still flush and save their rows.
	stopRows, stopFlush := make(chan struct{}), make(chan struct{})
	var workers sync.WaitGroup
	workers.Go(func() { s.rows.run(stopRows) })
	workers.Go(func() { s.flushLoop(stopFlush) })
	defer workers.Wait()
	defer close(stopRows)
	defer close(stopFlush)
	// The first sweep repairs what a dead process left; it runs beside the
	// new sessions (they are registered before their journal entries are
	// written, so it never mistakes one for a leftover), so a database that
	// is away at start delays the repair, not the recordings.
	var sweeps sync.WaitGroup
	sweeps.Go(func() { s.sweep(ctx) })
	defer sweeps.Wait()
	stopSync := make(chan struct{})
	defer close(stopSync)
	for range syncWorkers {
		go s.syncWorker(stopSync)
	}

	errc := make(chan error, 2)
	var lwg sync.WaitGroup
	lwg.Go(func() { errc <- s.sip.ServeUDP(udp) })
	lwg.Go(func() { errc <- s.sip.ServeTCP(tcp) })
	s.logger.Info("recorder listening", zap.String("addr", s.addr), zap.String("node", s.cfg.Node))

	ticker := time.NewTicker(sweepInterval)
	defer ticker.Stop()
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case serveErr = <-errc:
			if serveErr == nil || errors.Is(serveErr, net.ErrClosed) {
				serveErr = errors.New("listener stopped")
			}
			break loop
		case <-ticker.C:
			sweeps.Go(func() { s.sweep(ctx) })
		}
	}
	udp.Close()
	tcp.Close()
	lwg.Wait()
	s.shutdown()
	if serveErr != nil {
		return fmt.Errorf("recorder: serve sip: %w", serveErr)
	}
	s.logger.Info("recorder stopped")
	return nil
}

// shutdown ends every live recording (partial: the call goes on without
// us) and waits for them to be committed.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.closing = true
	live := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		live = append(live, ss)
	}
	s.mu.Unlock()
	now := time.Now()
	for _, ss := range live {
		ss.end(storage.RecordingPartial, "recorder shutdown", now)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.logger.Error("recordings still finishing at shutdown; the journal keeps them")
	}
}

// Errors of recording requests; sipStatus maps each to a SIP status.
var (
	errForbidden    = errors.New("recorder: source not allowed")
	errNotSIPREC    = errors.New("recorder: not a recording session (no siprec option tag or +sip.src)")
	errBadExtension = errors.New("recorder: unsupported extension required")
	errMalformed    = errors.New("recorder: malformed request")
	errDuplicate    = errors.New("recorder: Call-ID already records")
	errClosing      = errors.New("recorder: shutting down")
)

// sipStatus is the one place where recording errors become SIP statuses.
func sipStatus(err error) (int, string) {
	switch {
	case errors.Is(err, errForbidden), errors.Is(err, errNotSIPREC), errors.Is(err, errBadCredentials):
		return 403, "Forbidden"
	case errors.Is(err, errUnauthenticated):
		return 401, "Unauthorized"
	case errors.Is(err, errBadExtension):
		return 420, "Bad Extension"
	case errors.Is(err, errMalformed), errors.Is(err, ErrBadBody), errors.Is(err, ErrBadMetadata):
		return 400, "Bad Request"
	case errors.Is(err, ErrUnsupportedBody):
		return 415, "Unsupported Media Type"
	case errors.Is(err, ErrBadSDP):
		return 488, "Not Acceptable Here"
	case errors.Is(err, errDuplicate):
		return 482, "Loop Detected"
	case errors.Is(err, ErrNoPorts), errors.Is(err, errClosing):
		return 503, "Service Unavailable"
	}
	return 500, "Server Internal Error"
}

func (s *Server) reply(req *sip.Request, tx sip.ServerTransaction, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if to := res.To(); to != nil && code >= 200 {
		if _, ok := to.Params.Get("tag"); !ok {
			to.Params.Add("tag", sip.GenerateTagN(16))
		}
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		s.logger.Debug("sip respond failed", zap.Int("status", code), zap.Error(err))
	}
}

func (s *Server) refuse(req *sip.Request, tx sip.ServerTransaction, err error) {
	s.stats.refused.Add(1)
	code, reason := sipStatus(err)
	var hdrs []sip.Header
	switch code {
	case 415:
		hdrs = append(hdrs, sip.NewHeader("Accept", "application/sdp, multipart/mixed, application/rs-metadata+xml"))
	case 420:
		hdrs = append(hdrs, sip.NewHeader("Unsupported", strings.Join(unsupportedRequire(req), ", ")))
	}
	level := zap.WarnLevel
	if code >= 500 {
		level = zap.ErrorLevel
	}
	s.logger.Log(level, "recording refused", zap.Int("status", code), zap.Error(err))
	s.reply(req, tx, code, reason, hdrs...)
}

func (s *Server) allowed(req *sip.Request) bool {
	if len(s.cfg.Allow) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return false
	}
	for _, p := range s.cfg.Allow {
		if p.Contains(ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// headerTokens returns the comma-separated values of every header name.
func headerTokens(req *sip.Request, names ...string) []string {
	var out []string
	for _, h := range req.Headers() {
		for _, n := range names {
			if strings.EqualFold(h.Name(), n) {
				for _, v := range strings.Split(h.Value(), ",") {
					if v = strings.TrimSpace(v); v != "" {
						out = append(out, strings.ToLower(v))
					}
				}
			}
		}
	}
	return out
}

func unsupportedRequire(req *sip.Request) []string {
	var out []string
	for _, t := range headerTokens(req, "Require") {
		if t != "siprec" {
			out = append(out, t)
		}
	}
	return out
}

// isSIPREC: an SRC puts the siprec option tag in Require and +sip.src in
// its Contact (RFC 7866 §6.1.1); either will do.
func isSIPREC(req *sip.Request) bool {
	for _, t := range headerTokens(req, "Require", "Supported", "k") {
		if t == "siprec" {
			return true
		}
	}
	if c := req.Contact(); c != nil {
		if _, ok := c.Params.Get("+sip.src"); ok {
			return true
		}
	}
	for _, v := range headerTokens(req, "Contact", "m") {
		if strings.Contains(v, "+sip.src") {
			return true
		}
	}
	return false
}

func (s *Server) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if _, ok := to.Params.Get("tag"); ok {
			s.onInDialog(req, tx)
			return
		}
	}
	s.reply(req, tx, 200, "OK", sip.NewHeader("Allow", allow), sip.NewHeader("Supported", "siprec"),
		sip.NewHeader("Accept", "application/sdp, multipart/mixed, application/rs-metadata+xml"))
}

func (s *Server) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if _, ok := to.Params.Get("tag"); ok {
			s.onInDialog(req, tx)
			return
		}
	}
	if err := s.checkInvite(req); errors.Is(err, errUnauthenticated) {
		// The first step of every authenticated session, not a refusal.
		s.logger.Debug("recording INVITE challenged", zap.Error(err))
		s.reply(req, tx, 401, "Unauthorized", sip.NewHeader("WWW-Authenticate", s.auth.challenge()))
		return
	} else if err != nil {
		s.refuse(req, tx, err)
		return
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	rawOffer, rawMeta, err := splitBody(ct, req.Body())
	if err != nil {
		s.refuse(req, tx, err)
		return
	}
	offer, err := parseRecordingOffer(rawOffer)
	if err != nil {
		s.refuse(req, tx, err)
		return
	}
	var meta Metadata
	if rawMeta != nil {
		if meta, err = ParseMetadata(rawMeta); err != nil {
			s.refuse(req, tx, err)
			return
		}
	}
	ss, err := s.newSession(req, offer, meta)
	if err != nil {
		s.refuse(req, tx, err)
		return
	}
	s.stats.started.Add(1)

	res := sip.NewResponseFromRequest(req, 200, "OK", ss.answer)
	res.To().Params.Add("tag", ss.localTag)
	res.AppendHeader(ss.contactHeader(req))
	res.AppendHeader(sip.NewHeader("Allow", allow))
	res.AppendHeader(sip.NewHeader("Supported", "siprec"))
	ct200 := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct200)
	ss.begin()
	if err := tx.Respond(res); err != nil {
		ss.logger.Warn("200 to the recording INVITE not sent", zap.Error(err))
		ss.end(storage.RecordingPartial, "answer not sent", time.Now())
		return
	}
	if !sip.IsReliable(req.Transport()) {
		go ss.retransmitUntilAck(tx, res)
	}
	ss.logger.Info("recording started", zap.Int("streams", ss.streamCount()), zap.String("source", ss.rec.Source))
}

func (s *Server) checkInvite(req *sip.Request) error {
	switch {
	case !s.allowed(req):
		return errForbidden
	case req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil:
		return errMalformed
	case len(unsupportedRequire(req)) > 0:
		return errBadExtension
	case !isSIPREC(req):
		return errNotSIPREC
	}
	if _, ok := req.From().Params.Get("tag"); !ok {
		return fmt.Errorf("%w: no From tag", errMalformed)
	}
	if s.auth != nil {
		return s.auth.verify(req)
	}
	return nil
}

// onInDialog serves requests inside a recording session's dialog.
func (s *Server) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	ss := s.find(req)
	if ss == nil {
		if !req.IsAck() {
			s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
		}
		return
	}
	switch req.Method {
	case sip.ACK:
		ss.ackOnce.Do(func() { close(ss.acked) })
	case sip.BYE:
		at := time.Now()
		s.reply(req, tx, 200, "OK")
		ss.end(storage.RecordingComplete, "bye", at)
	case sip.INVITE:
		// A re-INVITE (pause, resume, new metadata): the streams and our
		// ports stay as they are.
		res := sip.NewResponseFromRequest(req, 200, "OK", ss.reanswer())
		res.AppendHeader(ss.contactHeader(req))
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
		if err := tx.Respond(res); err != nil {
			ss.logger.Debug("re-INVITE answer not sent", zap.Error(err))
		}
	default: // UPDATE, INFO, OPTIONS
		s.reply(req, tx, 200, "OK")
	}
}

func (s *Server) find(req *sip.Request) *session {
	id, from, to := req.CallID(), req.From(), req.To()
	if id == nil || from == nil || to == nil {
		return nil
	}
	s.mu.Lock()
	ss := s.sessions[id.Value()]
	s.mu.Unlock()
	if ss == nil {
		return nil
	}
	ft, _ := from.Params.Get("tag")
	tt, _ := to.Params.Get("tag")
	if ft != ss.remoteTag || tt != ss.localTag {
		return nil
	}
	return ss
}

// forget removes a committed session.
func (s *Server) forget(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.callID] == ss {
		delete(s.sessions, ss.callID)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// liveRecordings are the ids of recordings a session still owns.
func (s *Server) liveRecordings() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make(map[string]bool, len(s.sessions))
	for _, ss := range s.sessions {
		ids[ss.rec.ID] = true
	}
	return ids
}

func newSessionID() uint64 { return rand.Uint64() >> 1 }

// syncWorker syncs the files sessions queue, one at a time.
func (s *Server) syncWorker(stop <-chan struct{}) {
	for {
		select {
		case ss := <-s.syncQueue:
			ss.syncFile()
		case <-stop:
			return
		}
	}
}

// flushLoop ticks every running session each FlushInterval on
// flushWorkers goroutines, until stop is closed. A tick that takes longer
// than the interval delays the next one (the jitter buffer holds a second
// more than it needs; beyond that packets are counted as overruns).
func (s *Server) flushLoop(stop <-chan struct{}) {
	type job struct {
		ss  *session
		now time.Time
	}
	jobs := make(chan job, flushWorkers)
	var busy sync.WaitGroup
	for range flushWorkers {
		go func() {
			for j := range jobs {
				j.ss.tick(j.now)
				busy.Done()
			}
		}()
	}
	defer close(jobs)
	ticker := time.NewTicker(s.cfg.FlushInterval)
	defer ticker.Stop()
	var live []*session
	for {
		select {
		case <-stop:
			return
		case now := <-ticker.C:
			live = live[:0]
			s.mu.Lock()
			for _, ss := range s.sessions {
				if ss.running.Load() {
					live = append(live, ss)
				}
			}
			s.mu.Unlock()
			busy.Add(len(live))
			for _, ss := range live {
				jobs <- job{ss, now}
			}
			busy.Wait()
			clear(live)
		}
	}
}
