package media

import (
	"errors"
	"testing"
)

// A detached relay leaves its ports open and free: the client's port goes
// on to a new relay with another party (a transfer), and what the client
// sends reaches the new party only.
func TestRelayDetachKeepsPortsForANewBridge(t *testing.T) {
	t.Parallel()
	pool := newTestPool(t, "127.0.0.1", 22700, 22709)
	a, b := allocatePair(t, pool)
	carolPort, err := pool.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	alice, bob, carol := newEndpoint(t, "127.0.0.2"), newEndpoint(t, "127.0.0.3"), newEndpoint(t, "127.0.0.4")
	a.SetRemote(addrOf(alice.rtp))
	b.SetRemote(addrOf(bob.rtp))
	carolPort.SetRemote(addrOf(carol.rtp))
	first, err := Bridge(a, b, BridgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stream(t, alice.rtp, a.LocalAddr(), 'a', 0xA11CE, 10)
	if got := collect(bob.rtp, 10); len(got) != 10 {
		t.Fatalf("bob got %d of 10 packets before the detach", len(got))
	}

	first.Detach()
	if !errors.Is(first.Err(), ErrDetached) {
		t.Fatalf("Err after Detach = %v", first.Err())
	}
	second, err := Bridge(a, carolPort, BridgeOptions{})
	if err != nil {
		t.Fatalf("the detached port can't be bridged again: %v", err)
	}
	t.Cleanup(second.Stop)
	t.Cleanup(func() { _ = b.Close() })
	stream(t, alice.rtp, a.LocalAddr(), 'a', 0xA11CE, 10)
	if got := collect(carol.rtp, 10); len(got) != 10 {
		t.Errorf("carol got %d of 10 packets after the transfer", len(got))
	}
	if pkt, _ := recv(bob.rtp, 200*1e6); pkt != nil {
		t.Error("bob still gets the client's media after the detach")
	}
	if st := a.Stats(); st.RTPPacketsIn != 20 || !st.Latched {
		t.Errorf("the client's port lost its counters or latch: %+v", st)
	}
	first.Stop() // a detached relay's Stop changes nothing
	if second.Err() != nil {
		t.Errorf("Stop of the detached relay ended the new one: %v", second.Err())
	}
}
