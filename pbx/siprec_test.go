package pbx

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/pbx/media"
	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// The PBX's recording client against the real recording server: what the
// tap forks must come out in the right channel, and a recorder that is
// down, mute or refusing must cost a call nothing but its recording.

type recordings struct {
	mu   sync.Mutex
	rows map[string]storage.Recording
}

func (c *recordings) SaveRecording(_ context.Context, r storage.Recording) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows[r.ID] = r
	return nil
}

func (c *recordings) finished(callID string) (storage.Recording, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.rows {
		if r.CallID == callID && r.Status != storage.RecordingActive {
			return r, true
		}
	}
	return storage.Recording{}, false
}

type readyEvents struct {
	mu  sync.Mutex
	evs []events.Event
}

func (e *readyEvents) Publish(_ context.Context, ev events.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
	return ev.Validate()
}

// startCallPBX runs a Server with call control enabled (no calls come in:
// the tests drive recording sessions directly).
func startCallPBX(t *testing.T) *Server {
	t.Helper()
	js := runNATS(t)
	regs, err := openRegistrations(t, context.Background(), js, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Config{Listen: net.JoinHostPort(pbxHost, "0"), Domain: testDomain}, &memCredentials{}, regs, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ports, err := media.NewPortPool(pbxHost, 46000, 46099)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.EnableCalls(CallConfig{Ports: ports, Router: &Router{}, RingTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	return srv
}

func startRecordingServer(t *testing.T) (*recorder.Server, *recordings, *readyEvents, string) {
	t.Helper()
	dir := t.TempDir()
	blobs, err := recorder.NewFSBlobs(filepath.Join(dir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	rows, evs := &recordings{rows: map[string]storage.Recording{}}, &readyEvents{}
	rs, err := recorder.NewServer(recorder.ServerConfig{Listen: "127.0.0.1:0", JournalDir: filepath.Join(dir, "journal"),
		Secret: srcSecret},
		blobs, rows, evs, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rs.Serve(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	<-rs.Ready()
	return rs, rows, evs, blobs.Root()
}

// srcSecret is the shared secret the test recorders challenge for.
const srcSecret = "test-siprec-secret-0123456789"

const (
	recCallID    = "6f1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11"
	recClientID  = "0b6f6c1e-6a52-4c8e-9f53-3f6f1f0a0001"
	recManagerID = "0b6f6c1e-6a52-4c8e-9f53-3f6f1f0a0002"
)

func recInfo(callID string) RecordingInfo {
	// The legs numbered telephone-event differently: 101 towards the
	// trunk, 96 towards the phone.
	te96 := media.TelephoneEvent
	te96.PayloadType = 96
	return RecordingInfo{CallID: callID, Direction: "inbound", ClientID: recClientID, ClientCode: "48213377",
		ManagerID: recManagerID, Codecs: []media.Codec{media.PCMU, media.TelephoneEvent, media.PCMU, te96}}
}

// tap feeds n packets of a tone through the session's tap, paced in real
// time, as the relay's reader for side would.
func tap(sess *RecordingSession, side media.Side, freq float64, n int, ssrc uint32) {
	start := time.Now()
	payload := make([]byte, 160)
	for i := range n {
		audio.Tone(payload, audio.LinearToULaw, freq, i*160)
		sess.Tap(side, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i),
			Timestamp: uint32(i * 160), SSRC: ssrc}, Payload: payload})
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond))) // pacing: one packet per 20 ms
	}
}

func TestRecordingSessionEndToEnd(t *testing.T) {
	pbx := startCallPBX(t) // first: it sets sipgo's process-wide logger, which sipgo reads unlocked
	rs, rows, evs, root := startRecordingServer(t)
	src, err := NewSRC(pbx, RecorderConfig{URI: rs.URI(), User: recorder.SRCUser, Secret: srcSecret})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sess, err := src.Start(context.Background(), recInfo(recCallID))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Start took %v", d)
	}
	var wg sync.WaitGroup
	wg.Go(func() { tap(sess, media.SideA, 400, 75, 1) })
	wg.Go(func() { tap(sess, media.SideB, 1000, 75, 2) })
	wg.Wait()
	// A digit from the phone, numbered 96 as the phone's leg has it.
	sess.Tap(media.SideB, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, Timestamp: 75 * 160, SSRC: 2, Marker: true},
		Payload: []byte{9, 0x80 | 10, 0x03, 0x20}})

	allocs := testing.AllocsPerRun(200, func() {
		sess.Tap(media.SideA, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 80, Timestamp: 80 * 160, SSRC: 1},
			Payload: make([]byte, 0, 160)[:160:160]})
	})
	if allocs > 1 { // the packet literal itself may escape; the tap adds nothing
		t.Errorf("Tap allocates %.1f times per packet", allocs)
	}
	sess.Stop()
	sess.Stop()
	if c, m := sess.Packets(); c < 75 || m != 76 {
		t.Errorf("forked %d client and %d manager packets", c, m)
	}
	if src.Outcome(sess) != RecordingPending || src.Outcome(nil) != RecordingMissing || (*SRC)(nil).Outcome(nil) != "" {
		t.Error("outcomes")
	}

	var rec storage.Recording
	testenv.Eventually(t, 10*time.Second, func() (ok bool) {
		rec, ok = rows.finished(recCallID)
		return ok
	}, "the recording to finish")
	if rec.Status != storage.RecordingComplete || rec.ClientID != recClientID || rec.ManagerID != recManagerID || rec.Codec != "PCMU" {
		t.Fatalf("recording %+v", rec)
	}
	if len(rec.DTMF) != 1 || rec.DTMF[0].Digit != "9" || rec.DTMF[0].Side != "manager" || rec.DTMF[0].DurationMS != 100 {
		t.Errorf("dtmf %+v", rec.DTMF)
	}
	raw, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rec.BlobKey)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := recorder.DecodeWAV(raw)
	if err != nil {
		t.Fatal(err)
	}
	mid := func(s []int16) []int16 { return s[2000:10000] }
	if audio.ToneShare(mid(p.Left), 400) < 0.5 || audio.ToneShare(mid(p.Left), 1000) > 0.05 {
		t.Errorf("left channel is not the client's tone: %.2f / %.2f", audio.ToneShare(mid(p.Left), 400), audio.ToneShare(mid(p.Left), 1000))
	}
	if audio.ToneShare(mid(p.Right), 1000) < 0.5 || audio.ToneShare(mid(p.Right), 400) > 0.05 {
		t.Errorf("right channel is not the manager's tone")
	}
	evs.mu.Lock()
	defer evs.mu.Unlock()
	if len(evs.evs) != 1 || evs.evs[0].Recording != "complete" || evs.evs[0].CallID != recCallID {
		t.Errorf("events %+v", evs.evs)
	}
	if st := src.Stats(); st.Started != 1 || st.Failed != 0 || st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRecorderTrouble: whatever is wrong with the recorder, Start returns
