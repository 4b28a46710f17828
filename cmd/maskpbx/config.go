package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/pbx"
)

// Config is every setting of maskpbx serve. Each flag can also be set by the
// environment variable MASKPBX_<NAME> (upper case, '-' as '_'); a flag given
// on the command line wins over the environment.
type Config struct {
	DataDir     string
	DatabaseURL string
	NATSURL     string
	NATSListen  string
	// NATS is how to authenticate to --nats-url (the embedded server's
	// credentials are generated into the data dir).
	NATS      natsClient
	SIPListen string
	// SIPTLSListen is --sip-tls-listen: SIP over TLS for phones; "" or
	// "off" disables it. SIPTLSCert and SIPTLSKey are PEM files; without
	// them a self-signed pair is generated into the data dir once.
	SIPTLSListen, SIPTLSCert, SIPTLSKey string
	SIPDomain                           string
	PublicAddr                          string
	RTPPorts                            string
	HTTPListen                          string
	Trunk                               string
	TrunkAllow                          string
	// The provider's credentials (--trunk-username, --trunk-password,
	// --trunk-auth-user, --trunk-realm): the PBX answers the trunk's digest
	// challenges with them and, with TrunkRegister > 0, registers.
	TrunkUsername, TrunkPassword, TrunkAuthUser, TrunkRealm string
	// TrunkRegister is --trunk-register: the expiry asked for when
	// registering to the trunk; 0 trusts the trunk by IP alone.
	TrunkRegister    time.Duration
	CompanyNumber    string
	Region           string
	RingTimeout      time.Duration
	MediaTimeout     time.Duration
	KeepAlive        time.Duration
	LogFormat        string
	DigestAlgorithms string
	CallsPerMinute   int
	// MonitorNotice is --monitor-notice: a beep to both parties when a
	// supervisor barges in.
	MonitorNotice bool
	// SIPRateLimit, SIPRateLimitPhone and SIPRateLimitTrunk are
	// --sip-rate-limit*: per source IP and second; 0 is no limit.
	SIPRateLimit, SIPRateLimitPhone, SIPRateLimitTrunk int
	SIPRateLimitBlock                                  time.Duration
	MaxSetups                                          int
	Demo                                               bool
	// Recorder is --recorder: empty records in this process, "off" not at all.
	Recorder string
	// RecorderSecret is --recorder-secret: the SIPREC digest secret; empty
	// takes <data-dir>/keys/siprec.secret (generated once).
	RecorderSecret     string
	RecordingRetention int // days; 0 keeps recordings forever
	// Recordings are --recordings-url and --recordings-replicas.
	Recordings recordingsFlags
	// PprofListen is --pprof-listen: where net/http/pprof is served; empty
	// serves it nowhere.
	PprofListen string
	// TimeZone is --timezone: the company's IANA time zone for the console
	// (empty: $TZ, else UTC).
	TimeZone string
	// DefaultLanguage is --default-language: the console's and the phones'
	// language for a person who chose none and whose browser asks for none
	// maskpbx speaks.
	DefaultLanguage string
	// NodeID is --node: this pbx node's name in the CDRs and events it
	// writes, so that on restart it closes the calls it left open. It must
	// stay the same across restarts and differ between nodes sharing a
	// database; default: the host name.
	NodeID string
	// PromptsDir is --prompts-dir: the company's own prompt clips laid
	// over the built-in ones (pbx/ivr); empty uses the built-in ones.
	PromptsDir string
	// PromptsLanguage is --prompts-language.
	PromptsLanguage string
	// AliasNumbers is --alias-numbers: the pool of alias DIDs (a list of
	// numbers and ranges); AliasQuarantine how long a released alias rests.
	AliasNumbers    string
	AliasQuarantine time.Duration
	// Alerts are the --alert-* and --webhook-* flags (alerts.go).
	Alerts alertFlags
	// TaskOverdue is --task-overdue: how long a missed-call task stays
	// open before it counts as overdue.
	TaskOverdue time.Duration

	// trunkPing is how often the trunk's targets are asked OPTIONS (0: the
	// PBX's default). No flag: the tests whose SIPp trunk takes one call and
	// nothing else set it beyond their length.
	trunkPing time.Duration
	// rotationCheck is how often serve looks for repeating rotations that
	// are due (0: rotationCheck, a minute). No flag: tests shorten it.
	rotationCheck time.Duration
}

