package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// Recording end to end: calls through the PBX with a SIPp trunk and phone,
// tones from our own RTP peers on both sides, the recorder in process (the
// default of serve), as a process of its own that is killed mid-call, down,
// and faced with a SIPREC client that is not our PBX.

const (
	clientTone  = 400.0  // Hz, sent by the client (trunk side): left channel
	managerTone = 1000.0 // Hz, sent by the manager's phone: right channel
)

// startRecordedSystem starts serve through its flags, so the recording
// flags (--recorder, --recording-retention) are tested as a user gives them.
// It returns the configuration serve runs with.
func startRecordedSystem(t *testing.T, flags ...string) (*system, Config) {
	t.Helper()
	var cfg Config
	s := startSystemConfig(t, func(c *Config) {
		args := []string{"--data-dir", c.DataDir, "--database-url", c.DatabaseURL, "--nats-listen", c.NATSListen,
			"--sip-listen", c.SIPListen, "--sip-domain", c.SIPDomain, "--rtp-ports", c.RTPPorts,
			"--http-listen", c.HTTPListen, "--trunk", c.Trunk, "--company-number", c.CompanyNumber, "--region", c.Region,
			"--ring-timeout", c.RingTimeout.String(), "--media-timeout", c.MediaTimeout.String(),
			"--digest-algorithms", c.DigestAlgorithms}
		parsed, err := parseConfig("serve", append(args, flags...))
		if err != nil {
			t.Fatalf("serve does not take the recording flags %v (wire cmd/maskpbx/recorder_cmd.go into config.go and serve.go): %v", flags, err)
		}
		parsed.CallsPerMinute = c.CallsPerMinute
		*c, cfg = parsed, parsed
	})
	return s, cfg
}

// rtpPeer is a party's RTP endpoint that sends a PCMU tone, optionally
// losing and reordering packets on the way, and counts what it receives.
type rtpPeer struct {
	conn     *net.UDPConn
	received atomic.Int64
}

func newRTPPeer(t *testing.T, addr string) *rtpPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("rtp peer %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	p := &rtpPeer{conn: c}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n >= 12 && buf[0]>>6 == 2 {
				p.received.Add(1)
			}
		}
	}()
	return p
}

// impairment says what happens to packet k on its way: dropped, or held
// back behind the next one.
type impairment struct {
	drop func(k int) bool
	swap func(k int) bool // send k+1 before k
}

// send sends n 20 ms packets of a freq Hz tone to dst in real time.
func (p *rtpPeer) send(dst netip.AddrPort, freq float64, n int, imp impairment) {
	ssrc := uint32(time.Now().UnixNano())
	packet := func(k int) []byte {
		b := make([]byte, 12+160)
		b[0], b[1] = 0x80, 0
		binary.BigEndian.PutUint16(b[2:], uint16(k))
		binary.BigEndian.PutUint32(b[4:], uint32(5000+k*160))
		binary.BigEndian.PutUint32(b[8:], ssrc)
		audio.Tone(b[12:], audio.LinearToULaw, freq, k*160)
		return b
	}
	to := net.UDPAddrFromAddrPort(dst)
	start := time.Now()
	var held []byte
	for k := range n {
		time.Sleep(time.Until(start.Add(time.Duration(k) * 20 * time.Millisecond))) // pacing: a packet every 20 ms
		pkt := packet(k)
		switch {
		case imp.drop != nil && imp.drop(k):
			pkt = nil
		case imp.swap != nil && imp.swap(k) && k+1 < n:
			held = pkt
			continue
		}
		if pkt != nil {
			_, _ = p.conn.WriteToUDP(pkt, to)
		}
		if held != nil {
			_, _ = p.conn.WriteToUDP(held, to)
			held = nil
		}
	}
}

