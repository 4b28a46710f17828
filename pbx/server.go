package pbx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/sipnet"
)

// Config is the SIP side's configuration. Zero fields take the defaults
// below.
type Config struct {
	Listen string // host:port for UDP and TCP; port 0 picks one free for both
	// TLSListen, if set, is host:port of SIP over TLS (RFC 3261 §26) for
	// phones outside the office; TLS holds its certificate. Phones that
	// register over TLS are called over their TLS connection.
	TLSListen string
	TLS       *tls.Config
	// TLSListener, if set, is TLSListen bound already (plain TCP: the
	// server adds TLS).
	TLSListener net.Listener
	Domain      string // SIP domain phones register to, and the digest realm
	PublicAddr  string // IP written into SDP and Contact; default the listen IP

	RegisterMinExpires     time.Duration // shorter asks get 423; default 60s
	RegisterMaxExpires     time.Duration // longer asks are shortened; default 3600s
	RegisterDefaultExpires time.Duration // when the phone names none; default 3600s

	NonceTTL time.Duration // how long a digest nonce is accepted; default 5m
	// NonceKey signs digest nonces: the same 32 bytes on every node
	// (NonceKey in the CLUSTER bucket) make a nonce issued by one node good
	// at another. Empty: a random key of this process.
	NonceKey []byte
	// DigestAlgorithms are offered in this order, one WWW-Authenticate
	// each; default MD5 alone. Many phones (baresip 1.0, SIPp 3.6, older
	// desk phones) give up on a 401 with more than one challenge, so a
	// second algorithm (SHA-256, RFC 8760) is opt-in for fleets whose
	// phones choose among several.
	DigestAlgorithms []string

	AuthFailLimit  int           // failed authentications from one IP...; default 5
	AuthFailWindow time.Duration // ...within this window...; default 1m
	AuthBlockFor   time.Duration // ...block the IP (403) this long; default 5m

	// DismissedTry, if set, hears of every REGISTER or desk-phone INVITE
	// whose digest is a dismissed manager's good credentials (method, his
	// manager id, the source address); it audits them for the alerts.
	DismissedTry func(ctx context.Context, method, managerID, source string)

	// StrangerRate, PhoneRate and TrunkRate are how many datagrams (or TCP
	// messages and connections) one source IP may send in a second before
	// it is ignored for SourceBlockFor (flood.go): any source, the source
	// of a live registration, and CallConfig.TrunkAllow. Zero takes the
	// default; a negative rate is no limit.
	StrangerRate, PhoneRate, TrunkRate int
	SourceBlockFor                     time.Duration

	// UDP and TCP, if both set, are listeners already bound on Listen: a
	// process that binds its ports at start (to report one in use at once)
	// hands them over, and Serve takes ownership. Nil: Serve binds Listen.
	UDP net.PacketConn
	TCP net.Listener
}

// Validate reports what NewServer would refuse in cfg, without building
// anything: a caller checks its flags with it before starting slower
// components.
func (c Config) Validate() error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, name := range c.DigestAlgorithms {
		alg, ok := lookupAlgorithm(name)
		switch {
		case !ok:
			return fmt.Errorf("pbx: unsupported digest algorithm %q (MD5, SHA-256)", name)
		case seen[alg.name]:
			return fmt.Errorf("pbx: digest algorithm %q listed twice", name)
		}
		seen[alg.name] = true
	}
	return nil
}

// Defaults for Config.
const (
	DefaultListen                 = "0.0.0.0:5060"
	DefaultRegisterMinExpires     = 60 * time.Second
	DefaultRegisterMaxExpires     = 3600 * time.Second
	DefaultRegisterDefaultExpires = 3600 * time.Second
	DefaultNonceTTL               = 5 * time.Minute
	DefaultAuthFailLimit          = 5
	DefaultAuthFailWindow         = time.Minute
	DefaultAuthBlockFor           = 5 * time.Minute
)

