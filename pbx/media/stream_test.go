package media

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/pion/rtp"
)

// RTP header fields as a covert channel (issue 11, finding 8): a trunk (A,
// alice here) puts data in CSRC lists and padding and sends under an SSRC
// of its own; none of it may reach the manager's phone (B, bob), whose
// stream must still play: payload, payload type, marker, sequence numbers
// and timestamps intact.

const trunkSSRC = 0x7A11C0DE

var covert = []byte("+79161234567 secret")

// coverRTP is an RTP packet carrying covert data in 15 CSRCs and 200 bytes
// of padding around a voice payload.
func coverRTP(tb testing.TB, ssrc uint32, seq uint16, ts uint32, marker bool, payload []byte) []byte {
	tb.Helper()
	h := rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc, Marker: marker}
	for i := range 15 {
		h.CSRC = append(h.CSRC, binary.BigEndian.Uint32(covert[i%4*4:]))
	}
	b, err := h.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	b = append(b, payload...)
	pad := bytes.Repeat(covert, 11)[:199]
	b = append(append(b, pad...), 200)
	b[0] |= 0x20
	return b
}

// cleanRTP parses what arrived and checks it carries nothing but a fixed
// header and the payload.
func cleanRTP(tb testing.TB, got []byte, payload []byte) rtp.Packet {
	tb.Helper()
	var p rtp.Packet
	if err := p.Unmarshal(got); err != nil {
		tb.Fatal(err)
	}
	if got[0] != 0x80 || len(got) != rtpHeaderLen+len(payload) || !bytes.Equal(p.Payload, payload) {
		tb.Fatalf("packet not cut to header and payload: % x", got[:min(len(got), 40)])
	}
	if bytes.Contains(got, covert[:4]) || bytes.Contains(got, covert[4:8]) {
		tb.Fatal("covert data relayed")
	}
	return p
}

func TestRelayRewritesRTPHeader(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22440, BridgeOptions{})
	var ssrc uint32
	var seq uint16
	var ts uint32
	for i := range 20 {
		payload := voice('a', i)
		send(t, c.alice.rtp, c.aRTP(), coverRTP(t, trunkSSRC, uint16(65530+i), uint32(4e9)+uint32(160*i), i == 0, payload))
		p := cleanRTP(t, mustRecv(t, c.bob.rtp), payload)
		if i == 0 {
			ssrc = p.SSRC
		}
		seq, ts = uint16(65530+i), uint32(4e9)+uint32(160*i)
		if p.SSRC == trunkSSRC || p.SSRC != ssrc || p.SequenceNumber != seq || p.Timestamp != ts ||
			p.Marker != (i == 0) || p.PayloadType != 8 {
			t.Fatalf("packet %d at bob: %v", i, p.Header)
		}
	}

	// The trunk switches media servers: a new SSRC, sequence and clock. Bob
	// sees his stream go on under the same SSRC, with a talkspurt marker.
	for i := range 3 {
		payload := voice('a', 100+i)
		send(t, c.alice.rtp, c.aRTP(), coverRTP(t, 0x5EC0, uint16(7+i), uint32(123456+160*i), false, payload))
		p := cleanRTP(t, mustRecv(t, c.bob.rtp), payload)
		if p.SSRC != ssrc || p.SequenceNumber != seq+1 || int32(p.Timestamp-ts) <= 0 || p.Marker != (i == 0) {
			t.Fatalf("packet %d after the switch: %v (last seq %d ts %d)", i, p.Header, seq, ts)
		}
		if i > 0 && p.Timestamp-ts != 160 {
			t.Errorf("timestamp step %d, want 160", p.Timestamp-ts)
		}
		seq, ts = p.SequenceNumber, p.Timestamp
	}

	// Bob's own stream reaches alice under another SSRC of the relay's.
	send(t, c.bob.rtp, c.bRTP(), coverRTP(t, 0xB0B, 1, 160, true, voice('b', 1)))
	if p := cleanRTP(t, mustRecv(t, c.alice.rtp), voice('b', 1)); p.SSRC == 0xB0B || p.SSRC == ssrc {
		t.Fatalf("bob's SSRC at alice: %#x (relay's for alice's media %#x)", p.SSRC, ssrc)
	}
}