// pbxPorts reads the PBX's RTP port for each side from the SIPp logs.
func pbxPorts(t *testing.T, trunk, ph *testenv.SIPp) (netip.AddrPort, netip.AddrPort) {
	t.Helper()
	tp, err := trunk.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := ph.LogValue("PBX_RTP", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return addrPort(t, pbxIP, strings.Fields(tp)[0]), addrPort(t, pbxIP, strings.Fields(pp)[0])
}

// recordingOf waits for a call's recording to be finished (status other
// than recording).
func recordingOf(t *testing.T, store *storage.Store, callID string, within time.Duration) storage.Recording {
	t.Helper()
	var rec storage.Recording
	testenv.Eventually(t, within, func() bool {
		recs, err := store.Recordings(context.Background(), storage.RecordingFilter{CallID: callID})
		if err != nil || len(recs) != 1 || recs[0].Status == storage.RecordingActive {
			return false
		}
		rec = recs[0]
		return true
	}, "a finished recording of call %s", callID)
	return rec
}

// cdrRecording waits for a call's CDR to carry a final recording state.
func (s *system) cdrRecording(callID string, want ...string) storage.CDR {
	s.t.Helper()
	var c storage.CDR
	if !testenv.WaitFor(45*time.Second, func() bool {
		var err error
		c, err = s.run.Store.CDR(context.Background(), callID)
		return err == nil && c.EndedAt != nil && slices.Contains(want, c.Recording)
	}) {
		s.t.Fatalf("CDR of %s says recording %q, want one of %v", callID, c.Recording, want)
	}
	return c
}

func loadWAV(t *testing.T, path string) (recorder.StereoPCM, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := recorder.DecodeWAV(raw)
	if err != nil {
		t.Fatal(err)
	}
	if sox := testenv.Have(t, "sox"); sox != "" {
		out, err := exec.Command(sox, "--i", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Channels       : 2") || !strings.Contains(string(out), "Sample Rate    : 8000") {
			t.Fatalf("sox --i cannot read the recording: %v\n%s", err, out)
		}
	}
	return p, raw
}

// active is the first and last sample louder than the line noise.
func active(s []int16) (first, last int) {
	first, last = -1, -1
	for i, v := range s {
		if v > 1500 || v < -1500 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return first, last
}

// checkChannels checks that each channel carries its party's tone and
// nothing of the other's, and returns where the tones begin and end.
func checkChannels(t *testing.T, p recorder.StereoPCM) (left, right [2]int) {
	t.Helper()
	left[0], left[1] = active(p.Left)
	right[0], right[1] = active(p.Right)
	if left[0] < 0 || right[0] < 0 {
		t.Fatalf("a channel is silent: left %v, right %v", left, right)
	}
	mid := func(s []int16, r [2]int) []int16 { c := (r[0] + r[1]) / 2; return s[c-4000 : c+4000] }
	lc, lm := audio.ToneShare(mid(p.Left, left), clientTone), audio.ToneShare(mid(p.Left, left), managerTone)
	rm, rc := audio.ToneShare(mid(p.Right, right), managerTone), audio.ToneShare(mid(p.Right, right), clientTone)
	t.Logf("left: client tone %.2f, manager tone %.3f; right: manager tone %.2f, client tone %.3f", lc, lm, rm, rc)
	if lc < 0.5 || lm > 0.02 {
		t.Errorf("left channel is not the client's tone: %.2f at %v Hz, %.3f at %v Hz", lc, clientTone, lm, managerTone)
	}
	if rm < 0.5 || rc > 0.02 {
		t.Errorf("right channel is not the manager's tone: %.2f at %v Hz, %.3f at %v Hz", rm, managerTone, rc, clientTone)
	}
	return left, right
}

func within(d, of, tol time.Duration) bool { return d >= of-tol && d <= of+tol }

func ms(frames int) time.Duration { return time.Duration(frames) * time.Second / 8000 }

// recordedCall runs one call: the trunk calls, anna answers, both sides
// send n packets of their tones at once (the client's impaired as imp),
// the client hangs up holdMS after the answer.
func recordedCall(t *testing.T, s *system, clientID string, port int, n, holdMS int, imp impairment) (storage.CDR, storage.Recording) {
	t.Helper()
	trunkRTP := newRTPPeer(t, fmt.Sprintf("%s:%d", trunkIP, port))
	phoneRTP := newRTPPeer(t, fmt.Sprintf("%s:%d", annaIP, port+2))
	ph := phone(t, s, "anna", annaIP, 5070, port+2, false, 1)
	tr := trunkCall(t, s, acmeNumber, port, true, holdMS)
	toClientSide, toManagerSide := pbxPorts(t, tr, ph)
	var wg sync.WaitGroup
	wg.Go(func() { trunkRTP.send(toClientSide, clientTone, n, imp) })
	wg.Go(func() { phoneRTP.send(toManagerSide, managerTone, n, impairment{}) })
	wg.Wait()
	tr.Wait()
	ph.Wait()
	if trunkRTP.received.Load() < int64(n)*9/10 || phoneRTP.received.Load() < int64(n)*9/10 {
		t.Errorf("the relay carried %d and %d of %d packets", phoneRTP.received.Load(), trunkRTP.received.Load(), n)
	}
	cdr := s.cdr(storage.CDRFilter{ClientID: clientID})
	cdr = s.cdrRecording(cdr.CallID, storage.RecordingComplete)
	return cdr, recordingOf(t, s.run.Store, cdr.CallID, 20*time.Second)
}

func TestRecordedCall(t *testing.T) {
	// Retention is on: it must leave today's recordings alone.
	s, cfg := startRecordedSystem(t, "--recording-retention", "30")
	anna := s.manager("anna")
	var sue apiManager
	if st := s.call("POST", "/api/v1/managers", adminTok, map[string]string{"name": "Sue", "sip_username": "sue",
		"sip_password": "sue-secret-1", "role": "supervisor"}, &sue); st != 201 {
		t.Fatalf("create supervisor: %d", st)
	}
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)
	dataDir := filepath.Join(cfg.DataDir, "recordings")

	t.Run("each party's tone in its channel, as long as the call", func(t *testing.T) {
		cdr, rec := recordedCall(t, s, acme.ID, 41500, 100, 3000, impairment{})
		if rec.ClientID != acme.ID || rec.ManagerID != anna.ID || rec.Status != storage.RecordingComplete ||
			rec.Source != storage.SourceMaskPBX || rec.Codec != "PCMU" || rec.Direction != "inbound" {
			t.Fatalf("recording %+v", rec)
		}
		if !strings.HasPrefix(rec.BlobKey, acme.ID+"/"+rec.StartedAt.UTC().Format("2006/01")+"/"+cdr.CallID) {
			t.Errorf("blob key %q is not <client>/<yyyy>/<mm>/<call>.wav", rec.BlobKey)
		}
		t.Logf("connected %v, recorded %v", cdr.Duration, rec.Duration)
		if !within(rec.Duration, cdr.Duration, 100*time.Millisecond) {
			t.Errorf("recording lasts %v, the call was connected %v", rec.Duration, cdr.Duration)
		}
		p, raw := loadWAV(t, filepath.Join(dataDir, rec.BlobKey))
		if int64(len(raw)) != rec.SizeBytes || math.Abs(p.Duration()-rec.Duration.Seconds()) > 0.001 {
			t.Errorf("file of %d bytes, %.3f s; row says %d, %v", len(raw), p.Duration(), rec.SizeBytes, rec.Duration)
		}
		left, right := checkChannels(t, p)
		if d := ms(left[0] - right[0]); d < -40*time.Millisecond || d > 40*time.Millisecond {
			t.Errorf("the tones, sent at once, begin %v apart", d)
		}

		t.Run("replay", func(t *testing.T) {
			var list []map[string]any
			if st := s.call("GET", "/api/v1/recordings?client_id="+acme.ID, sue.APIToken, nil, &list); st != 200 || len(list) == 0 {
				t.Fatalf("list: %d %v", st, list)
			}
			if st := s.call("GET", "/api/v1/recordings/"+rec.ID+"/audio", anna.APIToken, nil, nil); st != 403 {
				t.Fatalf("the manager's token got %d, want 403", st)
			}
			req, _ := http.NewRequest("GET", s.api+"/api/v1/recordings/"+rec.ID+"/audio", nil)
			req.Header.Set("Authorization", "Bearer "+sue.APIToken)
			req.Header.Set("Range", "bytes=44-16043")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 206 || !bytes.Equal(body, raw[44:16044]) || resp.Header.Get("Content-Type") != "audio/wav" ||
				resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 44-16043/%d", len(raw)) {
				t.Fatalf("range: %d %v, %d bytes", resp.StatusCode, resp.Header, len(body))
			}
			if !s.audited("recording.audio", "recording:"+rec.ID) {
				t.Fatal("no audit row for the supervisor's access")
			}
		})
	})

	t.Run("2% loss and reordering on the client side", func(t *testing.T) {
		const n = 250 // 5 s
		lost := 0
		imp := impairment{
			drop: func(k int) bool {
				if k%50 == 17 {
					lost++
					return true
				}
				return false
			},
			swap: func(k int) bool { return k%10 == 4 },
		}
		cdr, rec := recordedCall(t, s, acme.ID, 41510, n, 5600, imp)
		t.Logf("connected %v, recorded %v, %d client packets lost", cdr.Duration, rec.Duration, lost)
		if !within(rec.Duration, cdr.Duration, 100*time.Millisecond) {
			t.Errorf("recording lasts %v, the call was connected %v", rec.Duration, cdr.Duration)
		}
		p, _ := loadWAV(t, filepath.Join(dataDir, rec.BlobKey))
		left, right := checkChannels(t, p)
		// Sent at once for the same time: with lost packets filled as
		// silence and reordered ones put back, the tones start and end
		// together (a recorder that dropped the gaps would end the client's
		// tone 100 ms early).
		start, end := ms(left[0]-right[0]), ms(left[1]-right[1])
		t.Logf("client tone begins %v and ends %v after the manager's", start, end)
		if start < -30*time.Millisecond || start > 30*time.Millisecond || end < -30*time.Millisecond || end > 30*time.Millisecond {
			t.Errorf("channels apart: the tones begin %v and end %v apart", start, end)
		}
		if gaps := silentRuns(p.Left[left[0]:left[1]], 150); gaps != lost {
			t.Errorf("%d silent 20 ms gaps in the client's tone, %d packets were lost", gaps, lost)
		}
	})
}

