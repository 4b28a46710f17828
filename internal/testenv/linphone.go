package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Linphone is a running linphonec (Debian's linphone-cli, liblinphone 5.1):
// a real softphone driven through its console, headless. It registers with
// the PBX, sends PlayWAV as its microphone and records what it hears to
// RecordWAV. One phone often serves several subtests, so its methods take
// the (sub)test they fail; they are for that test's goroutine, one at a
// time.
//
// What the test learns of the phone comes from linphonec's own console
// lines ("Receiving new incoming call from ...", "Media streams established
// ...", "Call 1 with ... ended (...)."); each Wait looks for its line after
// the last command sent or the last line found, so a test reads the phone's
// calls in the order they happen.
type Linphone struct {
	opts   PhoneOptions
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *SyncBuffer
	exited chan struct{}
	cursor int  // output before it is consumed
	dumped bool // a failure has shown the phone's output and log
	// Log is linphonec's debug log (-d 6): every SIP message and media event.
	Log string
	// Config is the linphonerc the phone runs with.
	Config string
}

// linphonec's console lines, liblinphone 5.1 (console/linphonec.c).
var (
	lpIncoming    = regexp.MustCompile(`Receiving new incoming call from (.*), assigned id \d+`)
	lpEstablished = regexp.MustCompile(`Media streams established with .* for call \d+`)
	lpPaused      = regexp.MustCompile(`Call \d+ with .* is now paused\.`)
	lpEnded       = regexp.MustCompile(`Call \d+ with .* ended \((.*)\)\.`)
	lpFailed      = regexp.MustCompile(`Call \d+ with .* (error\.|ended \(.*\)\.)`)
	lpRegistered  = regexp.MustCompile(`registered, identity=`)
)

// StartLinphone starts linphonec with a configuration of its own in a
// temporary directory, and kills it when the test ends. Call
// WaitRegistered before expecting calls.
func StartLinphone(t testing.TB, o PhoneOptions) *Linphone {
	t.Helper()
	bin := Require(t, "linphonec") // Debian's linphone-cli
	dir := t.TempDir()
	if o.RecordWAV == "" {
		o.RecordWAV = filepath.Join(dir, "heard.wav")
	}
	l := &Linphone{opts: o, out: &SyncBuffer{}, exited: make(chan struct{}),
		Log: filepath.Join(dir, "linphone.log"), Config: filepath.Join(dir, "linphonerc")}
	if err := os.WriteFile(l.Config, []byte(linphoneConfig(t, o, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cmd = exec.CommandContext(ctx, bin, "-c", l.Config, "-d", "6", "-l", l.Log)
	l.cmd.Dir = dir
	// HOME: readline's history and anything liblinphone keeps stay in the
	// test's directory, not the user's.
	l.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	l.cmd.Stdout, l.cmd.Stderr = l.out, l.out
	stdin, err := l.cmd.StdinPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l.stdin = stdin
	if err := l.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("linphonec: %v", err)
	}
	go func() { _ = l.cmd.Wait(); close(l.exited) }()
	t.Cleanup(func() {
		if t.Failed() && !l.dumped {
			t.Logf("linphone %s output:\n%s\n--- debug log (tail):\n%s", o.Username, tailOf([]byte(l.out.String()), 4000), l.logTail(6000))
		}
		cancel() // kills it
		<-l.exited
	})
	// No sound card here: the microphone is PlayWAV, the speaker RecordWAV.
	l.send(t, "soundcard use files")
	if o.PlayWAV != "" {
		l.send(t, "play "+o.PlayWAV)
	}
	l.send(t, "record "+o.RecordWAV)
	return l
}

// linphoneConfig is the phone's linphonerc: one account on the PBX, SIP
// and RTP bound to LocalIP, PCMU, no video, and its databases in dir.
func linphoneConfig(t testing.TB, o PhoneOptions, dir string) string {
	t.Helper()
	sipPort := freeUDPPorts(t, o.LocalIP, 1)
	rtpPort := freeUDPPorts(t, o.LocalIP, 2)
	var b strings.Builder
	fmt.Fprintf(&b, `[sip]
sip_port=%d
sip_tcp_port=0
sip_tls_port=0
bind_address=%s
# liblinphone 5.1 takes the network as down, and stops registering, when
# its local addresses toward the internet are 127.0.0.1 and ::1 (a host
# with no default route). With IPv6 off its IPv6 address stays empty, so
# the check passes. The migration flag keeps liblinphone from dropping
# use_ipv6 on start.
use_ipv6=0
ipv6_migration_done=1
register_only_when_network_is_up=0
default_proxy=0
inc_timeout=60

[rtp]
audio_rtp_port=%d
bind_address=%s

[video]
capture=0
display=0
automatically_initiate=0
automatically_accept=0

[sound]
echocancellation=0

# liblinphone does not start without its databases; by default they live
# under ~/.local/share/linphone, which need not exist.
[storage]
uri=%s
call_logs_db_uri=%s
zrtp_secrets_db_uri=%s

[proxy_0]
reg_proxy=<sip:%s;transport=udp>
reg_route=<sip:%s;transport=udp;lr>
reg_identity="%s" <sip:%s@%s>
reg_expires=300
reg_sendregister=1
publish=0

[auth_info_0]
username=%s
passwd=%s
realm=%s
domain=%s
`, sipPort, o.LocalIP, rtpPort, o.LocalIP,
		filepath.Join(dir, "linphone.db"), filepath.Join(dir, "call-history.db"), filepath.Join(dir, "zrtp-secrets.db"),
		o.Registrar, o.Registrar, o.Username, o.Username, o.Domain,
		o.Username, o.Password, o.Domain, o.Domain)
	// PCMU only, so that what the phone sends is read with one law. A codec
	// the file does not name is added by liblinphone with its default
	// enablement, so the ones on by default are named and switched off.
	for i, c := range []struct {
		mime          string
		rate, chans   int
		enabled       int
		extraSettings string
	}{
		{"PCMU", 8000, 1, 1, ""},
		{"opus", 48000, 2, 0, ""},
		{"speex", 16000, 1, 0, ""},
		{"speex", 8000, 1, 0, ""},
		{"PCMA", 8000, 1, 0, ""},
		{"G729", 8000, 1, 0, "recv_fmtp=annexb=yes\n"},
	} {
		fmt.Fprintf(&b, "\n[audio_codec_%d]\nmime=%s\nrate=%d\nchannels=%d\nenabled=%d\n%s", i, c.mime, c.rate, c.chans, c.enabled, c.extraSettings)
	}
	return b.String()
}

// freeUDPPorts returns the first of n consecutive UDP ports on ip that were
// free a moment ago (RTP needs its port and the next, for RTCP).
func freeUDPPorts(t testing.TB, ip string, n int) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("free UDP port on %s: %v", ip, err)
		}
		first := c.LocalAddr().(*net.UDPAddr).Port
		held := []net.PacketConn{c}
		ok := true
		for i := 1; i < n && ok; i++ {
			next, err := net.ListenPacket("udp", net.JoinHostPort(ip, fmt.Sprint(first+i)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, next)
		}
		for _, h := range held {
			h.Close()
		}
		if ok && (n == 1 || first%2 == 0) {
			return first
		}
	}
	t.Fatalf("no %d free consecutive UDP ports on %s", n, ip)
	return 0
}

// RecordPath is the file the phone records what it hears to, call after
// call: liblinphone (mediastreamer's MSFileRec) writes raw samples while the
// first recording runs, puts the WAV header in front when it closes the
// file (at a hold or the call's end), and appends to it after that.
func (l *Linphone) RecordPath() string { return l.opts.RecordWAV }

// Heard returns what the phone has recorded so far, 8 kHz samples (the
// PCMU rate), read however far RecordPath has got; nil before anything.
func (l *Linphone) Heard(t testing.TB) []int16 {
	t.Helper()
	b, err := os.ReadFile(l.opts.RecordWAV)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("linphone %s recording: %v", l.opts.Username, err)
	}
	if !bytes.HasPrefix(b, []byte("RIFF")) {
		return pcm16(b, 1) // no header yet: 16-bit mono at the codec's rate
	}
	s, rate, err := decodeWAV(l.opts.RecordWAV, b)
	if err != nil {
		t.Fatalf("linphone %s recording: %v", l.opts.Username, err)
	}
	if rate != wavRate {
		t.Fatalf("linphone %s recorded at %d Hz, want %d", l.opts.Username, rate, wavRate)
	}
	return s
}

