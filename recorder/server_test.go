package recorder

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// memCatalog is an in-memory Catalog, the unit's edge; it can be told to
// fail, as Postgres does when it is away.
type memCatalog struct {
	mu   sync.Mutex
	rows map[string]storage.Recording
	down bool
}

func (c *memCatalog) SaveRecording(_ context.Context, r storage.Recording) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return errors.New("database away")
	}
	if old, ok := c.rows[r.ID]; ok && old.Status != storage.RecordingActive && r.Status == storage.RecordingActive {
		return nil
	}
	c.rows[r.ID] = r
	return nil
}

func (c *memCatalog) setDown(down bool) { c.mu.Lock(); c.down = down; c.mu.Unlock() }

func (c *memCatalog) all() []storage.Recording {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []storage.Recording
	for _, r := range c.rows {
		out = append(out, r)
	}
	return out
}

// waitRow waits for a recording row with a final status.
func (c *memCatalog) waitRow(t *testing.T, callID string) storage.Recording {
	t.Helper()
	var rec storage.Recording
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, r := range c.all() {
			if r.CallID == callID && r.Status != storage.RecordingActive {
				rec = r
				return true
			}
		}
		return false
	}, "a finished recording of call %s", callID)
	return rec
}

type memEvents struct {
	mu  sync.Mutex
	evs []events.Event
}

func (m *memEvents) Publish(_ context.Context, e events.Event) error {
	if err := e.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	m.evs = append(m.evs, e)
	m.mu.Unlock()
	return nil
}

func (m *memEvents) list() []events.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]events.Event(nil), m.evs...)
}

type testRecorder struct {
	srv     *Server
	cat     *memCatalog
	evs     *memEvents
	blobs   *FSBlobs
	dataDir string
	cancel  context.CancelFunc
	done    chan error
}

func startRecorder(t *testing.T, dataDir string, tweak func(*ServerConfig)) *testRecorder {
	return startRecorderOn(t, dataDir, nil, tweak)
}

