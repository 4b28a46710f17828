package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// The addresses of one end-to-end system: every party on its own loopback
// IP, so a leak of the trunk's address into a phone's messages shows.
const (
	pbxIP      = "127.0.0.20"
	trunkIP    = "127.0.0.21"
	annaIP     = "127.0.0.22"
	bobIP      = "127.0.0.23"
	strangerIP = "127.0.0.24"
	company    = "+74950000000"
	domain     = "pbx.test"
	adminTok   = "e2e-admin-token"
)

type system struct {
	t       *testing.T
	run     running
	sipAddr string
	api     string
	// stop shuts the system down and waits for it (also done at cleanup).
	stop func()
}

// startSystem runs maskpbx serve in-process against a fresh database and an
// embedded NATS, as `make run` does, with loopback addresses for the parties.
func startSystem(t *testing.T, ringTimeout time.Duration) *system {
	t.Helper()
	return startSystemWith(t, ringTimeout, 10*time.Second)
}

func startSystemWith(t *testing.T, ringTimeout, mediaTimeout time.Duration) *system {
	t.Helper()
	return startSystemConfig(t, func(c *Config) { c.RingTimeout, c.MediaTimeout = ringTimeout, mediaTimeout })
}

// startSystemConfig starts a system whose configuration tune may change.
func startSystemConfig(t *testing.T, tune func(*Config)) *system {
	t.Helper()
	return startSystemLogged(t, tune, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
}

// startSystemLogged is startSystemConfig writing its log to logger.
func startSystemLogged(t *testing.T, tune func(*Config), logger *zap.Logger) *system {
	t.Helper()
	cfg := systemConfig(t)
	if tune != nil {
		tune(&cfg)
	}
	return startSystemFrom(t, cfg, logger)
}

// systemConfig is the configuration of a test system: a fresh database and
// data dir, the PBX on pbxIP with a free port.
func systemConfig(t *testing.T) Config {
	t.Helper()
	sipPort := testenv.FreePort(t, pbxIP)
	// Twenty RTP ports of the system's own, never holding its SIP port.
	rtpBase := 30000 + sipPort%1000*20
	if sipPort >= rtpBase && sipPort < rtpBase+20 {
		rtpBase += 20
	}
	cfg := Config{
		DataDir:          t.TempDir(),
		DatabaseURL:      testenv.Database(t),
		NATSListen:       "127.0.0.1:0",
		SIPListen:        fmt.Sprintf("%s:%d", pbxIP, sipPort),
		SIPDomain:        domain,
		RTPPorts:         fmt.Sprintf("%d-%d", rtpBase, rtpBase+19),
		HTTPListen:       "127.0.0.1:0",
		Trunk:            trunkIP + ":5060",
		CompanyNumber:    company,
		Region:           "RU",
		RingTimeout:      2 * time.Second,
		MediaTimeout:     10 * time.Second,
		CallsPerMinute:   10,
		DigestAlgorithms: "MD5", // Debian's SIPp 3.6 has no SHA-256
		NodeID:           "test-node",
		// The SIPp trunks answer one call and nothing else: an OPTIONS ping
		// would be that call.
		trunkPing: time.Hour,
	}
	return cfg
}

// startSystemFrom runs serve in-process with cfg.
func startSystemFrom(t *testing.T, cfg Config, logger *zap.Logger) *system {
	t.Helper()
	t.Setenv("MASKPBX_ADMIN_TOKEN", adminTok)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan running, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, cfg, logger, func(r running) { started <- r }) }()
	stop := sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop")
		}
	})
	t.Cleanup(stop)
	select {
	case r := <-started:
		return &system{t: t, run: r, sipAddr: cfg.SIPListen, api: "http://" + r.HTTPAddr, stop: stop}
	case err := <-errc:
		errc <- nil // stop has nothing more to wait for
		t.Fatalf("serve: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not start")
	}
	return nil
}

