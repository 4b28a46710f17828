package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/internal/sipnet"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/pbx"
	"github.com/maskpbx/maskpbx/pbx/ivr"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// Preflight: serve checks every flag and binds its ports before it starts
// anything slow (Postgres migrations, embedded NATS), so a typo or a port in
// use is reported at once, naming the flag and the address, instead of as a
// time-out of whatever component met it first.

// validate reports every flag of serve that can't work, each error naming
// its flag; nil means the flags are usable. It needs no network.
func (c Config) validate() error {
	var errs []error
	bad := func(flag string, err error) { errs = append(errs, fmt.Errorf("--%s: %w", flag, err)) }
	badf := func(flag, format string, args ...any) { bad(flag, fmt.Errorf(format, args...)) }

	if c.DataDir == "" {
		badf("data-dir", "must name a directory")
	}
	if c.DatabaseURL == "" {
		badf("database-url", "is required (or MASKPBX_DATABASE_URL)")
	} else if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		// pgconn's parse errors redact the password.
		bad("database-url", err)
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if p, err := url.Parse(strings.TrimSpace(u)); err != nil || p.Host == "" {
				badf("nats-url", "%q is not a NATS URL (nats://host:port)", strings.TrimSpace(u))
			}
		}
		if err := c.NATS.check(c.NATSURL); err != nil {
			bad("nats-url", err)
		}
	} else if _, err := listenAddr(c.NATSListen); err != nil {
		bad("nats-listen", err)
	}
	sipPort, err := listenAddr(c.SIPListen)
	var sipIP netip.Addr
	if err == nil {
		// The relay binds its RTP ports on the SIP listen IP: a host name
		// would only fail later.
		host, _, _ := net.SplitHostPort(c.SIPListen)
		if sipIP, err = netip.ParseAddr(host); err != nil {
			err = fmt.Errorf("%q: want an IP address and a port (e.g. 0.0.0.0:5060)", c.SIPListen)
		}
	}
	if err != nil {
		bad("sip-listen", err)
	}
	if c.PublicAddr != "" {
		if ip, err := netip.ParseAddr(c.PublicAddr); err != nil || ip.IsUnspecified() {
			badf("public-addr", "%q is not an IP address phones can send to", c.PublicAddr)
		}
	}
	if err := (pbx.Config{Domain: c.SIPDomain}).Validate(); err != nil {
		badf("sip-domain", "%q is not a host name", c.SIPDomain)
	}
	if err := (pbx.Config{Domain: "check.invalid", DigestAlgorithms: c.digestAlgorithms()}).Validate(); err != nil {
		bad("digest-algorithms", errors.New(strings.TrimPrefix(err.Error(), "pbx: ")))
	}
	if lo, hi, err := media.ParsePortRange(c.RTPPorts); err != nil {
		bad("rtp-ports", fmt.Errorf("%q: %w", c.RTPPorts, err))
	} else if sipPort >= lo && sipPort <= hi && sipIP.IsValid() {
		badf("rtp-ports", "%s holds the SIP port %d (--sip-listen): the relay would collide with it", c.RTPPorts, sipPort)
	}
	if _, err := listenAddr(c.HTTPListen); err != nil {
		bad("http-listen", err)
	}
	if c.Trunk != "" {
		if err := pbx.ValidTrunk(c.Trunk); err != nil {
			bad("trunk", err)
		}
	}
	switch {
	case c.TrunkRegister < 0:
		badf("trunk-register", "must not be negative (0: no registration)")
	case c.TrunkRegister > 0 && c.TrunkRegister < time.Second:
		badf("trunk-register", "%s: the expiry is whole seconds, at least 1s", c.TrunkRegister)
	case c.TrunkRegister > 0 && c.Trunk == "":
		badf("trunk-register", "needs --trunk, the provider to register at")
	case c.TrunkRegister > 0 && c.TrunkUsername == "":
		badf("trunk-register", "needs --trunk-username (and MASKPBX_TRUNK_PASSWORD)")
	}
	if c.TrunkUsername == "" && (c.TrunkPassword != "" || c.TrunkAuthUser != "" || c.TrunkRealm != "") {
		badf("trunk-username", "is required with --trunk-password, --trunk-auth-user or --trunk-realm")
	}
	if strings.ContainsAny(c.TrunkUsername+c.TrunkAuthUser+c.TrunkRealm, "\" \t\r\n<>@") {
		badf("trunk-username", "--trunk-username, --trunk-auth-user and --trunk-realm take no spaces, quotes, <, > or @")
	}
	if _, err := parsePrefixes(c.TrunkAllow); err != nil {
		bad("trunk-allow", err)
	}
	if c.TimeZone != "" {
		if _, err := time.LoadLocation(c.TimeZone); err != nil {
			badf("timezone", "%q is not an IANA time zone name (e.g. Europe/Moscow, UTC)", c.TimeZone)
		}
	}
	if c.DefaultLanguage != "" && !i18n.Supported(c.DefaultLanguage) {
		badf("default-language", "%q is not one of %s", c.DefaultLanguage, strings.Join(i18n.Codes, ", "))
	}
	if !masking.ValidRegion(c.Region) {
		badf("region", "%q is not a country code the number rules know (e.g. RU, DE, US)", c.Region)
	}
	if _, err := parseCompanyNumbers(c.CompanyNumber, masking.NewNormalizer(c.Region)); err != nil {
		bad("company-number", err)
	}
	if _, err := parseAliasNumbers(c.AliasNumbers, masking.NewNormalizer(c.Region)); err != nil {
		bad("alias-numbers", err)
	}
	if c.AliasQuarantine < 0 {
		badf("alias-quarantine", "must not be negative")
	}
	if c.RingTimeout <= 0 {
		badf("ring-timeout", "must be positive (e.g. 20s)")
	}
	if c.TaskOverdue < 0 {
		badf("task-overdue", "must not be negative (e.g. 4h; 0 is the default, 4h)")
	}
	if c.MediaTimeout < 0 {
		badf("media-timeout", "must not be negative")
	}
	if c.KeepAlive < 0 {
		badf("keepalive", "must not be negative (0 turns it off)")
	}
	if c.CallsPerMinute < 0 {
		badf("calls-per-minute", "must not be negative")
	}
	for flag, rate := range map[string]int{"sip-rate-limit": c.SIPRateLimit, "sip-rate-limit-phone": c.SIPRateLimitPhone,
		"sip-rate-limit-trunk": c.SIPRateLimitTrunk} {
		if rate < 0 {
			badf(flag, "must not be negative (0 means no limit)")
		}
	}
	if c.SIPRateLimitBlock < 0 {
		badf("sip-rate-limit-block", "must not be negative")
	}
	if _, err := ivr.LoadPrompts(c.PromptsDir); err != nil {
		bad("prompts-dir", err)
	}
	if c.MaxSetups < 0 {
		badf("max-setups", "must not be negative (0 means the default)")
	}
	if c.LogFormat != "" && c.LogFormat != "json" && c.LogFormat != "console" {
		badf("log-format", "must be json or console")
	}
	if c.Recorder != "" && c.Recorder != RecorderOff && !strings.HasPrefix(strings.ToLower(c.Recorder), "sip:") {
		badf("recorder", "%q: want empty (record in this process), off, or a sip: URI", c.Recorder)
	}
	if c.RecordingRetention < 0 {
		badf("recording-retention", "must be 0 (keep) or a number of days")
	}
	if c.PprofListen != "" {
		if err := loopbackOnly(c.PprofListen); err != nil {
			bad("pprof-listen", err)
		}
	}
	if c.tlsEnabled() {
		if _, _, err := net.SplitHostPort(c.SIPTLSListen); err != nil {
			badf("sip-tls-listen", "%q: want host:port (e.g. :5061) or off", c.SIPTLSListen)
		}
	}
	if (c.SIPTLSCert == "") != (c.SIPTLSKey == "") {
		badf("sip-tls-cert", "--sip-tls-cert and --sip-tls-key go together")
	}
	c.Alerts.check(badf)
	return errors.Join(errs...)
}