// WaitRegistered waits until the PBX has accepted the phone's REGISTER.
func (l *Linphone) WaitRegistered(t testing.TB, timeout time.Duration) {
	t.Helper()
	var asked time.Time
	l.await(t, "registration", timeout, func(text string) (int, bool) {
		if loc := lpRegistered.FindStringIndex(text); loc != nil {
			return loc[1], true
		}
		if time.Since(asked) > 250*time.Millisecond {
			l.send(t, "status register")
			asked = time.Now()
		}
		return 0, false
	})
}

// Dial calls uri ("sip:12345678@pbx.test") through the PBX.
func (l *Linphone) Dial(t testing.TB, uri string) { t.Helper(); l.command(t, "call "+uri) }

// WaitIncoming waits for a call to ring the phone and returns the caller as
// the phone shows it (`"Acme Trading #123" <sip:123@pbx.test>`).
func (l *Linphone) WaitIncoming(t testing.TB, timeout time.Duration) string {
	t.Helper()
	var from string
	l.await(t, "an incoming call", timeout, func(text string) (int, bool) {
		m := lpIncoming.FindStringSubmatchIndex(text)
		if m == nil {
			return 0, false
		}
		from = text[m[2]:m[3]]
		return m[1], true
	})
	return from
}

// Answer answers the ringing call.
func (l *Linphone) Answer(t testing.TB) { t.Helper(); l.command(t, "answer") }

