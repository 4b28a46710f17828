package media

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// A supervisor ("sue", 127.0.0.4) monitors the call between alice (A, the
// client) and bob (B, the manager): real sockets, tones found by Goertzel.

const (
	aliceTone = 400.0  // Hz, the client
	bobTone   = 1000.0 // Hz, the manager
	sueTone   = 2000.0 // Hz, the supervisor
)

// supervisor is sue's phone on a port of a pool of its own.
type supervisor struct {
	port *Port
	ep   *endpoint
}

func newSupervisor(tb testing.TB, min int) *supervisor {
	tb.Helper()
	p, err := newTestPool(tb, "127.0.0.1", min, min+1).Allocate()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	s := &supervisor{port: p, ep: newEndpoint(tb, "127.0.0.4")}
	p.SetRemote(addrOf(s.ep.rtp))
	return s
}

// toneStream sends n 20 ms PCMU packets of a tone from c to dst, paced in
// real time, with the packets it sent in sent (if not nil).
func toneStream(tb testing.TB, c *net.UDPConn, dst netip.AddrPort, freq float64, n int, sent *[][]byte) {
	clock := time.NewTicker(20 * time.Millisecond) // a packet every 20 ms, as a phone sends
	defer clock.Stop()
	for i := range n {
		payload := make([]byte, 160)
		audio.Tone(payload, audio.LinearToULaw, freq, i*160)
		b := rtpBytes(tb, 0, uint16(i), uint32(i*160), 0x5157, i == 0, payload)
		if sent != nil {
			*sent = append(*sent, b)
		}
		send(tb, c, dst, b)
		<-clock.C
	}
}

// received reads RTP at c for at most d, or until a silence of 500 ms.
func received(c *net.UDPConn, d time.Duration) []*rtp.Packet {
	var got []*rtp.Packet
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		b, _ := recv(c, min(500*time.Millisecond, time.Until(end)))
		if b == nil {
			return got
		}
		var p rtp.Packet
		if p.Unmarshal(b) == nil {
			got = append(got, &p)
		}
	}
	return got
}

// pcm decodes the PCMU payloads of pkts, skipping the first skip packets.
func pcm(pkts []*rtp.Packet, skip int) []int16 {
	var s []int16
	for i, p := range pkts {
		if i < skip {
			continue
		}
		for _, c := range p.Payload {
			s = append(s, audio.ULawToLinear[c])
		}
	}
	return s
}

// talkAll has alice and bob (and sue, if sueSends) send tones for n
// packets at once; it returns what alice, bob and sue received and what
// alice and bob sent.
func talkAll(t *testing.T, c *call, sue *supervisor, sueSends bool, n int) (atA, atB, atSue []*rtp.Packet, fromA, fromB [][]byte) {
	t.Helper()
	var wg sync.WaitGroup
	d := time.Duration(n)*20*time.Millisecond + 300*time.Millisecond
	wg.Go(func() { atA = received(c.alice.rtp, d) })
	wg.Go(func() { atB = received(c.bob.rtp, d) })
	wg.Go(func() { atSue = received(sue.ep.rtp, d) })
	wg.Go(func() { toneStream(t, c.alice.rtp, c.aRTP(), aliceTone, n, &fromA) })
	wg.Go(func() { toneStream(t, c.bob.rtp, c.bRTP(), bobTone, n, &fromB) })
	if sueSends {
		wg.Go(func() { toneStream(t, sue.ep.rtp, sue.port.LocalAddr(), sueTone, n, nil) })
	}
	wg.Wait()
	return atA, atB, atSue, fromA, fromB
}

// unchanged fails unless got is exactly what the relay makes of sent from
// side from: no packet added, none changed.
func unchanged(t *testing.T, c *call, from Side, sent [][]byte, got []*rtp.Packet, who string) {
	t.Helper()
	if len(got) != len(sent) {
		t.Fatalf("%s received %d packets, %d were sent to it", who, len(got), len(sent))
	}
	for i, p := range got {
		raw, _ := p.Marshal()
		if want := c.relayed(from, sent[i]); !bytes.Equal(raw[2:], want[2:]) || raw[1]&0x7f != want[1]&0x7f {
			t.Fatalf("%s: packet %d changed", who, i)
		}
	}
}