// RTCP speaks of the streams as each peer sees them: a report bob makes on
// the relay's stream reaches alice as a report on her own, an SR's RTP
// timestamp follows the stream's offset.
func TestRelayRewritesRTCPToMatch(t *testing.T) {
	t.Parallel()
	c := newCall(t, 22450, BridgeOptions{})
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 100, 16000, trunkSSRC, true, voice('a', 0)))
	mustRecv(t, c.bob.rtp)
	send(t, c.bob.rtp, c.bRTP(), rtpBytes(t, 0, 1, 0, 0xB0B, true, voice('b', 0)))
	mustRecv(t, c.alice.rtp)

	// bob's RR: one block about alice's media as he got it, one about a
	// stream nobody sent (data smuggled in a block).
	report := func(ssrc uint32, highest uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, ssrc)
		b = append(b, 0, 0, 0, 1)
		b = binary.BigEndian.AppendUint32(b, highest)
		return append(b, make([]byte, 12)...)
	}
	rr := func(blocks ...[]byte) []byte {
		return rtcpPacket(len(blocks), rtcpRR, append(binary.BigEndian.AppendUint32(nil, 0xB0B), bytes.Join(blocks, nil)...))
	}
	send(t, c.bob.rtcp, c.bRTCP(), rr(report(c.ssrc(SideA), 100), report(0xC0DE, 7)))
	if got, want := mustRecv(t, c.alice.rtcp), rtcpPacket(1, rtcpRR, append(binary.BigEndian.AppendUint32(nil, c.ssrc(SideB)), report(trunkSSRC, 100)...)); !bytes.Equal(got, want) {
		t.Fatalf("RR at alice:\n got % x\nwant % x", got, want)
	}

	// The trunk's SSRC changes: 40 becomes 101 at bob, whose reports on
	// 101 are reports on 40 to alice; her SR's timestamp moves as her RTP.
	send(t, c.alice.rtp, c.aRTP(), rtpBytes(t, 0, 40, 1000, 0x5EC0, false, voice('a', 1)))
	var p rtp.Packet
	if err := p.Unmarshal(mustRecv(t, c.bob.rtp)); err != nil || p.SequenceNumber != 101 {
		t.Fatalf("after the switch: %v %v", p.Header, err)
	}
	send(t, c.bob.rtcp, c.bRTCP(), rr(report(c.ssrc(SideA), 1<<16|101)))
	if got, want := mustRecv(t, c.alice.rtcp), rtcpPacket(1, rtcpRR, append(binary.BigEndian.AppendUint32(nil, c.ssrc(SideB)), report(0x5EC0, 1<<16|40)...)); !bytes.Equal(got, want) {
		t.Fatalf("RR at alice after the switch:\n got % x\nwant % x", got, want)
	}
	sr := srPacket(0x5EC0, 0, nil)
	binary.BigEndian.PutUint32(sr[4+4+8:], 1000) // the RTP time of the NTP time
	send(t, c.alice.rtcp, c.aRTCP(), sr)
	got := mustRecv(t, c.bob.rtcp)
	if len(got) != len(sr) || binary.BigEndian.Uint32(got[4:]) != c.ssrc(SideA) || binary.BigEndian.Uint32(got[16:]) != p.Timestamp {
		t.Fatalf("SR at bob: % x (RTP timestamp %d expected)", got, p.Timestamp)
	}
}

// A secure leg gets the cleaned packet, sealed: the relay rewrites before
// it encrypts.
func TestSRTPRelayRewritesRTPHeader(t *testing.T) {
	t.Parallel()
	c, alice, _ := secureCall(t, 22460, SuiteAES128SHA1_80, BridgeOptions{})
	var ssrc uint32
	for i := range 3 {
		send(t, c.bob.rtp, c.bRTP(), coverRTP(t, 0xB0B, uint16(i), uint32(160*i), false, voice('b', i)))
		opened, err := alice.rx.DecryptRTP(nil, mustRecv(t, c.alice.rtp), nil)
		if err != nil {
			t.Fatalf("alice cannot open packet %d: %v", i, err)
		}
		p := cleanRTP(t, opened, voice('b', i))
		if i == 0 {
			ssrc = p.SSRC
		}
		if p.SSRC == 0xB0B || p.SSRC != ssrc || p.SequenceNumber != uint16(i) {
			t.Fatalf("packet %d at alice: %v", i, p.Header)
		}
	}
}