// Hangup ends the current call (or declines a ringing one).
func (l *Linphone) Hangup(t testing.TB) { t.Helper(); l.command(t, "terminate") }

// Hold puts the current call on hold (a re-INVITE with a=sendonly).
func (l *Linphone) Hold(t testing.TB) { t.Helper(); l.command(t, "pause") }

// Resume takes the held call off hold (a re-INVITE with a=sendrecv).
func (l *Linphone) Resume(t testing.TB) { t.Helper(); l.command(t, "resume") }

// WaitEstablished waits until the call's media runs (after an answer, a
// dial answered by the far end, or a resume). It fails at once if the call
// ends instead.
func (l *Linphone) WaitEstablished(t testing.TB, timeout time.Duration) {
	t.Helper()
	l.awaitUnlessEnded(t, "the call's media", timeout, lpEstablished)
}

// WaitHeld waits until the PBX has accepted the hold.
func (l *Linphone) WaitHeld(t testing.TB, timeout time.Duration) {
	t.Helper()
	l.awaitUnlessEnded(t, "the hold", timeout, lpPaused)
}

// WaitClosed waits until the call has ended and returns liblinphone's
// reason ("No error" for a normal hangup by either side).
func (l *Linphone) WaitClosed(t testing.TB, timeout time.Duration) string {
	t.Helper()
	var reason string
	l.await(t, "the call's end", timeout, func(text string) (int, bool) {
		m := lpEnded.FindStringSubmatchIndex(text)
		if m == nil {
			return 0, false
		}
		reason = text[m[2]:m[3]]
		return m[1], true
	})
	return reason
}

// Output is what linphonec has printed on its console so far.
func (l *Linphone) Output() string { return l.out.String() }

// awaitUnlessEnded waits for re after the cursor and fails if the call ends
// or fails first.
func (l *Linphone) awaitUnlessEnded(t testing.TB, what string, timeout time.Duration, re *regexp.Regexp) {
	t.Helper()
	var ended string
	l.await(t, what, timeout, func(text string) (int, bool) {
		ok := re.FindStringIndex(text)
		bad := lpFailed.FindStringIndex(text)
		if bad != nil && (ok == nil || bad[0] < ok[0]) {
			ended = text[bad[0]:bad[1]]
			return bad[1], true
		}
		if ok == nil {
			return 0, false
		}
		return ok[1], true
	})
	if ended != "" {
		t.Fatalf("linphone %s: waiting for %s, the call ended: %s\n%s", l.opts.Username, what, ended, l.diagnostics())
	}
}

// await polls the phone's output after the cursor with found, which says
// where in it the awaited line ends; the cursor then moves past it. It
// fails the test, with the phone's output and log, on timeout or if
// linphonec exits.
func (l *Linphone) await(t testing.TB, what string, timeout time.Duration, found func(text string) (end int, ok bool)) {
	t.Helper()
	exited := false
	if WaitFor(timeout, func() bool {
		if end, ok := found(l.out.String()[l.cursor:]); ok {
			l.cursor += end
			return true
		}
		select {
		case <-l.exited:
			exited = true
			return true
		default:
			return false
		}
	}) && !exited {
		return
	}
	if exited {
		t.Fatalf("linphone %s exited while the test waited for %s\n%s", l.opts.Username, what, l.diagnostics())
	}
	t.Fatalf("linphone %s: timed out after %v waiting for %s\n%s", l.opts.Username, timeout, what, l.diagnostics())
}

// command sends a console command that starts something the test then
// waits for: lines printed before it are no longer awaited.
func (l *Linphone) command(t testing.TB, line string) {
	t.Helper()
	l.cursor = len(l.out.String())
	l.send(t, line)
}

func (l *Linphone) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(l.stdin, line+"\n"); err != nil {
		t.Fatalf("linphone %s: send %q: %v\n%s", l.opts.Username, line, err, l.diagnostics())
	}
}

func (l *Linphone) diagnostics() string {
	l.dumped = true
	return fmt.Sprintf("--- linphonec output (tail):\n%s\n--- debug log %s (tail):\n%s",
		tailOf([]byte(l.out.String()), 3000), l.Log, l.logTail(6000))
}

func (l *Linphone) logTail(n int) []byte {
	raw, _ := os.ReadFile(l.Log)
	return tailOf(raw, n)
}

// SyncBuffer is an output buffer that a process (or a logger) writes and
// the test reads at the same time.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
