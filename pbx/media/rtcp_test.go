package media

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// SDES item types (RFC 3550 §6.5).
const (
	sdesName  = 2
	sdesEmail = 3
	sdesPhone = 4
	sdesLoc   = 5
	sdesTool  = 6
	sdesNote  = 7
	sdesPriv  = 8
)

type sdesItem struct {
	typ  byte
	text string
}

type sdesChunk struct {
	ssrc  uint32
	items []sdesItem
}

// rtcpPacket frames body as one RTCP packet, padding it to 32 bits.
func rtcpPacket(count int, pt byte, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	b := make([]byte, 4, 4+len(body))
	putRTCPHeader(b, count, pt, 4+len(body))
	return append(b, body...)
}

func srPacket(ssrc uint32, reports int, ext []byte) []byte {
	body := binary.BigEndian.AppendUint32(nil, ssrc)
	for i := range rtcpSenderInfo {
		body = append(body, byte(0xA0+i))
	}
	for r := range reports {
		body = binary.BigEndian.AppendUint32(body, 0x5000+uint32(r))
		body = append(body, bytes.Repeat([]byte{byte(r + 1)}, rtcpReportBlock-4)...)
	}
	return rtcpPacket(reports, rtcpSR, append(body, ext...))
}

func rrPacket(ssrc uint32, reports int, ext []byte) []byte {
	body := binary.BigEndian.AppendUint32(nil, ssrc)
	for r := range reports {
		body = binary.BigEndian.AppendUint32(body, 0x6000+uint32(r))
		body = append(body, bytes.Repeat([]byte{byte(r + 7)}, rtcpReportBlock-4)...)
	}
	return rtcpPacket(reports, rtcpRR, append(body, ext...))
}

func sdesPacket(chunks ...sdesChunk) []byte {
	var body []byte
	for _, c := range chunks {
		body = binary.BigEndian.AppendUint32(body, c.ssrc)
		for _, it := range c.items {
			body = append(body, it.typ, byte(len(it.text)))
			body = append(body, it.text...)
		}
		body = append(body, sdesEnd)
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
	}
	return rtcpPacket(len(chunks), rtcpSDES, body)
}

func byePacket(reason string, ssrcs ...uint32) []byte {
	var body []byte
	for _, s := range ssrcs {
		body = binary.BigEndian.AppendUint32(body, s)
	}
	if reason != "" {
		body = append(body, byte(len(reason)))
		body = append(body, reason...)
	}
	return rtcpPacket(len(ssrcs), rtcpBYE, body)
}

func appPacket(name, data string) []byte {
	body := binary.BigEndian.AppendUint32(nil, 0x1234)
	body = append(body, name...)
	return rtcpPacket(0, 204, append(body, data...))
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

type parsedRTCP struct {
	pt     byte
	count  int
	body   []byte
	chunks []sdesChunk
}

// parseCompound is an independent reading of RTCP used to check the
// scrubber's output; it is strict where the scrubber must be.
func parseCompound(b []byte) ([]parsedRTCP, error) {
	var out []parsedRTCP
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("short header")
		}
		if b[0]>>6 != 2 || b[0]&0x20 != 0 {
			return nil, fmt.Errorf("bad V/P in %#x", b[0])
		}
		plen := (int(binary.BigEndian.Uint16(b[2:])) + 1) * 4
		if plen > len(b) {
			return nil, fmt.Errorf("length %d > %d", plen, len(b))
		}
		p := parsedRTCP{pt: b[1], count: int(b[0] & 0x1f), body: b[4:plen]}
		if p.pt == rtcpSDES {
			pos := 0
			for range p.count {
				if pos+4 > len(p.body) {
					return nil, fmt.Errorf("short chunk")
				}
				c := sdesChunk{ssrc: binary.BigEndian.Uint32(p.body[pos:])}
				pos += 4
				for p.body[pos] != sdesEnd {
					l := int(p.body[pos+1])
					c.items = append(c.items, sdesItem{p.body[pos], string(p.body[pos+2 : pos+2+l])})
					pos += 2 + l
				}
				pos = (pos + 4) &^ 3
				p.chunks = append(p.chunks, c)
			}
			if pos != len(p.body) {
				return nil, fmt.Errorf("SDES has %d trailing bytes", len(p.body)-pos)
			}
		}
		out = append(out, p)
		b = b[plen:]
	}
	return out, nil
}

