package media

import "encoding/binary"

// RTCP scrubbing (RFC 3550 §6). A compound packet is rebuilt from an
// allow-list, never copied through: SR and RR keep sender info and report
// blocks (profile extensions are cut off), SDES keeps only a CNAME that is
// replaced by the relay's token for that leg, BYE keeps its SSRC list without
// the reason text. APP, feedback, XR and unknown types may carry anything and
// are dropped. Any malformed packet drops the whole datagram.

const (
	rtcpHeaderLen   = 4
	rtcpSR          = 200
	rtcpRR          = 201
	rtcpSDES        = 202
	rtcpBYE         = 203
	rtcpSenderInfo  = 20 // NTP (8), RTP timestamp (4), packet and octet counts (8)
	rtcpReportBlock = 24
	sdesEnd         = 0
	sdesCNAME       = 1
)

// scrubRTCP writes the scrubbed form of the compound packet src into dst and
// returns its length; 0 means drop the datagram. cname is at most 255 bytes.
// dst and src must not overlap.
func scrubRTCP(dst, src, cname []byte) int {
	n := 0
	for off := 0; off < len(src); {
		h := src[off:]
		if len(h) < rtcpHeaderLen || h[0]>>6 != 2 {
			return 0
		}
		count, pt := int(h[0]&0x1f), h[1]
		plen := (int(binary.BigEndian.Uint16(h[2:])) + 1) * 4
		if plen > len(h) {
			return 0
		}
		body := h[rtcpHeaderLen:plen]
		off += plen

		w := 0
		switch pt {
		case rtcpSR:
			w = copyReport(dst[n:], pt, count, body, 4+rtcpSenderInfo)
		case rtcpRR:
			w = copyReport(dst[n:], pt, count, body, 4)
		case rtcpSDES:
			w = rewriteSDES(dst[n:], count, body, cname)
		case rtcpBYE:
			w = copyBYE(dst[n:], count, body)
		default:
			continue
		}
		if w < 0 {
			return 0
		}
		n += w
	}
	return n
}

// putRTCPHeader writes a header with P=0 for a packet of total bytes.
func putRTCPHeader(dst []byte, count int, pt byte, total int) {
	dst[0] = 2<<6 | byte(count)
	dst[1] = pt
	binary.BigEndian.PutUint16(dst[2:], uint16(total/4-1))
}

// copyReport copies an SR or RR: fixed part (sender SSRC, and sender info
// for SR) plus count report blocks. Returns -1 if malformed or out of room.
func copyReport(dst []byte, pt byte, count int, body []byte, fixed int) int {
	need := fixed + count*rtcpReportBlock
	total := rtcpHeaderLen + need
	if len(body) < need || len(dst) < total {
		return -1
	}
	putRTCPHeader(dst, count, pt, total)
	copy(dst[rtcpHeaderLen:], body[:need])
	return total
}

// copyBYE keeps the SSRC/CSRC list and drops the optional reason.
func copyBYE(dst []byte, count int, body []byte) int {
	need := 4 * count
	total := rtcpHeaderLen + need
	if len(body) < need || len(dst) < total {
		return -1
	}
	putRTCPHeader(dst, count, rtcpBYE, total)
	copy(dst[rtcpHeaderLen:], body[:need])
	return total
}

// rewriteSDES emits, for each chunk, its SSRC and a CNAME item holding our
// token; every other item (NAME, EMAIL, PHONE, LOC, TOOL, NOTE, PRIV and any
// unknown one) is dropped. An SDES with no chunks is left out (returns 0).
func rewriteSDES(dst []byte, count int, body []byte, cname []byte) int {
	if count == 0 {
		return 0
	}
	chunkLen := (4 + 2 + len(cname) + 1 + 3) &^ 3 // SSRC, CNAME item, end, pad
	total := rtcpHeaderLen + count*chunkLen
	if len(dst) < total {
		return -1
	}
	pos := 0
	w := rtcpHeaderLen
	for range count {
		if len(body)-pos < 4 {
			return -1
		}
		copy(dst[w:], body[pos:pos+4])
		pos += 4
		// Skip the items up to the end item, then to the 32-bit boundary.
		for {
			if pos >= len(body) {
				return -1
			}
			if body[pos] == sdesEnd {
				pos = min((pos+4)&^3, len(body))
				break
			}
			if pos+2 > len(body) {
				return -1
			}
			pos += 2 + int(body[pos+1])
		}
		c := dst[w+4 : w+chunkLen]
		c[0] = sdesCNAME
		c[1] = byte(len(cname))
		clear(c[2+copy(c[2:], cname):])
		w += chunkLen
	}
	putRTCPHeader(dst, count, rtcpSDES, total)
	return total
}
