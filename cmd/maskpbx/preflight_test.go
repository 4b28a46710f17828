package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// preflightIP is a loopback address no other test of this package uses.
const preflightIP = "127.0.0.25"

// preflightConfig is a usable configuration whose database nobody serves:
// serve must fail on flags or ports before it ever tries Postgres.
func preflightConfig(t *testing.T) Config {
	t.Helper()
	return Config{
		DataDir:          filepath.Join(t.TempDir(), "data"),
		DatabaseURL:      "postgres://maskpbx@127.0.0.1:1/none?sslmode=disable",
		NATSListen:       fmt.Sprintf("%s:%d", preflightIP, testenv.FreePort(t, preflightIP)),
		SIPListen:        fmt.Sprintf("%s:%d", preflightIP, testenv.FreePort(t, preflightIP)),
		SIPDomain:        domain,
		RTPPorts:         "40100-40119",
		HTTPListen:       fmt.Sprintf("%s:%d", preflightIP, testenv.FreePort(t, preflightIP)),
		SIPTLSListen:     fmt.Sprintf("%s:%d", preflightIP, testenv.FreePort(t, preflightIP)),
		Trunk:            trunkIP + ":5060",
		CompanyNumber:    company,
		Region:           "RU",
		RingTimeout:      2 * time.Second,
		MediaTimeout:     10 * time.Second,
		DigestAlgorithms: "MD5,SHA-256",
		LogFormat:        "console",
	}
}

// serveFails runs serve with cfg and returns its error, failing the test
// unless serve refused within a second, before creating its data directory
// (the first thing it does once flags and ports are known good).
func serveFails(t *testing.T, cfg Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := serve(ctx, cfg, zap.NewNop(), nil)
	if took := time.Since(start); took > time.Second {
		t.Errorf("serve took %v to refuse, want at once", took)
	}
	if err == nil {
		t.Fatal("serve started")
	}
	if _, statErr := os.Stat(cfg.DataDir); statErr == nil {
		t.Errorf("serve created %s before refusing: it went past preflight", cfg.DataDir)
	}
	return err
}

func TestPreflightConfigIsValid(t *testing.T) {
	cfg := preflightConfig(t)
	if err := cfg.validate(); err != nil {
		t.Fatalf("the base configuration of these tests is refused: %v", err)
	}
	ports, err := bindPorts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ports.close()
}

