package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// The PBX listens on 127.0.0.1, "alice" (A side, think client) lives on
// 127.0.0.2 and "bob" (B side, think manager phone) on 127.0.0.3: real UDP
// sockets, distinct addresses, so latching and address checks are real.

type endpoint struct {
	tb        testing.TB
	rtp, rtcp *net.UDPConn
}

func newEndpoint(tb testing.TB, ip string) *endpoint {
	tb.Helper()
	return &endpoint{tb: tb, rtp: listenUDP(tb, ip), rtcp: listenUDP(tb, ip)}
}

func listenUDP(tb testing.TB, ip string) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	tb.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func send(tb testing.TB, c *net.UDPConn, to netip.AddrPort, b []byte) {
	tb.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		tb.Fatal(err)
	}
}

// recv returns the next datagram on c, or nil after wait.
func recv(c *net.UDPConn, wait time.Duration) ([]byte, netip.AddrPort) {
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}
	}
	return buf[:n], from
}

func mustRecv(tb testing.TB, c *net.UDPConn) []byte {
	tb.Helper()
	b, _ := recv(c, 2*time.Second)
	if b == nil {
		tb.Fatalf("nothing arrived at %v", addrOf(c))
	}
	return b
}

func mustNotRecv(tb testing.TB, c *net.UDPConn) {
	tb.Helper()
	if b, _ := recv(c, 150*time.Millisecond); b != nil {
		tb.Fatalf("unexpected datagram at %v: % x", addrOf(c), b)
	}
}

func rtpBytes(tb testing.TB, pt uint8, seq uint16, ts, ssrc uint32, marker bool, payload []byte) []byte {
	tb.Helper()
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc, Marker: marker},
		Payload: payload,
	}
	b, err := p.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// voice is a recognisable 20 ms G.711 payload for packet i of a sender.
func voice(sender byte, i int) []byte {
	p := make([]byte, 160)
	for j := range p {
		p[j] = sender ^ byte(i) ^ byte(j*7)
	}
	binary.BigEndian.PutUint32(p, uint32(i))
	return p
}

type call struct {
	pool       *PortPool
	a, b       *Port
	alice, bob *endpoint
	relay      *Relay
}

// newCall bridges two ports from a pool over [min, min+3], with alice's and
// bob's SDP addresses set as call control would set them.
func newCall(tb testing.TB, min int, opts BridgeOptions) *call {
	tb.Helper()
	c := &call{pool: newTestPool(tb, "127.0.0.1", min, min+3)}
	c.a, c.b = allocatePair(tb, c.pool)
	c.alice, c.bob = newEndpoint(tb, "127.0.0.2"), newEndpoint(tb, "127.0.0.3")
	c.a.SetRemote(addrOf(c.alice.rtp))
	c.a.SetRemoteRTCP(addrOf(c.alice.rtcp))
	c.b.SetRemote(addrOf(c.bob.rtp))
	c.b.SetRemoteRTCP(addrOf(c.bob.rtcp))
	var err error
	if c.relay, err = Bridge(c.a, c.b, opts); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.relay.Stop)
	return c
}

// relayed is the RTP packet b as the relay sends side from's media on:
// under its own SSRC for that media.
func (c *call) relayed(from Side, b []byte) []byte {
	out := bytes.Clone(b)
	binary.BigEndian.PutUint32(out[8:], c.ssrc(from))
	return out
}

// ssrc is the relay's SSRC for side from's media.
func (c *call) ssrc(from Side) uint32 { return c.relay.stream[from].ssrc }

func (c *call) aRTP() netip.AddrPort  { return c.a.LocalAddr() }
func (c *call) bRTP() netip.AddrPort  { return c.b.LocalAddr() }
func (c *call) aRTCP() netip.AddrPort { return netip.AddrPortFrom(c.aRTP().Addr(), c.aRTP().Port()+1) }
func (c *call) bRTCP() netip.AddrPort { return netip.AddrPortFrom(c.bRTP().Addr(), c.bRTP().Port()+1) }

// stream sends n voice packets from conn to dst, paced at most 10 per
// millisecond (a few hundred calls' worth) so loopback buffers never overflow.
func stream(tb testing.TB, from *net.UDPConn, dst netip.AddrPort, sender byte, ssrc uint32, n int) {
	for i := range n {
		send(tb, from, dst, rtpBytes(tb, 0, uint16(1000+i), uint32(160*i), ssrc, i == 0, voice(sender, i)))
		if i%10 == 9 {
			time.Sleep(time.Millisecond) // pacing, not waiting: see above
		}
	}
}

