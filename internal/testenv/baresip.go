package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Baresip is one headless baresip (Debian's baresip-core): a real
// softphone registered to the PBX, driven through its ctrl_tcp module.
// Its microphone is a WAV file holding a sine tone; what it hears is
// dumped by the sndfile module and read back with Heard.
type Baresip struct {
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	out  *SyncBuffer
	conn net.Conn
	exit chan struct{}

	mu        sync.Mutex
	events    []BaresipEvent
	consumed  map[string]int // event type -> events of that type already waited for
	responses map[string]baresipResponse
	nextToken int
}

// BaresipOptions describe one phone.
type BaresipOptions struct {
	Username, Password string
	Domain             string // the SIP domain (AOR host and digest realm)
	Proxy              string // host:port of the PBX's listener for Transport
	Transport          string // "udp" (default), "tcp" or "tls"
	SRTP               bool   // mandatory SRTP with SDES (RTP/SAVP, a=crypto)
	LocalIP            string // a loopback address of its own
	Tone               float64
	// RTPPorts is the phone's media port range, e.g. "42000-42099".
	RTPPorts string
	// AutoAnswer makes the phone answer incoming calls by itself.
	AutoAnswer bool
}

// BaresipEvent is one event baresip reported (ctrl_tcp): Type is e.g.
// REGISTER_OK, CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED.
type BaresipEvent struct {
	Type      string `json:"type"`
	Class     string `json:"class"`
	PeerURI   string `json:"peeruri"`
	PeerName  string `json:"peerdisplayname"`
	Param     string `json:"param"`
	Direction string `json:"direction"`
	ID        string `json:"id"`
}

type baresipResponse struct {
	OK   bool   `json:"ok"`
	Data string `json:"data"`
}

// StartBaresip writes the phone's configuration into a temporary directory
// and starts baresip; it is stopped when the test ends.
func StartBaresip(t testing.TB, o BaresipOptions) *Baresip {
	t.Helper()
	bin := Require(t, "baresip")
	dir := t.TempDir()
	if o.Transport == "" {
		o.Transport = "udp"
	}
	if o.RTPPorts == "" {
		o.RTPPorts = "42000-42099"
	}
	if o.Tone == 0 {
		o.Tone = 440
	}
	mic := filepath.Join(dir, "mic.wav")
	WriteToneWAV(t, mic, o.Tone, 120*time.Second)
	ctrl := fmt.Sprintf("127.0.0.1:%d", FreePort(t, "127.0.0.1"))
	sipPort := freePortPair(t, o.LocalIP)
	config := strings.Join([]string{
		"poll_method epoll",
		fmt.Sprintf("sip_listen %s:%d", o.LocalIP, sipPort),
		"sip_trans_def " + o.Transport,
		"sip_verify_server no",
		"net_interface " + o.LocalIP,
		"audio_player aufile," + os.DevNull,
		"audio_alert aufile," + os.DevNull,
		"audio_source aufile," + mic,
		"rtp_ports " + o.RTPPorts,
		"rtp_timeout 0",
		"module_path /usr/lib/baresip/modules",
		"module g711.so",
		"module aufile.so",
		"module sndfile.so",
		"module srtp.so",
		"module_app account.so",
		"module_app menu.so", // the commands ctrl_tcp runs
		"module_app ctrl_tcp.so",
		"ctrl_tcp_listen " + ctrl,
		"snd_path " + dir,
		"",
	}, "\n")
	account := fmt.Sprintf(`<sip:%s@%s;transport=%s>;auth_pass=%s;outbound="sip:%s;transport=%s";regint=600;audio_codecs=PCMU,PCMA`,
		o.Username, o.Domain, o.Transport, o.Password, o.Proxy, o.Transport)
	if o.SRTP {
		account += ";mediaenc=srtp-mand"
	}
	if o.AutoAnswer {
		account += ";answermode=auto"
	}
	for name, body := range map[string]string{"config": config, "accounts": account + "\n", "contacts": "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	b := &Baresip{t: t, dir: dir, out: &SyncBuffer{}, exit: make(chan struct{}),
		consumed: map[string]int{}, responses: map[string]baresipResponse{}}
	b.cmd = exec.Command(bin, "-f", dir)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("baresip: %v", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.exit) }()
	t.Cleanup(b.stop)
	var conn net.Conn
	if !WaitFor(10*time.Second, func() bool {
		var err error
		conn, err = net.DialTimeout("tcp", ctrl, time.Second)
		return err == nil
	}) {
		t.Fatalf("baresip's ctrl_tcp %s never answered; its output:\n%s", ctrl, b.out.String())
	}
	b.conn = conn
	go b.read()
	return b
}

