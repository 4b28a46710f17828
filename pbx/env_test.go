package pbx

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/pbx/ha1"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Test topology: the PBX listens on 127.0.0.2, phones (SIPp or Go) send
// from 127.0.0.3, NATS runs on 127.0.0.1. All real, nothing mocked except
// the credential source, which is the unit's edge.
const (
	testDomain  = "pbx.test"
	pbxHost     = "127.0.0.2"
	phoneHost   = "127.0.0.3"
	testTimeout = 30 * time.Second
)

// runNATS starts an embedded NATS server with JetStream in a temp dir on a
// free port and returns a JetStream client of it, connected as the PBX's
// user: what the PBX does on the bus must fit that user's permissions.
func runNATS(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, js, err := bus.Connect(context.Background(), testenv.NATS(t), t.Name(), bus.Auth{})
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return js
}

// memCredentials is an in-memory CredentialSource.
type memCredentials struct {
	mu    sync.Mutex
	users map[string]SIPCredentials
}

func (m *memCredentials) SIPCredentials(_ context.Context, username string) (SIPCredentials, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.users[username]
	if !ok {
		return SIPCredentials{}, ErrUnknownUser
	}
	return c, nil
}

func (m *memCredentials) add(managerID, username, password string, active bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users == nil {
		m.users = map[string]SIPCredentials{}
	}
	m.users[username] = SIPCredentials{
		ManagerID: managerID,
		Username:  username,
		HA1MD5:    ha1.MD5(username, testDomain, password),
		HA1SHA256: ha1.SHA256(username, testDomain, password),
		Active:    active,
	}
}

// Users every test env has.
const (
	aliceID   = "0b6f6c1e-6a52-4c8e-9f53-3f6f1f0a0001"
	alicePass = "alice-secret"
	bobID     = "0b6f6c1e-6a52-4c8e-9f53-3f6f1f0a0002" // dismissed
	bobPass   = "bob-secret"
)

// testEnv is a running PBX with its NATS and credentials.
type testEnv struct {
	srv   *Server
	addr  string // host:port of the PBX, UDP and TCP
	js    jetstream.JetStream
	regs  *Registrations
	creds *memCredentials
	logs  *observer.ObservedLogs
}

// startPBX runs a Server on 127.0.0.2 with a fresh NATS; tweak adjusts the
// test config before the server is built.
func startPBX(t *testing.T, tweak func(*Config)) *testEnv {
	t.Helper()
	return startPBXWith(t, tweak, nil)
}

// startPBXBefore is startPBX with a step between building the server and
// serving (e.g. EnableCalls).
func startPBXBefore(t *testing.T, before func(*Server)) *testEnv {
	t.Helper()
	return startPBXWith(t, nil, before)
}

func startPBXWith(t *testing.T, tweak func(*Config), before func(*Server)) *testEnv {
	t.Helper()
	js := runNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	regs, err := openRegistrations(t, ctx, js, zap.NewNop())
	if err != nil {
		t.Fatalf("NewRegistrations: %v", err)
	}
	creds := &memCredentials{}
	creds.add(aliceID, "alice", alicePass, true)
	creds.add(bobID, "bob", bobPass, false)

	core, logs := observer.New(zap.DebugLevel)
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("log: %s %s %v", e.Level, e.Message, e.ContextMap())
			}
		}
	})
	cfg := Config{
		Listen:             net.JoinHostPort(pbxHost, "0"),
		Domain:             testDomain,
		RegisterMinExpires: time.Second,
		AuthFailLimit:      3,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := NewServer(cfg, creds, regs, zap.New(core))
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if before != nil {
		before(srv)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready")
	}
	return &testEnv{srv: srv, addr: srv.Addr(), js: js, regs: regs, creds: creds, logs: logs}
}