// collect reads RTP at c until n distinct packets or a 2 s silence.
func collect(c *net.UDPConn, n int) map[uint16]*rtp.Packet {
	got := map[uint16]*rtp.Packet{}
	for len(got) < n {
		b, _ := recv(c, 2*time.Second)
		if b == nil {
			break
		}
		var p rtp.Packet
		if p.Unmarshal(b) == nil {
			got[p.SequenceNumber] = &p
		}
	}
	return got
}

func TestRelayForwardsBothWays(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22000, BridgeOptions{})
	const n = 500
	var wg sync.WaitGroup
	var atBob, atAlice map[uint16]*rtp.Packet
	wg.Go(func() { atBob = collect(c.bob.rtp, n) })
	wg.Go(func() { atAlice = collect(c.alice.rtp, n) })
	wg.Go(func() { stream(t, c.alice.rtp, c.aRTP(), 'a', 0xA11CE, n) })
	wg.Go(func() { stream(t, c.bob.rtp, c.bRTP(), 'b', 0xB0B, n) })
	wg.Wait()

	check := func(name string, got map[uint16]*rtp.Packet, sender byte, ssrc uint32) {
		if len(got) != n {
			t.Errorf("%s received %d of %d packets", name, len(got), n)
		}
		for i := range n {
			p := got[uint16(1000+i)]
			if p == nil {
				continue
			}
			if p.SSRC != ssrc || p.Timestamp != uint32(160*i) || p.PayloadType != 0 || p.Marker != (i == 0) ||
				!bytes.Equal(p.Payload, voice(sender, i)) {
				t.Errorf("%s: packet %d altered: %v", name, i, p.Header)
			}
		}
	}
	check("bob", atBob, 'a', c.ssrc(SideA))
	check("alice", atAlice, 'b', c.ssrc(SideB))

	a, b := c.a.Stats(), c.b.Stats()
	if a.RTPPacketsIn != n || b.RTPPacketsOut != n || b.RTPPacketsIn != n || a.RTPPacketsOut != n {
		t.Errorf("counters: a=%+v b=%+v", a, b)
	}
	if a.RTPBytesIn != n*(12+160) || !a.Latched || !b.Latched || a.LastRTP.IsZero() {
		t.Errorf("counters: a=%+v", a)
	}
}

func TestRelayLatchesToNATSource(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22010, BridgeOptions{})
	sdpSocket := c.alice.rtp               // where alice's SDP says she is
	natSocket := listenUDP(t, "127.0.0.2") // where her packets really come from

	// Before alice sends anything, bob's audio goes where her SDP says.
	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 1, 0, 0xB0B, false, voice('b', 1)))
	mustRecv(t, sdpSocket)

	send(t, natSocket, c.aRTP(), rtpBytes(t, 0, 1, 0, 0xA11CE, false, voice('a', 1)))
	mustRecv(t, c.bob.rtp)
	if got := c.a.Remote(); got != addrOf(natSocket) {
		t.Fatalf("latched to %v, want %v", got, addrOf(natSocket))
	}

	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 2, 160, 0xB0B, false, voice('b', 2)))
	mustRecv(t, natSocket)
	mustNotRecv(t, sdpSocket)

	// RTCP goes to the RTP source port+1 until RTCP arrives, then to its source.
	if got, want := c.a.RemoteRTCP(), netip.AddrPortFrom(addrOf(natSocket).Addr(), addrOf(natSocket).Port()+1); got != want {
		t.Errorf("RTCP before any RTCP: %v, want %v", got, want)
	}
	natRTCP := listenUDP(t, "127.0.0.2")
	send(t, natRTCP, c.aRTCP(), rrPacket(0xA11CE, 0, nil))
	mustRecv(t, c.bob.rtcp)
	send(t, c.bob.rtcp, c.bRTCP(), rrPacket(0xB0B, 0, nil))
	mustRecv(t, natRTCP)

	// Someone else who found the port can neither inject nor steal audio
	// while alice is talking (RTP bleed), nor inject RTCP from another IP.
	intruder := listenUDP(t, "127.0.0.4")
	dropped := c.a.Stats().Dropped
	send(t, intruder, c.aRTP(), rtpBytes(t, 0, 3, 320, 0xBAD, false, voice('x', 3)))
	send(t, intruder, c.aRTCP(), rrPacket(0xBAD, 0, nil))
	mustNotRecv(t, c.bob.rtp)
	mustNotRecv(t, c.bob.rtcp)
	if got := c.a.Remote(); got != addrOf(natSocket) {
		t.Fatalf("intruder took the latch: %v", got)
	}
	if d := c.a.Stats().Dropped - dropped; d != 2 {
		t.Errorf("dropped %d intruder packets, want 2", d)
	}

	// A phone whose address changes (new NAT binding) is followed once its
	// old source has gone quiet: the quiet spell is what is tested, so wait
	// it out.
	time.Sleep(relatchAfter + 100*time.Millisecond)
	moved := listenUDP(t, "127.0.0.2")
	send(t, moved, c.aRTP(), rtpBytes(t, 0, 4, 480, 0xA11CE, false, voice('a', 4)))
	mustRecv(t, c.bob.rtp)
	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 3, 320, 0xB0B, false, voice('b', 3)))
	mustRecv(t, moved)
	mustNotRecv(t, natSocket)
}