func share(s []int16, freq float64) float64 { return audio.ToneShare(s, freq) }

func TestMonitorListen(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22700, BridgeOptions{})
	sue := newSupervisor(t, 22710)
	m, err := c.relay.Monitor(sue.port, PCMU, MonitorOptions{Mode: MonitorListen, Notice: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()

	// Sue speaks while listening: nobody may hear her.
	atA, atB, atSue, fromA, fromB := talkAll(t, c, sue, true, 50)
	unchanged(t, c, SideA, fromA, atB, "bob (listen)")
	unchanged(t, c, SideB, fromB, atA, "alice (listen)")

	s := pcm(atSue, 5)
	a, b := share(s, aliceTone), share(s, bobTone)
	t.Logf("sue got %d packets; alice's tone %.2f, bob's %.2f of the power", len(atSue), a, b)
	if a < 0.3 || b < 0.3 {
		t.Fatalf("sue does not hear both parties: %.2f at %v Hz, %.2f at %v Hz", a, aliceTone, b, bobTone)
	}
	// Sue's leg is a stream of its own: one SSRC none of the legs has,
	// consecutive sequence numbers, timestamps 160 apart.
	for i, p := range atSue {
		if p.SSRC != atSue[0].SSRC || p.PayloadType != 0 || len(p.Payload) != 160 {
			t.Fatalf("packet %d: %v", i, p.Header)
		}
		if i > 0 && (p.SequenceNumber != atSue[i-1].SequenceNumber+1 || p.Timestamp != atSue[i-1].Timestamp+160) {
			t.Fatalf("packet %d does not follow %d: %v after %v", i, i-1, p.Header, atSue[i-1].Header)
		}
	}
	if ssrc := atSue[0].SSRC; ssrc == c.ssrc(SideA) || ssrc == c.ssrc(SideB) || ssrc == 0x5157 {
		t.Fatalf("sue's stream has a leg's SSRC %#x", ssrc)
	}
	if m.Sent() < 45 {
		t.Fatalf("%d packets to sue in a second", m.Sent())
	}

	// A second monitor on the same call is refused.
	other := newSupervisor(t, 22712)
	if _, err := c.relay.Monitor(other.port, PCMU, MonitorOptions{}); !errors.Is(err, ErrMonitored) {
		t.Fatalf("second monitor: %v, want ErrMonitored", err)
	}
	if _, err := c.relay.Monitor(other.port, TelephoneEvent, MonitorOptions{}); !errors.Is(err, ErrNotG711) {
		t.Fatalf("telephone-event monitor: %v", err)
	}
}

func TestMonitorWhisperAndBarge(t *testing.T) {
	t.Parallel()
	var tapped [2][]int16
	var tapMu sync.Mutex
	c := newCall(t, 22720, BridgeOptions{Tap: func(from Side, pkt *rtp.Packet) {
		tapMu.Lock()
		for _, b := range pkt.Payload {
			tapped[from] = append(tapped[from], audio.ULawToLinear[b])
		}
		tapMu.Unlock()
	}})
	sue := newSupervisor(t, 22730)
	m, err := c.relay.Monitor(sue.port, PCMU, MonitorOptions{Mode: MonitorWhisper, Notice: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()

	t.Run("whisper reaches bob only", func(t *testing.T) {
		atA, atB, atSue, _, fromB := talkAll(t, c, sue, true, 50)
		unchanged(t, c, SideB, fromB, atA, "alice (whisper)")
		s := pcm(atB, 5)
		t.Logf("bob hears alice %.2f, sue %.2f", share(s, aliceTone), share(s, sueTone))
		if share(s, sueTone) < 0.2 || share(s, aliceTone) < 0.2 {
			t.Fatalf("bob does not hear alice and sue: %.2f, %.2f", share(s, aliceTone), share(s, sueTone))
		}
		if s := pcm(atSue, 5); share(s, sueTone) > 0.01 {
			t.Fatalf("sue hears herself: %.2f", share(s, sueTone))
		}
	})

	t.Run("barge reaches both, with the notice", func(t *testing.T) {
		m.SetMode(MonitorBarge)
		atA, atB, _, _, _ := talkAll(t, c, sue, true, 50)
		for _, leg := range []struct {
			who   string
			got   []*rtp.Packet
			party float64
		}{{"alice", atA, bobTone}, {"bob", atB, aliceTone}} {
			beep := pcm(leg.got[:min(len(leg.got), 15)], 0)
			s := pcm(leg.got, 20)
			t.Logf("%s: notice %.2f at first; then party %.2f, sue %.2f", leg.who, share(beep, noticeFreq), share(s, leg.party), share(s, sueTone))
			if share(beep, noticeFreq) < 0.1 {
				t.Errorf("%s hears no notice when the barge starts: %.2f", leg.who, share(beep, noticeFreq))
			}
			if share(s, sueTone) < 0.2 || share(s, leg.party) < 0.2 {
				t.Errorf("%s does not hear both others: party %.2f, sue %.2f", leg.who, share(s, leg.party), share(s, sueTone))
			}
		}
	})

	t.Run("the recording tap never hears sue", func(t *testing.T) {
		tapMu.Lock()
		defer tapMu.Unlock()
		for side, s := range tapped {
			if len(s) < 8000 || share(s, sueTone) > 0.001 || share(s, noticeFreq) > 0.001 {
				t.Fatalf("side %v's tap: %d samples, sue %.4f, notice %.4f", Side(side), len(s), share(s, sueTone), share(s, noticeFreq))
			}
		}
	})

	t.Run("a stranger's audio on sue's port goes nowhere", func(t *testing.T) {
		stranger := listenUDP(t, "127.0.0.5")
		refused := sue.port.Stats().Refused
		var wg sync.WaitGroup
		var atB []*rtp.Packet
		wg.Go(func() { atB = received(c.bob.rtp, 900*time.Millisecond) })
		wg.Go(func() { toneStream(t, c.alice.rtp, c.aRTP(), aliceTone, 30, nil) })
		wg.Go(func() { toneStream(t, stranger, sue.port.LocalAddr(), sueTone, 30, nil) })
		wg.Wait()
		if s := pcm(atB, 3); share(s, sueTone) > 0.01 {
			t.Fatalf("bob hears the stranger: %.2f", share(s, sueTone))
		}
		if sue.port.Stats().Refused <= refused {
			t.Fatal("the stranger's packets were not refused")
		}
	})

	t.Run("after Stop the legs are untouched", func(t *testing.T) {
		m.Stop()
		received(sue.ep.rtp, 100*time.Millisecond) // what the monitor sent before it stopped
		atA, atB, atSue, fromA, fromB := talkAll(t, c, sue, true, 20)
		unchanged(t, c, SideA, fromA, atB, "bob (stopped)")
		unchanged(t, c, SideB, fromB, atA, "alice (stopped)")
		if len(atSue) != 0 {
			t.Fatalf("sue got %d packets after Stop", len(atSue))
		}
		// The port is free again: a new monitor may take it.
		m2, err := c.relay.Monitor(sue.port, PCMU, MonitorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m2.Stop()
	})
}

func TestMonitorEndedRelay(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22740, BridgeOptions{})
	sue := newSupervisor(t, 22750)
	c.relay.Stop()
	if _, err := c.relay.Monitor(sue.port, PCMA, MonitorOptions{}); !errors.Is(err, ErrStopped) {
		t.Fatalf("monitor of an ended relay: %v", err)
	}
	// The port was given back: it can be opened again.
	ep, err := sue.port.OpenEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	ep.Release()
}

func TestPCMQueue(t *testing.T) {
	var q pcmQueue
	loud := make([]byte, queueSamples+100)
	for i := range loud {
		loud[i] = audio.LinearToULaw(int16(i))
	}
	q.push(audio.ULawToLinear, loud)
	out := make([]int16, queueSamples+10)
	q.take(out)
	// The oldest 100 were dropped: the queue never holds more than its bound.
	if d := out[0] - audio.ULawToLinear[loud[100]]; d != 0 || out[queueSamples] != 0 {
		t.Fatalf("queue kept %v first, %v past the bound", out[0], out[queueSamples])
	}
	// Saturation: two loud samples clip instead of wrapping.
	if s := saturate(30000 + 30000); s != 32767 {
		t.Fatalf("saturate = %d", s)
	}
	if s := saturate(-30000 - 30000); s != -32768 {
		t.Fatalf("saturate = %d", s)
	}
	src := []byte{audio.LinearToULaw(30000)}
	q.push(audio.ULawToLinear, []byte{audio.LinearToULaw(30000)})
	dst := make([]byte, 1)
	if !q.mix(dst, src, audio.ULawToLinear, audio.LinearToULaw, nil) || audio.ULawToLinear[dst[0]] < 30000 {
		t.Fatalf("mixed %d", audio.ULawToLinear[dst[0]])
	}
	if q.mix(dst, src, audio.ULawToLinear, audio.LinearToULaw, nil) {
		t.Fatal("an empty queue mixed")
	}
}

// BenchmarkBridgeMonitored is BenchmarkBridge with a supervisor listening:
// compare its cpu-ns/pkt and allocs/op with BenchmarkBridge's (the
// monitor's own pacer runs meanwhile, as it does in a call).
func BenchmarkBridgeMonitored(b *testing.B) {
	for _, mode := range []MonitorMode{MonitorListen, MonitorBarge} {
		name := map[MonitorMode]string{MonitorListen: "listen", MonitorBarge: "barge"}[mode]
		b.Run(name, func(b *testing.B) {
			c := newCall(b, 22760+int(mode)*10, BridgeOptions{})
			sue := newSupervisor(b, 22766+int(mode)*10)
			m, err := c.relay.Monitor(sue.port, PCMU, MonitorOptions{Mode: mode})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Stop()
			if mode == MonitorBarge {
				// Sue keeps talking so every packet is mixed.
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					payload := make([]byte, 160)
					audio.Tone(payload, audio.LinearToULaw, sueTone, 0)
					clock := time.NewTicker(time.Millisecond) // faster than real time: the queue is never empty
					defer clock.Stop()
					for i := 0; ; i++ {
						pkt := rtpBytes(b, 0, uint16(i), uint32(i*160), 7, false, payload)
						_, _ = sue.ep.rtp.WriteToUDPAddrPort(pkt, sue.port.LocalAddr())
						select {
						case <-stop:
							return
						case <-clock.C:
						}
					}
				}()
			}
			benchRelay(b, c)
		})
	}
}

// BenchmarkMonitorPacket is the monitor's own work per relayed packet,
// without sockets: heard (every mode) and mix (barge, with the supervisor's
// queue full, the worst case).
func BenchmarkMonitorPacket(b *testing.B) {
	payload := make([]byte, 160)
	audio.Tone(payload, audio.LinearToULaw, aliceTone, 0)
	src := rtpBytes(b, 0, 1, 0, 1, false, payload)
	var pkt rtp.Packet
	if err := pkt.Unmarshal(src); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, maxPacket)
	b.Run("heard", func(b *testing.B) {
		m := &Monitor{}
		b.ReportAllocs()
		for range b.N {
			m.heard(SideA, &pkt)
		}
	})
	b.Run("mix", func(b *testing.B) {
		m := &Monitor{}
		m.mode.Store(uint32(MonitorBarge))
		b.ReportAllocs()
		for range b.N {
			m.speak[SideB].push(audio.ULawToLinear, payload)
			if m.mix(SideB, src, dst) != len(src) {
				b.Fatal("not mixed")
			}
		}
	})
	b.Run("listen", func(b *testing.B) {
		m := &Monitor{}
		b.ReportAllocs()
		for range b.N {
			if m.mix(SideB, src, dst) != 0 {
				b.Fatal("mixed while listening")
			}
		}
	})
}