// listenAddr checks a listen address (host:port, host may be empty) and
// returns its port.
func listenAddr(addr string) (int, error) {
	_, port, err := splitHostPort(addr)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("%q: want host:port (e.g. 127.0.0.1:8080)", addr)
	}
	return port, nil
}

// boundPorts are serve's listeners, bound before anything else starts. The
// SIP and HTTP listeners are handed to their servers; the NATS one only
// holds the port until the embedded server takes it.
type boundPorts struct {
	sipUDP net.PacketConn
	sipTCP net.Listener
	sipTLS net.Listener // TCP, TLS on top is the SIP server's; nil with TLS off
	http   net.Listener
	pprof  net.Listener // nil without --pprof-listen
	nats   net.Listener // nil with --nats-url or a free port (:0)
}

// bindPorts binds the SIP (UDP and TCP), HTTP and embedded NATS addresses
// of c, closing what it bound if one fails. The error names the flag and
// the address.
func bindPorts(c Config) (*boundPorts, error) {
	b := &boundPorts{}
	var err error
	if b.sipUDP, b.sipTCP, err = sipnet.ListenUDPAndTCP(c.SIPListen); err != nil {
		return nil, bindError("sip-listen", c.SIPListen, err)
	}
	if c.tlsEnabled() {
		if b.sipTLS, err = net.Listen("tcp", c.SIPTLSListen); err != nil {
			b.close()
			return nil, bindError("sip-tls-listen", c.SIPTLSListen, err)
		}
	}
	if b.http, err = net.Listen("tcp", c.HTTPListen); err != nil {
		b.close()
		return nil, bindError("http-listen", c.HTTPListen, err)
	}
	if c.PprofListen != "" {
		if b.pprof, err = net.Listen("tcp", c.PprofListen); err != nil {
			b.close()
			return nil, bindError("pprof-listen", c.PprofListen, err)
		}
	}
	if _, port, _ := splitHostPort(c.NATSListen); c.NATSURL == "" && port != 0 {
		if b.nats, err = net.Listen("tcp", c.NATSListen); err != nil {
			b.close()
			return nil, bindError("nats-listen", c.NATSListen, err)
		}
	}
	return b, nil
}

// releaseNATS frees the embedded NATS port just before its server binds it.
func (b *boundPorts) releaseNATS() {
	if b.nats != nil {
		b.nats.Close()
		b.nats = nil
	}
}

// close closes whatever is still held; a listener its server already
// closed only returns an error nobody needs.
func (b *boundPorts) close() {
	for _, c := range []io.Closer{b.sipUDP, b.sipTCP, b.sipTLS, b.http, b.pprof, b.nats} {
		if c != nil {
			_ = c.Close()
		}
	}
}

func bindError(flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("--%s %s: the address is in use (another maskpbx, make run or test?): %w", flag, addr, err)
	}
	return fmt.Errorf("--%s %s: %w", flag, addr, err)
}
