package media

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// A secure call: alice (side A) is a phone speaking SRTP, keyed by SDES the
// way call control does it: her SDP offer goes through ParseOffer and
// AnswerSRTP, and she learns our key from our answer. Bob (side B) is the
// plain trunk.

const toneHz = 1000

// srtpPeer is alice's SRTP stack: pion contexts keyed from the SDP exchange.
type srtpPeer struct {
	tx, rx *srtp.Context // tx with her key, rx with ours (from our answer)
}

func newSRTPPeer(tb testing.TB, suite Suite, own, ours MasterKey) *srtpPeer {
	tb.Helper()
	tx, err := srtp.CreateContext(own.key(), own.salt(), suite.profile())
	if err != nil {
		tb.Fatal(err)
	}
	rx, err := srtp.CreateContext(ours.key(), ours.salt(), suite.profile(),
		srtp.SRTPReplayProtection(64), srtp.SRTCPReplayProtection(64))
	if err != nil {
		tb.Fatal(err)
	}
	return &srtpPeer{tx: tx, rx: rx}
}

func (p *srtpPeer) sealRTP(tb testing.TB, plain []byte) []byte {
	tb.Helper()
	b, err := p.tx.EncryptRTP(nil, plain, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func (p *srtpPeer) sealRTCP(tb testing.TB, plain []byte) []byte {
	tb.Helper()
	b, err := p.tx.EncryptRTCP(nil, plain, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// secureCall bridges A (alice, SRTP with suite) and B (bob, plain). The
// returned keys are what alice offered (own) and what she read in our answer.
func secureCall(tb testing.TB, min int, suite Suite, opts BridgeOptions) (*call, *srtpPeer, MasterKey) {
	tb.Helper()
	own := newMasterKey()
	aliceSDP := BuildSDPWith(netip.MustParseAddrPort("127.0.0.2:4000"), 1, 1, DefaultCodecs(), SendRecv,
		SDPOptions{Crypto: []Crypto{{Tag: 3, Suite: suite, Key: own}}})
	offer, err := ParseOffer(aliceSDP)
	if err != nil {
		tb.Fatal(err)
	}
	body, _, keys, err := AnswerSRTP(offer, netip.MustParseAddrPort("127.0.0.1:20000"), 1, 1)
	if err != nil || keys == nil {
		tb.Fatalf("answer: %v", err)
	}
	answer, err := ParseOffer(body)
	if err != nil || len(answer.Crypto) != 1 || answer.Crypto[0].Tag != 3 {
		tb.Fatalf("our answer: %v %v", err, answer)
	}
	opts.SRTP[SideA] = keys
	c := newCall(tb, min, opts)
	return c, newSRTPPeer(tb, suite, own, answer.Crypto[0].Key), own
}

// tonePacket is packet i of a 20 ms PCMU tone.
func tonePacket(tb testing.TB, ssrc uint32, i int) []byte {
	payload := make([]byte, 160)
	audio.Tone(payload, audio.LinearToULaw, toneHz, 160*i)
	return rtpBytes(tb, 0, uint16(1000+i), uint32(160*i), ssrc, i == 0, payload)
}

// tapRecorder keeps copies of what a Tap saw.
type tapRecorder struct {
	mu   sync.Mutex
	pkts map[Side][]rtp.Packet
}

func (r *tapRecorder) tap(from Side, pkt *rtp.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pkts == nil {
		r.pkts = map[Side][]rtp.Packet{}
	}
	r.pkts[from] = append(r.pkts[from], *pkt.Clone())
}

func (r *tapRecorder) seen(s Side) []rtp.Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pkts[s]
}

func TestSRTPRelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		min   int
		suite Suite
		opts  BridgeOptions
	}{
		{"80", 22300, SuiteAES128SHA1_80, BridgeOptions{}},
		{"32", 22310, SuiteAES128SHA1_32, BridgeOptions{}},
		{"80 rtcp on goroutines", 22320, SuiteAES128SHA1_80, BridgeOptions{rtcpOnGoroutines: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rec tapRecorder
			tc.opts.Tap = rec.tap
			c, alice, _ := secureCall(t, tc.min, tc.suite, tc.opts)
			const n = 50

			// Alice's encrypted tone reaches bob in the clear, unchanged.
			plain := make([][]byte, n)
			for i := range n {
				plain[i] = tonePacket(t, 0xA11CE, i)
				sealed := alice.sealRTP(t, plain[i])
				if bytes.Contains(sealed, plain[i][12:]) {
					t.Fatal("pion sent the payload in the clear")
				}
				send(t, c.alice.rtp, c.aRTP(), sealed)
				if got := mustRecv(t, c.bob.rtp); !bytes.Equal(got, c.relayed(SideA, plain[i])) {
					t.Fatalf("bob got packet %d as % x", i, got[:min(len(got), 24)])
				}
			}
			// The tap saw plain RTP: the tone.
			testenv.Eventually(t, 2*time.Second, func() bool { return len(rec.seen(SideA)) == n }, "the tap to see %d packets", n)
			var samples []int16
			for i, p := range rec.seen(SideA) {
				if !bytes.Equal(p.Payload, plain[i][12:]) {
					t.Fatalf("tap packet %d is not the plain payload", i)
				}
				for _, u := range p.Payload {
					samples = append(samples, audio.ULawToLinear[u])
				}
			}
			if share := audio.ToneShare(samples, toneHz); share < 0.9 {
				t.Errorf("tap: tone share %.2f", share)
			}

			// Bob's plain RTP reaches alice encrypted with our key.
			for i := range n {
				pkt := rtpBytes(t, 8, uint16(60000+i), uint32(160*i), 0xB0B, false, voice('b', i))
				send(t, c.bob.rtp, c.bRTP(), pkt)
				got := mustRecv(t, c.alice.rtp)
				if bytes.Contains(got, voice('b', i)) {
					t.Fatalf("packet %d reached alice in the clear", i)
				}
				opened, err := alice.rx.DecryptRTP(nil, got, nil)
				if err != nil {
					t.Fatalf("alice cannot open packet %d: %v", i, err)
				}
				if !bytes.Equal(opened, c.relayed(SideB, pkt)) {
					t.Fatalf("alice opened packet %d as % x", i, opened[:24])
				}
			}
			// The tap runs after the send: the last packet may reach alice first.
			testenv.Eventually(t, 2*time.Second, func() bool { return len(rec.seen(SideB)) == n }, "the tap to see bob's %d packets", n)
			if p := rec.seen(SideB)[0]; !bytes.Equal(p.Payload, voice('b', 0)) {
				t.Error("tap of B: not bob's plain payload")
			}

			// SRTCP from alice: bob gets the scrubbed report in the clear.
			sr := join(srPacket(0xA11CE, 1, nil), sdesPacket(sdesChunk{0xA11CE, []sdesItem{
				{sdesCNAME, "alice@10.1.2.3"}, {sdesPhone, "+79161234567"}}}))
			send(t, c.alice.rtcp, c.aRTCP(), alice.sealRTCP(t, sr))
			got := mustRecv(t, c.bob.rtcp)
			pkts, err := parseCompound(got)
			// Under the relay's SSRC; the report block is about no stream
			// bob sees (stream.go).
			if want := srPacket(c.ssrc(SideA), 0, nil); err != nil || len(pkts) != 2 || !bytes.Equal(got[:len(want)], want) {
				t.Fatalf("bob got RTCP % x: %v", got, err)
			}
			if bytes.Contains(got, []byte("alice")) || bytes.Contains(got, []byte("+7916")) {
				t.Fatal("RTCP not scrubbed")
			}

			// RTCP from bob: alice gets SRTCP, scrubbed, under our key.
			rr := join(rrPacket(0xB0B, 1, nil), sdesPacket(sdesChunk{0xB0B, []sdesItem{{sdesCNAME, "bob@10.9.9.9"}}}))
			for range 3 { // the SRTCP index advances
				send(t, c.bob.rtcp, c.bRTCP(), rr)
				got := mustRecv(t, c.alice.rtcp)
				opened, err := alice.rx.DecryptRTCP(nil, got, nil)
				if err != nil {
					t.Fatalf("alice cannot open RTCP: %v", err)
				}
				pkts, err := parseCompound(opened)
				if err != nil || len(pkts) != 2 || pkts[1].chunks[0].ssrc != c.ssrc(SideB) || bytes.Contains(opened, []byte("bob@")) {
					t.Fatalf("alice opened RTCP % x: %v", opened, err)
				}
			}

			// Counters move after the send: wait for the last ones.
			var a, b PortStats
			if !testenv.WaitFor(2*time.Second, func() bool {
				a, b = c.a.Stats(), c.b.Stats()
				return a.RTPPacketsIn == n && a.RTPPacketsOut == n && b.RTPPacketsIn == n && b.RTPPacketsOut == n &&
					a.RTCPPacketsIn == 1 && a.RTCPPacketsOut == 3 && a.Dropped == 0 && b.Dropped == 0
			}) {
				t.Errorf("counters: a=%+v b=%+v", a, b)
			}
		})
	}
}

// A stranger who knows A's port but not alice's key gets nothing through:
// forged, garbled, plain, replayed and wrongly keyed packets are dropped and
// counted, move no latch and keep no silent leg alive, and alice's audio
// goes on flowing.
func TestSRTPStrangerCannotHijack(t *testing.T) {
	t.Parallel()
	c, alice, _ := secureCall(t, 22330, SuiteAES128SHA1_80, BridgeOptions{MediaTimeout: -1})
	stranger := newEndpoint(t, "127.0.0.4")
	wrongKey := newSRTPPeer(t, SuiteAES128SHA1_80, newMasterKey(), newMasterKey())

	// Before alice speaks, nothing a stranger sends latches.
	genuine := alice.sealRTP(t, tonePacket(t, 0xA11CE, 0))
	attacks := func(seq int) [][]byte {
		flipped := bytes.Clone(genuine)
		flipped[len(flipped)-15] ^= 1 // one payload bit
		tag := bytes.Clone(genuine)
		tag[len(tag)-1] ^= 1
		return [][]byte{
			wrongKey.sealRTP(t, tonePacket(t, 0xA11CE, seq)),
			wrongKey.sealRTP(t, tonePacket(t, 0x5EED, seq)),
			tonePacket(t, 0xA11CE, seq),                             // plain RTP
			append(bytes.Clone(genuine[:12]), make([]byte, 200)...), // garbage payload
			flipped, tag, // tampered
			genuine[:len(genuine)-10], // no tag
			genuine[:12],              // header only
		}
	}
	var sent uint64
	for _, b := range attacks(1) {
		send(t, stranger.rtp, c.aRTP(), b)
		sent++
	}
	testenv.Eventually(t, 2*time.Second, func() bool { return c.a.Stats().Dropped == sent }, "A to drop %d forgeries", sent)
	if s := c.a.Stats(); s.Latched || !s.LastRTP.IsZero() || s.RTPPacketsIn != 0 {
		t.Fatalf("forgeries latched or counted as media: %+v", s)
	}
	mustNotRecv(t, c.bob.rtp)

	// Alice speaks and latches.
	send(t, c.alice.rtp, c.aRTP(), genuine)
	mustRecv(t, c.bob.rtp)
	latched := addrOf(c.alice.rtp)
	if c.a.Remote() != latched {
		t.Fatal("alice did not latch")
	}

	// Her packet replayed, from her address or the stranger's, is dropped.
	send(t, c.alice.rtp, c.aRTP(), genuine)
	send(t, stranger.rtp, c.aRTP(), genuine)
	sent += 2
	testenv.Eventually(t, 2*time.Second, func() bool { return c.a.Stats().Dropped == sent }, "A to drop the replays")

	// Alice falls silent past relatchAfter: a plain RTP stranger could take
	// the leg now, an SRTP forger must not.
	testenv.Eventually(t, 5*time.Second, func() bool {
		return time.Since(c.a.Stats().LastRTP) > relatchAfter+100*time.Millisecond
	}, "alice's latch to go stale")
	lastRTP := c.a.Stats().LastRTP
	for _, b := range attacks(2) {
		send(t, stranger.rtp, c.aRTP(), b)
		sent++
	}
	// SRTCP forged or plain to A's RTCP port.
	rr := rrPacket(0xA11CE, 0, nil)
	send(t, stranger.rtcp, c.aRTCP(), rr)
	send(t, stranger.rtcp, c.aRTCP(), wrongKey.sealRTCP(t, rr))
	send(t, c.alice.rtcp, c.aRTCP(), rr) // plain RTCP from alice herself
	sent += 3
	testenv.Eventually(t, 2*time.Second, func() bool { return c.a.Stats().Dropped == sent }, "A to drop %d forgeries", sent)
	mustNotRecv(t, c.bob.rtp)
	mustNotRecv(t, c.bob.rtcp)
	if s := c.a.Stats(); c.a.Remote() != latched || s.LastRTP != lastRTP || s.RTPPacketsIn != 1 || s.RTCPPacketsIn != 0 {
		t.Fatalf("forgeries moved the latch or counted as media: remote %v, %+v", c.a.Remote(), s)
	}

	// Bob's audio still goes to alice, and hers still comes through.
	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 1, 0, 0xB0B, false, voice('b', 1)))
	if _, err := alice.rx.DecryptRTP(nil, mustRecv(t, c.alice.rtp), nil); err != nil {
		t.Fatalf("alice: %v", err)
	}
	for i := 1; i < 5; i++ {
		plain := tonePacket(t, 0xA11CE, i)
		send(t, c.alice.rtp, c.aRTP(), alice.sealRTP(t, plain))
		if got := mustRecv(t, c.bob.rtp); !bytes.Equal(got, c.relayed(SideA, plain)) {
			t.Fatalf("alice's packet %d after the attack: % x", i, got[:12])
		}
	}
	send(t, c.alice.rtcp, c.aRTCP(), alice.sealRTCP(t, rr))
	mustRecv(t, c.bob.rtcp)
	assertRunning(t, c.relay)
}