// silentRuns counts runs of at least min zero samples (lost packets).
func silentRuns(s []int16, min int) int {
	runs, run := 0, 0
	for _, v := range s {
		if v == 0 {
			run++
			continue
		}
		if run >= min {
			runs++
		}
		run = 0
	}
	return runs
}

// TestRecorderDown: with the recorder unreachable when a call starts, the
// call connects and carries audio, the CDR says the recording is missing,
// and the failure is counted in /metrics.
func TestRecorderDown(t *testing.T) {
	closed := testenv.FreePort(t, "127.0.0.1")
	s, _ := startRecordedSystem(t, "--recorder", fmt.Sprintf("sip:recorder@127.0.0.1:%d;transport=tcp", closed))
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)
	trunkRTP := testenv.NewRTPEndpoint(t, trunkIP+":41600")
	phoneRTP := testenv.NewRTPEndpoint(t, annaIP+":41602")
	ph := phone(t, s, "anna", annaIP, 5070, 41602, false, 1)
	tr := trunkCall(t, s, acmeNumber, 41600, true, 2500)
	talk(t, tr, ph, trunkRTP, phoneRTP, annaIP)
	tr.Wait()
	ph.Wait()
	cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if cdr.Disposition != "answered" || cdr.Recording != "missing" {
		t.Fatalf("CDR %+v, want answered with the recording missing", cdr)
	}
	resp, err := http.Get(s.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), "maskpbx_recording_failures_total 1") {
		t.Fatalf("/metrics does not count the unrecorded call:\n%s", grep(string(raw), "recording"))
	}
}