func TestRelaySDPSourceBeatsEarlyIntruder(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22150, BridgeOptions{})
	// Someone on alice's own IP (her NAT) sends first: the IP matches, so
	// nothing tells him apart yet.
	intruder := listenUDP(t, "127.0.0.2")
	send(t, intruder, c.aRTP(), rtpBytes(t, 0, 1, 0, 0xBAD, false, voice('x', 1)))
	mustRecv(t, c.bob.rtp)
	// Alice, not behind NAT, sends from where her SDP says: she wins at once.
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 1, 0, 0xA11CE, false, voice('a', 1)))
	mustRecv(t, c.bob.rtp)
	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 1, 0, 0xB0B, false, voice('b', 1)))
	mustRecv(t, c.alice.rtp)
	mustNotRecv(t, intruder)
	send(t, intruder, c.aRTP(), rtpBytes(t, 0, 2, 160, 0xBAD, false, voice('x', 2)))
	mustNotRecv(t, c.bob.rtp)
}

func TestRelayScrubsRTCP(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22020, BridgeOptions{})
	secrets := []string{"alice", "10.1.2.3", "+79161234567", "Alice Ivanova", "9161234567"}
	compound := join(
		srPacket(0xA11CE, 1, nil),
		sdesPacket(sdesChunk{0xA11CE, []sdesItem{
			{sdesCNAME, "alice@10.1.2.3"}, {sdesName, "Alice Ivanova"}, {sdesPhone, "+79161234567"},
			{sdesEmail, "alice@example.com"}, {sdesTool, "Acme"}, {sdesNote, "alice"},
		}}),
	)
	send(t, c.alice.rtcp, c.aRTCP(), compound)
	got := mustRecv(t, c.bob.rtcp)
	for _, s := range secrets {
		if bytes.Contains(got, []byte(s)) {
			t.Errorf("RTCP at bob contains %q", s)
		}
	}
	pkts, err := parseCompound(got)
	if err != nil || len(pkts) != 2 {
		t.Fatalf("bob got %d packets, %v", len(pkts), err)
	}
	// The report block is about no stream bob sees: dropped (stream.go).
	if sr := srPacket(c.ssrc(SideA), 0, nil); !bytes.Equal(got[:len(sr)], sr) {
		t.Error("SR altered")
	}
	items := pkts[1].chunks[0].items
	if pkts[1].chunks[0].ssrc != c.ssrc(SideA) || len(items) != 1 || items[0].typ != sdesCNAME || len(items[0].text) != 24 {
		t.Fatalf("SDES at bob: %+v", pkts[1].chunks)
	}
	aliceToken := items[0].text

	// BYE reason text is gone too.
	send(t, c.alice.rtcp, c.aRTCP(), join(rrPacket(0xA11CE, 0, nil), byePacket("alice@10.1.2.3 left", 0xA11CE)))
	if got := mustRecv(t, c.bob.rtcp); !bytes.Equal(got, join(rrPacket(c.ssrc(SideA), 0, nil), byePacket("", c.ssrc(SideA)))) {
		t.Errorf("BYE at bob: % x", got)
	}

	// The other direction has its own token, stable across packets.
	for range 2 {
		send(t, c.bob.rtcp, c.bRTCP(), join(rrPacket(0xB0B, 0, nil), sdesPacket(sdesChunk{0xB0B, []sdesItem{{sdesCNAME, "bob@10.9.9.9"}}})))
		pkts, err := parseCompound(mustRecv(t, c.alice.rtcp))
		if err != nil || len(pkts) != 2 {
			t.Fatalf("alice got %d packets, %v", len(pkts), err)
		}
		if tok := pkts[1].chunks[0].items[0].text; tok == aliceToken || len(tok) != 24 {
			t.Errorf("bob's token %q (alice's %q)", tok, aliceToken)
		}
	}

	// RTCP sent to the RTP port is not relayed as RTP.
	send(t, c.alice.rtp, c.aRTP(), compound)
	mustNotRecv(t, c.bob.rtp)
}