func newFlagSet(name string, c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.DataDir, "data-dir", "./var", "where NATS, recordings and generated keys live")
	fs.StringVar(&c.NodeID, "node", defaultNodeID(), "this node's name in CDRs and call events (stable across restarts, unique per node sharing the database); a restarted node closes the calls it left open")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres URL (required)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS URL; empty runs an embedded server")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server (other nodes can join it)")
	c.NATS.register(fs)
	fs.StringVar(&c.SIPListen, "sip-listen", "0.0.0.0:5060", "SIP UDP+TCP address")
	fs.StringVar(&c.SIPTLSListen, "sip-tls-listen", ":5061", `SIP over TLS address for phones ("off": none)`)
	fs.StringVar(&c.SIPTLSCert, "sip-tls-cert", "", "PEM certificate (chain) of the SIP TLS listener; empty: a self-signed one generated into the data dir")
	fs.StringVar(&c.SIPTLSKey, "sip-tls-key", "", "PEM private key of --sip-tls-cert")
	fs.StringVar(&c.SIPDomain, "sip-domain", "maskpbx.local", "SIP domain phones register to; digest realm")
	fs.StringVar(&c.PublicAddr, "public-addr", "", "IP written into SDP and Contact (default: the listen IP)")
	fs.StringVar(&c.RTPPorts, "rtp-ports", "20000-29999", "RTP relay port range")
	fs.StringVar(&c.HTTPListen, "http-listen", "127.0.0.1:8080", "REST API / console address")
	fs.StringVar(&c.Trunk, "trunk", "", "host:port of the SIP trunk for calls out to clients")
	fs.StringVar(&c.TrunkAllow, "trunk-allow", "", "comma-separated IPs/CIDRs allowed to send calls in (default: the trunk's host)")
	fs.StringVar(&c.TrunkUsername, "trunk-username", "", "account at the SIP provider: the user we register as and answer its digest challenges with")
	fs.StringVar(&c.TrunkPassword, "trunk-password", "", "password at the SIP provider; prefer MASKPBX_TRUNK_PASSWORD (a flag shows in ps). Never logged")
	fs.StringVar(&c.TrunkAuthUser, "trunk-auth-user", "", "digest username, if the provider gives one apart from --trunk-username")
	fs.StringVar(&c.TrunkRealm, "trunk-realm", "", "the provider's digest realm: only its challenges are answered; also the domain we register in (default: the trunk's host)")
	fs.Var((*secondsOrDuration)(&c.TrunkRegister), "trunk-register", "register to the trunk, asking for this expiry (600s or 600); 0: no registration, the trunk is trusted by IP")
	fs.StringVar(&c.CompanyNumber, "company-number", "", "the public company number (E.164); several comma-separated, each may name the team its new callers ring: +74950000000=sales,+78120000000=support (the first is the caller ID of calls out)")
	fs.StringVar(&c.Region, "region", "", "default country for numbers written without + (e.g. RU)")
	fs.DurationVar(&c.RingTimeout, "ring-timeout", 20*time.Second, "how long one step of the ring order rings")
	fs.StringVar(&c.AliasNumbers, "alias-numbers", "", "a pool of alias numbers (DIDs on the trunk) for managers' mobiles, comma-separated numbers and ranges: +74950000100-+74950000199")
	fs.DurationVar(&c.AliasQuarantine, "alias-quarantine", 2160*time.Hour, "how long an alias released from its (manager, client) pair rests before another pair gets it")
	fs.StringVar(&c.PromptsLanguage, "prompts-language", "", "language of the prompts (en, ru, or one --prompts-dir adds); default --default-language, else ru with --region RU, else en")
	fs.DurationVar(&c.TaskOverdue, "task-overdue", api.DefaultTaskOverdue, "how long a missed-call task (call the client back) stays open before it counts as overdue for supervisors (0: the default)")
	fs.DurationVar(&c.MediaTimeout, "media-timeout", 60*time.Second, "a leg with no RTP for this long is torn down")
	fs.BoolVar(&c.MonitorNotice, "monitor-notice", false, "play a short beep to both parties of a call when a supervisor barges in (listen and whisper stay silent)")
	fs.IntVar(&c.CallsPerMinute, "calls-per-minute", 10, "how many calls out (click-to-call, dialled codes) a manager may start per minute")
	fs.IntVar(&c.MaxSetups, "max-setups", 1000, "calls in setup (INVITE received, no phone ringing yet) beyond which new calls in are refused with 503 and Retry-After (slow setups shed earlier)")
	fs.IntVar(&c.SIPRateLimit, "sip-rate-limit", pbx.DefaultStrangerRate, "SIP datagrams (TCP: messages and connections) one source IP may send per second before it is ignored for --sip-rate-limit-block (0: no limit)")
	fs.IntVar(&c.SIPRateLimitPhone, "sip-rate-limit-phone", pbx.DefaultPhoneRate, "--sip-rate-limit for an IP a registered phone sends from (0: no limit)")
	fs.IntVar(&c.SIPRateLimitTrunk, "sip-rate-limit-trunk", pbx.DefaultTrunkRate, "--sip-rate-limit for the trunk's addresses (--trunk-allow) (0: no limit)")
	fs.DurationVar(&c.SIPRateLimitBlock, "sip-rate-limit-block", pbx.DefaultSourceBlockFor, "how long a source over its rate is ignored after it last went over")
	fs.StringVar(&c.DigestAlgorithms, "digest-algorithms", "MD5", "digest algorithms offered in a 401, one challenge each, in order (many phones give up on more than one: SHA-256,MD5 only for phones that choose)")
	fs.DurationVar(&c.KeepAlive, "keepalive", 30*time.Second, "probe each leg of a call with in-dialog OPTIONS this often; a leg that stopped answering ends the call (0: off)")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or console")
	fs.BoolVar(&c.Demo, "demo", false, "seed demo data (company number, two managers, three clients) if missing")
	fs.StringVar(&c.Recorder, "recorder", "", `SIPREC recorder URI (sip:recorder@host:port;transport=tcp); empty runs one in this process, "off" records nothing`)
	fs.StringVar(&c.RecorderSecret, "recorder-secret", "", "shared secret the PBX answers the recorder's digest challenge with (prefer MASKPBX_RECORDER_SECRET); default: <data-dir>/keys/siprec.secret, generated once")
	fs.IntVar(&c.RecordingRetention, "recording-retention", 0, "days to keep recording audio (in-process recorder); 0 keeps it forever")
	c.Recordings.register(fs)
	c.Alerts.register(fs)
	fs.StringVar(&c.TimeZone, "timezone", "", "the company's IANA time zone (e.g. Europe/Moscow): times the console shows and the days its charts count; a person may choose his own (default: $TZ, else UTC)")
	fs.StringVar(&c.DefaultLanguage, "default-language", i18n.Default, "the company's language ("+strings.Join(i18n.Codes, ", ")+"): the console's and the phones' language for a person who chose none and whose browser asks for none of these")
	fs.StringVar(&c.PromptsDir, "prompts-dir", "", "directory of the company's own prompt clips (<lang>/<name>.wav, 8 kHz mono 16-bit PCM), laid over the built-in ones")
	fs.StringVar(&c.PprofListen, "pprof-listen", "", "address serving Go profiles (/debug/pprof/); empty: none. Never expose it beyond the host")
	return fs
}