// Bridge refuses keys it cannot use, and the ports stay the caller's.
func TestBridgeRejectsBadSRTPKeys(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 22340, 22343)
	a, b := allocatePair(t, pool)
	k := newMasterKey()
	for name, keys := range map[string]*SRTPKeys{
		"no suite":    {Local: newMasterKey(), Remote: newMasterKey()},
		"zero local":  {Suite: SuiteAES128SHA1_80, Remote: newMasterKey()},
		"zero remote": {Suite: SuiteAES128SHA1_80, Local: newMasterKey()},
		"same key":    {Suite: SuiteAES128SHA1_80, Local: k, Remote: k},
	} {
		_, err := Bridge(a, b, BridgeOptions{SRTP: [2]*SRTPKeys{nil, keys}})
		if !errors.Is(err, ErrNoCrypto) || !strings.Contains(err.Error(), "leg b") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	r, err := Bridge(a, b, BridgeOptions{SRTP: [2]*SRTPKeys{{Suite: SuiteAES128SHA1_32, Local: newMasterKey(), Remote: newMasterKey()}}})
	if err != nil {
		t.Fatalf("ports not usable after refusals: %v", err)
	}
	r.Stop()
}

// BenchmarkBridgeSRTP is BenchmarkBridge with A secure: alice's packets are
// authenticated and decrypted, bob gets them plain.
func BenchmarkBridgeSRTP(b *testing.B) {
	c, alice, _ := secureCall(b, 22350, SuiteAES128SHA1_80, BridgeOptions{})
	benchSecureRelay(b, c, alice)
}

// benchSecureRelay sends b.N packets sealed by alice before the timer
// starts, so the figures are the relay's opening and the sockets.
func benchSecureRelay(b *testing.B, c *call, alice *srtpPeer) {
	sealed := make([][]byte, b.N)
	for i := range sealed {
		sealed[i] = alice.sealRTP(b, rtpBytes(b, 0, uint16(i), uint32(160*i), 1, false, voice('a', i)))
	}
	benchRelayPackets(b, c, func(i int) []byte { return sealed[i] })
}
