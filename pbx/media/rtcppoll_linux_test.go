//go:build linux

package media

import (
	"testing"
	"time"
)

// watching reports whether the poller holds any socket of r.
func watching(r *Relay) bool {
	p := sharedPoller()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, src := range p.watched {
		if src.relay == r {
			return true
		}
	}
	return false
}

func TestRTCPPollerForgetsEndedRelays(t *testing.T) {
	t.Parallel()
	for name, end := range map[string]func(c *call){
		"stopped":                     func(c *call) { c.relay.Stop() },
		"port closed by call control": func(c *call) { c.b.Close(); waitDone(t, c.relay, time.Second) },
	} {
		t.Run(name, func(t *testing.T) {
			min := 22160
			if name == "stopped" {
				min = 22170
			}
			c := newCall(t, min, BridgeOptions{})
			if !watching(c.relay) {
				t.Fatal("RTCP sockets not handed to the poller")
			}
			send(t, c.alice.rtcp, c.aRTCP(), rrPacket(0xA11CE, 0, nil))
			mustRecv(t, c.bob.rtcp)
			end(c)
			if watching(c.relay) {
				t.Fatal("the poller still holds an ended relay")
			}
		})
	}
}