var testCNAME = []byte("0123456789abcdef01234567")

func scrub(in []byte) []byte {
	dst := make([]byte, maxPacket)
	return dst[:scrubRTCP(dst, in, testCNAME)]
}

func TestScrubRTCP(t *testing.T) {
	identity := []sdesItem{
		{sdesCNAME, "alice@10.1.2.3"},
		{sdesName, "Alice Ivanova"},
		{sdesEmail, "alice@example.com"},
		{sdesPhone, "+79161234567"},
		{sdesLoc, "Moscow"},
		{sdesTool, "Acme Phone 1.2"},
		{sdesNote, "on a call with +79161234567"},
		{sdesPriv, "\x03x-yalice"},
	}
	tests := []struct {
		name string
		in   []byte
		want []byte // nil: dropped
	}{
		{"SR alone passes", srPacket(1, 2, nil), srPacket(1, 2, nil)},
		{"RR alone passes", rrPacket(1, 1, nil), rrPacket(1, 1, nil)},
		{
			"SR+SDES: CNAME replaced, other items removed",
			join(srPacket(1, 1, nil), sdesPacket(sdesChunk{1, identity})),
			join(srPacket(1, 1, nil), sdesPacket(sdesChunk{1, []sdesItem{{sdesCNAME, string(testCNAME)}}})),
		},
		{
			"every chunk gets the token, even one without CNAME",
			join(rrPacket(1, 0, nil), sdesPacket(sdesChunk{1, identity[:1]}, sdesChunk{2, identity[3:4]}, sdesChunk{3, nil})),
			join(rrPacket(1, 0, nil), sdesPacket(
				sdesChunk{1, []sdesItem{{sdesCNAME, string(testCNAME)}}},
				sdesChunk{2, []sdesItem{{sdesCNAME, string(testCNAME)}}},
				sdesChunk{3, []sdesItem{{sdesCNAME, string(testCNAME)}}},
			)),
		},
		{
			"profile extensions cut from SR and RR",
			join(srPacket(1, 1, []byte("alice@10.1.2.3..")), rrPacket(2, 0, []byte("+79161234567"))),
			join(srPacket(1, 1, nil), rrPacket(2, 0, nil)),
		},
		{
			"BYE reason stripped",
			join(rrPacket(1, 0, nil), byePacket("alice@10.1.2.3 hung up", 1, 2)),
			join(rrPacket(1, 0, nil), byePacket("", 1, 2)),
		},
		{
			"APP and unknown types dropped",
			join(rrPacket(1, 0, nil), appPacket("acme", "+79161234567"), rtcpPacket(0, 207, []byte("xr-alice"))),
			rrPacket(1, 0, nil),
		},
		{"only APP: nothing left", appPacket("acme", "x"), nil},
		{"SDES without chunks left out", join(rrPacket(1, 0, nil), rtcpPacket(0, rtcpSDES, nil)), rrPacket(1, 0, nil)},
		{"padding bit and padding ignored", func() []byte {
			b := rtcpPacket(0, rtcpRR, []byte{0, 0, 0, 1, 0, 0, 0, 4})
			b[0] |= 0x20
			return b
		}(), rrPacket(1, 0, nil)},

		{"empty", nil, nil},
		{"short header", []byte{0x80, 200}, nil},
		{"version 0", func() []byte { b := srPacket(1, 0, nil); b[0] &^= 0xc0; return b }(), nil},
		{"length past end", func() []byte { b := srPacket(1, 0, nil); b[3] += 5; return b }(), nil},
		{"SR shorter than its report count", func() []byte { b := srPacket(1, 0, nil); b[0] |= 3; return b }(), nil},
		{"BYE count past end", func() []byte { b := byePacket("", 1); b[0] |= 9; return b }(), nil},
		{"SDES item past end", rtcpPacket(1, rtcpSDES, []byte{0, 0, 0, 1, sdesCNAME, 200, 'a', 'b'}), nil},
		{"SDES chunk count past end", rtcpPacket(4, rtcpSDES, []byte{0, 0, 0, 1, 0, 0, 0, 0}), nil},
		{"SDES without end item", rtcpPacket(1, rtcpSDES, []byte{0, 0, 0, 1, sdesCNAME, 2, 'a', 'b'}), nil},
		{"good SR then junk", join(srPacket(1, 0, nil), []byte{1, 2, 3}), nil},
		{"RTP, not RTCP", []byte{0x80, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 0xff, 0xff}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scrub(tt.in)
			if tt.want == nil {
				if len(got) != 0 {
					t.Fatalf("want drop, got % x", got)
				}
				return
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
			for _, secret := range []string{"alice", "10.1.2.3", "+79161234567", "Acme", "Moscow"} {
				if bytes.Contains(got, []byte(secret)) {
					t.Errorf("output contains %q", secret)
				}
			}
		})
	}
}

