package media

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// Hijacking a silent leg (issue 11, finding 3). Bob (B, the manager's phone)
// is silent: before his first packet, on hold, or with silence suppression.
// A stranger on another IP who found bob's relay port sprays RTP and RTCP at
// it, hoping to be latched and get alice's (the client's) audio.

const strangerIP = "127.0.0.5"

// spray sends n RTP packets and one RTCP packet from the stranger to the
// relay ports of leg b and waits until the relay has handled them, taken or
// not.
func (c *call) spray(tb testing.TB, stranger *net.UDPConn, n int) {
	tb.Helper()
	handled := func() uint64 { s := c.b.Stats(); return s.RTPPacketsIn + s.RTCPPacketsIn + s.Dropped }
	before := handled()
	for i := range n {
		send(tb, stranger, c.bRTP(), rtpBytes(tb, 0, uint16(i), uint32(160*i), 0x5747, false, voice('x', i)))
	}
	send(tb, stranger, c.bRTCP(), rrPacket(0x5747, 0, nil))
	testenv.Eventually(tb, 2*time.Second, func() bool { return handled()-before >= uint64(n+1) },
		"the relay to handle %d packets", n+1)
}

// assertRefused checks that leg b has refused want packets, in its stats
// and in the pool's counter behind /metrics.
func (c *call) assertRefused(tb testing.TB, want uint64) {
	tb.Helper()
	if got := c.b.Stats().Refused; got != want {
		tb.Errorf("leg b refused %d packets, want %d", got, want)
	}
	if got := c.pool.Refused(); got != want {
		tb.Errorf("pool refused %d packets, want %d", got, want)
	}
}

// talksThrough checks that bob's audio, sent from his socket to, reaches
// alice and that hers then reaches him there.
func (c *call) talksThrough(tb testing.TB, to *net.UDPConn, seq uint16) {
	tb.Helper()
	want := voice('b', int(seq))
	send(tb, to, c.bRTP(), rtpBytes(tb, 0, seq, 160*uint32(seq), 0xB0B, false, want))
	if got := mustRecv(tb, c.alice.rtp); !bytes.Contains(got, want) {
		tb.Fatalf("bob's packet %d did not reach alice", seq)
	}
	want = voice('a', int(seq))
	send(tb, c.alice.rtp, c.aRTP(), rtpBytes(tb, 0, seq, 160*uint32(seq), 0xA11CE, false, want))
	if got := mustRecv(tb, to); !bytes.Contains(got, want) {
		tb.Fatalf("alice's packet %d did not reach bob", seq)
	}
}

func TestPortRefusesStrangerBeforeFirstPacket(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22400, BridgeOptions{})
	stranger := listenUDP(t, strangerIP)
	c.spray(t, stranger, 5)

	// Alice talks: her audio goes where bob's SDP says, never to the
	// stranger, and nothing of the stranger's reaches her.
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 1, 160, 0xA11CE, false, voice('a', 1)))
	mustRecv(t, c.bob.rtp)
	mustNotRecv(t, stranger)
	mustNotRecv(t, c.alice.rtp)
	mustNotRecv(t, c.alice.rtcp)
	c.assertRefused(t, 6)
	if s := c.b.Stats(); s.Latched || s.RTPPacketsIn != 0 || s.Dropped != 6 {
		t.Errorf("leg b after the spray: %+v", s)
	}
	// Bob's first packet latches as before.
	c.talksThrough(t, c.bob.rtp, 2)
}

func TestPortRefusesStrangerOnSilentLeg(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22410, BridgeOptions{})
	c.talksThrough(t, c.bob.rtp, 1)

	// Bob goes on hold: no RTP from him for longer than a NAT rebinding
	// needs to be followed.
	testenv.Eventually(t, 3*time.Second, func() bool { return time.Since(c.b.Stats().LastRTP) > relatchAfter },
		"bob silent for %v", relatchAfter)
	stranger := listenUDP(t, strangerIP)
	c.spray(t, stranger, 5)
	if got := c.b.Remote(); got != addrOf(c.bob.rtp) {
		t.Fatalf("the stranger took the latch: %v", got)
	}
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 2, 320, 0xA11CE, false, voice('a', 2)))
	mustRecv(t, c.bob.rtp)
	mustNotRecv(t, stranger)
	mustNotRecv(t, c.alice.rtp)
	c.assertRefused(t, 6)

	// Bob resumes from where he was: both ways still work.
	c.talksThrough(t, c.bob.rtp, 3)
}

// A phone behind NAT: its SDP names its private address, its packets come
// from its registration's source IP on another port. That is taken (and
// followed when the binding changes); a stranger still is not.
func TestPortAcceptsPhoneBehindNAT(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22420, BridgeOptions{})
	c.b.SetRemote(netip.MustParseAddrPort("10.20.30.40:4000"))
	c.b.SetAllowedSources(addrOf(c.bob.rtp).Addr()) // the REGISTER came from bob's NAT
	nat := listenUDP(t, "127.0.0.3")
	c.talksThrough(t, nat, 1)
	if got := c.b.Remote(); got != addrOf(nat) {
		t.Fatalf("latched to %v, want %v", got, addrOf(nat))
	}

	// Bob falls silent: a stranger is still refused, a new NAT binding on
	// bob's IP is followed.
	testenv.Eventually(t, 3*time.Second, func() bool { return time.Since(c.b.Stats().LastRTP) > relatchAfter },
		"bob silent for %v", relatchAfter)
	stranger := listenUDP(t, strangerIP)
	c.spray(t, stranger, 3)
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 2, 320, 0xA11CE, false, voice('a', 2)))
	mustRecv(t, nat)
	mustNotRecv(t, stranger)
	c.assertRefused(t, 4)
	rebound := listenUDP(t, "127.0.0.3")
	c.talksThrough(t, rebound, 3)
	mustNotRecv(t, nat)
}

// With neither an SDP address nor an allowed IP a port takes nothing.
func TestPortWithoutSignallingTakesNothing(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22430, BridgeOptions{})
	c.b.SetRemote(netip.AddrPort{})
	c.b.SetRemoteRTCP(netip.AddrPort{})
	c.spray(t, c.bob.rtp, 2)
	c.assertRefused(t, 3)
	c.b.SetAllowedSources(netip.IPv4Unspecified(), netip.MustParseAddr("224.0.0.1"))
	c.spray(t, c.bob.rtp, 1)
	c.assertRefused(t, 5)
}