// Where the RTCP poller is unavailable a relay reads RTCP on goroutines of
// its own; scrubbing and latching are the same.
func TestRelayRTCPOnGoroutines(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22180, BridgeOptions{rtcpOnGoroutines: true})
	send(t, c.alice.rtcp, c.aRTCP(), join(rrPacket(0xA11CE, 0, nil),
		sdesPacket(sdesChunk{0xA11CE, []sdesItem{{sdesCNAME, "alice@10.1.2.3"}, {sdesPhone, "+79161234567"}}})))
	got := mustRecv(t, c.bob.rtcp)
	if bytes.Contains(got, []byte("alice")) || bytes.Contains(got, []byte("+7916")) {
		t.Errorf("RTCP at bob not scrubbed: % x", got)
	}
	send(t, c.bob.rtcp, c.bRTCP(), rrPacket(0xB0B, 0, nil))
	if got := mustRecv(t, c.alice.rtcp); !bytes.Equal(got, rrPacket(c.ssrc(SideB), 0, nil)) {
		t.Errorf("RR at alice: % x", got)
	}
	c.relay.Stop()
	if s := c.a.Stats(); s.RTCPPacketsIn != 1 || s.RTCPPacketsOut != 1 {
		t.Errorf("counters: %+v", s)
	}
}

func TestRelayTelephoneEvent(t *testing.T) {
	t.Parallel()
	// RFC 4733 DTMF "5": start packet with marker, updates, three end packets,
	// all with the event's start timestamp.
	event := func(end bool, duration uint16) []byte {
		e := byte(10) // volume
		if end {
			e |= 0x80
		}
		return []byte{5, e, byte(duration >> 8), byte(duration)}
	}
	var dtmf [][]byte
	for i, d := range []uint16{160, 320, 480, 640} {
		dtmf = append(dtmf, rtpBytes(t, 101, uint16(100+i), 8000, 0xA11CE, i == 0, event(false, d)))
	}
	for i := range 3 {
		dtmf = append(dtmf, rtpBytes(t, 101, uint16(104+i), 8000, 0xA11CE, false, event(true, 800)))
	}

	t.Run("same payload type", func(t *testing.T) {
		t.Parallel()
		c := newCall(t, 22030, BridgeOptions{})
		for _, pkt := range dtmf {
			send(t, c.alice.rtp, c.aRTP(), pkt)
			if got, want := mustRecv(t, c.bob.rtp), c.relayed(SideA, pkt); !bytes.Equal(got, want) {
				t.Fatalf("DTMF altered:\n got % x\nwant % x", got, want)
			}
		}
	})
	t.Run("payload type mapped between legs", func(t *testing.T) {
		t.Parallel()
		aCodecs := []Codec{PCMU, TelephoneEvent}
		bCodecs := []Codec{PCMU, {PayloadType: 96, Name: "telephone-event", ClockRate: 8000}}
		c := newCall(t, 22040, BridgeOptions{
			PayloadTypesAToB: PayloadTypeMap(aCodecs, bCodecs),
			PayloadTypesBToA: PayloadTypeMap(bCodecs, aCodecs),
		})
		for _, pkt := range dtmf {
			send(t, c.alice.rtp, c.aRTP(), pkt)
			got := mustRecv(t, c.bob.rtp)
			want := c.relayed(SideA, pkt)
			want[1] = want[1]&0x80 | 96
			if !bytes.Equal(got, want) {
				t.Fatalf("DTMF A->B:\n got % x\nwant % x", got, want)
			}
		}
		back := rtpBytes(t, 96, 1, 0, 0xB0B, true, event(false, 160))
		send(t, c.bob.rtp, c.bRTP(), back)
		if got := mustRecv(t, c.alice.rtp); got[1] != 0x80|101 || !bytes.Equal(got[2:], c.relayed(SideB, back)[2:]) {
			t.Fatalf("DTMF B->A: % x", got)
		}
	})
}