func (c Config) withDefaults() (Config, error) {
	setDuration := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	setDuration(&c.RegisterMinExpires, DefaultRegisterMinExpires)
	setDuration(&c.RegisterMaxExpires, DefaultRegisterMaxExpires)
	setDuration(&c.RegisterDefaultExpires, DefaultRegisterDefaultExpires)
	setDuration(&c.NonceTTL, DefaultNonceTTL)
	setDuration(&c.AuthFailWindow, DefaultAuthFailWindow)
	setDuration(&c.AuthBlockFor, DefaultAuthBlockFor)
	setDuration(&c.SourceBlockFor, DefaultSourceBlockFor)
	if c.AuthFailLimit == 0 {
		c.AuthFailLimit = DefaultAuthFailLimit
	}
	if len(c.DigestAlgorithms) == 0 {
		c.DigestAlgorithms = []string{"MD5"}
	}

	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c, fmt.Errorf("pbx: Listen %q: %w", c.Listen, err)
	}
	if c.PublicAddr == "" {
		c.PublicAddr = host
	}
	switch {
	case c.Domain == "" || strings.ContainsAny(c.Domain, "\" \t\r\n"):
		return c, fmt.Errorf("pbx: Domain %q must be a host name", c.Domain)
	case c.RegisterMinExpires < time.Second:
		return c, errors.New("pbx: RegisterMinExpires must be at least 1s")
	case c.RegisterMaxExpires < c.RegisterMinExpires:
		return c, errors.New("pbx: RegisterMaxExpires is below RegisterMinExpires")
	case c.RegisterDefaultExpires < c.RegisterMinExpires || c.RegisterDefaultExpires > c.RegisterMaxExpires:
		return c, errors.New("pbx: RegisterDefaultExpires is outside [RegisterMinExpires, RegisterMaxExpires]")
	case c.TLSListen != "" && (c.TLS == nil || len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil):
		return c, errors.New("pbx: TLSListen needs a TLS certificate")
	case c.NonceTTL < 0 || c.AuthFailWindow < 0 || c.AuthBlockFor < 0 || c.AuthFailLimit < 0:
		return c, errors.New("pbx: negative NonceTTL, AuthFailLimit, AuthFailWindow or AuthBlockFor")
	case c.SourceBlockFor < 0:
		return c, errors.New("pbx: negative SourceBlockFor")
	}
	return c, nil
}

// knownMethods are methods of RFC 3261 and its extensions that we understand
// but do not serve (405); anything else is not implemented (501).
var knownMethods = map[sip.RequestMethod]bool{
	sip.INVITE: true, sip.ACK: true, sip.CANCEL: true, sip.BYE: true,
	sip.SUBSCRIBE: true, sip.NOTIFY: true, sip.REFER: true, sip.INFO: true,
	sip.MESSAGE: true, sip.PRACK: true, sip.UPDATE: true, sip.PUBLISH: true,
}

// udpReadBuffer is the SIP UDP socket's receive buffer (SO_RCVBUF).
const udpReadBuffer = 4 << 20

// requestTimeout bounds the work for one request (credential lookup, KV).
const requestTimeout = 5 * time.Second

// Server is the SIP side of the PBX on sipgo: it listens on UDP and TCP and
// dispatches requests to the registrar (registrar.go) and, later, to call
// control. Create it with NewServer and run it with Serve, once.
type Server struct {
	cfg     Config
	logger  *zap.Logger
	regs    *Registrations
	auth    *digestAuth
	limiter *failureLimiter
	now     func() time.Time

	// flood drops what sources over their rate send before sipgo reads it
	// (flood.go); phoneIPs is its view of registered phones' addresses.
	flood    *sipnet.Limiter
	phoneIPs atomic.Pointer[phoneSources]

	ua  *sipgo.UserAgent
	sip *sipgo.Server

	// hosts are the names the Request-URI and To may carry: the domain,
	// the public address and the listen address.
	hosts []string

	serving atomic.Bool
	ctx     context.Context // Serve's context, for handlers; set before listening
	ready   chan struct{}
	addr    string // bound address, set before ready is closed
	tlsAddr string // bound TLS address, if any, set before ready is closed

	calls *callControl // nil until EnableCalls
	// allow are the methods this server serves, for Allow headers; set up
	// before Serve (NewServer, EnableCalls), read only after.
	allow []sip.RequestMethod

	stats struct {
		authFailures, sourcesBlocked, blockedRequests atomic.Uint64
	}
}