// startRecorderOn is startRecorder with a blob store wrapped by wrap.
func startRecorderOn(t *testing.T, dataDir string, wrap func(*FSBlobs) BlobStore, tweak func(*ServerConfig)) *testRecorder {
	t.Helper()
	blobs, err := NewFSBlobs(filepath.Join(dataDir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	var store BlobStore = blobs
	if wrap != nil {
		store = wrap(blobs)
	}
	cfg := ServerConfig{Listen: "127.0.0.1:0", JournalDir: filepath.Join(dataDir, "journal"), Node: "test-node",
		SyncInterval: 200 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	r := &testRecorder{cat: &memCatalog{rows: map[string]storage.Recording{}}, evs: &memEvents{}, blobs: blobs,
		dataDir: dataDir, done: make(chan error, 1)}
	r.srv, err = NewServer(cfg, store, r.cat, r.evs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.srv.Serve(ctx) }()
	select {
	case <-r.srv.Ready():
	case err := <-r.done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(r.stop)
	return r
}

func (r *testRecorder) stop() {
	r.cancel()
	<-r.done
	r.done <- nil
}

// src is a minimal SIPREC client on sipgo, standing in for any SRC.
type src struct {
	t      *testing.T
	ua     *sipgo.UserAgent
	dialog *sipgo.DialogUA
	rtp    *net.UDPConn
}

func newSRC(t *testing.T) *src { return newSRCWithContact(t, sip.HeaderParams{{K: "+sip.src"}}) }

func newSRCWithContact(t *testing.T, params sip.HeaderParams) *src {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "src", Host: "127.0.0.1", Port: 5999},
		Params: params}
	return &src{t: t, ua: ua, dialog: &sipgo.DialogUA{Client: client, ContactHDR: contact}, rtp: conn}
}

const (
	testCallID    = "6f1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11"
	testClientID  = "0b6f6c1e-6a52-4c8e-9f53-3f6f1f0a0001"
	testManagerID = "0b6f6c1e-6a52-4c8e-9f53-3f6f1f0a0002"
)

func ourMetadata(callID string) string {
	raw, _ := os.ReadFile("testdata/metadata/maskpbx.mdtest")
	doc, _, _ := strings.Cut(string(raw), goldenSep)
	return strings.ReplaceAll(doc, testCallID, callID)
}

func srcOffer(codec string) string {
	pt := map[string]string{"PCMU": "0", "PCMA": "8"}[codec]
	m := func(port int, label string) string {
		return fmt.Sprintf("m=audio %d RTP/AVP %s 101\r\na=rtpmap:%s %s/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:%s\r\na=sendonly\r\n",
			port, pt, pt, codec, label)
	}
	return "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" + m(6000, "manager") + m(6002, "client")
}

// invite starts a recording session and returns it with the recorder's
// RTP addresses by label.
func (s *src) invite(r *testRecorder, contentType, body string, extra ...sip.Header) (*sipgo.DialogClientSession, map[string]netip.AddrPort, error) {
	s.t.Helper()
	return s.inviteAs(r, sipgo.AnswerOptions{}, contentType, body, extra...)
}

// inviteAs is invite answering a digest challenge with auth's credentials.
func (s *src) inviteAs(r *testRecorder, auth sipgo.AnswerOptions, contentType, body string, extra ...sip.Header) (*sipgo.DialogClientSession, map[string]netip.AddrPort, error) {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(r.srv.Addr())
	uri := sip.Uri{Scheme: "sip", User: "recorder", Host: "127.0.0.1", Port: atoi(port),
		UriParams: sip.HeaderParams{{K: "transport", V: "tcp"}}}
	ct := sip.ContentTypeHeader(contentType)
	hdrs := append([]sip.Header{&ct}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := s.dialog.Invite(ctx, uri, []byte(body), hdrs...)
	if err != nil {
		return nil, nil, err
	}
	if err := d.WaitAnswer(ctx, auth); err != nil {
		return d, nil, err
	}
	if err := d.Ack(ctx); err != nil {
		s.t.Fatal(err)
	}
	ports := map[string]netip.AddrPort{}
	var label string
	for _, line := range strings.Split(string(d.InviteResponse.Body()), "\r\n") {
		if p, ok := strings.CutPrefix(line, "m=audio "); ok {
			label = strings.Fields(p)[0]
		}
		if l, ok := strings.CutPrefix(line, "a=label:"); ok {
			ports[l] = netip.MustParseAddrPort("127.0.0.1:" + label)
		}
	}
	return d, ports, nil
}

func multipartBody(offer, metadata string) string {
	return "--b1\r\nContent-Type: application/sdp\r\n\r\n" + offer + "\r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\n" +
		"Content-Disposition: recording-session\r\n\r\n" + metadata + "\r\n--b1--\r\n"
}

// tone sends n 20 ms packets of a sine at freq to dst, paced in real time,
// starting at packet first (for the timestamps); skip drops packets.
func (s *src) tone(dst netip.AddrPort, codec string, freq float64, first, n int, ssrc uint32, skip func(int) bool) {
	enc, pt := audio.LinearToULaw, byte(0)
	if codec == "PCMA" {
		enc, pt = audio.LinearToALaw, 8
	}
	buf := make([]byte, 12+160)
	start := time.Now()
	for i := first; i < first+n; i++ {
		if skip == nil || !skip(i) {
			buf[0], buf[1] = 0x80, pt
			binary.BigEndian.PutUint16(buf[2:], uint16(i))
			binary.BigEndian.PutUint32(buf[4:], uint32(i*160))
			binary.BigEndian.PutUint32(buf[8:], ssrc)
			audio.Tone(buf[12:], enc, freq, i*160)
			_, _ = s.rtp.WriteToUDPAddrPort(buf, dst)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i-first+1) * 20 * time.Millisecond))) // pacing: one packet per 20 ms
	}
}

func (s *src) dtmf(dst netip.AddrPort, event byte, ts uint32, ssrc uint32) {
	for i, d := range []uint16{160, 320, 640, 640, 640} {
		p := []byte{0x80, 101, 0, byte(i), 0, 0, 0, 0, 0, 0, 0, 0, event, 10, 0, 0}
		if d == 640 {
			p[13] |= 0x80
		}
		binary.BigEndian.PutUint32(p[4:], ts)
		binary.BigEndian.PutUint32(p[8:], ssrc)
		binary.BigEndian.PutUint16(p[14:], d)
		_, _ = s.rtp.WriteToUDPAddrPort(p, dst)
		time.Sleep(20 * time.Millisecond) // pacing: one event packet per 20 ms, as a phone sends them
	}
}

