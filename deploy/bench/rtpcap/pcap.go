package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Link types we can find an IPv4 header in (a loopback capture on Linux is
// Ethernet; "-i any" is Linux cooked v1 or v2).
const (
	linkEthernet = 1
	linkRaw      = 101
	linkSLL      = 113
	linkSLL2     = 276
)

var errNotPcap = errors.New("not a pcap file (pcapng is not supported: capture with tcpdump -w)")

// pcapReader reads classic libpcap files, microsecond or nanosecond
// resolution, either byte order.
type pcapReader struct {
	r        *bufio.Reader
	order    binary.ByteOrder
	nano     bool
	linkType uint32
	hdr      [16]byte
	buf      []byte
}

func newPcapReader(r io.Reader) (*pcapReader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var gh [24]byte
	if _, err := io.ReadFull(br, gh[:]); err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	p := &pcapReader{r: br, buf: make([]byte, 65536)}
	switch {
	case binary.LittleEndian.Uint32(gh[:4]) == 0xa1b2c3d4:
		p.order = binary.LittleEndian
	case binary.LittleEndian.Uint32(gh[:4]) == 0xa1b23c4d:
		p.order, p.nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(gh[:4]) == 0xa1b2c3d4:
		p.order = binary.BigEndian
	case binary.BigEndian.Uint32(gh[:4]) == 0xa1b23c4d:
		p.order, p.nano = binary.BigEndian, true
	default:
		return nil, errNotPcap
	}
	p.linkType = p.order.Uint32(gh[20:24]) & 0x0fffffff
	switch p.linkType {
	case linkEthernet, linkRaw, linkSLL, linkSLL2:
	default:
		return nil, fmt.Errorf("pcap link type %d not supported", p.linkType)
	}
	return p, nil
}

// next returns the capture time in nanoseconds and the captured bytes of
// the next packet (valid until the following call), or io.EOF.
func (p *pcapReader) next() (int64, []byte, error) {
	if _, err := io.ReadFull(p.r, p.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF // a capture cut short by the kill: keep what we have
		}
		return 0, nil, err
	}
	sec := int64(p.order.Uint32(p.hdr[0:4]))
	frac := int64(p.order.Uint32(p.hdr[4:8]))
	incl := p.order.Uint32(p.hdr[8:12])
	if incl > uint32(len(p.buf)) {
		return 0, nil, fmt.Errorf("pcap record of %d bytes", incl)
	}
	b := p.buf[:incl]
	if _, err := io.ReadFull(p.r, b); err != nil {
		return 0, nil, io.EOF
	}
	if !p.nano {
		frac *= 1000
	}
	return sec*1e9 + frac, b, nil
}

// udp4 is what the analysis needs of one captured datagram.
type udp4 struct {
	src, dst         [4]byte
	srcPort, dstPort uint16
	payload          []byte // may be cut short by the snap length
}

// parseUDP4 finds an IPv4 UDP datagram in a captured frame.
func parseUDP4(linkType uint32, frame []byte) (udp4, bool) {
	var u udp4
	var ip []byte
	switch linkType {
	case linkEthernet:
		if len(frame) < 14 || binary.BigEndian.Uint16(frame[12:14]) != 0x0800 {
			return u, false
		}
		ip = frame[14:]
	case linkRaw:
		ip = frame
	case linkSLL:
		if len(frame) < 16 || binary.BigEndian.Uint16(frame[14:16]) != 0x0800 {
			return u, false
		}
		ip = frame[16:]
	case linkSLL2:
		if len(frame) < 20 || binary.BigEndian.Uint16(frame[0:2]) != 0x0800 {
			return u, false
		}
		ip = frame[20:]
	}
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 17 {
		return u, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+8 || binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return u, false // truncated, or a later fragment
	}
	copy(u.src[:], ip[12:16])
	copy(u.dst[:], ip[16:20])
	udp := ip[ihl:]
	u.srcPort = binary.BigEndian.Uint16(udp[0:2])
	u.dstPort = binary.BigEndian.Uint16(udp[2:4])
	u.payload = udp[8:]
	return u, true
}