// Stats are the server's counters, for metrics.
type Stats struct {
	AuthFailures    uint64 // wrong credentials (unknown users included)
	SourcesBlocked  uint64 // blocks started after too many failures
	BlockedRequests uint64 // requests refused with 403 while blocked
}

// NewServer builds a server; nothing listens until Serve.
func NewServer(cfg Config, creds CredentialSource, regs *Registrations, logger *zap.Logger) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if creds == nil || regs == nil || logger == nil {
		return nil, errors.New("pbx: NewServer needs a CredentialSource, Registrations and a logger")
	}
	s := &Server{
		cfg:     cfg,
		logger:  logger,
		regs:    regs,
		now:     time.Now,
		limiter: newFailureLimiter(cfg.AuthFailLimit, cfg.AuthFailWindow, cfg.AuthBlockFor, time.Now),
		ready:   make(chan struct{}),
		ctx:     context.Background(),
		allow:   []sip.RequestMethod{sip.REGISTER, sip.OPTIONS},
	}
	if s.auth, err = newDigestAuth(cfg.Domain, cfg.DigestAlgorithms, cfg.NonceTTL, creds, time.Now, cfg.NonceKey); err != nil {
		return nil, err
	}
	limits := cfg.sourceLimits()
	limits.Classify = s.classifySource
	s.flood = sipnet.NewLimiter(limits)
	listenHost, _, _ := net.SplitHostPort(cfg.Listen)
	for _, h := range []string{cfg.Domain, cfg.PublicAddr, listenHost} {
		if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
			continue
		}
		s.hosts = append(s.hosts, strings.ToLower(h))
	}

	slogger := sipLogger(logger)
	setSIPDefaultLogger(slogger)
	s.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent("maskpbx"),
		sipgo.WithUserAgentHostname(cfg.Domain),
		sipgo.WithUserAgentParser(newSIPParser()),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slogger)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slogger)),
	)
	if err != nil {
		return nil, fmt.Errorf("pbx: sip user agent: %w", err)
	}
	s.sip, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(slogger.With("caller", "Server")))
	if err != nil {
		return nil, fmt.Errorf("pbx: sip server: %w", err)
	}
	s.routes()
	return s, nil
}

// newSIPParser is sipgo's parser without eager Contact parsing: a Contact
// sipgo cannot parse would otherwise drop the whole request unanswered,
// where the registrar must answer 400. req.Contact() still parses lazily;
// GetHeaders("Contact") returns generic headers.
func newSIPParser() *sip.Parser {
	parsers := sip.HeadersParser{}
	for name, p := range sip.DefaultHeadersParser() {
		if name != "contact" && name != "m" {
			parsers[name] = p
		}
	}
	return sip.NewParser(sip.WithHeadersParsers(parsers))
}

func (s *Server) routes() {
	s.sip.OnRegister(s.guard(s.handleRegister))
	s.sip.OnOptions(s.guard(s.handleOptions))
	s.sip.OnAck(func(*sip.Request, sip.ServerTransaction) {}) // nothing to acknowledge yet
	s.sip.OnCancel(s.guard(s.handleNoTransaction))
	s.sip.OnBye(s.guard(s.handleNoTransaction))
	s.sip.OnNoRoute(s.guard(s.handleUnsupported))
}

// Ready is closed once Serve listens on UDP and TCP.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the bound host:port (the same port for UDP and TCP) once Ready is
// closed, and "" before.
func (s *Server) Addr() string {
	select {
	case <-s.ready:
		return s.addr
	default:
		return ""
	}
}