// parseConfig reads flags, falling back to MASKPBX_* variables for every
// flag not given on the command line.
func parseConfig(name string, args []string) (Config, error) {
	var c Config
	fs := newFlagSet(name, &c)
	if err := parseFlagsAndEnv(fs, args); err != nil {
		return c, err
	}
	if c.DatabaseURL == "" {
		return c, fmt.Errorf("--database-url (or MASKPBX_DATABASE_URL) is required")
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		return c, fmt.Errorf("--log-format must be json or console")
	}
	if c.NodeID == "" || len(c.NodeID) > 64 || strings.ContainsFunc(c.NodeID, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return c, fmt.Errorf("--node must be 1 to 64 printable ASCII characters without spaces")
	}
	if _, _, err := c.Recordings.parse(); err != nil {
		return c, err
	}
	if err := c.NATS.checkReplicas(); err != nil {
		return c, err
	}
	return c, nil
}

// parseFlagsAndEnv parses args, then sets every flag not given on the
// command line from MASKPBX_<NAME> (upper case, '-' as '_') if that is set.
func parseFlagsAndEnv(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := "MASKPBX_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

// secondsOrDuration is a duration flag that also takes plain seconds, as
// SIP writes expiries (600 = 600s).
type secondsOrDuration time.Duration

func (d *secondsOrDuration) String() string { return time.Duration(*d).String() }

func (d *secondsOrDuration) Set(v string) error {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		*d = secondsOrDuration(time.Duration(n) * time.Second)
		return nil
	}
	p, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q: want seconds (600) or a duration (600s, 10m)", v)
	}
	*d = secondsOrDuration(p)
	return nil
}

// parsePrefixes reads an allow-list flag (--trunk-allow, --siprec-allow):
// comma-separated IPs and CIDRs, an IP standing for itself alone.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			ip, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP or CIDR", item)
			}
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP or CIDR", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// loopbackOnly refuses a listen address a stranger on the network could
// reach: profiles have no credentials, so they are served on loopback only.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: profiles carry no credentials and stay on this host", addr)
	}
	return nil
}