func TestRelayStripsHeaderExtensions(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22050, BridgeOptions{})
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: 7, Timestamp: 1120, SSRC: 0xA11CE, CSRC: []uint32{42}},
		Payload: voice('a', 7),
	}
	// RFC 7941 lets SDES items ride in RTP header extensions.
	if err := p.SetExtension(1, []byte("alice@10.1.2")); err != nil {
		t.Fatal(err)
	}
	raw, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	send(t, c.alice.rtp, c.aRTP(), raw)
	got := mustRecv(t, c.bob.rtp)
	if bytes.Contains(got, []byte("alice")) {
		t.Fatal("header extension relayed")
	}
	var out rtp.Packet
	if err := out.Unmarshal(got); err != nil {
		t.Fatal(err)
	}
	if out.Extension || out.SequenceNumber != 7 || out.Timestamp != 1120 || out.PayloadType != 8 ||
		len(out.CSRC) != 0 || !bytes.Equal(out.Payload, voice('a', 7)) {
		t.Fatalf("packet altered: %v", out)
	}
}

func TestRelayTap(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[Side][]uint16{}
	tap := func(from Side, pkt *rtp.Packet) {
		mu.Lock()
		defer mu.Unlock()
		seen[from] = append(seen[from], pkt.SequenceNumber)
	}
	tapped := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[SideA]) + len(seen[SideB])
	}
	c := newCall(t, 22060, BridgeOptions{Tap: tap})
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 1, 0, 1, false, voice('a', 1)))
	mustRecv(t, c.bob.rtp)
	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 2, 0, 2, false, voice('b', 2)))
	mustRecv(t, c.alice.rtp)
	// The tap runs after the packet went out: wait for it to have seen both.
	testenv.Eventually(t, 2*time.Second, func() bool { return tapped() == 2 }, "the tap to see both packets")
	c.relay.SetTap(nil)
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 3, 0, 1, false, voice('a', 3)))
	mustRecv(t, c.bob.rtp)
	c.relay.Stop()

	mu.Lock()
	defer mu.Unlock()
	if len(seen[SideA]) != 1 || seen[SideA][0] != 1 || len(seen[SideB]) != 1 || seen[SideB][0] != 2 {
		t.Fatalf("tap saw %v", seen)
	}
}

func waitDone(tb testing.TB, r *Relay, within time.Duration) {
	tb.Helper()
	select {
	case <-r.Done():
	case <-time.After(within):
		tb.Fatalf("relay still running after %v", within)
	}
}

func assertRunning(tb testing.TB, r *Relay) {
	tb.Helper()
	select {
	case <-r.Done():
		tb.Fatalf("relay ended: %v", r.Err())
	default:
	}
}

// talk sends a packet every 20 ms from each endpoint until stop is closed.
func talk(tb testing.TB, stop <-chan struct{}, from *net.UDPConn, to netip.AddrPort) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := from.WriteToUDPAddrPort(rtpBytes(tb, 0, uint16(i), uint32(160*i), 9, false, voice('t', i)), to); err != nil {
			return
		}
	}
}

func TestRelayMediaTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond

	t.Run("both silent", func(t *testing.T) {
		t.Parallel()
		c := newCall(t, 22070, BridgeOptions{MediaTimeout: timeout})
		start := time.Now()
		waitDone(t, c.relay, 3*time.Second)
		if !errors.Is(c.relay.Err(), ErrMediaTimeout) {
			t.Fatalf("Err = %v", c.relay.Err())
		}
		if took := time.Since(start); took < timeout-50*time.Millisecond {
			t.Errorf("fired after %v, before the %v timeout", took, timeout)
		}
		if c.pool.InUse() != 0 {
			t.Errorf("ports not freed after timeout: %d in use", c.pool.InUse())
		}
	})

	t.Run("one leg vanishes", func(t *testing.T) {
		t.Parallel()
		c := newCall(t, 22080, BridgeOptions{MediaTimeout: timeout})
		stop := make(chan struct{})
		defer close(stop)
		go talk(t, stop, c.alice.rtp, c.aRTP())
		waitDone(t, c.relay, 3*time.Second)
		if err := c.relay.Err(); !errors.Is(err, ErrMediaTimeout) || !bytes.Contains([]byte(err.Error()), []byte("leg b")) {
			t.Fatalf("Err = %v, want a timeout of leg b", err)
		}
	})

	t.Run("talking keeps it up", func(t *testing.T) {
		t.Parallel()
		c := newCall(t, 22090, BridgeOptions{MediaTimeout: timeout})
		stop := make(chan struct{})
		go talk(t, stop, c.alice.rtp, c.aRTP())
		go talk(t, stop, c.bob.rtp, c.bRTP())
		time.Sleep(3 * timeout) // three timeouts pass with talk: none may fire
		assertRunning(t, c.relay)
		close(stop)
		waitDone(t, c.relay, 3*time.Second)
		if !errors.Is(c.relay.Err(), ErrMediaTimeout) {
			t.Fatalf("Err = %v", c.relay.Err())
		}
	})

	t.Run("disabled and re-enabled", func(t *testing.T) {
		t.Parallel()
		c := newCall(t, 22100, BridgeOptions{MediaTimeout: -1})
		time.Sleep(2 * timeout) // two timeouts pass in silence: a disabled one may not fire
		assertRunning(t, c.relay)
		c.relay.SetMediaTimeout(timeout)
		waitDone(t, c.relay, 3*time.Second)
		if !errors.Is(c.relay.Err(), ErrMediaTimeout) {
			t.Fatalf("Err = %v", c.relay.Err())
		}
	})
}