// TLSAddr is the bound host:port of SIP over TLS once Ready is closed, and
// "" before or without TLS.
func (s *Server) TLSAddr() string {
	select {
	case <-s.ready:
		return s.tlsAddr
	default:
		return ""
	}
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{
		AuthFailures:    s.stats.authFailures.Load(),
		SourcesBlocked:  s.stats.sourcesBlocked.Load(),
		BlockedRequests: s.stats.blockedRequests.Load(),
	}
}

// Serve listens on cfg.Listen over UDP and TCP (or serves cfg.UDP and
// cfg.TCP, bound already) and handles requests until ctx
// is done; then it closes the listeners and the SIP stack and returns nil.
// It returns an error if it cannot listen or a listener fails. A Server
// serves once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("pbx: Server.Serve called twice")
	}
	defer s.ua.Close()
	udp, tcp := s.cfg.UDP, s.cfg.TCP
	if udp == nil || tcp == nil {
		var err error
		if udp, tcp, err = sipnet.ListenUDPAndTCP(s.cfg.Listen); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.ctx = ctx
	s.addr = udp.LocalAddr().String()
	// A flood fills the socket's buffer faster than anyone reads it, and
	// the kernel then drops the trunk's datagrams along with the flood's;
	// a larger buffer (capped by net.core.rmem_max) rides out bursts while
	// the limiter drops the flood.
	if u, ok := udp.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(udpReadBuffer)
	}
	// Closing the wrappers closes what they wrap.
	udp, tcp = s.flood.PacketConn(udp), s.flood.Listener(tcp)
	var tlsL net.Listener
	if s.cfg.TLSListen != "" {
		l := s.cfg.TLSListener
		if l == nil {
			var err error
			if l, err = net.Listen("tcp", s.cfg.TLSListen); err != nil {
				udp.Close()
				tcp.Close()
				return fmt.Errorf("pbx: listen tls %s: %w", s.cfg.TLSListen, err)
			}
		}
		tlsL = tls.NewListener(s.flood.Listener(l), s.cfg.TLS)
		s.tlsAddr = l.Addr().String()
	}
	closeAll := func() {
		udp.Close()
		tcp.Close()
		if tlsL != nil {
			tlsL.Close()
		}
	}
	if s.calls != nil {
		if err := s.calls.bind(s.ua, s.addr, s.tlsAddr); err != nil {
			closeAll()
			return err
		}
	}

	var wg sync.WaitGroup
	if s.calls != nil && s.calls.trunkReg != nil {
		// Ends (unregistered) when ctx does; waited for below, while the
		// listeners can still carry the Expires: 0.
		wg.Go(func() {
			if s.udpServing(ctx) {
				s.calls.trunkReg.run(ctx)
			} else {
				close(s.calls.trunkReg.done)
			}
		})
	}
	errc := make(chan error, 3)
	wg.Go(func() { errc <- s.sip.ServeUDP(udp) })
	wg.Go(func() { errc <- s.sip.ServeTCP(tcp) })
	if tlsL != nil {
		wg.Go(func() { errc <- s.sip.ServeTLS(tlsL) })
	}
	close(s.ready)
	s.logger.Info("sip listening", zap.String("addr", s.addr), zap.String("tls", s.tlsAddr), zap.String("domain", s.cfg.Domain))

	var serveErr error
	select {
	case <-ctx.Done():
		if s.calls != nil {
			// Hang up calls in progress while the listeners can still send BYE.
			s.calls.endAll(12 * time.Second) // longer than one BYE's wait
		}
	case serveErr = <-errc:
		if serveErr == nil || errors.Is(serveErr, net.ErrClosed) {
			serveErr = errors.New("pbx: sip listener stopped")
		}
	}
	if s.calls != nil && s.calls.trunkReg != nil {
		cancel()
		<-s.calls.trunkReg.done // unregistered, or gave up within trunkUnregisterWait
	}
	closeAll()
	wg.Wait()
	if serveErr != nil {
		return fmt.Errorf("pbx: serve sip: %w", serveErr)
	}
	s.logger.Info("sip stopped", zap.String("addr", s.addr))
	return nil
}