// stop ends baresip: "quit" first (it unregisters), then a kill.
func (b *Baresip) stop() {
	if b.conn != nil {
		_ = b.send("quit", "")
	}
	select {
	case <-b.exit:
	case <-time.After(3 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exit
	}
	if b.conn != nil {
		b.conn.Close()
	}
	if b.t.Failed() {
		b.t.Logf("baresip %s output:\n%s", b.dir, b.out.String())
	}
}

// read decodes ctrl_tcp's netstrings (len ":" JSON ","): events and the
// responses to commands.
func (b *Baresip) read() {
	r := bufio.NewReader(b.conn)
	for {
		head, err := r.ReadString(':')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(head, ":")))
		if err != nil || n < 0 || n > 1<<20 {
			return
		}
		body := make([]byte, n+1) // with the trailing ','
		if _, err := readFull(r, body); err != nil {
			return
		}
		var msg struct {
			Event    bool   `json:"event"`
			Response bool   `json:"response"`
			Token    string `json:"token"`
			baresipResponse
			BaresipEvent
		}
		if json.Unmarshal(body[:n], &msg) != nil {
			continue
		}
		b.mu.Lock()
		if msg.Event {
			b.events = append(b.events, msg.BaresipEvent)
		} else if msg.Response {
			b.responses[msg.Token] = msg.baresipResponse
		}
		b.mu.Unlock()
	}
}

func readFull(r *bufio.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (b *Baresip) send(command, params string) string {
	b.mu.Lock()
	b.nextToken++
	token := strconv.Itoa(b.nextToken)
	b.mu.Unlock()
	msg, _ := json.Marshal(map[string]string{"command": command, "params": params, "token": token})
	_ = b.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(b.conn, "%d:%s,", len(msg), msg); err != nil {
		return ""
	}
	return token
}

// Command runs a baresip command (as on its console, without the slash)
// and fails the test unless baresip reports success.
func (b *Baresip) Command(command, params string) string {
	b.t.Helper()
	token := b.send(command, params)
	var res baresipResponse
	ok := WaitFor(5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		var found bool
		res, found = b.responses[token]
		return found
	})
	if !ok || !res.OK {
		b.t.Fatalf("baresip %s %q: answered=%v %+v; output:\n%s", command, params, ok, res, b.out.String())
	}
	return res.Data
}

// WaitEvent waits for the next event of type typ not yet waited for.
func (b *Baresip) WaitEvent(typ string, timeout time.Duration) BaresipEvent {
	b.t.Helper()
	var ev BaresipEvent
	ok := WaitFor(timeout, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		seen := 0
		for _, e := range b.events {
			if e.Type != typ {
				continue
			}
			if seen == b.consumed[typ] {
				b.consumed[typ]++
				ev = e
				return true
			}
			seen++
		}
		return false
	})
	if !ok {
		b.t.Fatalf("baresip: no %s within %s; events %v; output:\n%s", typ, timeout, b.Events(), b.out.String())
	}
	return ev
}

// Events returns every event so far.
func (b *Baresip) Events() []BaresipEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BaresipEvent(nil), b.events...)
}

// WaitRegistered waits for the account's 200 to REGISTER (asked with
// reginfo: the REGISTER_OK event may come before ctrl_tcp is connected).
func (b *Baresip) WaitRegistered() {
	b.t.Helper()
	var info string
	if !WaitFor(15*time.Second, func() bool {
		info = b.Command("reginfo", "")
		return strings.Contains(info, "OK")
	}) {
		b.t.Fatalf("baresip did not register: %q; output:\n%s", info, b.out.String())
	}
}

// Dial calls uri (e.g. "sip:12345678@pbx.test").
func (b *Baresip) Dial(uri string) { b.t.Helper(); b.Command("dial", uri) }

// Answer answers the ringing call.
func (b *Baresip) Answer() { b.t.Helper(); b.Command("accept", "") }

// Hangup ends the current call.
func (b *Baresip) Hangup() { b.t.Helper(); b.Command("hangup", "") }

// Hold puts the current call on hold (a re-INVITE with a=sendonly).
func (b *Baresip) Hold() { b.t.Helper(); b.Command("hold", "") }

// Resume takes the current call off hold.
func (b *Baresip) Resume() { b.t.Helper(); b.Command("resume", "") }

// Heard returns what the phone received in its last call, as 8 kHz linear
// samples (the sndfile module's dump of decoded audio).
func (b *Baresip) Heard() []int16 {
	b.t.Helper()
	files, _ := filepath.Glob(filepath.Join(b.dir, "dump-*-dec.wav"))
	if len(files) == 0 {
		return nil
	}
	var newest string
	var newestMod time.Time
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && !st.ModTime().Before(newestMod) {
			newest, newestMod = f, st.ModTime()
		}
	}
	samples, rate, err := ReadWAV(newest)
	if err != nil || rate != 8000 {
		b.t.Fatalf("baresip dump %s: %d Hz, %v", newest, rate, err)
	}
	return samples
}

// Output is what baresip printed so far.
func (b *Baresip) Output() string { return b.out.String() }

// freePortPair is a port p on host with p+1 free too: baresip listens for
// SIP on p (UDP, TCP) and for SIP over TLS on p+1, and fails to start if
// p+1 is taken.
func freePortPair(t testing.TB, host string) int {
	t.Helper()
	for range 50 {
		p := FreePort(t, host)
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p+1)))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatalf("testenv: no two free ports in a row on %s", host)
	return 0
}