func TestRelayStopFreesPorts(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 22110, 22113) // two pairs
	var ports []*Port
	for {
		p, err := pool.Allocate()
		if errors.Is(err, ErrNoPorts) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
	}
	if len(ports) != 2 {
		t.Skipf("only %d pairs free on this host", len(ports))
	}
	r, err := Bridge(ports[0], ports[1], BridgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Allocate(); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("pool not exhausted: %v", err)
	}
	assertRunning(t, r)
	if r.Err() != nil {
		t.Errorf("Err while running = %v", r.Err())
	}
	r.Stop()
	r.Stop() // idempotent
	waitDone(t, r, time.Second)
	if !errors.Is(r.Err(), ErrStopped) {
		t.Errorf("Err = %v, want ErrStopped", r.Err())
	}
	if pool.InUse() != 0 {
		t.Fatalf("InUse = %d after Stop", pool.InUse())
	}
	for range 2 {
		p, err := pool.Allocate()
		if err != nil {
			t.Fatalf("allocate after Stop: %v", err)
		}
		defer p.Close()
	}
}

func TestRelayEndsWhenAPortIsClosed(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22120, BridgeOptions{})
	c.a.Close() // call control tearing a leg down on its own
	waitDone(t, c.relay, time.Second)
	if !errors.Is(c.relay.Err(), ErrStopped) {
		t.Errorf("Err = %v", c.relay.Err())
	}
	if c.pool.InUse() != 0 {
		t.Errorf("InUse = %d", c.pool.InUse())
	}
}

func TestBridgeRejectsBadLegs(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 22130, 22137)
	a, _ := pool.Allocate()
	b, _ := pool.Allocate()
	d, _ := pool.Allocate()
	if a == nil || b == nil || d == nil {
		t.Skip("ports busy")
	}
	defer d.Close()
	for name, legs := range map[string][2]*Port{"nil": {a, nil}, "same": {a, a}} {
		if _, err := Bridge(legs[0], legs[1], BridgeOptions{}); !errors.Is(err, ErrBadLeg) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	r, err := Bridge(a, b, BridgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Bridge(a, d, BridgeOptions{}); !errors.Is(err, ErrBadLeg) {
		t.Errorf("bridged twice: err = %v", err)
	}
	r.Stop()
	if _, err := Bridge(d, a, BridgeOptions{}); !errors.Is(err, ErrBadLeg) {
		t.Errorf("closed port: err = %v", err)
	}
}

func TestRelaySurvivesJunk(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22140, BridgeOptions{})
	valid := rtpBytes(t, 0, 1, 0, 1, false, voice('a', 1))
	badPadding := bytes.Clone(valid)
	badPadding[0] |= 0x20
	badPadding[len(badPadding)-1] = 200
	zeroPadding := bytes.Clone(valid)
	zeroPadding[0] |= 0x20
	zeroPadding[len(zeroPadding)-1] = 0
	extOverrun := append(bytes.Clone(valid[:12]), 0xBE, 0xDE, 0x00, 0x40)
	extOverrun[0] |= 0x10
	junk := [][]byte{
		{},
		{0x80},
		valid[:11],
		append([]byte{0x40}, valid[1:]...), // version 1
		append([]byte{0xC0}, valid[1:]...), // version 3
		append([]byte{0x8F}, valid[1:12]...),
		extOverrun,
		badPadding,
		zeroPadding,
		append([]byte{0x80, 200}, valid[2:]...), // RTCP SR type on the RTP port
		make([]byte, maxPacket),                 // fills the buffer: maybe truncated
		make([]byte, 9000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if len(b) > 0 {
			b[0] &= 0x3f // version 0: never valid RTP or RTCP
		}
		junk = append(junk, b)
	}
	for i, b := range junk {
		for _, dst := range []netip.AddrPort{c.aRTP(), c.aRTCP(), c.bRTP(), c.bRTCP()} {
			send(t, c.alice.rtp, dst, b)
		}
		if i%20 == 19 {
			time.Sleep(time.Millisecond) // pacing, so loopback buffers never overflow
		}
	}
	mustNotRecv(t, c.bob.rtp)
	mustNotRecv(t, c.bob.rtcp)
	mustNotRecv(t, c.alice.rtp)
	mustNotRecv(t, c.alice.rtcp)
	assertRunning(t, c.relay)
	if c.a.Stats().Latched || c.a.Remote() != addrOf(c.alice.rtp) {
		t.Error("junk moved the latch")
	}
	// Loopback may itself drop some of the burst, so the count is a range.
	if d := c.a.Stats().Dropped; d == 0 || d > uint64(2*len(junk)) {
		t.Errorf("Dropped = %d, want 1..%d (junk sent to A's RTP and RTCP)", d, 2*len(junk))
	}

	// Real audio still flows.
	send(t, c.alice.rtp, c.aRTP(), valid)
	if got := mustRecv(t, c.bob.rtp); !bytes.Equal(got, c.relayed(SideA, valid)) {
		t.Errorf("got % x", got)
	}
}

func FuzzParseRTP(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff})
	f.Add([]byte{0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0, 0xff})
	f.Add([]byte{0xb1, 0x65, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0x10, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var pkt rtp.Packet
		n, ok := parseRTP(&pkt, bytes.Clone(b))
		if !ok {
			return
		}
		if n > len(b) || pkt.Extension || pkt.Padding || len(pkt.CSRC) != 0 || pkt.Version != 2 {
			t.Fatalf("n=%d header %v", n, pkt.Header)
		}
	})
}

