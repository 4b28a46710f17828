package media

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// The PBX's own end of a leg takes packets by the relay's rules: only the
// signalled IPs, the latched source while it is active, no RTCP-range
// payload types, header extras cut; it sends to the latched source. It
// holds the port against Bridge until Release, and Release hands it back
// as it was.
func TestEndpointKeepsTheRelayRules(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 22600, 22603)
	a, b := allocatePair(t, pool)
	t.Cleanup(func() { a.Close(); b.Close() })
	peer, natPort, stranger := newEndpoint(t, "127.0.0.2"), newEndpoint(t, "127.0.0.2"), newEndpoint(t, "127.0.0.9")
	a.SetRemote(addrOf(peer.rtp))

	ep, err := a.OpenEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.OpenEndpoint(); !errors.Is(err, ErrBadLeg) {
		t.Fatalf("a second endpoint: %v", err)
	}
	if _, err := Bridge(a, b, BridgeOptions{}); !errors.Is(err, ErrBadLeg) {
		t.Fatalf("Bridge of a held port: %v", err)
	}

	buf := make([]byte, maxPacket)
	var pkt rtp.Packet
	read := func() (*rtp.Packet, error) {
		_ = ep.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		err := ep.ReadRTP(buf, &pkt)
		return &pkt, err
	}
	send(t, stranger.rtp, a.LocalAddr(), rtpBytes(t, 0, 1, 160, 0x5, false, voice('s', 1)))
	send(t, peer.rtp, a.LocalAddr(), rtpBytes(t, 72, 2, 320, 0x7, false, voice('p', 2))) // RTCP SR type
	withExt := rtpBytes(t, 0, 3, 480, 0x7, true, voice('p', 3))
	withExt[0] |= 0x01 // one CSRC: the payload starts 4 bytes later
	send(t, peer.rtp, a.LocalAddr(), withExt)
	p, err := read()
	if err != nil {
		t.Fatalf("the peer's packet: %v", err)
	}
	if p.SequenceNumber != 3 || len(p.CSRC) != 0 || len(p.Payload) != 156 {
		t.Fatalf("read %+v with %d bytes", p.Header, len(p.Payload))
	}
	// Another port of the peer's IP while its latch is active is refused;
	// the peer itself is heard.
	send(t, natPort.rtp, a.LocalAddr(), rtpBytes(t, 0, 4, 640, 0x8, false, voice('n', 4)))
	send(t, peer.rtp, a.LocalAddr(), rtpBytes(t, 0, 5, 800, 0x7, false, voice('p', 5)))
	if p, err = read(); err != nil || p.SequenceNumber != 5 {
		t.Fatalf("after a second port of the peer's IP: seq %d, %v", p.SequenceNumber, err)
	}
	if _, err = read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("with nothing sent: %v", err)
	}
	st := a.Stats()
	if st.RTPPacketsIn != 2 || st.Refused != 2 || st.Dropped != 3 || !st.Latched {
		t.Fatalf("stats %+v", st)
	}

	if err := ep.WriteRTP(rtpBytes(t, 0, 9, 0, 0x1, true, voice('x', 9))); err != nil {
		t.Fatal(err)
	}
	if got := mustRecv(t, peer.rtp); len(got) != 12+160 {
		t.Fatalf("the peer got %d bytes", len(got))
	}
	mustNotRecv(t, natPort.rtp)

	ep.Release()
	ep.Release() // a second Release must not free a port a relay took since
	relay, err := Bridge(a, b, BridgeOptions{})
	if err != nil {
		t.Fatalf("Bridge after Release: %v", err)
	}
	ep.Release()
	if _, err := a.OpenEndpoint(); !errors.Is(err, ErrBadLeg) {
		t.Fatalf("an endpoint on a bridged port: %v", err)
	}
	// The relay reads with no deadline left over and keeps the latch.
	other := newEndpoint(t, "127.0.0.3")
	b.SetRemote(addrOf(other.rtp))
	send(t, peer.rtp, a.LocalAddr(), rtpBytes(t, 0, 10, 960, 0x7, false, voice('p', 10)))
	mustRecv(t, other.rtp)
	if st := relay.Stats(SideA); st.RTPPacketsIn != 3 || st.Refused != 2 {
		t.Fatalf("relay stats after the endpoint: %+v", st)
	}
	relay.Stop()
	if _, err := a.OpenEndpoint(); !errors.Is(err, ErrBadLeg) {
		t.Fatalf("an endpoint on a closed port: %v", err)
	}
}
