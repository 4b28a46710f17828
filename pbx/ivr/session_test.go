package ivr

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/pbx/media"
)

// The PBX's ports are on 127.0.0.1; the leg's peer (a trunk, a mobile's
// network) lives on 127.0.0.2 and a stranger on 127.0.0.9: real UDP
// sockets on distinct addresses, so the latching rules are real.

// peer is a real UDP RTP socket that records what reaches it.
type peer struct {
	conn *net.UDPConn

	mu      sync.Mutex
	packets []arrival
}

type arrival struct {
	at  time.Time
	pkt rtp.Packet
}

func newPeer(t *testing.T, ip string) *peer {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	p := &peer{conn: c}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			at := time.Now()
			var pkt rtp.Packet
			if pkt.Unmarshal(append([]byte(nil), buf[:n]...)) != nil {
				continue
			}
			p.mu.Lock()
			p.packets = append(p.packets, arrival{at, pkt})
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *peer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) received() []arrival {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.packets)
}

// send sends one RTP packet to dst.
func (p *peer) send(t *testing.T, dst netip.AddrPort, h rtp.Header, payload []byte) {
	t.Helper()
	h.Version = 2
	b, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.conn.WriteToUDPAddrPort(b, dst); err != nil {
		t.Fatal(err)
	}
}

// sendAudio sends samples to dst as 20 ms packets of codec, unpaced.
func (p *peer) sendAudio(t *testing.T, dst netip.AddrPort, codec media.Codec, samples []int16, seq *uint16, ts *uint32) {
	t.Helper()
	encode := audio.LinearToULaw
	if codec.Name == "PCMA" {
		encode = audio.LinearToALaw
	}
	for len(samples) > 0 {
		n := min(len(samples), samplesPerPkt)
		payload := make([]byte, n)
		for i, v := range samples[:n] {
			payload[i] = encode(v)
		}
		p.send(t, dst, rtp.Header{PayloadType: codec.PayloadType, SequenceNumber: *seq, Timestamp: *ts, SSRC: 0x5eed}, payload)
		*seq++
		*ts += uint32(n)
		samples = samples[n:]
	}
}

// event sends one RFC 4733 telephone-event packet of code with RTP
// timestamp ts.
func (p *peer) event(t *testing.T, dst netip.AddrPort, pt uint8, seq *uint16, ts uint32, code byte, end bool, dur uint16, marker bool) {
	t.Helper()
	payload := []byte{code, 10, 0, 0}
	if end {
		payload[1] |= 0x80
	}
	binary.BigEndian.PutUint16(payload[2:], dur)
	p.send(t, dst, rtp.Header{PayloadType: pt, SequenceNumber: *seq, Timestamp: ts, SSRC: 0x5eed, Marker: marker}, payload)
	*seq++
}

// press sends a whole RFC 4733 event for code as a phone does: a start
// packet (unless lost), updates every 50 ms, three end packets.
func (p *peer) press(t *testing.T, dst netip.AddrPort, pt uint8, seq *uint16, ts uint32, code byte, lostStart bool) {
	t.Helper()
	if !lostStart {
		p.event(t, dst, pt, seq, ts, code, false, 0, true)
	}
	for dur := uint16(400); dur <= 800; dur += 400 {
		p.event(t, dst, pt, seq, ts, code, false, dur, false)
	}
	for range 3 {
		p.event(t, dst, pt, seq, ts, code, true, 960, false)
	}
}

var nextPortBase = struct {
	sync.Mutex
	n int
}{n: 24400}

// newPort allocates a port from a pool of its own on 127.0.0.1 whose
// peer's SDP address is remote, as call control sets it.
func newPort(t *testing.T, remote netip.AddrPort) *media.Port {
	t.Helper()
	nextPortBase.Lock()
	base := nextPortBase.n
	nextPortBase.n += 4
	nextPortBase.Unlock()
	pool, err := media.NewPortPool("127.0.0.1", base, base+3)
	if err != nil {
		t.Fatal(err)
	}
	port, err := pool.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { port.Close() })
	port.SetRemote(remote)
	return port
}