// A bad flag value is an error at once, naming the flag, before Postgres,
// NATS or anything else starts.
func TestBadFlagsFailAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		tune func(*Config)
		want string // in the error
	}{
		{"rtp range without dash", func(c *Config) { c.RTPPorts = "20000" }, "--rtp-ports"},
		{"rtp range backwards", func(c *Config) { c.RTPPorts = "30000-20000" }, "--rtp-ports"},
		{"rtp range past 65535", func(c *Config) { c.RTPPorts = "65000-70000" }, "--rtp-ports"},
		{"rtp range holds the SIP port", func(c *Config) { c.SIPListen, c.RTPPorts = preflightIP+":40110", "40100-40119" }, "holds the SIP port 40110"},
		{"sip listen without port", func(c *Config) { c.SIPListen = preflightIP }, "--sip-listen"},
		{"sip listen on a host name", func(c *Config) { c.SIPListen = "pbx.example.com:5060" }, "--sip-listen"},
		{"http listen without host", func(c *Config) { c.HTTPListen = "8080" }, "--http-listen"},
		{"http port out of range", func(c *Config) { c.HTTPListen = "127.0.0.1:80800" }, "--http-listen"},
		{"nats listen garbage", func(c *Config) { c.NATSListen = "nats" }, "--nats-listen"},
		{"nats url without host", func(c *Config) { c.NATSURL = "4222" }, "--nats-url"},
		{"trunk with an unknown transport", func(c *Config) { c.Trunk = "sip.example.com;transport=sctp" }, "--trunk"},
		{"trunk with a bad port", func(c *Config) { c.Trunk = "192.0.2.10:99999" }, "--trunk"},
		{"trunk allow with a name", func(c *Config) { c.TrunkAllow = "trunk.example.com" }, "--trunk-allow"},
		{"unknown region", func(c *Config) { c.Region = "RUS" }, "--region"},
		{"unknown time zone", func(c *Config) { c.TimeZone = "Europe/Atlantis" }, "--timezone"},
		{"time zone as a path", func(c *Config) { c.TimeZone = "../../etc/passwd" }, "--timezone"},
		{"alert drop percent over 100", func(c *Config) { c.Alerts.th.DropPercent = 150 }, "--alert-drop-percent"},
		{"alert quiet factor under 1", func(c *Config) { c.Alerts.th.QuietFactor = 0.5 }, "--alert-quiet-factor"},
		{"negative alert burst window", func(c *Config) { c.Alerts.th.BurstWindow = -time.Minute }, "--alert-burst-window"},
		{"webhook tries over 20", func(c *Config) { c.Alerts.hooks.Tries = 50 }, "--webhook-tries"},
		{"unknown language", func(c *Config) { c.DefaultLanguage = "de" }, "--default-language"},
		{"company number not a number", func(c *Config) { c.CompanyNumber = "call us" }, "--company-number"},
		{"ring timeout zero", func(c *Config) { c.RingTimeout = 0 }, "--ring-timeout"},
		{"negative keepalive", func(c *Config) { c.KeepAlive = -time.Second }, "--keepalive"},
		{"negative task overdue", func(c *Config) { c.TaskOverdue = -time.Hour }, "--task-overdue"},
		{"unknown digest", func(c *Config) { c.DigestAlgorithms = "MD5,MD4" }, "--digest-algorithms"},
		{"sip domain with a space", func(c *Config) { c.SIPDomain = "pbx local" }, "--sip-domain"},
		{"public addr unspecified", func(c *Config) { c.PublicAddr = "0.0.0.0" }, "--public-addr"},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, "--log-format"},
		{"recorder not sip", func(c *Config) { c.Recorder = "http://rec:5090" }, "--recorder"},
		{"negative retention", func(c *Config) { c.RecordingRetention = -1 }, "--recording-retention"},
		{"tls listen without port", func(c *Config) { c.SIPTLSListen = "5061" }, "--sip-tls-listen"},
		{"tls cert without key", func(c *Config) { c.SIPTLSCert = "/etc/ssl/pbx.pem" }, "--sip-tls-cert"},
		{"pprof on every address", func(c *Config) { c.PprofListen = "0.0.0.0:6060" }, "--pprof-listen"},
		{"database url unparsable", func(c *Config) { c.DatabaseURL = "postgres://u:secret@[::1" }, "--database-url"},
		{"database url missing", func(c *Config) { c.DatabaseURL = "" }, "--database-url"},
		{"trunk register without account", func(c *Config) { c.TrunkRegister = 600 * time.Second }, "--trunk-register"},
		{"trunk register without trunk", func(c *Config) { c.Trunk, c.TrunkUsername, c.TrunkRegister = "", "acct", time.Minute }, "--trunk-register"},
		{"trunk register negative", func(c *Config) { c.TrunkUsername, c.TrunkRegister = "acct", -time.Second }, "--trunk-register"},
		{"trunk password without username", func(c *Config) { c.TrunkPassword = "secret" }, "--trunk-username"},
		{"trunk username with a quote", func(c *Config) { c.TrunkUsername = `a"b` }, "--trunk-username"},
		{"prompts dir missing", func(c *Config) { c.PromptsDir = "/nonexistent/prompts" }, "--prompts-dir"},
		{"alias range reversed", func(c *Config) { c.AliasNumbers = "+74950000199-+74950000100" }, "--alias-numbers"},
		{"alias quarantine negative", func(c *Config) { c.AliasQuarantine = -time.Hour }, "--alias-quarantine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := preflightConfig(t)
			tc.tune(&cfg)
			err := serveFails(t, cfg)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error shows the database password: %v", err)
			}
		})
	}

	t.Run("prompts dir with a bad clip", func(t *testing.T) {
		cfg := preflightConfig(t)
		cfg.PromptsDir = t.TempDir()
		clip := filepath.Join(cfg.PromptsDir, "ru", "goodbye.wav")
		if err := os.MkdirAll(filepath.Dir(clip), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(clip, []byte("ID3 an mp3, not a WAV"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := serveFails(t, cfg)
		if !strings.Contains(err.Error(), "--prompts-dir") || !strings.Contains(err.Error(), clip) {
			t.Fatalf("error %q does not name --prompts-dir and %s", err, clip)
		}
	})

	t.Run("every bad flag at once", func(t *testing.T) {
		cfg := preflightConfig(t)
		cfg.RTPPorts, cfg.Region, cfg.HTTPListen = "1-0", "ZZ", "x"
		err := serveFails(t, cfg)
		for _, flag := range []string{"--rtp-ports", "--region", "--http-listen"} {
			if !strings.Contains(err.Error(), flag) {
				t.Errorf("error %q does not name %s", err, flag)
			}
		}
	})
}

// A port in use is an error at once that names the flag and the address:
// not a wait for NATS, not a failure after Postgres was migrated.
func TestPortInUseFailsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		flag, proto string
		addr        func(Config) string
	}{
		{"--sip-listen", "udp", func(c Config) string { return c.SIPListen }},
		{"--sip-listen", "tcp", func(c Config) string { return c.SIPListen }},
		{"--http-listen", "tcp", func(c Config) string { return c.HTTPListen }},
		{"--sip-tls-listen", "tcp", func(c Config) string { return c.SIPTLSListen }},
		{"--nats-listen", "tcp", func(c Config) string { return c.NATSListen }},
	} {
		t.Run(tc.flag+" "+tc.proto, func(t *testing.T) {
			cfg := preflightConfig(t)
			addr := tc.addr(cfg)
			if tc.proto == "udp" {
				occupyUDP(t, addr)
			} else {
				occupyTCP(t, addr)
			}
			err := serveFails(t, cfg)
			for _, want := range []string{tc.flag, addr, "in use"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func occupyUDP(t *testing.T, addr string) {
	t.Helper()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
}

func occupyTCP(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}