// guard refuses requests from a source blocked for failed authentication
// before any handler sees them.
func (s *Server) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if req.IsAck() {
			return
		}
		if s.limiter.blocked(sourceIP(req)) {
			s.stats.blockedRequests.Add(1)
			s.respondError(req, tx, errSourceBlocked)
			return
		}
		h(req, tx)
	}
}

func (s *Server) handleOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	res.AppendHeader(s.allowHeader())
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	s.respond(req, tx, res)
}

func (s *Server) handleNoTransaction(req *sip.Request, tx sip.ServerTransaction) {
	s.respondError(req, tx, errNoTransaction)
}

func (s *Server) handleUnsupported(req *sip.Request, tx sip.ServerTransaction) {
	if knownMethods[req.Method] {
		s.respondError(req, tx, fmt.Errorf("%w: %s", errMethodNotAllowed, req.Method))
		return
	}
	s.respondError(req, tx, fmt.Errorf("%w: %.32q", errNotImplemented, string(req.Method)))
}

// respondError answers req with the status sipStatus gives err, plus the
// headers that status needs.
func (s *Server) respondError(req *sip.Request, tx sip.ServerTransaction, err error) {
	code, reason := sipStatus(err)
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	switch code {
	case sip.StatusUnauthorized:
		for _, c := range s.auth.challenge(errors.Is(err, errStaleNonce)) {
			res.AppendHeader(sip.NewHeader("WWW-Authenticate", c))
		}
	case sip.StatusMethodNotAllowed:
		res.AppendHeader(s.allowHeader())
	case sip.StatusIntervalToBrief:
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(int(s.cfg.RegisterMinExpires/time.Second))))
	case sip.StatusBadExtension:
		res.AppendHeader(sip.NewHeader("Unsupported", strings.Join(headerValues(req, "Require"), ", ")))
	}
	fields := []zap.Field{
		zap.String("method", string(req.Method)),
		zap.String("source", req.Source()),
		zap.Int("status", code),
		zap.Error(err),
	}
	if code >= 500 {
		s.logger.Error("sip request failed", fields...)
	} else {
		s.logger.Debug("sip request refused", fields...)
	}
	s.respond(req, tx, res)
}

func (s *Server) respond(req *sip.Request, tx sip.ServerTransaction, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		s.logger.Warn("sip respond failed",
			zap.String("method", string(req.Method)),
			zap.String("source", req.Source()),
			zap.Int("status", res.StatusCode),
			zap.Error(err))
	}
}

func (s *Server) allowHeader() sip.Header {
	names := make([]string, len(s.allow))
	for i, m := range s.allow {
		names[i] = string(m)
	}
	return sip.NewHeader("Allow", strings.Join(names, ", "))
}

// headerValues returns the comma-separated values of all headers called
// name (or its compact form), in order.
func headerValues(req *sip.Request, names ...string) []string {
	var values []string
	for _, h := range req.Headers() {
		for _, name := range names {
			if strings.EqualFold(h.Name(), name) {
				for _, v := range splitHeaderList(h.Value()) {
					if v = strings.TrimSpace(v); v != "" {
						values = append(values, v)
					}
				}
			}
		}
	}
	return values
}

// splitHeaderList splits a header value at the commas that separate list
// elements, not those inside quotes or <...>.
func splitHeaderList(v string) []string {
	var parts []string
	var quoted, escaped bool
	depth, start := 0, 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>' && depth > 0:
			depth--
		case c == ',' && depth == 0:
			parts = append(parts, v[start:i])
			start = i + 1
		}
	}
	return append(parts, v[start:])
}

// sourceIP is the IP the request came from (not what its Via claims).
func sourceIP(req *sip.Request) string {
	src := req.Source()
	if host, _, err := net.SplitHostPort(src); err == nil {
		return host
	}
	return src
}

// udpServing waits until sipgo's transport layer holds the UDP listener
// (ServeUDP adds it on its goroutine): a request sent before would make
// sipgo bind a second socket to the listen address, and fail. False if ctx
// ends first.
func (s *Server) udpServing(ctx context.Context) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if c, err := s.ua.TransportLayer().GetConnection("udp", s.addr); err == nil && c != nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