// freeUDPPort returns a UDP port on host that was free a moment ago.
func freeUDPPort(t testing.TB, host string) int {
	t.Helper()
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// sipp runs one SIPp scenario from testdata/sipp as a phone on 127.0.0.3
// and returns whether all its calls succeeded. keys are -key pairs.
type sippRun struct {
	scenario string
	port     int               // local port; 0 picks a free one
	keys     map[string]string // -key name value
	args     []string          // more arguments, e.g. -au, -ap, -t t1
}

func (e *testEnv) sipp(t *testing.T, run sippRun) error {
	t.Helper()
	if run.port == 0 {
		run.port = freeUDPPort(t, phoneHost)
	}
	dir := t.TempDir()
	scenario, err := filepath.Abs(filepath.Join("..", "testdata", "sipp", run.scenario))
	if err != nil {
		t.Fatal(err)
	}
	errFile := filepath.Join(dir, "errors.log")
	args := []string{e.addr,
		"-sf", scenario,
		"-i", phoneHost, "-p", strconv.Itoa(run.port),
		"-m", "1",
		"-timeout", "20s", "-timeout_error",
		"-max_retrans", "3",
		"-trace_err", "-error_file", errFile,
		"-nostdin",
	}
	for k, v := range run.keys {
		args = append(args, "-key", k, v)
	}
	args = append(args, run.args...)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err == nil {
		return nil
	}
	trace, _ := os.ReadFile(errFile)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return fmt.Errorf("sipp %s: a call failed:\n%s", run.scenario, tail(trace, 4000))
	}
	return fmt.Errorf("sipp %s: %v\n%s\n%s", run.scenario, err, tail(out.Bytes(), 2000), tail(trace, 4000))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// aliceKeys are the SIPp keys and credentials of alice registering for d.
func aliceSIPp(scenario string, expires time.Duration, password string) sippRun {
	return sippRun{
		scenario: scenario,
		keys: map[string]string{
			"sip_user":    "alice",
			"sip_domain":  testDomain,
			"reg_expires": strconv.Itoa(int(expires / time.Second)),
		},
		args: []string{"-au", "alice", "-ap", password, "-auth_uri", testDomain},
	}
}

// kvBindings reads a manager's bindings straight from the KV bucket, as
// another node would, skipping nothing.
func kvBindings(t *testing.T, js jetstream.JetStream, managerID string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, RegistrationsBucket)
	if err != nil {
		t.Fatalf("bucket: %v", err)
	}
	lister, err := kv.ListKeysFiltered(ctx, managerID+".>")
	if err != nil {
		t.Fatalf("list keys: %v", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// phone is a hand-driven SIP phone over UDP from 127.0.0.3: it sends the
// bytes a test writes, so tests can send anything, malformed included.
type phone struct {
	t         *testing.T
	conn      net.Conn
	transport string // in Via: UDP, TCP or TLS
	pbx       string
	callID    string
	cseq      int
	nc        int
}

func (e *testEnv) newPhone(t *testing.T) *phone {
	t.Helper()
	pbx, err := net.ResolveUDPAddr("udp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(phoneHost)}, pbx)
	if err != nil {
		t.Fatalf("phone socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &phone{t: t, conn: conn, transport: "UDP", pbx: e.addr, callID: randomToken() + "@" + phoneHost}
}

// newStreamPhone is a phone on a TCP connection to the PBX, or on TLS to
// its TLS listener when tlsConf is set.
func (e *testEnv) newStreamPhone(t *testing.T, tlsConf *tls.Config) *phone {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(phoneHost)}, Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	transport := "TCP"
	if tlsConf != nil {
		transport = "TLS"
		conn, err = tls.DialWithDialer(&d, "tcp", e.srv.TLSAddr(), tlsConf)
	} else {
		conn, err = d.Dial("tcp", e.addr)
	}
	if err != nil {
		t.Fatalf("phone %s connection: %v", transport, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &phone{t: t, conn: conn, transport: transport, pbx: e.addr, callID: randomToken() + "@" + phoneHost}
}

func (p *phone) local() string { return p.conn.LocalAddr().String() }

// contact is a Contact URI on this phone's socket; tag tells several apart.
func (p *phone) contact(tag string) string {
	return "sip:" + tag + "@" + p.local()
}

// exchange sends raw and returns the response, or nil if none came within d.
func (p *phone) exchange(raw string, d time.Duration) *sip.Response {
	p.t.Helper()
	if _, err := p.conn.Write([]byte(raw)); err != nil {
		p.t.Fatalf("phone send: %v", err)
	}
	buf := make([]byte, 65535)
	_ = p.conn.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			return nil
		}
		msg, err := sip.ParseMessage(buf[:n])
		if err != nil {
			p.t.Fatalf("phone: unparseable answer: %v\n%s", err, buf[:n])
		}
		res, ok := msg.(*sip.Response)
		if !ok || res.StatusCode == sip.StatusTrying {
			continue
		}
		return res
	}
}

// send sends raw and fails the test if no response comes.
func (p *phone) send(raw string) *sip.Response {
	p.t.Helper()
	res := p.exchange(raw, 5*time.Second)
	if res == nil {
		p.t.Fatalf("no response to:\n%s", raw)
	}
	return res
}

// request builds a request from this phone: method, Request-URI, To user,
// and extra header lines. Each call is a new transaction in the phone's
// one Call-ID, with the next CSeq.
func (p *phone) request(method, ruri, toUser string, extra ...string) string {
	p.cseq++
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n", p.transport, p.local(), randomToken())
	fmt.Fprintf(&b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", toUser, testDomain, "ph"+strconv.Itoa(p.cseq))
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", toUser, testDomain)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", p.callID)
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", p.cseq, method)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// register sends REGISTER sip:<domain> for user with extra headers and,
// when challenged and a password is given, authenticates with the challenge
// for algorithm. It returns the final response.
func (p *phone) register(user, password, algorithm string, extra ...string) *sip.Response {
	p.t.Helper()
	res := p.send(p.request("REGISTER", "sip:"+testDomain, user, extra...))
	if res.StatusCode != sip.StatusUnauthorized || password == "" {
		return res
	}
	auth := p.authorization(res, user, password, algorithm, "sip:"+testDomain)
	return p.send(p.request("REGISTER", "sip:"+testDomain, user, append(extra, auth)...))
}

// authorization answers the challenge for algorithm in a 401.
func (p *phone) authorization(res *sip.Response, user, password, algorithm, uri string) string {
	p.t.Helper()
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		chal, err := digest.ParseChallenge(h.Value())
		if err != nil {
			p.t.Fatalf("challenge %q: %v", h.Value(), err)
		}
		if chal.Algorithm != algorithm {
			continue
		}
		p.nc++
		cred, err := digest.Digest(chal, digest.Options{
			Method: "REGISTER", URI: uri, Username: user, Password: password, Count: p.nc,
		})
		if err != nil {
			p.t.Fatal(err)
		}
		return "Authorization: " + cred.String()
	}
	p.t.Fatalf("no %s challenge in:\n%s", algorithm, res)
	return ""
}

func randomToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// contactsOf lists the Contact values of a response.
func contactsOf(res *sip.Response) []string {
	var out []string
	for _, h := range res.GetHeaders("Contact") {
		out = append(out, h.Value())
	}
	return out
}