func grep(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// childProcess runs a maskpbx command as a process of its own: this test
// binary, re-executed into the test that runs the command (TestRecorderProcess,
// TestServeProcess), which reads its arguments from an environment variable.
type childProcess struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  testenv.SyncBuffer
	done chan error
}

// startChildProcess starts the command that test runs with args, and waits
// until it listens on addr (TCP).
func startChildProcess(t *testing.T, test, env, addr string, args ...string) *childProcess {
	t.Helper()
	p := &childProcess{t: t, name: test, done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$")
	p.cmd.Env = append(os.Environ(), env+"="+strings.Join(args, "\x1f"))
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out.String())
		}
	})
	if !testenv.WaitFor(30*time.Second, func() bool { return listening(addr, p.done) }) {
		t.Fatalf("%s does not listen on %s:\n%s", test, addr, p.out.String())
	}
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("%s exited: %v\n%s", test, err, p.out.String())
	default:
	}
	return p
}

func startRecorderProcess(t *testing.T, addr string, args ...string) *childProcess {
	t.Helper()
	return startChildProcess(t, "TestRecorderProcess", "MASKPBX_RECORDER_PROCESS", addr, args...)
}

// kill ends the process the hard way: no deferred code, no flushing.
func (p *childProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
}

// runChildCommand is the body of a child process's test: it runs command
// with the arguments in env (skipping when env is empty: run on its own, the
// test does nothing) and exits.
func runChildCommand(t *testing.T, env string, command func(context.Context, []string) error) {
	args := os.Getenv(env)
	if args == "" {
		t.Skip("a child process of another test")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := command(ctx, strings.Split(args, "\x1f")); err != nil {
		fmt.Fprintln(os.Stderr, env, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestRecorderProcess is the recorder process of TestRecorderKilledMidCall;
// run on its own it does nothing.
func TestRecorderProcess(t *testing.T) {
	runChildCommand(t, "MASKPBX_RECORDER_PROCESS", recorderCommand)
}

// TestRecorderKilledMidCall: the recorder runs as its own process and is
// killed with SIGKILL in the middle of a call. The call goes on to its
// normal end; the recorder, started again, repairs the file (playable,
// audio up to the crash), marks it partial, and the CDR is complete.
func TestRecorderKilledMidCall(t *testing.T) {
	recPort := testenv.FreePort(t, "127.0.0.1")
	recAddr := fmt.Sprintf("127.0.0.1:%d", recPort)
	s, cfg := startRecordedSystem(t, "--recorder", "sip:recorder@"+recAddr+";transport=tcp")
	anna := s.manager("anna")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)
	// The recorder joins serve's embedded NATS as the recorder's user, with
	// the password serve generated; it shares serve's data dir, so the
	// SIPREC secret too.
	natsPassword, err := os.ReadFile(filepath.Join(cfg.DataDir, "keys", bus.RecorderPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--data-dir", cfg.DataDir, "--database-url", cfg.DatabaseURL, "--nats-url", s.run.NATSURL,
		"--nats-user", bus.UserRecorder, "--nats-password", strings.TrimSpace(string(natsPassword)),
		"--sip-listen", recAddr, "--node", "recorder-1", "--log-format", "console"}
	rp := startRecorderProcess(t, recAddr, args...)

	trunkRTP := newRTPPeer(t, trunkIP+":41700")
	phoneRTP := newRTPPeer(t, annaIP+":41702")
	ph := phone(t, s, "anna", annaIP, 5070, 41702, false, 1)
	tr := trunkCall(t, s, acmeNumber, 41700, true, 6000)
	toClientSide, toManagerSide := pbxPorts(t, tr, ph)
	answered := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { trunkRTP.send(toClientSide, clientTone, 275, impairment{}) })
	wg.Go(func() { phoneRTP.send(toManagerSide, managerTone, 275, impairment{}) })

	// Killed mid-call: once 3 s of the call's audio has reached the manager.
	testenv.Eventually(t, 10*time.Second, func() bool { return phoneRTP.received.Load() >= 150 }, "3 s of audio at the manager")
	rp.kill()
	killedAfter := time.Since(answered)
	relayed := phoneRTP.received.Load()
	wg.Wait()
	if after := phoneRTP.received.Load() - relayed; after < 100 {
		t.Errorf("after the kill only %d packets reached the manager: the call suffered", after)
	}
	tr.Wait() // the client hung up at the end: the call stayed up
	ph.Wait()
	cdr := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if cdr.Disposition != "answered" || cdr.HangupSide != "client" || cdr.Duration < 5*time.Second {
		t.Fatalf("CDR %+v: the call did not go on to its end", cdr)
	}

	startRecorderProcess(t, recAddr, args...)
	rec := recordingOf(t, s.run.Store, cdr.CallID, 30*time.Second)
	if rec.Status != storage.RecordingPartial || rec.Node != "recorder-1" {
		t.Fatalf("recording %+v, want partial", rec)
	}
	t.Logf("killed %v after the answer; the repaired recording lasts %v", killedAfter, rec.Duration)
	// Everything up to the crash is there but the jitter delay and the
	// last flush, about half a second.
	if rec.Duration > killedAfter || rec.Duration < killedAfter-time.Second {
		t.Errorf("recording lasts %v, the recorder died %v into the call", rec.Duration, killedAfter)
	}
	p, _ := loadWAV(t, filepath.Join(cfg.DataDir, "recordings", rec.BlobKey))
	if math.Abs(p.Duration()-rec.Duration.Seconds()) > 0.001 {
		t.Errorf("file holds %.3f s, row says %v", p.Duration(), rec.Duration)
	}
	checkChannels(t, p)
	if c := s.cdrRecording(cdr.CallID, storage.RecordingPartial); c.Disposition != "answered" {
		t.Fatalf("CDR %+v", c)
	}

	// The restarted recorder takes the next call as if nothing happened.
	next, nextRec := recordedCall(t, s, acme.ID, 41710, 50, 1500, impairment{})
	if nextRec.Status != storage.RecordingComplete || !within(nextRec.Duration, next.Duration, 100*time.Millisecond) {
		t.Fatalf("next call's recording %+v (call connected %v)", nextRec, next.Duration)
	}
}

// TestStandardSRC: a SIPREC client that is not our PBX (SIPp, with RFC 7865
// metadata that names the parties by phone number, as SBCs do) is recorded
// by `maskpbx recorder` once it answers the digest challenge with the
// shared secret: first participant's stream left, second right, under
// "unassigned", and no number reaches the row or the logs.
func TestStandardSRC(t *testing.T) {
	const recIP, srcIP = "127.0.0.30", "127.0.0.31"
	const secret = "the-sbc-and-the-recorder-share-this"
	dbURL := testenv.Database(t)
	dataDir := t.TempDir()
	port := testenv.FreePort(t, recIP)
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runRecorder(ctx, recorderConfig{DataDir: dataDir, DatabaseURL: dbURL, SIPListen: fmt.Sprintf("%s:%d", recIP, port),
			Node: "siprec-test", Allow: srcIP, Secret: secret}, zap.New(core))
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitListening(t, fmt.Sprintf("%s:%d", recIP, port), done)

	a := newRTPPeer(t, srcIP+":41800")
	b := newRTPPeer(t, srcIP+":41802")
	src := testenv.StartSIPp(t, "sbc", testenv.SIPpOptions{
		Scenario: "siprec_src.xml", LocalIP: srcIP, Remote: fmt.Sprintf("%s:%d", recIP, port),
		Keys: map[string]string{"media_ip": srcIP, "port_a": "41800", "port_b": "41802"},
		Args: []string{"-d", "3000", "-au", recorder.SRCUser, "-ap", secret},
	})
	if _, err := src.LogValue("ANSWERED", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ports := map[string]netip.AddrPort{}
	for _, m := range src.Received() {
		if !strings.HasPrefix(m, "SIP/2.0 200") || !strings.Contains(m, "m=audio") {
			continue
		}
		var port string
		for _, line := range strings.Split(m, "\n") {
			line = strings.TrimSpace(line)
			if f, ok := strings.CutPrefix(line, "m=audio "); ok {
				port = strings.Fields(f)[0]
			}
			if l, ok := strings.CutPrefix(line, "a=label:"); ok {
				ports[l] = addrPort(t, recIP, port)
			}
		}
	}
	if len(ports) != 2 {
		t.Fatalf("the recorder's answer gave ports %v", ports)
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.send(ports["96"], clientTone, 100, impairment{}) })
	wg.Go(func() { b.sendPCMA(ports["97"], managerTone, 100) })
	wg.Wait()
	src.Wait()

	store, err := storage.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var rec storage.Recording
	var recs []storage.Recording
	if !testenv.WaitFor(10*time.Second, func() bool {
		recs, _ = store.Recordings(context.Background(), storage.RecordingFilter{})
		return len(recs) == 1 && recs[0].Status == storage.RecordingComplete
	}) {
		t.Fatalf("no complete recording: %+v", recs)
	}
	rec = recs[0]
	if rec.Source != storage.SourceSIPREC || rec.ClientID != "" || rec.ManagerID != "" || rec.Codec != "PCMU/PCMA" ||
		!strings.HasPrefix(rec.BlobKey, "unassigned/") {
		t.Fatalf("recording %+v", rec)
	}
	if rec.Duration < 3*time.Second || rec.Duration > 4*time.Second {
		t.Errorf("recording lasts %v for a 3 s session", rec.Duration)
	}
	p, _ := loadWAV(t, filepath.Join(dataDir, "recordings", rec.BlobKey))
	checkChannels(t, p)
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, "9161234567") || strings.Contains(line, "916 123") {
			t.Fatalf("a log line carries the SRC's phone number: %s", line)
		}
	}
}

// sendPCMA is send for an A-law stream.
func (p *rtpPeer) sendPCMA(dst netip.AddrPort, freq float64, n int) {
	to := net.UDPAddrFromAddrPort(dst)
	start := time.Now()
	b := make([]byte, 12+160)
	for k := range n {
		time.Sleep(time.Until(start.Add(time.Duration(k) * 20 * time.Millisecond))) // pacing: a packet every 20 ms
		b[0], b[1] = 0x80, 8
		binary.BigEndian.PutUint16(b[2:], uint16(k))
		binary.BigEndian.PutUint32(b[4:], uint32(k*160))
		binary.BigEndian.PutUint32(b[8:], 77)
		audio.Tone(b[12:], audio.LinearToALaw, freq, k*160)
		_, _ = p.conn.WriteToUDP(b, to)
	}
}

func waitListening(t *testing.T, addr string, done chan error) {
	t.Helper()
	if !testenv.WaitFor(20*time.Second, func() bool { return listening(addr, done) }) {
		t.Fatalf("recorder does not listen on %s", addr)
	}
	select {
	case err := <-done:
		done <- err
		t.Fatalf("recorder stopped: %v", err)
	default:
	}
}

// listening says whether something accepts TCP connections on addr, or
// gives up (true) when the process that should, which reports its end on
// done, has ended; the caller then finds its error in done.
func listening(addr string, done chan error) bool {
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		return true
	}
	select {
	case err := <-done:
		done <- err
		return true
	default:
		return false
	}
}