func (s *system) call(method, path, token string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, s.api+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

type apiManager struct {
	ID         string `json:"id"`
	APIToken   string `json:"api_token"`
	Registered bool   `json:"registered"`
}

func (s *system) manager(user string) apiManager {
	var m apiManager
	if st := s.call("POST", "/api/v1/managers", adminTok, map[string]string{
		"name": "M " + user, "sip_username": user, "sip_password": user + "-secret", "team": "sales"}, &m); st != 201 {
		s.t.Fatalf("create manager %s: %d", user, st)
	}
	return m
}

type apiClient struct {
	ID        string `json:"id"`
	Code      string `json:"code"`
	Name      string `json:"name"`
	ManagerID string `json:"manager_id"`
}

func (s *system) client(name, phone, managerID string, partners ...string) apiClient {
	var c apiClient
	if partners == nil {
		partners = []string{}
	}
	if st := s.call("POST", "/api/v1/clients", adminTok, map[string]any{
		"name": name, "phones": []string{phone}, "manager_id": managerID, "partner_ids": partners}, &c); st != 201 {
		s.t.Fatalf("create client: %d", st)
	}
	return c
}

// register makes a SIPp phone on ip:port register as user.
func (s *system) register(user, ip string, port int) {
	s.t.Helper()
	testenv.StartSIPp(s.t, "register "+user, testenv.SIPpOptions{
		Scenario: "register_auth.xml", Remote: s.sipAddr, LocalIP: ip, Port: port,
		Keys: map[string]string{"sip_user": user, "sip_domain": domain, "reg_expires": "300"},
		Args: []string{"-au", user, "-ap", user + "-secret", "-auth_uri", domain},
	}).Wait()
}

// cdr waits for the CDR writer to record a call's end.
func (s *system) cdr(filter storage.CDRFilter) storage.CDR {
	s.t.Helper()
	var cdr storage.CDR
	testenv.Eventually(s.t, 15*time.Second, func() bool {
		cdrs, err := s.run.Store.CDRs(context.Background(), filter)
		if err != nil || len(cdrs) == 0 || cdrs[0].EndedAt == nil {
			return false
		}
		cdr = cdrs[0]
		return true
	}, "a finished CDR")
	return cdr
}

// ourRandomTokens are values the PBX draws at random for every call (tags,
// branches, Call-IDs, SDP session ids, ports): not derived from any number,
// so a 4-digit run inside them is chance, not a leak.
var ourRandomTokens = regexp.MustCompile(`(?i)(tag=[^;>\s]+|branch=[^;\s]+|call-id: *\S+|o=maskpbx \d+ \d+|:\d{4,5}\b|m=audio \d+|a=rtcp:\d+|cseq: *\d+)`)

// assertNoLeak fails if any message a phone received carries the caller's
// number, any 4-digit run of it, or the trunk's address.
func assertNoLeak(t *testing.T, phone *testenv.SIPp, callerE164 string, clientCode string) {
	t.Helper()
	digits := strings.TrimPrefix(callerE164, "+")
	for _, m := range received(t, phone, "the phone") {
		if strings.Contains(m, trunkIP) {
			t.Fatalf("the phone received the trunk's address:\n%s", m)
		}
		if strings.Contains(m, digits[1:]) {
			t.Fatalf("the phone received the caller's number:\n%s", m)
		}
		clean := ourRandomTokens.ReplaceAllString(m, "<ours>")
		if clientCode != "" {
			clean = strings.ReplaceAll(clean, clientCode, "<code>")
		}
		if run := digitRun(clean, digits); run != "" {
			t.Fatalf("the phone received digit run %q of the caller's number:\n%s", run, m)
		}
	}
}

// received is what p received, failing the test if it is nothing: a leak
// check over no message proves nothing.
func received(t *testing.T, p *testenv.SIPp, who string) []string {
	t.Helper()
	msgs := p.Received()
	if len(msgs) == 0 {
		t.Fatalf("%s received no messages to check", who)
	}
	return msgs
}

// digitRun is the first 4-digit run of digits that s contains, or "".
func digitRun(s, digits string) string {
	for i := 0; i+4 <= len(digits); i++ {
		if strings.Contains(s, digits[i:i+4]) {
			return digits[i : i+4]
		}
	}
	return ""
}

func addrPort(t *testing.T, ip, port string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(ip + ":" + port)
	if err != nil {
		t.Fatalf("bad media port %q: %v", port, err)
	}
	return ap
}
