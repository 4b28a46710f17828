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

// rtcpIDs are what RTCP from one side is rewritten with so that it speaks
// of the streams the other side sees (stream.go): the relay's SSRCs and
// the offsets of its RTP.
type rtcpIDs struct {
	// sender is the relay's SSRC for the sender's media: it replaces the
	// SSRC of SR/RR, SDES chunks and BYE. tsOff is added to an SR's RTP
	// timestamp, as to that media's.
	sender, tsOff uint32
	// reported is the relay's SSRC for the media the sender receives; a
	// report block about it is about the receiver's own stream and gets
	// that stream's source SSRC, with seqOff taken off its highest
	// sequence number. Report blocks about anything else, or made before
	// the receiver's RTP has arrived (known false), are dropped.
	reported, source uint32
	seqOff           uint16
	known            bool
}

// rewriteRTCP rewrites the SSRCs, SR timestamp and report blocks of b, a
// compound packet as scrubRTCP writes it (SR, RR, SDES, BYE, well formed),
// in place and returns its new length.
func rewriteRTCP(b []byte, ids *rtcpIDs) int {
	w := 0
	for off := 0; off+rtcpHeaderLen <= len(b); {
		count, pt := int(b[off]&0x1f), b[off+1]
		plen := (int(binary.BigEndian.Uint16(b[off+2:])) + 1) * 4
		if off+plen > len(b) {
			return 0
		}
		p := b[w : w+plen]
		copy(p, b[off:off+plen]) // w <= off: moves back over dropped blocks
		off += plen
		switch pt {
		case rtcpSR, rtcpRR:
			binary.BigEndian.PutUint32(p[rtcpHeaderLen:], ids.sender)
			fixed := rtcpHeaderLen + 4
			if pt == rtcpSR {
				ts := p[fixed+8:]
				binary.BigEndian.PutUint32(ts, binary.BigEndian.Uint32(ts)+ids.tsOff)
				fixed += rtcpSenderInfo
			}
			kept := 0
			for i := range count {
				blk := p[fixed+i*rtcpReportBlock : fixed+(i+1)*rtcpReportBlock]
				if !ids.known || binary.BigEndian.Uint32(blk) != ids.reported {
					continue
				}
				binary.BigEndian.PutUint32(blk, ids.source)
				highest := binary.BigEndian.Uint32(blk[8:])
				binary.BigEndian.PutUint32(blk[8:], highest-uint32(int32(int16(ids.seqOff))))
				copy(p[fixed+kept*rtcpReportBlock:], blk)
				kept++
			}
			plen = fixed + kept*rtcpReportBlock
			putRTCPHeader(p, kept, pt, plen)
		case rtcpSDES:
			chunkLen := (plen - rtcpHeaderLen) / max(count, 1)
			for i := range count {
				binary.BigEndian.PutUint32(p[rtcpHeaderLen+i*chunkLen:], ids.sender)
			}
		case rtcpBYE:
			for i := range count {
				binary.BigEndian.PutUint32(p[rtcpHeaderLen+4*i:], ids.sender)
			}
		}
		w += plen
	}
	return w
}