func start(t *testing.T, port *media.Port, codec media.Codec, dtmfPT uint8) *Session {
	t.Helper()
	s, err := Start(port, codec, dtmfPT, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// expectDigits checks that the session hears want and then nothing more:
// each digit may take long on a busy machine, the silence after is short.
func expectDigits(t *testing.T, s *Session, want string) {
	t.Helper()
	var got []rune
	for len(got) < len(want) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := s.Digit(ctx)
		cancel()
		if err != nil {
			t.Fatalf("digits %q, want %q: %v", string(got), want, err)
		}
		got = append(got, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if d, err := s.Digit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("digits %q then %q (%v), want %q alone", string(got), d, err, want)
	}
	if string(got) != want {
		t.Fatalf("digits %q, want %q", string(got), want)
	}
}

func TestPlaySendsThePromptPaced(t *testing.T) {
	p, err := LoadPrompts("")
	if err != nil {
		t.Fatal(err)
	}
	// Three seconds and more of speech: the whisper as the flows play it.
	clips := append([][]int16{p.Clip("en", PromptClientCode)}, p.Digits("en", "12345678")...)
	clips = append(clips, Silence(300*time.Millisecond), p.Clip("en", PromptPress1))
	var want []int16
	for _, c := range clips {
		want = append(want, c...)
	}
	if len(want) < 3*sampleRate {
		t.Fatalf("the whisper is only %d samples", len(want))
	}
	for _, codec := range []media.Codec{media.PCMU, media.PCMA} {
		t.Run(codec.Name, func(t *testing.T) {
			far := newPeer(t, "127.0.0.2")
			s := start(t, newPort(t, far.addr()), codec, 101)
			if err := s.Play(context.Background(), clips...); err != nil {
				t.Fatal(err)
			}
			npkts := (len(want) + samplesPerPkt - 1) / samplesPerPkt
			testenv.Eventually(t, 2*time.Second, func() bool { return len(far.received()) >= npkts },
				"%d packets at the peer", npkts)
			got := far.received()
			if len(got) != npkts {
				t.Fatalf("%d packets arrived, want %d", len(got), npkts)
			}
			first := got[0].pkt
			decode := audio.ULawToLinear
			if codec.Name == "PCMA" {
				decode = audio.ALawToLinear
			}
			var heard []int16
			for i, a := range got {
				h := a.pkt.Header
				if h.PayloadType != codec.PayloadType || h.SSRC != first.SSRC || h.Marker != (i == 0) ||
					h.SequenceNumber != first.SequenceNumber+uint16(i) || h.Timestamp != first.Timestamp+uint32(i*samplesPerPkt) ||
					len(a.pkt.Payload) != samplesPerPkt {
					t.Fatalf("packet %d: %+v with %d bytes (first %+v)", i, h, len(a.pkt.Payload), first.Header)
				}
				for _, b := range a.pkt.Payload {
					heard = append(heard, decode[b])
				}
			}
			silence := g711([]int16{0}, codec.Name)[0]
			if !slices.Equal(heard[:len(want)], g711(want, codec.Name)) || slices.ContainsFunc(heard[len(want):], func(v int16) bool { return v != silence }) {
				t.Fatal("the audio that arrived is not the clips")
			}
			checkPacing(t, got)
		})
	}
}

// checkPacing checks arrivals against a 20 ms clock from the first: the
// typical deviation small (jitter of a shared machine), and no drift
// between the start and the end.
func checkPacing(t *testing.T, got []arrival) {
	t.Helper()
	dev := make([]time.Duration, len(got))
	for i, a := range got {
		dev[i] = a.at.Sub(got[0].at) - time.Duration(i)*ptime
	}
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	abs := make([]time.Duration, len(dev))
	for i, d := range dev {
		abs[i] = max(d, -d)
	}
	head, tail := median(dev[:25]), median(dev[len(dev)-25:])
	span := got[len(got)-1].at.Sub(got[0].at)
	t.Logf("%d packets over %v (want %v): median |deviation| %v, drift %v", len(got), span,
		time.Duration(len(got)-1)*ptime, median(abs), tail-head)
	if m := median(abs); m > 5*time.Millisecond {
		t.Errorf("median deviation from the 20 ms clock is %v", m)
	}
	if drift := tail - head; drift > 10*time.Millisecond || drift < -10*time.Millisecond {
		t.Errorf("the stream drifted by %v over %v", drift, span)
	}
}

func TestRFC4733DigitsOncePerEvent(t *testing.T) {
	far := newPeer(t, "127.0.0.2")
	port := newPort(t, far.addr())
	s := start(t, port, media.PCMU, 101)
	dst := port.LocalAddr()
	var seq uint16 = 1000
	var ts uint32 = 80000
	var aseq uint16 = 7
	var ats uint32 = 5
	talk := func() { far.sendAudio(t, dst, media.PCMU, Silence(40*time.Millisecond), &aseq, &ats) }

	talk()
	far.press(t, dst, 101, &seq, ts, 1, false) // 1
	talk()
	far.press(t, dst, 101, &seq, ts+2000, 2, false) // 2
	// A late retransmission of 1's end and a duplicated update of 2.
	far.event(t, dst, 101, &seq, ts, 1, true, 960, false)
	far.event(t, dst, 101, &seq, ts+2000, 2, false, 400, false)
	far.press(t, dst, 101, &seq, ts+4000, 11, false) // #
	far.press(t, dst, 101, &seq, ts+6000, 5, true)   // 5, its start packet lost
	far.press(t, dst, 101, &seq, ts+8000, 5, false)  // 5 again: a new event
	far.press(t, dst, 101, &seq, ts+10000, 10, true) // *, its start packet lost
	// Not DTMF: a flash event (16) and a packet too short to be an event.
	far.event(t, dst, 101, &seq, ts+12000, 16, true, 800, true)
	far.send(t, dst, rtp.Header{PayloadType: 101, SequenceNumber: seq, Timestamp: ts + 14000, SSRC: 0x5eed}, []byte{3, 0})
	seq++
	// A key held for more than 8 s: the sender goes on under a new
	// timestamp (RFC 4733 §2.5.1.3); still one digit.
	far.event(t, dst, 101, &seq, ts+16000, 9, false, 0, true)
	far.event(t, dst, 101, &seq, ts+16000, 9, false, 0xffff, false)
	far.event(t, dst, 101, &seq, ts+16000+0xffff, 9, false, 800, false)
	far.event(t, dst, 101, &seq, ts+16000+0xffff, 9, true, 1600, false)

	expectDigits(t, s, "12#55*9")
}

// A trunk that passes DTMF as tones: every digit is heard once, at the
// level phones send, with line noise; a gateway that sends both events
// and tones gives each digit once.
func TestInbandDigitsOverRTP(t *testing.T) {
	for _, codec := range []media.Codec{media.PCMU, media.PCMA} {
		t.Run(codec.Name, func(t *testing.T) {
			far := newPeer(t, "127.0.0.2")
			port := newPort(t, far.addr())
			s := start(t, port, codec, 0) // no telephone-event negotiated
			var seq uint16
			var ts uint32
			for _, k := range dtmfKeys {
				far.sendAudio(t, port.LocalAddr(), codec, DTMF(k, 90*time.Millisecond), &seq, &ts)
				far.sendAudio(t, port.LocalAddr(), codec, Silence(70*time.Millisecond), &seq, &ts)
			}
			expectDigits(t, s, dtmfKeys)
		})
	}
	t.Run("events and tones", func(t *testing.T) {
		far := newPeer(t, "127.0.0.2")
		port := newPort(t, far.addr())
		s := start(t, port, media.PCMU, 96)
		var seq, eseq uint16
		var ts uint32
		// The tones of 6 are heard first, then its event arrives, the start
		// packet lost: one 6. From then on events alone count.
		far.sendAudio(t, port.LocalAddr(), media.PCMU, DTMF('6', 100*time.Millisecond), &seq, &ts)
		far.sendAudio(t, port.LocalAddr(), media.PCMU, Silence(60*time.Millisecond), &seq, &ts)
		far.press(t, port.LocalAddr(), 96, &eseq, 20000, 6, true)
		for i, k := range "407" {
			far.press(t, port.LocalAddr(), 96, &eseq, uint32(i*4000), byte(k-'0'), false)
			far.sendAudio(t, port.LocalAddr(), media.PCMU, DTMF(k, 100*time.Millisecond), &seq, &ts)
			far.sendAudio(t, port.LocalAddr(), media.PCMU, Silence(100*time.Millisecond), &seq, &ts)
		}
		expectDigits(t, s, "6407")
	})
}

// Packets from an address the signalling did not name are refused: they
// give no digit, count as refused, and do not move where Play sends.
func TestStrangerIsIgnored(t *testing.T) {
	far, stranger := newPeer(t, "127.0.0.2"), newPeer(t, "127.0.0.9")
	port := newPort(t, far.addr())
	port.SetAllowedSources(netip.MustParseAddr("127.0.0.3")) // the trunk's signalling address
	s := start(t, port, media.PCMU, 101)
	var seq uint16
	var ts uint32
	stranger.press(t, port.LocalAddr(), 101, &seq, 1000, 1, false)
	stranger.sendAudio(t, port.LocalAddr(), media.PCMU, DTMF('2', 200*time.Millisecond), &seq, &ts)
	expectDigits(t, s, "")
	if st := port.Stats(); st.Refused == 0 || st.RTPPacketsIn != 0 || st.Latched {
		t.Fatalf("stats after a stranger's packets: %+v", st)
	}
	if err := s.Play(context.Background(), Beep(1000, 100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, func() bool { return len(far.received()) == 5 }, "the beep at the peer")
	if n := len(stranger.received()); n != 0 {
		t.Fatalf("the stranger got %d packets", n)
	}
	// The peer itself is heard.
	far.press(t, port.LocalAddr(), 101, &seq, 9000, 3, false)
	expectDigits(t, s, "3")
}

// Stop ends Play and Digit, hands the port back as it was, and a relay
// takes it at once; while the session runs, a relay cannot.
func TestStopThenBridge(t *testing.T) {
	mobile, client := newPeer(t, "127.0.0.2"), newPeer(t, "127.0.0.3")
	mport, cport := newPort(t, mobile.addr()), newPort(t, client.addr())
	s := start(t, mport, media.PCMU, 101)
	if _, err := media.Bridge(mport, cport, media.BridgeOptions{}); !errors.Is(err, media.ErrBadLeg) {
		t.Fatalf("Bridge of a port in a session: %v", err)
	}
	if _, err := Start(mport, media.PCMU, 101, nil); !errors.Is(err, media.ErrBadLeg) {
		t.Fatalf("a second session on the port: %v", err)
	}
	if _, err := Start(cport, media.Codec{Name: "G729", PayloadType: 18, ClockRate: 8000}, 101, nil); !errors.Is(err, ErrBadCodec) {
		t.Fatalf("a session with G.729: %v", err)
	}

	var seq uint16
	mobile.press(t, mport.LocalAddr(), 101, &seq, 100, 1, false)
	if d, err := s.Digit(context.Background()); err != nil || d != '1' {
		t.Fatalf("Digit: %q, %v", d, err)
	}
	played, waited := make(chan error, 1), make(chan error, 1)
	go func() { played <- s.Play(context.Background(), Ringback(time.Minute)) }()
	go func() { _, err := s.Digit(context.Background()); waited <- err }()
	testenv.Eventually(t, 2*time.Second, func() bool { return len(mobile.received()) > 3 }, "ringback at the mobile")
	if got := s.Stop(); got != mport {
		t.Fatalf("Stop returned %p, not the session's port %p", got, mport)
	}
	if err := <-played; !errors.Is(err, ErrStopped) {
		t.Fatalf("Play after Stop: %v", err)
	}
	if err := <-waited; !errors.Is(err, ErrStopped) {
		t.Fatalf("Digit after Stop: %v", err)
	}
	if err := s.Play(context.Background(), Beep(800, time.Second)); !errors.Is(err, ErrStopped) {
		t.Fatalf("Play on a stopped session: %v", err)
	}
	sent := len(mobile.received())

	relay, err := media.Bridge(mport, cport, media.BridgeOptions{})
	if err != nil {
		t.Fatalf("Bridge after Stop: %v", err)
	}
	defer relay.Stop()
	var ms, cs uint16
	var mts, cts uint32
	for range 5 {
		mobile.sendAudio(t, mport.LocalAddr(), media.PCMU, Beep(1000, 20*time.Millisecond), &ms, &mts)
		client.sendAudio(t, cport.LocalAddr(), media.PCMU, Beep(600, 20*time.Millisecond), &cs, &cts)
	}
	testenv.Eventually(t, 2*time.Second, func() bool {
		return len(client.received()) == 5 && len(mobile.received()) == sent+5
	}, "audio relayed both ways")
	if st := relay.Stats(media.SideA); st.RTPPacketsIn < 5+4 || st.Refused != 0 {
		t.Fatalf("mobile side stats: %+v", st)
	}
	if _, err := Start(mport, media.PCMU, 101, nil); !errors.Is(err, media.ErrBadLeg) {
		t.Fatalf("a session on a bridged port: %v", err)
	}
	relay.Stop()
	if _, err := Start(mport, media.PCMU, 101, nil); !errors.Is(err, media.ErrBadLeg) {
		t.Fatalf("a session on a closed port: %v", err)
	}
}

// A Play cut short by its context stops at once; the next Play goes on
// with the same stream: the next sequence number, a timestamp advanced by
// the time between, the marker of a new talkspurt.
func TestPlayCancelledThenResumed(t *testing.T) {
	far := newPeer(t, "127.0.0.2")
	s := start(t, newPort(t, far.addr()), media.PCMA, 101)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := s.Play(ctx, Ringback(10*time.Second)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Play: %v", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("a cancelled Play took %v", took)
	}
	// Play has sent what it sends before it returns; how much depends on
	// how busy the machine is.
	testenv.Eventually(t, time.Second, func() bool { return len(far.received()) > 0 }, "the first packets")
	pause := time.Now()
	testenv.Eventually(t, time.Second, func() bool { return time.Since(pause) > 200*time.Millisecond }, "a pause")
	if err := s.Play(context.Background(), Beep(1000, 60*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var got []arrival
	k := -1 // where the second Play begins
	testenv.Eventually(t, time.Second, func() bool {
		if got = far.received(); len(got) < 2 {
			return false
		}
		k = slices.IndexFunc(got[1:], func(a arrival) bool { return a.pkt.Marker }) + 1
		return k > 0 && len(got) == k+3
	}, "the beep after the ringback")
	last, next := got[k-1].pkt.Header, got[k].pkt.Header
	gap := next.Timestamp - last.Timestamp
	if next.SSRC != last.SSRC || next.SequenceNumber != last.SequenceNumber+1 || gap < uint32(sampleRate/10) || gap > uint32(sampleRate*2) {
		t.Fatalf("the stream after a pause: %+v after %+v (timestamp +%d)", next, last, gap)
	}
}

// When the call ends under it (the port is closed), Digit and Play say
// so instead of waiting.
func TestClosedPortEndsTheSession(t *testing.T) {
	far := newPeer(t, "127.0.0.2")
	port := newPort(t, far.addr())
	s := start(t, port, media.PCMU, 101)
	waited := make(chan error, 1)
	go func() { _, err := s.Digit(context.Background()); waited <- err }()
	port.Close()
	select {
	case err := <-waited:
		if !errors.Is(err, ErrMedia) {
			t.Fatalf("Digit on a closed port: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Digit still waits after the port closed")
	}
	if err := s.Play(context.Background(), Beep(800, 100*time.Millisecond)); !errors.Is(err, ErrMedia) {
		t.Fatalf("Play on a closed port: %v", err)
	}
	if s.Stop() != port {
		t.Fatal("Stop did not return the port")
	}
}

// Garbage from the peer itself (random datagrams, random payloads under
// the audio and event types) neither stops the session nor invents a key
// press that is not there, and a real key after it is heard.
func TestGarbageFromThePeer(t *testing.T) {
	far := newPeer(t, "127.0.0.2")
	port := newPort(t, far.addr())
	s := start(t, port, media.PCMU, 101)
	rng := rand.New(rand.NewPCG(5, 5))
	var seq uint16
	for i := range 600 {
		junk := make([]byte, rng.IntN(400))
		for j := range junk {
			junk[j] = byte(rng.Uint32())
		}
		if i%3 == 0 {
			if _, err := far.conn.WriteToUDPAddrPort(junk, port.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		pt := []uint8{0, 101, 8, 13}[i%4]
		if pt == 101 && len(junk) >= 4 {
			junk[0] = 16 + junk[0]%200 // events that are no DTMF key
		}
		far.send(t, port.LocalAddr(), rtp.Header{PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(i) * 160, SSRC: 0x5eed}, junk)
		seq++
	}
	expectDigits(t, s, "")
	far.press(t, port.LocalAddr(), 101, &seq, 1<<20, 8, false)
	expectDigits(t, s, "8")
}
