package testenv

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/maskpbx/maskpbx/internal/audio"
)

// RTPEndpoint is a test's own RTP peer: it sends a PCMU tone and counts the
// valid RTP packets that reach it.
type RTPEndpoint struct {
	conn     *net.UDPConn
	rtcp     *net.UDPConn // RTP port + 1
	rtcpIn   [][]byte
	received atomic.Int64
	mu       sync.Mutex
	sources  map[string]bool
	payloads [][]byte
}

// NewRTPEndpoint listens on addr ("127.0.0.5:40000").
func NewRTPEndpoint(t testing.TB, addr string) *RTPEndpoint {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatalf("rtp endpoint %s: %v", addr, err)
	}
	ua.Port++
	rtcp, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatalf("rtcp endpoint %s: %v", ua, err)
	}
	e := &RTPEndpoint{conn: conn, rtcp: rtcp, sources: map[string]bool{}}
	t.Cleanup(func() { conn.Close(); rtcp.Close() })
	go e.read()
	go e.readRTCP()
	return e
}

func (e *RTPEndpoint) readRTCP() {
	buf := make([]byte, 1500)
	for {
		n, err := e.rtcp.Read(buf)
		if err != nil {
			return
		}
		e.mu.Lock()
		e.rtcpIn = append(e.rtcpIn, append([]byte(nil), buf[:n]...))
		e.mu.Unlock()
	}
}

// RTCP returns the RTCP datagrams received on RTP port + 1.
func (e *RTPEndpoint) RTCP() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.rtcpIn...)
}

// SendRTCP sends a compound RTCP packet (an SR and an SDES chunk carrying
// cname and phone) from RTP port + 1 to dst.
func (e *RTPEndpoint) SendRTCP(dst netip.AddrPort, cname, phone string) error {
	ssrc := []byte{0x11, 0x22, 0x33, 0x44}
	sr := append([]byte{0x80, 200, 0, 6}, ssrc...)
	sr = append(sr, make([]byte, 20)...)
	items := []byte{1, byte(len(cname))}
	items = append(items, cname...)
	items = append(items, 4, byte(len(phone)))
	items = append(items, phone...)
	items = append(items, 0)
	for (len(items)+4)%4 != 0 {
		items = append(items, 0)
	}
	chunk := append(append([]byte(nil), ssrc...), items...)
	sdes := []byte{0x81, 202, 0, byte(len(chunk) / 4)}
	sdes = append(sdes, chunk...)
	_, err := e.rtcp.WriteToUDP(append(sr, sdes...), net.UDPAddrFromAddrPort(dst))
	return err
}

func (e *RTPEndpoint) read() {
	buf := make([]byte, 1500)
	for {
		n, from, err := e.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		var p rtp.Packet
		if p.Unmarshal(buf[:n]) != nil {
			continue
		}
		e.received.Add(1)
		e.mu.Lock()
		e.sources[from.String()] = true
		if len(e.payloads) < 1000 {
			e.payloads = append(e.payloads, append([]byte(nil), p.Payload...))
		}
		e.mu.Unlock()
	}
}

// Received is the number of RTP packets that arrived.
func (e *RTPEndpoint) Received() int { return int(e.received.Load()) }

// Payloads returns copies of the first payloads received.
func (e *RTPEndpoint) Payloads() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.payloads...)
}

// Send sends n 20 ms PCMU packets of a freq Hz tone to dst, paced in real
// time.
func (e *RTPEndpoint) Send(dst netip.AddrPort, n int, freq float64) error {
	return e.sendPCMU(dst, n, func(i int, payload []byte) { audio.Tone(payload, audio.LinearToULaw, freq, i*160) })
}

// sendPCMU sends n 20 ms PCMU packets to dst, paced in real time; fill
// writes the i-th packet's payload.
func (e *RTPEndpoint) sendPCMU(dst netip.AddrPort, n int, fill func(i int, payload []byte)) error {
	to := net.UDPAddrFromAddrPort(dst)
	ssrc := uint32(time.Now().UnixNano())
	for i := 0; i < n; i++ {
		payload := make([]byte, 160)
		fill(i, payload)
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i),
			Timestamp: uint32(i * 160), SSRC: ssrc, Marker: i == 0}, Payload: payload}
		raw, _ := p.Marshal()
		if _, err := e.conn.WriteToUDP(raw, to); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// dtmfEvent is the RFC 4733 event code of a key.
func dtmfEvent(digit rune) uint8 {
	switch {
	case digit >= '0' && digit <= '9':
		return uint8(digit - '0')
	case digit == '*':
		return 10
	case digit == '#':
		return 11
	}
	return 0
}

// SendDTMF sends a key as an RFC 4733 telephone-event (payload type pt) to
// dst: 100 ms of event packets, the last three with the end bit, paced in
// real time.
func (e *RTPEndpoint) SendDTMF(dst netip.AddrPort, digit rune, pt uint8) error {
	to := net.UDPAddrFromAddrPort(dst)
	ssrc, ts := uint32(time.Now().UnixNano()), uint32(time.Now().UnixNano()>>10)
	seq := uint16(ts)
	for i := range 8 {
		end := i >= 5
		dur := uint16(min(i+1, 5) * 160)
		flags := byte(10) // volume -10 dBm0
		if end {
			flags |= 0x80
		}
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq + uint16(i),
			Timestamp: ts, SSRC: ssrc, Marker: i == 0},
			Payload: []byte{dtmfEvent(digit), flags, byte(dur >> 8), byte(dur)}}
		raw, _ := p.Marshal()
		if _, err := e.conn.WriteToUDP(raw, to); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// dtmfFreqs are a key's row and column tones (Hz).
func dtmfFreqs(digit rune) (low, high float64) {
	const keys = "123A456B789C*0#D"
	rows := [4]float64{697, 770, 852, 941}
	cols := [4]float64{1209, 1336, 1477, 1633}
	for i, k := range keys {
		if k == digit {
			return rows[i/4], cols[i%4]
		}
	}
	return 0, 0
}

// SendDTMFTone sends a key in the audio, as a trunk that passes DTMF
// in-band does: 120 ms of its two tones in PCMU, then 100 ms of silence,
// paced in real time.
func (e *RTPEndpoint) SendDTMFTone(dst netip.AddrPort, digit rune) error {
	low, high := dtmfFreqs(digit)
	return e.sendPCMU(dst, 11, func(i int, payload []byte) {
		for k := range payload {
			v := 0.0
			if i < 6 {
				t := float64(i*160+k) / audio.SampleRate
				v = 7000 * (math.Sin(2*math.Pi*low*t) + math.Sin(2*math.Pi*high*t))
			}
			payload[k] = audio.LinearToULaw(int16(v))
		}
	})
}