func TestScrubRTCPOutOfRoom(t *testing.T) {
	// 31 chunks of 8 bytes become 31 chunks of 32 bytes: more than a small
	// buffer holds. The datagram is dropped, not written past the end.
	chunks := make([]sdesChunk, 31)
	in := join(rrPacket(1, 0, nil), sdesPacket(chunks...))
	dst := make([]byte, len(in))
	if n := scrubRTCP(dst, in, testCNAME); n != 0 {
		t.Fatalf("n = %d, want 0", n)
	}
	if got := scrub(in); len(got) != 8+4+31*32 {
		t.Fatalf("full buffer: got %d bytes", len(got))
	}
}

func FuzzRTCPScrub(f *testing.F) {
	f.Add(join(srPacket(1, 1, nil), sdesPacket(sdesChunk{1, []sdesItem{{sdesCNAME, "alice@10.1.2.3"}, {sdesPhone, "+79161234567"}}})))
	f.Add(join(rrPacket(1, 2, []byte("ext!")), byePacket("gone", 1, 2, 3)))
	f.Add(join(rrPacket(1, 0, nil), appPacket("acme", "data"), sdesPacket(sdesChunk{9, nil}, sdesChunk{8, nil})))
	f.Add([]byte{0x81, 202, 0, 1, 0, 0, 0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		dst := make([]byte, maxPacket)
		n := scrubRTCP(dst, in, testCNAME)
		if n < 0 || n > len(dst) {
			t.Fatalf("n = %d", n)
		}
		pkts, err := parseCompound(dst[:n])
		if err != nil {
			t.Fatalf("output is not valid RTCP: %v\n% x", err, dst[:n])
		}
		for _, p := range pkts {
			switch p.pt {
			case rtcpSR, rtcpRR:
			case rtcpBYE:
				if len(p.body) != 4*p.count {
					t.Fatalf("BYE kept %d bytes beyond its SSRCs", len(p.body)-4*p.count)
				}
			case rtcpSDES:
				for _, c := range p.chunks {
					if len(c.items) != 1 || c.items[0].typ != sdesCNAME || c.items[0].text != string(testCNAME) {
						t.Fatalf("SDES chunk kept %+v", c.items)
					}
				}
			default:
				t.Fatalf("packet type %d passed", p.pt)
			}
		}
		// Scrubbing is idempotent: our own output passes unchanged.
		if n > 0 {
			again := make([]byte, maxPacket)
			if m := scrubRTCP(again, dst[:n], testCNAME); !bytes.Equal(again[:m], dst[:n]) {
				t.Fatalf("not idempotent:\n% x\n% x", dst[:n], again[:m])
			}
		}
		// Rewriting the SSRCs keeps it valid RTCP, never longer, and leaves
		// no report block but those about the reported stream.
		ids := rtcpIDs{sender: 0x51, tsOff: 7, reported: 0x5000, source: 0xA11CE, seqOff: 3, known: true}
		m := rewriteRTCP(dst[:n], &ids)
		pkts, err = parseCompound(dst[:m])
		if m > n || err != nil {
			t.Fatalf("rewritten %d of %d bytes: %v\n% x", m, n, err, dst[:m])
		}
		for _, p := range pkts {
			if (p.pt == rtcpSR || p.pt == rtcpRR) && binary.BigEndian.Uint32(p.body) != ids.sender {
				t.Fatalf("sender SSRC not rewritten: % x", p.body)
			}
		}
	})
}