func readRecording(t *testing.T, r *testRecorder, rec storage.Recording) StereoPCM {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(r.blobs.Root(), filepath.FromSlash(rec.BlobKey)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodeWAV(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRecordingSession(t *testing.T) {
	r := startRecorder(t, t.TempDir(), nil)
	s := newSRC(t)
	callID := "6f1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c99"
	started := time.Now()
	d, ports, err := s.invite(r, "multipart/mixed;boundary=b1", multipartBody(srcOffer("PCMA"), ourMetadata(callID)),
		sip.NewHeader("Require", "siprec"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.InviteResponse.GetHeader("Contact").Value(), "+sip.srs") {
		t.Errorf("Contact %q lacks +sip.srs", d.InviteResponse.GetHeader("Contact").Value())
	}
	// Half a second of silence (the recording must have it: the sleep is
	// the audio), then two seconds of tones, the manager's with 2% loss,
	// then a digit from the client.
	time.Sleep(500 * time.Millisecond)
	var wg sync.WaitGroup
	wg.Go(func() { s.tone(ports["client"], "PCMA", 400, 0, 100, 0xc1, nil) })
	wg.Go(func() { s.tone(ports["manager"], "PCMA", 1000, 0, 100, 0xa1, func(i int) bool { return i%50 == 7 }) })
	wg.Wait()
	s.dtmf(ports["client"], 7, 100*160, 0xc1)
	testenv.Eventually(t, 5*time.Second, func() bool { return liveDigits(r, d.InviteRequest.CallID().Value()) == 1 },
		"the recorder to take the digit")
	if err := d.Bye(context.Background()); err != nil {
		t.Fatal(err)
	}
	talk := time.Since(started)

	rec := r.cat.waitRow(t, callID)
	if rec.Status != storage.RecordingComplete || rec.ClientID != testClientID || rec.ManagerID != testManagerID ||
		rec.Direction != "inbound" || rec.Source != storage.SourceMaskPBX || rec.Codec != "PCMA" || rec.Node != "test-node" {
		t.Fatalf("row %+v", rec)
	}
	if want := testClientID + "/" + rec.StartedAt.Format("2006/01") + "/" + callID + ".wav"; rec.BlobKey != want {
		t.Errorf("blob key %q, want %q", rec.BlobKey, want)
	}
	if d := rec.Duration - talk; d > 100*time.Millisecond || d < -100*time.Millisecond {
		t.Errorf("duration %v, the session lasted %v", rec.Duration, talk)
	}
	if len(rec.DTMF) != 1 || rec.DTMF[0].Digit != "7" || rec.DTMF[0].Side != "client" || rec.DTMF[0].DurationMS != 80 {
		t.Errorf("dtmf %+v", rec.DTMF)
	}
	if len(rec.SHA256) != 64 || rec.SizeBytes != wavHeaderSize+int64(rec.Duration*SampleRate/time.Second)*bytesPerFrame {
		t.Errorf("size %d, sha %q", rec.SizeBytes, rec.SHA256)
	}
	p := readRecording(t, r, rec)
	soxReads(t, filepath.Join(r.blobs.Root(), rec.BlobKey), "")
	tone := func(ch []int16) []int16 { return ch[SampleRate*7/10 : SampleRate*22/10] } // inside both tones
	if l, x := audio.ToneShare(tone(p.Left), 400), audio.ToneShare(tone(p.Left), 1000); l < 0.5 || x > 0.05 {
		t.Errorf("left channel: 400 Hz %.2f, 1000 Hz %.2f", l, x)
	}
	if rr, x := audio.ToneShare(tone(p.Right), 1000), audio.ToneShare(tone(p.Right), 400); rr < 0.4 || x > 0.05 {
		t.Errorf("right channel: 1000 Hz %.2f, 400 Hz %.2f", rr, x)
	}
	if !silent(p.Left[:SampleRate*4/10]) || !silent(p.Right[:SampleRate*4/10]) {
		t.Error("sound before the tones")
	}
	evs := r.evs.list()
	if len(evs) != 1 || evs[0].Kind != events.RecordingReady || evs[0].CallID != callID || evs[0].Recording != "complete" ||
		evs[0].ID != rec.ID || evs[0].ClientID != testClientID {
		t.Errorf("events %+v", evs)
	}
	if st := r.srv.Stats(); st.Started != 1 || st.Complete != 1 || st.Lost != 2 || st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
	if entries, _, _ := r.srv.journal.list(); len(entries) != 0 {
		t.Errorf("journal keeps %d entries", len(entries))
	}
}

func TestRecordingRefusals(t *testing.T) {
	r := startRecorder(t, t.TempDir(), nil)
	s, plain := newSRC(t), newSRCWithContact(t, nil)
	siprec := sip.NewHeader("Require", "siprec")
	mixed := "multipart/mixed;boundary=b1"
	for _, tc := range []struct {
		name, contentType, body string
		hdrs                    []sip.Header
		status                  int
		from                    *src
	}{
		{"not a recording session", "application/sdp", srcOffer("PCMU"), nil, 403, plain},
		{"unknown extension required", "application/sdp", srcOffer("PCMU"), []sip.Header{sip.NewHeader("Require", "siprec, 100rel")}, 420, nil},
		{"unsupported body", "text/plain", "record me", []sip.Header{siprec}, 415, nil},
		{"broken multipart", mixed, "--b1\r\nContent-Type: application/sdp\r\n\r\nv=0", []sip.Header{siprec}, 400, nil},
		{"bad metadata", mixed, multipartBody(srcOffer("PCMU"), "<recording"), []sip.Header{siprec}, 400, nil},
		{"metadata naming a number as call", mixed, multipartBody(srcOffer("PCMU"), strings.ReplaceAll(ourMetadata(testCallID), testCallID, "+79161234567")), []sip.Header{siprec}, 400, nil},
		{"no usable stream", "application/sdp", strings.ReplaceAll(srcOffer("PCMU"), "RTP/AVP 0 101", "RTP/AVP 18"), []sip.Header{siprec}, 488, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := s
			if tc.from != nil {
				from = tc.from
			}
			_, _, err := from.invite(r, tc.contentType, tc.body, tc.hdrs...)
			var e *sipgo.ErrDialogResponse
			if !errors.As(err, &e) || e.Res.StatusCode != tc.status {
				t.Fatalf("got %v, want %d", err, tc.status)
			}
		})
	}
	if n := len(r.cat.all()); n != 0 {
		t.Errorf("refused sessions wrote %d rows", n)
	}
	files, _ := filepath.Glob(filepath.Join(r.dataDir, "recordings", "*", "*", "*", "*"))
	if len(files) != 0 {
		t.Errorf("refused sessions left files %v", files)
	}
	if st := r.srv.Stats(); st.Refused != 7 || st.Started != 0 {
		t.Errorf("stats %+v", st)
	}

	t.Run("source not allowed", func(t *testing.T) {
		r := startRecorder(t, t.TempDir(), func(c *ServerConfig) { c.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
		_, _, err := s.invite(r, "application/sdp", srcOffer("PCMU"), siprec)
		var e *sipgo.ErrDialogResponse
		if !errors.As(err, &e) || e.Res.StatusCode != 403 {
			t.Fatalf("got %v, want 403", err)
		}
	})
}

// TestForeignSRC: an SRC that is not our PBX (standard RFC 7865 metadata,
// no extension, bare labels) is recorded too, under "unassigned", with its
// first participant's stream on the left, and announces no event.
func TestForeignSRC(t *testing.T) {
	r := startRecorder(t, t.TempDir(), nil)
	s := newSRC(t)
	raw, _ := os.ReadFile("testdata/metadata/rfc7865-example.mdtest")
	meta, _, _ := strings.Cut(string(raw), goldenSep)
	offer := strings.ReplaceAll(strings.ReplaceAll(srcOffer("PCMU"), "label:manager", "label:96"), "label:client", "label:97")
	d, ports, err := s.invite(r, "multipart/mixed;boundary=b1", multipartBody(offer, meta), sip.NewHeader("Require", "siprec"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.tone(ports["97"], "PCMU", 600, 0, 50, 1, nil) }) // Bob, the first participant
	wg.Go(func() { s.tone(ports["96"], "PCMU", 1400, 0, 50, 2, nil) })
	wg.Wait()
	_ = d.Bye(context.Background())
	var rec storage.Recording
	testenv.Eventually(t, 15*time.Second, func() bool {
		rows := r.cat.all()
		if len(rows) == 1 && rows[0].Status == storage.RecordingComplete {
			rec = rows[0]
			return true
		}
		return false
	}, "the one complete recording")
	if rec.Source != storage.SourceSIPREC || rec.ClientID != "" || !strings.HasPrefix(rec.BlobKey, "unassigned/") || !uuidRE.MatchString(rec.CallID) {
		t.Fatalf("row %+v", rec)
	}
	p := readRecording(t, r, rec)
	if audio.ToneShare(p.Left[SampleRate/4:SampleRate*3/4], 600) < 0.5 || audio.ToneShare(p.Right[SampleRate/4:SampleRate*3/4], 1400) < 0.5 {
		t.Error("the first participant's stream is not on the left")
	}
	if evs := r.evs.list(); len(evs) != 0 {
		t.Errorf("events for a foreign recording: %+v", evs)
	}
}

// TestRecoveryAfterCrash leaves what a killed recorder leaves (a journal
// entry and a file with the unfinished header), then starts a recorder on
// the same disk: the file is repaired, the row marked partial, the event
// published, the journal emptied.
func TestRecoveryAfterCrash(t *testing.T) {
	dir := t.TempDir()
	blobs, _ := NewFSBlobs(filepath.Join(dir, "recordings"))
	j, _ := newJournal(filepath.Join(dir, "journal"))
	rec := storage.Recording{ID: "9d9b8d7e-0d38-4c1f-9d43-9a2a3f1b0c11", CallID: testCallID, ClientID: testClientID,
		ManagerID: testManagerID, Direction: "inbound", Source: storage.SourceMaskPBX, Node: "test-node",
		Codec: "PCMU", Status: storage.RecordingActive, StartedAt: time.Now().Add(-time.Minute)}
	rec.BlobKey = blobKey(rec, "")
	f, _ := blobs.Create(rec.BlobKey)
	_, _ = f.Write(wavHeader(-1))
	_, _ = f.Write(make([]byte, SampleRate*bytesPerFrame*3+2)) // 3 s and half a frame
	f.Close()
	lost := rec
	lost.ID, lost.CallID, lost.BlobKey = "9d9b8d7e-0d38-4c1f-9d43-9a2a3f1b0c12", "6f1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c12", "x/never.wav"
	for _, e := range []storage.Recording{rec, lost} {
		if err := j.write(journalEntry{Stage: stageRecording, Recording: e}); err != nil {
			t.Fatal(err)
		}
	}

	r := startRecorder(t, dir, nil)
	got := r.cat.waitRow(t, testCallID)
	if got.Status != storage.RecordingPartial || got.Duration != 3*time.Second || got.SizeBytes != wavHeaderSize+3*SampleRate*bytesPerFrame {
		t.Fatalf("recovered row %+v", got)
	}
	if missing := r.cat.waitRow(t, lost.CallID); missing.Status != storage.RecordingMissing {
		t.Fatalf("row of a file that never made it: %+v", missing)
	}
	if p := readRecording(t, r, got); p.Duration() != 3 {
		t.Fatalf("repaired file holds %.2f s", p.Duration())
	}
	evs := r.evs.list()
	if len(evs) != 2 {
		t.Fatalf("events %+v", evs)
	}
	if entries, _, _ := r.srv.journal.list(); len(entries) != 0 {
		t.Fatalf("journal keeps %d entries", len(entries))
	}
	if st := r.srv.Stats(); st.Recovered != 2 || st.Partial != 1 || st.Missing != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDatabaseAwayAtTheEnd: a recording that ends while Postgres is away
// keeps its journal entry and is saved by a later sweep.
func TestDatabaseAwayAtTheEnd(t *testing.T) {
	r := startRecorder(t, t.TempDir(), nil)
	r.cat.setDown(true)
	s := newSRC(t)
	callID := "6f1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c77"
	d, ports, err := s.invite(r, "multipart/mixed;boundary=b1", multipartBody(srcOffer("PCMU"), ourMetadata(callID)),
		sip.NewHeader("Require", "siprec"))
	if err != nil {
		t.Fatal(err)
	}
	s.tone(ports["client"], "PCMU", 400, 0, 25, 1, nil)
	_ = d.Bye(context.Background())
	testenv.Eventually(t, 15*time.Second, func() bool { return r.srv.Stats().SaveErrors == 1 }, "the failed save")
	entries, _, _ := r.srv.journal.list()
	if len(entries) != 1 || entries[0].Stage != stageFinal || entries[0].Recording.Status != storage.RecordingComplete {
		t.Fatalf("journal %+v", entries)
	}
	r.cat.setDown(false)
	r.srv.sweep(context.Background())
	if rec := r.cat.waitRow(t, callID); rec.Status != storage.RecordingComplete || rec.SHA256 == "" {
		t.Fatalf("row %+v", rec)
	}
	if entries, _, _ := r.srv.journal.list(); len(entries) != 0 {
		t.Fatalf("journal keeps %d entries", len(entries))
	}
}

// liveDigits is how many DTMF events the session of the recording dialog
// sipCallID has taken so far (0 if it is not live).
func liveDigits(r *testRecorder, sipCallID string) int {
	r.srv.mu.Lock()
	ss := r.srv.sessions[sipCallID]
	r.srv.mu.Unlock()
	if ss == nil {
		return 0
	}
	_, dtmf := ss.tl.snapshot()
	return len(dtmf)
}

// fullDisk is a blob store whose files take limit bytes, then fail.
type fullDisk struct {
	*FSBlobs
	limit int64
}

func (d fullDisk) Create(key string) (BlobFile, error) {
	f, err := d.FSBlobs.Create(key)
	return &fullFile{BlobFile: f, room: d.limit}, err
}

type fullFile struct {
	BlobFile
	room int64
}

func (f *fullFile) Write(b []byte) (int, error) {
	if int64(len(b)) > f.room {
		n, _ := f.BlobFile.Write(b[:f.room])
		f.room = 0
		return n, errors.New("no space left on device")
	}
	f.room -= int64(len(b))
	return f.BlobFile.Write(b)
}

// TestDiskFullEndsPartial: a file that cannot grow ends its recording as
// partial, playable up to where the disk filled, and is counted.
func TestDiskFullEndsPartial(t *testing.T) {
	const room = wavHeaderSize + SampleRate*bytesPerFrame/2 // half a second
	r := startRecorderOn(t, t.TempDir(), func(b *FSBlobs) BlobStore { return fullDisk{b, room} }, nil)
	s := newSRC(t)
	callID := "6f1b8d7e-0d38-4c1f-9d43-9a2a3f1b0c55"
	d, ports, err := s.invite(r, "multipart/mixed;boundary=b1", multipartBody(srcOffer("PCMU"), ourMetadata(callID)),
		sip.NewHeader("Require", "siprec"))
	if err != nil {
		t.Fatal(err)
	}
	s.tone(ports["client"], "PCMU", 400, 0, 75, 1, nil)
	rec := r.cat.waitRow(t, callID) // ended by the recorder itself, before any BYE
	_ = d.Bye(context.Background())
	if rec.Status != storage.RecordingPartial || rec.Duration > time.Second/2 || rec.Duration < time.Second/4 {
		t.Fatalf("recording %+v", rec)
	}
	if p := readRecording(t, r, rec); math.Abs(p.Duration()-rec.Duration.Seconds()) > 0.001 {
		t.Fatalf("file holds %.3f s, row says %v", p.Duration(), rec.Duration)
	}
	if st := r.srv.Stats(); st.WriteErrors != 1 || st.Partial != 1 {
		t.Fatalf("stats %+v", st)
	}
}