// an error within its timeout and the call's side of things is clean.
func TestRecorderTrouble(t *testing.T) {
	srv := startCallPBX(t)

	closed := freeTCPPort(t)
	mute, err := net.Listen("tcp", "127.0.0.1:0") // accepts, reads, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = bufio.NewReader(c).WriteTo(discard{}) }()
		}
	}()
	refusing := refusingRecorder(t)
	authenticating, rows, _, _ := startRecordingServer(t)

	for _, tc := range []struct {
		name         string
		uri          string
		user, secret string
		want         error
	}{
		{"down", "sip:recorder@127.0.0.1:" + closed + ";transport=tcp", "", "", ErrRecorderUnavailable},
		{"mute", "sip:recorder@" + mute.Addr().String(), "", "", ErrRecorderUnavailable},
		{"refusing", "sip:recorder@" + refusing + ";transport=tcp", "", "", ErrRecorderRefused},
		{"no secret for a recorder that asks", authenticating.URI(), "", "", ErrRecorderRefused},
		{"wrong secret", authenticating.URI(), recorder.SRCUser, "guessed", ErrRecorderRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewSRC(srv, RecorderConfig{URI: tc.uri, Timeout: 700 * time.Millisecond, User: tc.user, Secret: tc.secret})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			sess, err := src.Start(context.Background(), recInfo(recCallID))
			if !errors.Is(err, tc.want) || sess != nil {
				t.Fatalf("Start: %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 900*time.Millisecond {
				t.Errorf("Start took %v", d)
			}
			if st := src.Stats(); st.Failed != 1 || st.Started != 0 {
				t.Errorf("stats %+v", st)
			}
			sess.Stop() // a nil session stops harmlessly
			if src.Outcome(sess) != RecordingMissing {
				t.Error("outcome")
			}
		})
	}
	rows.mu.Lock()
	if len(rows.rows) != 0 {
		t.Errorf("the authenticating recorder stored %d rows for unauthenticated sessions", len(rows.rows))
	}
	rows.mu.Unlock()

	t.Run("disabled and bad input", func(t *testing.T) {
		var none *SRC
		if _, err := none.Start(context.Background(), recInfo(recCallID)); !errors.Is(err, ErrRecordingDisabled) {
			t.Fatal(err)
		}
		src, _ := NewSRC(srv, RecorderConfig{URI: "sip:recorder@127.0.0.1:" + closed})
		for _, info := range []RecordingInfo{
			func() RecordingInfo { i := recInfo("+79161234567"); return i }(),
			func() RecordingInfo { i := recInfo(recCallID); i.ClientCode = "+79161234567"; return i }(),
			func() RecordingInfo {
				i := recInfo(recCallID)
				i.Codecs = []media.Codec{media.TelephoneEvent}
				return i
			}(),
		} {
			if _, err := src.Start(context.Background(), info); !errors.Is(err, ErrBadRecordingInfo) {
				t.Errorf("%+v: %v", info, err)
			}
		}
		for _, uri := range []string{"", "http://x", "sip:recorder@127.0.0.1:5090;transport=udp"} {
			if _, err := NewSRC(srv, RecorderConfig{URI: uri}); err == nil {
				t.Errorf("NewSRC accepted %q", uri)
			}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func freeTCPPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// refusingRecorder is a real recording server that refuses us (403): it
// allows sessions from another network only.
func refusingRecorder(t *testing.T) string {
	dir := t.TempDir()
	blobs, _ := recorder.NewFSBlobs(dir)
	strict, err := recorder.NewServer(recorder.ServerConfig{Listen: "127.0.0.1:0", JournalDir: filepath.Join(dir, "j"),
		Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, blobs, &recordings{rows: map[string]storage.Recording{}}, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- strict.Serve(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	<-strict.Ready()
	return strict.Addr()
}

// TestRecordingMetadataGolden: the metadata the PBX writes is exactly the
// document the recorder's golden test parses (ids fixed), and it carries
// ids and the client code only.
func TestRecordingMetadataGolden(t *testing.T) {
	ids := metadataIDs{session: "c2Vzc2lvbi1pZC0wMDAwMQ==", client: "Y2xpZW50LXBhcnRpY2lwYW50",
		manager: "bWFuYWdlci1wYXJ0aWNpcGFudA==", clientStream: "Y2xpZW50LXN0cmVhbQ==", managerStream: "bWFuYWdlci1zdHJlYW0="}
	got := string(recordingMetadata(recInfo(recCallID), testDomain, ids))
	raw, err := os.ReadFile("../recorder/testdata/metadata/maskpbx.mdtest")
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := strings.Cut(string(raw), "\n----- parsed -----\n")
	if strings.ReplaceAll(got, "\r\n", "\n") != want {
		t.Fatalf("metadata\n%s\nwant\n%s", got, want)
	}
	m, err := recorder.ParseMetadata([]byte(got))
	if err != nil || m.CallID != recCallID || m.ClientID != recClientID || m.ClientCode != "48213377" ||
		m.StreamLabels != [2]string{"client", "manager"} {
		t.Fatalf("recorder reads %+v, %v", m, err)
	}

	offer, table := recordingFormats(recInfo(recCallID).Codecs)
	sdp := string(recordingSDP(netip.MustParseAddr("192.0.2.1"), 7, [2]uint16{40000, 40002}, offer))
	wantSDP := "v=0\r\no=maskpbx 7 1 IN IP4 192.0.2.1\r\ns=maskpbx recording\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
		"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=label:client\r\na=sendonly\r\n" +
		"m=audio 40002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=label:manager\r\na=sendonly\r\n"
	if sdp != wantSDP {
		t.Errorf("SDP\n%q\nwant\n%q", sdp, wantSDP)
	}
	if table[0] != 0 || table[96] != 101 || table[101] != 101 || table[8] != 8 || table[13] != 0xff {
		t.Errorf("payload type map: 0->%d 96->%d 101->%d 8->%d 13->%d", table[0], table[96], table[101], table[8], table[13])
	}
}