// bench pushes packets alice -> bob through one relay with a bounded number
// in flight (a real sender is paced; loopback drops what overflows the
// socket buffers) and returns packets per second and the loss.
func benchRelay(b *testing.B, c *call) {
	pkt := rtpBytes(b, 0, 1, 0, 1, false, voice('a', 1))
	benchRelayPackets(b, c, func(i int) []byte {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		return pkt
	})
}

// benchRelayPackets is benchRelay sending packet(i) as packet i; packet
// must be cheap (make the packets before the benchmark's timer starts).
func benchRelayPackets(b *testing.B, c *call, packet func(i int) []byte) {
	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for received.Load() < int64(b.N) {
			_ = c.bob.rtp.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := c.bob.rtp.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	// Prime the latch so the first measured packet is a normal one.
	dst := c.aRTP()
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for i := range b.N {
		for int64(i)-received.Load() > 64 {
			select {
			case <-done:
				b.Fatalf("receiver gave up after %d of %d", received.Load(), b.N)
			default:
			}
			time.Sleep(10 * time.Microsecond) // flow control: at most 64 packets in flight
		}
		if _, err := c.alice.rtp.WriteToUDPAddrPort(packet(i), dst); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	// ns/op is paced by the flow control; CPU per packet is the cost (the
	// test's sender and receiver included: each a send or receive syscall).
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/pkt")
	b.ReportMetric(float64(received.Load())/elapsed.Seconds(), "pkts/s")
	b.ReportMetric(100*float64(int64(b.N)-received.Load())/float64(b.N), "loss%")
}

// BenchmarkBridge measures one relay's forwarding rate. allocs/op counts the
// test's sender and receiver too (both allocation-free), so it is the relay's.
func BenchmarkBridge(b *testing.B) {
	c := newCall(b, 22200, BridgeOptions{})
	benchRelay(b, c)
}

// bridgeCost is what one relayed call costs the process.
type bridgeCost struct {
	heap, stack float64 // bytes of heap in use and of goroutine stacks
	goroutines  float64
}

func (c bridgeCost) bytes() float64 { return c.heap + c.stack }

// measureBridgeMemory bridges n calls with audio flowing and returns the Go
// memory (heap in use + goroutine stacks) and goroutines each one costs.
// Kernel socket buffers are not Go memory and not counted. With forked set,
// each relay's tap forks every packet to a UDP sink as the SIPREC client
// does (a copy into the call's buffer, a send), so the readers' stacks are
// as deep as in a recorded call.
func measureBridgeMemory(tb testing.TB, n int, forked bool) bridgeCost {
	pool := newTestPool(tb, "127.0.0.1", 23000, 23000+4*n+3)
	alice, bob := newEndpoint(tb, "127.0.0.2"), newEndpoint(tb, "127.0.0.3")
	sink := listenUDP(tb, "127.0.0.5")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	relays := make([]*Relay, 0, n)
	for range n {
		a, b := allocatePair(tb, pool)
		a.SetRemote(addrOf(alice.rtp))
		b.SetRemote(addrOf(bob.rtp))
		var opts BridgeOptions
		if forked {
			opts.Tap = forkTo(sink)
		}
		r, err := Bridge(a, b, opts)
		if err != nil {
			tb.Fatal(err)
		}
		relays = append(relays, r)
	}
	// One packet each way and RTCP through every relay, so every buffer and
	// latch is live.
	pkt := rtpBytes(tb, 0, 1, 0, 1, false, voice('a', 1))
	rr := join(rrPacket(1, 0, nil), sdesPacket(sdesChunk{1, []sdesItem{{sdesCNAME, "x"}}}))
	for _, r := range relays {
		a, b := r.legs[SideA].LocalAddr(), r.legs[SideB].LocalAddr()
		send(tb, alice.rtp, a, pkt)
		send(tb, bob.rtp, b, pkt)
		send(tb, alice.rtcp, netip.AddrPortFrom(a.Addr(), a.Port()+1), rr)
	}
	testenv.Eventually(tb, 10*time.Second, func() bool {
		for _, r := range relays {
			a, b := r.legs[SideA].Stats(), r.legs[SideB].Stats()
			if a.RTPPacketsOut == 0 || b.RTPPacketsOut == 0 || b.RTCPPacketsOut == 0 {
				return false
			}
		}
		return true
	}, "every relay to forward RTP both ways and RTCP")
	runtime.GC()
	runtime.ReadMemStats(&after)
	cost := bridgeCost{
		heap:       (float64(after.HeapInuse) - float64(before.HeapInuse)) / float64(n),
		stack:      (float64(after.StackInuse) - float64(before.StackInuse)) / float64(n),
		goroutines: float64(runtime.NumGoroutine()-g0) / float64(n),
	}
	for _, r := range relays {
		r.Stop()
	}
	return cost
}

// forkTo is a tap that sends a copy of each packet to sink, from a socket
// and buffers of its own per call.
func forkTo(sink *net.UDPConn) Tap {
	var bufs [2][]byte
	dst := addrOf(sink)
	return func(from Side, pkt *rtp.Packet) {
		if bufs[from] == nil {
			bufs[from] = make([]byte, 0, 1500)
		}
		b, err := pkt.MarshalTo(bufs[from][:cap(bufs[from])])
		if err == nil {
			_, _ = sink.WriteToUDPAddrPort(bufs[from][:b], dst)
		}
	}
}

// BenchmarkBridgeMemory reports the Go memory one relayed call costs. One
// measurement is the figure, so b.N is capped (a package-wide -benchtime=Nx
// must not build N*200 relays) and ns/op, meaningless here, is hidden.
func BenchmarkBridgeMemory(b *testing.B) {
	const n = 200
	for _, forked := range []bool{false, true} {
		name := "unrecorded"
		if forked {
			name = "forked"
		}
		b.Run(name, func(b *testing.B) {
			var cost bridgeCost
			for range min(b.N, 3) {
				cost = measureBridgeMemory(b, n, forked)
			}
			reportCost(b, cost)
		})
	}
}

func reportCost(b *testing.B, cost bridgeCost) {
	b.ReportMetric(cost.bytes(), "bytes/bridge")
	b.ReportMetric(cost.heap, "heap-bytes/bridge")
	b.ReportMetric(cost.stack, "stack-bytes/bridge")
	b.ReportMetric(cost.goroutines, "goroutines/bridge")
	b.ReportMetric(0, "ns/op")
}

// The budget is 100 KB per call; a relay is most of a call's media
// state. The race detector inflates memory, so the check runs without it.
func TestBridgeMemoryBudget(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory figures are meaningless under -race / -short")
	}
	cost := measureBridgeMemory(t, 200, true)
	t.Logf("per bridge: %.0f bytes (heap %.0f, stacks %.0f), %.2f goroutines",
		cost.bytes(), cost.heap, cost.stack, cost.goroutines)
	if cost.bytes() > 100<<10 {
		t.Fatalf("%.0f bytes per bridge, budget 100 KB", cost.bytes())
	}
}
