package testenv

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Capture is a packet capture on the loopback interface (tcpdump), for
// tests that must see what crosses the wire: that signalling is encrypted,
// that no audio is decodable.
type Capture struct {
	t    testing.TB
	cmd  *exec.Cmd
	file string
	out  *SyncBuffer
	done chan struct{}
}

// CapturedPacket is one IPv4 UDP or TCP packet of a capture.
type CapturedPacket struct {
	Proto    string // "udp" or "tcp"
	Src, Dst netip.AddrPort
	Payload  []byte
}

// StartCapture captures loopback traffic matching a tcpdump filter (e.g.
// "host 127.0.0.22") until Stop.
func StartCapture(t testing.TB, filter string) *Capture {
	t.Helper()
	bin := Require(t, "tcpdump")
	c := &Capture{t: t, file: filepath.Join(t.TempDir(), "capture.pcap"), out: &SyncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, append([]string{"-i", "lo", "-n", "-U", "-s", "0", "-w", c.file}, strings.Fields(filter)...)...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	if !WaitFor(10*time.Second, func() bool { return strings.Contains(c.out.String(), "listening on") }) {
		t.Fatalf("tcpdump did not start: %s", c.out.String())
	}
	return c
}

// Stop ends the capture and returns its UDP and TCP packets.
func (c *Capture) Stop() []CapturedPacket {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("tcpdump did not stop: %s", c.out.String())
	}
	raw, err := os.ReadFile(c.file)
	if err != nil {
		c.t.Fatal(err)
	}
	pkts, err := parsePcap(raw)
	if err != nil {
		c.t.Fatalf("capture: %v", err)
	}
	return pkts
}

// parsePcap reads a classic pcap file of Ethernet (Linux loopback) frames.
func parsePcap(raw []byte) ([]CapturedPacket, error) {
	if len(raw) < 24 {
		return nil, fmt.Errorf("short pcap file")
	}
	var order binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(raw) {
	case 0xa1b2c3d4, 0xa1b23c4d:
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("not a pcap file")
	}
	if link := order.Uint32(raw[20:]); link != 1 {
		return nil, fmt.Errorf("link type %d, want Ethernet", link)
	}
	var pkts []CapturedPacket
	for p := 24; p+16 <= len(raw); {
		n := int(order.Uint32(raw[p+8:]))
		p += 16
		if p+n > len(raw) {
			break
		}
		if pkt, ok := parseFrame(raw[p : p+n]); ok {
			pkts = append(pkts, pkt)
		}
		p += n
	}
	return pkts, nil
}

func parseFrame(f []byte) (CapturedPacket, bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return CapturedPacket{}, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < 20 || total > len(ip) || total < ihl {
		return CapturedPacket{}, false
	}
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	l4 := ip[ihl:total]
	var pkt CapturedPacket
	switch ip[9] {
	case 17:
		if len(l4) < 8 {
			return pkt, false
		}
		pkt = CapturedPacket{Proto: "udp", Payload: l4[8:]}
	case 6:
		if len(l4) < 20 || int(l4[12]>>4)*4 > len(l4) {
			return pkt, false
		}
		pkt = CapturedPacket{Proto: "tcp", Payload: l4[int(l4[12]>>4)*4:]}
	default:
		return pkt, false
	}
	pkt.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	pkt.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return pkt, true
}
